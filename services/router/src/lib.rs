//! Event router of daisi: consumes the JetStream stream the CDC publisher fills, asks the
//! coordinator which edge pods hold interested sockets, and forwards each event to those edges
//! over gRPC.
//!
//! [`run`] takes its listener and a shutdown token so the binary, the dev stack and the tests
//! all start it the same way.

pub mod config;

pub use config::Config;

use daisi_runtime::{CancellationToken, Readiness};
use daisi_telemetry::Metrics;
use tokio::net::TcpListener;

/// Name used in logs, traces and metrics.
pub const SERVICE: &str = "daisi-router";

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
    /// Metrics could not be set up.
    #[error("startup: {0}")]
    Startup(String),
}

/// Runs the router until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let metrics = Metrics::new("router").map_err(|e| Error::Startup(e.to_string()))?;
    let readiness = Readiness::new(&[]);
    tracing::info!(
        http = %listeners.http.local_addr()?,
        stream = %config.stream,
        subjects = %config.subjects.stream_subjects(),
        "router listening"
    );
    let draining = {
        let readiness = readiness.clone();
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            readiness.start_draining();
        }
    };
    let http = daisi_runtime::http::serve(
        listeners.http,
        daisi_runtime::health::router(readiness).merge(metrics.router()),
        shutdown,
    );
    let (served, ()) = tokio::join!(http, draining);
    served.map_err(Error::from)
}
