//! Event router of daisi: consumes the JetStream stream the CDC publisher fills, asks the
//! coordinator which edge pods hold interested sockets, and forwards each event to those edges
//! over gRPC, acknowledging a message only once every target edge took it (or its pod is known
//! gone).
//!
//! [`run`] takes its listener and a shutdown token so the binary, the dev stack and the tests
//! all start it the same way; [`run_with`] takes the event source too (tests share an
//! in-memory stream with it).
//!
//! Module map: [`source`] (JetStream and in-memory streams), [`resolve`] (coordinator lookups
//! and their cache), [`forward`] (edges: lanes, batching, health, bounded backlogs, gRPC),
//! [`pipeline`] (dispatch and the ledger of held messages), [`publish_api`] (HTTP publish),
//! [`config`], [`metrics`]. Ordering and delivery guarantees are described in the crate's
//! README.

pub mod backoff;
pub mod config;
pub mod forward;
pub mod metrics;
pub mod pipeline;
pub mod publish_api;
pub use daisi_runtime::ratelog;
pub mod resolve;
pub mod source;
pub mod start_position;
pub mod trace;

pub use config::{Config, SourceKind};

use daisi_runtime::{CancellationToken, Readiness};
use daisi_telemetry::Metrics;
use forward::edge::EdgeSettings;
use forward::grpc::GrpcEdgeClient;
use forward::registry::EdgeRegistry;
use metrics::RouterMetrics;
use pipeline::Dispatcher;
use pipeline::ledger::{Ledger, SettlerSettings, run_settler};
use resolve::RouteResolver;
use resolve::cache::RouteCache;
use resolve::grpc::GrpcResolver;
use source::jetstream::{JetStreamSettings, JetStreamSource};
use source::memory::{MemorySettings, MemoryStream};
use source::{Delivery, EventSource, SourceState};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Name used in logs, traces and metrics.
pub const SERVICE: &str = "daisi-router";

/// Deliveries buffered between the source and the dispatcher.
const INTAKE_BUFFER: usize = 1024;
/// HTTP/2 channels per edge address.
const CHANNELS_PER_EDGE: usize = 2;
/// How often the coordinator is probed for readiness, and the lag refreshed.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// The sockets the router serves on, bound by the caller (port 0 in tests).
#[derive(Debug)]
pub struct Listeners {
    /// Publish API, health, readiness and metrics.
    pub http: TcpListener,
}

impl Listeners {
    /// Binds the addresses of `config`.
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        let addr = config.http_addr;
        let http = TcpListener::bind(addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        Ok(Self { http })
    }
}

/// Why the router stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(#[from] std::io::Error),
    /// Start-up failed (metrics, NATS options, coordinator URL).
    #[error("startup: {0}")]
    Startup(String),
    /// The event source closed for good: a setting contradicts the server's state.
    #[error("event source: {0}")]
    Source(String),
}

/// Runs the router until `shutdown` is cancelled, reading from the source `config` names.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    match config.source {
        SourceKind::JetStream => {
            let source = JetStreamSource::connect(jetstream_settings(&config))
                .await
                .map_err(Error::Startup)?;
            run_with(config, listeners, shutdown, source).await
        }
        SourceKind::Memory => {
            let stream = MemoryStream::new(memory_settings(&config));
            run_with(config, listeners, shutdown, stream.consumer()).await
        }
    }
}

/// The JetStream binding `config` describes.
pub fn jetstream_settings(config: &Config) -> JetStreamSettings {
    JetStreamSettings {
        url: config
            .nats_urls
            .iter()
            .map(|u| u.0.to_string())
            .collect::<Vec<_>>()
            .join(","),
        auth: config.nats_auth.clone(),
        stream: config.stream.clone(),
        subjects: config.subjects.stream_subjects(),
        create_stream: config.create_stream,
        stream_replicas: config.stream_replicas,
        consumer: config.consumer.clone(),
        ack_wait: config.ack_wait,
        max_ack_pending: config.max_ack_pending,
        max_deliver: config.max_deliver,
        heartbeat: config.heartbeat,
        pull_batch: usize::try_from(config.max_ack_pending)
            .unwrap_or(500)
            .clamp(1, 500),
        client_name: router_id(),
        partition: config.partitioning.map(|p| (p.count, p.index)),
        prefix: config.subjects.prefix().to_owned(),
        start_position: config.start_position,
    }
}

/// The in-memory consumer `config` describes.
pub fn memory_settings(config: &Config) -> MemorySettings {
    MemorySettings {
        ack_wait: config.ack_wait,
        max_deliver: config.max_deliver,
        max_ack_pending: usize::try_from(config.max_ack_pending).unwrap_or(10_000),
        ..MemorySettings::default()
    }
}

/// How many events may wait in one edge's hold beyond its cap: as many again, but never so many
/// that one edge in one replica could fill the ack window (the configuration checks only that
/// the cap is below the window).
fn edge_max_held(cap: usize, window: i64) -> usize {
    let window = usize::try_from(window).unwrap_or(0);
    cap.min(window.saturating_sub(cap).saturating_sub(1))
}

