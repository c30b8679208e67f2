//! Session coordinator of daisi: the only service that talks to Redis. It keeps one live
//! session per user across every edge pod, the route registry (which pod holds interest in
//! which company/agent/chat) and the pod registry, and serves them over gRPC to edges, routers
//! and internal teams.
//!
//! [`run`] takes its listeners and a shutdown token so the binary, the dev stack and the tests
//! all start it the same way; [`run_with_store`] lets in-process replicas share one
//! [`store::MemoryStore`].

pub mod config;
mod grpc;
mod metrics;
mod reaper;
mod redis_probe;
pub mod store;

pub use config::{Config, StoreKind};

use daisi_runtime::{CancellationToken, Readiness};
use daisi_telemetry::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use store::{MemoryStore, RedisSettings, RedisStore, SessionStore, StoreSettings};
use tokio::net::TcpListener;

/// Name used in logs, traces and metrics.
pub const SERVICE: &str = "daisi-coordinator";

/// Pause between health turning NOT_SERVING and the servers refusing new calls, so balancers
/// that watch health move away before connections are refused.
const DRAIN_PAUSE: Duration = Duration::from_millis(100);

/// The sockets the coordinator serves on, bound by the caller (port 0 in tests).
#[derive(Debug)]
pub struct Listeners {
    /// gRPC API.
    pub grpc: TcpListener,
    /// Health, readiness and metrics.
    pub http: TcpListener,
}

impl Listeners {
    /// Binds the addresses of `config`.
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        Ok(Self {
            grpc: bind(config.grpc_addr).await?,
            http: bind(config.http_addr).await?,
        })
    }
}

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Why the coordinator stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Redis client rejected its settings (e.g. the URL).
    #[error("redis client: {0}")]
    Redis(#[from] redis::RedisError),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(#[from] std::io::Error),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// Metrics or reflection could not be set up.
    #[error("startup: {0}")]
    Startup(String),
}

/// The store timing of `config`.
pub fn store_settings(config: &Config) -> StoreSettings {
    StoreSettings {
        pod_lease: config.pod_lease,
        selection_retention: config.selection_retention,
        tombstone_ttl: config.tombstone_ttl,
    }
}

/// Runs the coordinator with the store `config.store` names until `shutdown` is cancelled.
///
/// Order on shutdown: health and `/ready` turn NOT_SERVING, then both servers stop accepting,
/// command streams end cleanly and in-flight calls get up to `shutdown_grace` to finish.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    match config.store {
        config::StoreKind::Memory => {
            let store = MemoryStore::new(store_settings(&config));
            run_with_store(config, listeners, store, shutdown).await
        }
        config::StoreKind::Redis => {
            let redis = RedisSettings {
                target: config.redis_target(),
                key_prefix: config.key_prefix.clone(),
                timeout: config.redis_timeout,
                chunk: config.max_batch,
                tls: config.redis_tls.clone(),
            };
            let store = RedisStore::new(&redis, store_settings(&config))?;
            let probe = (store.connection(), store.probe_key());
            serve(config, listeners, store, Some(probe), shutdown).await
        }
    }
}

/// Runs the coordinator over a given store (e.g. one [`MemoryStore`] shared by several
/// in-process replicas). Readiness reports the store as always up.
pub async fn run_with_store<S: SessionStore>(
    config: Config,
    listeners: Listeners,
    store: S,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    serve(config, listeners, store, None, shutdown).await
}

async fn serve<S: SessionStore>(
    config: Config,
    listeners: Listeners,
    store: S,
    redis_probe: Option<(store::RedisConnection, String)>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let registry = Metrics::new("coordinator").map_err(|e| Error::Startup(e.to_string()))?;
    let metrics =
        metrics::CoordinatorMetrics::new(&registry).map_err(|e| Error::Startup(e.to_string()))?;
    // `stop` ends the servers, streams and background tasks; it follows `shutdown` after health
    // has flipped (or fires at once if a server fails).
    let stop = CancellationToken::new();

    let readiness = match redis_probe {
        Some((connection, key)) => {
            let readiness = Readiness::new(&["redis"]);
            tokio::spawn(redis_probe::watch(
                connection,
                key,
                readiness.clone(),
                config.redis_timeout,
                stop.clone(),
            ));
            readiness
        }
        None => {
            let readiness = Readiness::new(&["store"]);
            readiness.set("store", true);
            readiness
        }
    };

    let reporter = tonic_health::server::HealthReporter::new();
    let health_service = grpc::health::server(reporter.clone(), stop.clone());
    let service_names = [
        "daisi.coordinator.v1.SessionService",
        "daisi.coordinator.v1.RouteService",
        "daisi.coordinator.v1.PodService",
        "daisi.coordinator.v1.CoordinatorAdmin",
    ]
    .map(str::to_owned)
    .to_vec();
    let mirror = tokio::spawn(daisi_runtime::grpc::mirror_health(
        readiness.clone(),
        reporter,
        service_names,
        stop.clone(),
    ));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(daisi_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Startup(format!("grpc reflection: {e}")))?;

    let store = Arc::new(store);
    let reaper = tokio::spawn(reaper::run(
        store.clone(),
        metrics.clone(),
        reaper::interval(config.pod_lease),
        stop.clone(),
    ));
    let services = grpc::services(
        Arc::new(grpc::Shared {
            store,
            metrics,
            watch_ping_interval: config.watch_ping_interval,
            replica_id: daisi_domain::ConnectionId::generate().into_string(),
            stop: stop.clone(),
            watchers: grpc::Watchers::default(),
        }),
        &config.internal,
    );
    config.internal.log_posture(SERVICE);
    let reloader = config.internal.spawn_reloader(stop.clone());

    let sequencer = tokio::spawn({
        let (shutdown, stop, readiness) = (shutdown.clone(), stop.clone(), readiness.clone());
        async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = stop.cancelled() => return,
            }
            tracing::info!("draining: health is NOT_SERVING");
            readiness.start_draining();
            tokio::time::sleep(DRAIN_PAUSE).await;
            stop.cancel();
        }
    });

    tracing::info!(
        grpc = %listeners.grpc.local_addr()?,
        http = %listeners.http.local_addr()?,
        store = ?config.store,
        "coordinator listening"
    );
    let grpc = daisi_runtime::grpc::server()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(services.sessions)
        .add_service(services.routes)
        .add_service(services.pods)
        .add_service(services.admin)
        .serve_with_incoming_shutdown(
            config.internal.incoming(listeners.grpc),
            stop.clone().cancelled_owned(),
        );
    let http = daisi_runtime::http::serve(
        listeners.http,
        daisi_runtime::health::router(readiness).merge(registry.router()),
        stop.clone(),
    );
    let grace = config.shutdown_grace;
    let result = tokio::try_join!(
        within_grace(grpc, &stop, grace, "grpc"),
        within_grace(http, &stop, grace, "http"),
    );
    stop.cancel();
    let _ = tokio::join!(mirror, reaper, sequencer);
    if let Some(reloader) = reloader {
        let _ = reloader.await;
    }
    result.map(|_| ())
}

/// Awaits a server, but no longer than `grace` after `stop`: a client that keeps a call open
/// must not hold the process past its grace period.
async fn within_grace<E, F>(
    server: F,
    stop: &CancellationToken,
    grace: Duration,
    name: &'static str,
) -> Result<(), Error>
where
    F: std::future::Future<Output = Result<(), E>>,
    Error: From<E>,
{
    let deadline = async {
        stop.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server => result.map_err(Error::from),
        () = deadline => {
            tracing::warn!(server = name, ?grace, "grace period over; dropping unfinished calls");
            Ok(())
        }
    }
}
