//! WebSocket edge of daisi: the only service clients reach. It terminates WebSockets,
//! authenticates AES-GCM tokens, mints tokens for backends, holds sockets and delivers the
//! events routers send it over gRPC.
//!
//! [`run`] takes its listeners and a shutdown token so the binary, the dev stack and the tests
//! all start it the same way.

pub mod config;

pub use config::Config;

use daisi_runtime::{CancellationToken, Readiness};
use daisi_telemetry::Metrics;
use std::net::SocketAddr;
use tokio::net::TcpListener;

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
    /// Metrics could not be set up.
    #[error("startup: {0}")]
    Startup(String),
}

/// Runs the edge until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let metrics = Metrics::new("edge").map_err(|e| Error::Startup(e.to_string()))?;
    let readiness = Readiness::new(&[]);
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let mirror = tokio::spawn(daisi_runtime::grpc::mirror_health(
        readiness.clone(),
        reporter,
        Vec::new(),
        shutdown.child_token(),
    ));
    tracing::info!(
        pod_id = %config.pod_id,
        http = %listeners.http.local_addr()?,
        grpc = %listeners.grpc.local_addr()?,
        "edge listening"
    );
    let drain = {
        let readiness = readiness.clone();
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            readiness.start_draining();
        }
    };
    let grpc = tonic::transport::Server::builder()
        .add_service(health_service)
        .serve_with_incoming_shutdown(
            daisi_runtime::grpc::incoming(listeners.grpc),
            shutdown.clone().cancelled_owned(),
        );
    let http = daisi_runtime::http::serve(
        listeners.http,
        daisi_runtime::health::router(readiness).merge(metrics.router()),
        shutdown.clone(),
    );
    let result = tokio::try_join!(
        async { grpc.await.map_err(Error::from) },
        async { http.await.map_err(Error::from) },
        async {
            drain.await;
            Ok(())
        },
    );
    shutdown.cancel();
    let _ = mirror.await;
    result.map(|_| ())
}