fn router_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| SERVICE.to_owned());
    format!("{host}-{}", std::process::id())
}

/// Runs the router on `source` until `shutdown` is cancelled.
///
/// Shutdown order: readiness drops; the source stops being read and deliveries not yet
/// dispatched go back to the server; in-flight forwards get up to the shutdown grace to settle;
/// whatever is still held goes back to the server for immediate redelivery; then the HTTP
/// server stops.
pub async fn run_with<S: EventSource>(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
    source: S,
) -> Result<(), Error> {
    let startup = |e: &dyn std::fmt::Display| Error::Startup(e.to_string());
    let registry = Metrics::new("router").map_err(|e| startup(&e))?;
    let metrics = RouterMetrics::register(&registry).map_err(|e| startup(&e))?;
    let readiness = Readiness::new(&["nats", "coordinator"]);
    config.internal.log_posture(SERVICE);
    let auth = config.internal.router_client();
    let resolver = GrpcResolver::new(&config.coordinator_urls, config.coordinator_timeout, &auth)
        .map_err(|e| startup(&e))?;
    let routes = Arc::new(
        RouteCache::new(
            resolver,
            config.route_cache_ttl,
            config.route_stale_if_error,
        )
        .with_counters(metrics.lookup_counters()),
    );
    let client = Arc::new(GrpcEdgeClient::new(
        CHANNELS_PER_EDGE,
        config.deliver_timeout,
        auth,
    ));

    let intake_stop = CancellationToken::new();
    let lanes_stop = CancellationToken::new();
    let settler_stop = CancellationToken::new();
    let http_stop = CancellationToken::new();

    let (ledger, verdicts) = Ledger::new(metrics.clone());
    let settler = tokio::spawn(run_settler(
        ledger.clone(),
        verdicts,
        source.publisher(),
        SettlerSettings {
            ack_wait: config.ack_wait,
            hold_limit: config.ack_wait + config.edge_unreachable_grace,
            dead_letter_subject: config.dead_letter_subject.clone(),
            max_deliver: config.max_deliver,
        },
        settler_stop.clone(),
    ));

    tokio::spawn(follow_source_state(
        source.state(),
        readiness.clone(),
        http_stop.clone(),
    ));
    tokio::spawn(probe(
        routes.clone(),
        readiness.clone(),
        source.lag_probe(),
        metrics.clone(),
        http_stop.clone(),
    ));

    let mut http_router = daisi_runtime::health::router(readiness.clone()).merge(registry.router());
    if let Some(api_key) = &config.publish_api_key {
        http_router = http_router.merge(publish_api::router(publish_api::PublishApi {
            publisher: source.publisher(),
            subjects: config.subjects.clone(),
            api_key: daisi_config::SecretDigest::new(api_key),
            max_payload_bytes: config.max_publish_bytes,
            metrics: metrics.clone(),
        }));
    }

    let (tx, rx) = mpsc::channel(INTAKE_BUFFER);
    let source_closed = CancellationToken::new();
    let reader = tokio::spawn(read_source(
        source,
        tx,
        intake_stop.clone(),
        source_closed.clone(),
    ));
    let dispatcher = Dispatcher {
        subjects: config.subjects.clone(),
        routes: routes.clone(),
        edges: EdgeRegistry::new(
            client,
            routes,
            EdgeSettings {
                batch_max_events: config.batch_max_events,
                batch_delay: config.batch_delay,
                lanes: config.edge_lanes,
                unreachable_grace: config.edge_unreachable_grace,
                max_pending: config.edge_max_pending,
                max_held: edge_max_held(config.edge_max_pending, config.max_ack_pending),
                probe_timeout: config.edge_probe_timeout,
                router_id: Arc::from(router_id()),
            },
            metrics.clone(),
            lanes_stop.clone(),
        ),
        ledger: ledger.clone(),
        metrics: metrics.clone(),
        readiness: readiness.clone(),
    };
    let dispatching = tokio::spawn(dispatcher.run(rx, intake_stop.clone()));

    tracing::info!(
        http = %listeners.http.local_addr()?,
        stream = %config.stream,
        subjects = %config.subjects.stream_subjects(),
        consumer = %config.consumer,
        source = ?config.source,
        "router listening"
    );
    let http = tokio::spawn(daisi_runtime::http::serve(
        listeners.http,
        http_router,
        http_stop.clone(),
    ));

    tokio::select! {
        () = shutdown.cancelled() => {}
        // A source that closed for good leaves nothing to route: stop in order and report why.
        () = source_closed.cancelled() => {}
    }
    readiness.start_draining();
    intake_stop.cancel();
    // The dispatcher comes back with its edges, which live until the lanes stop: events in
    // flight or held for an edge get the grace to settle.
    let (leftover, edges) = match dispatching.await {
        Ok((rx, dispatcher)) => (Some(rx), Some(dispatcher)),
        Err(error) => {
            tracing::error!(%error, "dispatcher failed");
            (None, None)
        }
    };
    let failure = reader.await.ok().flatten();
    if let Some(mut rx) = leftover {
        rx.close();
        let mut undispatched = Vec::new();
        while let Ok(delivery) = rx.try_recv() {
            undispatched.push(delivery);
        }
        give_back_all(undispatched).await;
    }
    let held = ledger.len();
    if held > 0 {
        tracing::info!(held, grace = ?config.shutdown_grace, "waiting for in-flight forwards");
    }
    let drained = tokio::time::timeout(config.shutdown_grace, ledger.wait_settled())
        .await
        .is_ok();
    lanes_stop.cancel();
    drop(edges);
    let released = match tokio::time::timeout(GIVE_BACK_DEADLINE, ledger.release_all()).await {
        Ok(released) => released,
        Err(_) => {
            tracing::warn!(
                deadline = ?GIVE_BACK_DEADLINE,
                "could not hand every held message back in time; the server redelivers the rest after its ack wait"
            );
            ledger.len()
        }
    };
    if !drained || released > 0 {
        tracing::warn!(
            released,
            "shutdown grace over; unsettled messages handed back for redelivery"
        );
    }
    settler_stop.cancel();
    let _ = settler.await;
    http_stop.cancel();
    let served = match http.await {
        Ok(result) => result.map_err(Error::from),
        Err(error) => Err(Error::Startup(format!("http server task: {error}"))),
    };
    match failure {
        Some(reason) => Err(Error::Source(reason)),
        None => served,
    }
}

