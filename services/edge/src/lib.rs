//! WebSocket edge of daisi: the only service clients reach. It terminates WebSockets,
//! authenticates AES-GCM tokens, mints tokens for backends, holds sockets and delivers the
//! events routers send it over gRPC.
//!
//! [`run`] takes its listeners and a shutdown token so the binary, the dev stack and the tests
//! all start it the same way; [`run_with`] also takes the coordinator (tests use the in-memory
//! one).
//!
//! Module map: [`http`] (routes, accept loop, TLS), [`auth`] (API keys, tokens, cache), [`ws`]
//! (upgrade, admission, socket task), [`registry`] (local index, route counts), [`delivery`]
//! (gRPC fan-out), [`coordinator`] (trait, gRPC adapter, in-memory stand-in), [`lifecycle`]
//! (heartbeat, kill switch, renew, release, drain).

pub mod auth;
pub mod config;
pub mod coordinator;
pub mod delivery;
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod registry;
pub mod state;
pub mod ws;

pub use config::Config;

use coordinator::{AnyCoordinator, PodIdentity};
use daisi_runtime::{CancellationToken, Readiness};
use daisi_telemetry::Metrics;
use state::{COORDINATOR, EdgeState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

/// Name used in logs, traces and metrics.
pub const SERVICE: &str = "daisi-edge";

/// The sockets the edge serves on, bound by the caller (port 0 in tests).
#[derive(Debug)]
pub struct Listeners {
    /// Client HTTP and WebSockets, health, readiness, metrics.
    pub http: TcpListener,
    /// gRPC delivery API for routers.
    pub grpc: TcpListener,
}

impl Listeners {
    /// Binds the addresses of `config`.
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        Ok(Self {
            http: bind(config.http_addr).await?,
            grpc: bind(config.grpc_addr).await?,
        })
    }
}

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Why the edge stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(#[from] std::io::Error),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// Metrics, TLS or the coordinator client could not be set up.
    #[error("startup: {0}")]
    Startup(String),
}

/// Runs the edge against the coordinators at `config.coordinator_urls` until `shutdown` is
/// cancelled, then drains.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let coordinator = coordinator::grpc::GrpcCoordinator::new(
        &config.coordinator_urls,
        config.coordinator_timeout,
    )
    .map_err(|e| Error::Startup(e.to_string()))?;
    run_with(
        config,
        listeners,
        AnyCoordinator::Grpc(coordinator),
        shutdown,
    )
    .await
}

/// Each socket holds a descriptor: a connection cap above the open-file limit means clients
/// beyond the limit fail at `accept` instead of getting the clear 503 of the cap.
fn warn_if_descriptors_run_out(max_connections: usize) {
    // Listeners, gRPC channels, the coordinator stream, logs: a small fixed overhead.
    const RESERVED: u64 = 64;
    if let Some(limit) = daisi_runtime::fd_limit::current()
        && (max_connections as u64).saturating_add(RESERVED) > limit
    {
        tracing::warn!(
            max_connections,
            open_file_limit = limit,
            "DAISI_EDGE_MAX_CONNECTIONS exceeds what the open-file limit allows; lower it, or raise the hard limit (ulimit -n, LimitNOFILE, the container runtime's nofile)"
        );
    }
}

/// The address routers reach this pod at: the configured one, with the bound port when the
/// configured port is 0 (tests).
fn delivery_address(config: &Config, grpc: SocketAddr) -> String {
    let mut url = config.advertise_url.clone();
    if url.port() == Some(0) {
        let _ = url.set_port(Some(grpc.port()));
    }
    url.as_str().trim_end_matches('/').to_owned()
}

