//! Session coordinator of daisi: the only service that talks to Redis. It keeps one live
//! session per user across every edge pod, the route registry (which pod holds interest in
//! which company/agent/chat) and the pod registry, and serves them over gRPC to edges, routers
//! and internal teams.
//!
//! [`run`] takes its listeners and a shutdown token so the binary, the dev stack and the tests
//! all start it the same way.

pub mod config;
mod redis_probe;

pub use config::Config;

use daisi_runtime::{CancellationToken, Readiness};
use daisi_telemetry::Metrics;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Name used in logs, traces and metrics.
pub const SERVICE: &str = "daisi-coordinator";

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
    /// The Redis URL was rejected by the client.
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

/// Runs the coordinator until `shutdown` is cancelled.
///
/// Order on shutdown: health turns NOT_SERVING, then both servers stop accepting and let
/// in-flight calls finish.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let metrics = Metrics::new("coordinator").map_err(|e| Error::Startup(e.to_string()))?;
    let readiness = Readiness::new(&["redis"]);

    let redis = redis_probe::client(&config)?;
    let probe = tokio::spawn(redis_probe::watch(
        redis,
        readiness.clone(),
        config.redis_timeout,
        shutdown.child_token(),
    ));

    let (reporter, health_service) = tonic_health::server::health_reporter();
    let mirror = tokio::spawn(daisi_runtime::grpc::mirror_health(
        readiness.clone(),
        reporter,
        Vec::new(),
        shutdown.child_token(),
    ));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(daisi_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Startup(format!("grpc reflection: {e}")))?;

    tracing::info!(
        grpc = %listeners.grpc.local_addr()?,
        http = %listeners.http.local_addr()?,
        "coordinator listening"
    );
    let grpc = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .serve_with_incoming_shutdown(
            daisi_runtime::grpc::incoming(listeners.grpc),
            shutdown.clone().cancelled_owned(),
        );
    let http = daisi_runtime::http::serve(
        listeners.http,
        daisi_runtime::health::router(readiness).merge(metrics.router()),
        shutdown.clone(),
    );
    let result = tokio::try_join!(async { grpc.await.map_err(Error::from) }, async {
        http.await.map_err(Error::from)
    },);
    shutdown.cancel();
    let _ = tokio::join!(probe, mirror);
    result.map(|_| ())
}