/// How long shutdown spends handing messages back to the server: with the server unreachable
/// a nak waits for the client's command queue, and the server redelivers after its ack wait
/// anyway.
const GIVE_BACK_DEADLINE: Duration = Duration::from_secs(5);

/// Hands a delivery that was never dispatched back to the server.
async fn give_back(delivery: Delivery) {
    let _ = delivery.acker.nak(Duration::ZERO).await;
}

/// Hands deliveries that were never dispatched back to the server, within
/// [`GIVE_BACK_DEADLINE`].
async fn give_back_all(deliveries: Vec<Delivery>) {
    let count = deliveries.len();
    let all = async {
        for delivery in deliveries {
            give_back(delivery).await;
        }
    };
    if tokio::time::timeout(GIVE_BACK_DEADLINE, all).await.is_err() {
        tracing::warn!(
            count,
            "could not hand undispatched messages back in time; the server redelivers them after its ack wait"
        );
    }
}

/// Feeds the dispatcher until `stop`; returns the source's failure when it closed for good
/// (and cancels `closed` so the router stops).
async fn read_source<S: EventSource>(
    mut source: S,
    tx: mpsc::Sender<Delivery>,
    stop: CancellationToken,
    closed: CancellationToken,
) -> Option<String> {
    loop {
        let delivery = tokio::select! {
            () = stop.cancelled() => {
                give_back_all(source.take_buffered()).await;
                return None;
            }
            next = source.next() => match next {
                Some(d) => d,
                None => {
                    let failure = source.failure();
                    if failure.is_some() {
                        closed.cancel();
                    }
                    return failure;
                }
            },
        };
        let permit = tokio::select! {
            () = stop.cancelled() => None,
            permit = tx.reserve() => permit.ok(),
        };
        match permit {
            Some(permit) => permit.send(delivery),
            None => {
                let mut undispatched = vec![delivery];
                undispatched.extend(source.take_buffered());
                give_back_all(undispatched).await;
                return None;
            }
        }
    }
}

async fn follow_source_state(
    mut state: tokio::sync::watch::Receiver<SourceState>,
    readiness: Readiness,
    stop: CancellationToken,
) {
    loop {
        let consuming = *state.borrow_and_update() == SourceState::Consuming;
        readiness.set("nats", consuming);
        tokio::select! {
            () = stop.cancelled() => return,
            changed = state.changed() => if changed.is_err() { return },
        }
    }
}

async fn probe<R: RouteResolver>(
    routes: Arc<RouteCache<R>>,
    readiness: Readiness,
    lag: source::LagProbe,
    metrics: RouterMetrics,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Any answer, even a refusal of the empty probe, means the coordinator is reachable.
        let answered = !matches!(
            routes.inner().lookup(&[]).await,
            Err(resolve::ResolveError::Unavailable(_))
        );
        readiness.set("coordinator", answered);
        metrics
            .consumer_lag
            .set(i64::try_from(lag()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::edge_max_held;

    #[test]
    fn an_edges_hold_matches_its_cap_but_never_lets_it_fill_the_ack_window() {
        assert_eq!(edge_max_held(1_000, 10_000), 1_000);
        assert_eq!(edge_max_held(1_000, 2_000), 999);
        assert_eq!(edge_max_held(1_000, 1_001), 0);
        assert_eq!(edge_max_held(1_000, 0), 0);
    }
}