/// [`run`] with a given coordinator.
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    coordinator: AnyCoordinator,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let registry = Metrics::new("edge").map_err(|e| Error::Startup(e.to_string()))?;
    let metrics =
        metrics::EdgeMetrics::new(&registry).map_err(|e| Error::Startup(e.to_string()))?;
    let tls = config
        .tls
        .as_ref()
        .map(http::tls::acceptor)
        .transpose()
        .map_err(|e| Error::Startup(e.to_string()))?;
    let http_addr = listeners.http.local_addr()?;
    let grpc_addr = listeners.grpc.local_addr()?;
    let pod = PodIdentity {
        pod: config.pod_id.clone(),
        instance: uuid::Uuid::new_v4().simple().to_string(),
        delivery_address: delivery_address(&config, grpc_addr),
    };
    let readiness = Readiness::new(&[COORDINATOR]);
    let edge = Arc::new(EdgeState {
        auth: auth::Authenticator::new(&config),
        pod,
        coordinator,
        registry: registry::Registry::default(),
        releases: lifecycle::release::ReleaseQueue::default(),
        metrics,
        readiness: readiness.clone(),
        heartbeat_now: tokio::sync::Notify::new(),
        renew_now: tokio::sync::Notify::new(),
        heartbeat_lock: tokio::sync::Mutex::new(()),
        renew_every_ms: AtomicU64::new(10_000),
        socket_tasks: TaskTracker::new(),
        sockets_stop: CancellationToken::new(),
        config,
    });

    // Series exist from the start, so dashboards see zeros rather than gaps.
    edge.refresh_socket_gauges();
    for kind in ["user", "admin"] {
        edge.metrics.connects.with_label_values(&[kind]);
        edge.metrics.auth_successes.with_label_values(&[kind]);
        edge.metrics.connection_seconds.with_label_values(&[kind]);
    }
    for reason in ws::upgrade::REFUSAL_LABELS {
        edge.metrics.rejected.with_label_values(&[reason]);
    }

    // Stopped in this order at shutdown: loops that talk to the coordinator after the drain,
    // servers last so health and metrics answer during the drain.
    let releases_stop = CancellationToken::new();
    let loops_stop = CancellationToken::new();
    let servers_stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(lifecycle::pod::run(edge.clone(), loops_stop.clone()));
    tasks.spawn(lifecycle::kill_watch::run(edge.clone(), loops_stop.clone()));
    tasks.spawn(lifecycle::renew::run(edge.clone(), loops_stop.clone()));
    tasks.spawn(lifecycle::routes::run(edge.clone(), loops_stop.clone()));
    tasks.spawn(lifecycle::release::run(edge.clone(), releases_stop.clone()));

    let (reporter, health_service) = tonic_health::server::health_reporter();
    tasks.spawn(daisi_runtime::grpc::mirror_health(
        readiness.clone(),
        reporter,
        vec!["daisi.edge.v1.EdgeDelivery".to_owned()],
        servers_stop.clone(),
    ));
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(delivery::Delivery::server(edge.clone()))
            .serve_with_incoming_shutdown(
                daisi_runtime::grpc::incoming(listeners.grpc),
                servers_stop.clone().cancelled_owned(),
            ),
    );
    let router = http::router(edge.clone(), &registry);
    let http = tokio::spawn(http::serve::serve(
        listeners.http,
        router,
        tls,
        edge.config.limits.handshake_timeout,
        servers_stop.clone(),
    ));
    tracing::info!(
        pod_id = %edge.config.pod_id,
        http = %http_addr,
        grpc = %grpc_addr,
        tls = edge.config.tls.is_some(),
        "edge listening"
    );
    warn_if_descriptors_run_out(edge.config.limits.max_connections);

    shutdown.cancelled().await;
    releases_stop.cancel();
    let grace = edge.config.shutdown_grace;
    if tokio::time::timeout(grace, lifecycle::drain::drain(&edge))
        .await
        .is_err()
    {
        tracing::warn!("drain did not finish within the shutdown grace");
    }
    loops_stop.cancel();
    edge.sockets_stop.cancel();
    servers_stop.cancel();
    tasks.close();
    tasks.wait().await;
    let _ = http.await;
    match grpc.await {
        Ok(result) => result.map_err(Error::from),
        Err(join) => Err(Error::Startup(format!("grpc server task: {join}"))),
    }
}
