//! The one error type of this crate: callers branch on bad configuration (exit with a message)
//! versus a failed start-up step.

/// Why telemetry could not be configured or started.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// An environment variable holds a value we cannot use; the message names the fix.
    #[error("invalid {var}={value:?}: expected {expected}")]
    InvalidEnv {
        /// The variable name, e.g. `DAISI_LOG_FORMAT`.
        var: &'static str,
        /// The rejected value.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// A global tracing subscriber is already installed (init was called twice).
    #[error("telemetry already initialized: a global tracing subscriber is set")]
    AlreadyInitialized,
    /// OTLP export was requested outside a tokio runtime; tonic needs one to run its channel.
    #[error("telemetry init with otlp export must run inside a tokio runtime")]
    NoTokioRuntime,
    /// The OTLP span exporter could not be built.
    #[error("building the otlp span exporter failed")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    /// Flushing or shutting down the tracer provider failed.
    #[error("shutting down the tracer provider failed")]
    Shutdown(#[source] opentelemetry_sdk::error::OTelSdkError),
    /// A Prometheus metric could not be created or registered (bad name, duplicate, ...).
    #[error("prometheus metric registration failed")]
    Metrics(#[from] prometheus::Error),
}
