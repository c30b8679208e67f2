//! Installs the global tracing subscriber (logs, plus OpenTelemetry export when configured) and
//! the guard that flushes pending spans at shutdown.

use crate::{LogFormat, TelemetryConfig, TelemetryError, otlp, propagation};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal;
use tracing::Subscriber;
use tracing_subscriber::{
    EnvFilter, Layer, Registry, filter::LevelFilter, filter::Targets, fmt, layer::SubscriberExt,
    util::SubscriberInitExt,
};

/// Crates whose spans must not be exported: the exporter itself runs on tonic/h2/hyper, and
/// exporting their spans would feed every export back into the next batch.
const EXPORT_EXCLUDED_TARGETS: [&str; 6] = [
    "h2",
    "hyper",
    "hyper_util",
    "tonic",
    "tower",
    "opentelemetry",
];

/// Installs logging (and OTLP tracing when `config.otlp_endpoint` is set) for this process.
///
/// Also installs the W3C `TraceContextPropagator` as the global propagator, whether or not
/// spans are exported, so [`crate::propagation`] helpers always speak `traceparent`.
///
/// Must be called inside a tokio runtime when OTLP is on (tonic's channel runs on it); keep the
/// runtime multi-threaded, since the guard's shutdown blocks while the last batch is exported.
/// A second call returns [`TelemetryError::AlreadyInitialized`].
///
/// ```no_run
/// # async fn run() -> Result<(), daisi_telemetry::TelemetryError> {
/// let config = daisi_telemetry::TelemetryConfig::from_env("daisi-edge")?;
/// let telemetry = daisi_telemetry::init(&config)?;
/// // ... serve until shutdown ...
/// telemetry.shutdown()?;
/// # Ok(()) }
/// ```
pub fn init(config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let (subscriber, provider) = build(config)?;
    if subscriber.try_init().is_err() {
        // Nothing uses this provider yet; stop its export thread before reporting the error.
        if let Some(provider) = provider {
            let _ = provider.shutdown();
        }
        return Err(TelemetryError::AlreadyInitialized);
    }

    propagation::install_propagator();
    if let Some(provider) = &provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    tracing::info!(
        service = %config.service_name,
        log_format = ?config.log_format,
        otlp_endpoint = config.otlp_endpoint.as_deref(),
        "telemetry initialized"
    );
    Ok(TelemetryGuard { provider })
}

/// The subscriber stack and, with OTLP on, the provider behind its OpenTelemetry layer.
///
/// Kept apart from installation so tests can run the full stack as a scoped default.
fn build(
    config: &TelemetryConfig,
) -> Result<
    (
        impl Subscriber + Send + Sync + 'static,
        Option<SdkTracerProvider>,
    ),
    TelemetryError,
> {
    let filter =
        EnvFilter::try_new(&config.log_filter).map_err(|_| TelemetryError::InvalidEnv {
            var: crate::config::LOG_FILTER_VAR,
            value: config.log_filter.clone(),
            expected: "tracing filter directives such as `info` or `info,daisi_edge=debug`",
        })?;
    let provider = config
        .otlp_endpoint
        .as_deref()
        .map(|endpoint| otlp::tracer_provider(&config.service_name, endpoint))
        .transpose()?;
    let otel_layer = provider.as_ref().map(|provider| {
        let excluded = EXPORT_EXCLUDED_TARGETS.iter().fold(
            Targets::new().with_default(LevelFilter::TRACE),
            |t, target| t.with_target(*target, LevelFilter::OFF),
        );
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("daisi"))
            .with_filter(excluded)
    });
    let subscriber = tracing_subscriber::registry()
        .with(log_layer(config.log_format))
        .with(otel_layer)
        .with(filter);
    Ok((subscriber, provider))
}

/// The stdout log layer in the requested format.
fn log_layer(format: LogFormat) -> Box<dyn Layer<Registry> + Send + Sync> {
    match format {
        // Flattened events and the span chain make fields queryable in any log collector.
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
        LogFormat::Pretty => fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
    }
}

/// Keeps OTLP export alive; flushes and stops it on [`TelemetryGuard::shutdown`] or drop.
#[derive(Debug)]
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    /// `None` when OTLP export is off: there is nothing to flush.
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are being exported over OTLP.
    pub fn otlp_enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered and stops the exporter.
    ///
    /// Blocks until the last batch is sent or the SDK's timeout passes: call it at the end of
    /// shutdown, from a multi-threaded runtime or `spawn_blocking`.
    pub fn shutdown(mut self) -> Result<(), TelemetryError> {
        self.shutdown_provider()
    }

    fn shutdown_provider(&mut self) -> Result<(), TelemetryError> {
        match self.provider.take() {
            Some(provider) => provider.shutdown().map_err(TelemetryError::Shutdown),
            None => Ok(()),
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown_provider() {
            tracing::warn!(error = %error, "telemetry shutdown failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagation::{self, inject_nats};
    use opentelemetry::trace::TraceContextExt as _;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn otlp_stack_gives_spans_trace_ids_and_shuts_down() {
        propagation::install_propagator();
        let mut config = TelemetryConfig::new("daisi-test");
        // Closed port: exports fail, which must neither panic nor block the test for long.
        config.otlp_endpoint = Some("http://127.0.0.1:9".to_owned());
        let (subscriber, provider) = build(&config).expect("stack builds in a runtime");
        let guard = TelemetryGuard { provider };
        assert!(guard.otlp_enabled());

        let mut headers = async_nats::HeaderMap::new();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("publish");
            let _entered = span.enter();
            inject_nats(&mut headers);
        });
        let cx = propagation::extract_nats(&headers);
        assert!(cx.span().span_context().is_valid(), "span got real ids");

        let shutdown = tokio::task::spawn_blocking(move || guard.shutdown());
        tokio::time::timeout(std::time::Duration::from_secs(20), shutdown)
            .await
            .expect("shutdown finishes")
            .expect("shutdown task does not panic")
            .ok();
    }

    #[test]
    fn otlp_outside_a_runtime_is_an_error_not_a_panic() {
        let mut config = TelemetryConfig::new("daisi-test");
        config.otlp_endpoint = Some("http://127.0.0.1:4317".to_owned());
        let err = init(&config).expect_err("no runtime here");
        assert!(matches!(err, TelemetryError::NoTokioRuntime), "{err}");
    }
}
