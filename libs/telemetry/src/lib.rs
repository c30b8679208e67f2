//! Observability for daisi services: structured logs, OpenTelemetry traces exported over OTLP,
//! W3C trace-context propagation across NATS and gRPC, and a Prometheus `/metrics` endpoint.
//!
//! A service's `main` reads [`TelemetryConfig::from_env`], calls [`init`] inside the tokio
//! runtime and keeps the returned [`TelemetryGuard`] alive until shutdown; see [`init`].

mod config;
mod error;
pub mod metrics;
mod otlp;
pub mod propagation;
mod subscriber;

pub use config::{LogFormat, TelemetryConfig};
pub use error::TelemetryError;
pub use metrics::{Metrics, encode_text, metrics_router};
pub use subscriber::{TelemetryGuard, init};
