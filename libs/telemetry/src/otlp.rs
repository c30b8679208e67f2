//! The OpenTelemetry tracer provider that batches spans and ships them to an OTLP/gRPC collector.

use crate::TelemetryError;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};

/// Builds a provider exporting to `endpoint` with `service.name` set to `service_name`.
///
/// The tonic channel spawns its connection task on the current tokio runtime, so this refuses
/// to run outside one instead of letting tonic panic. The channel connects lazily: an
/// unreachable collector costs failed exports (logged by the SDK), not a failed start-up.
pub(crate) fn tracer_provider(
    service_name: &str,
    endpoint: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(TelemetryError::NoTokioRuntime);
    }
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(TelemetryError::Exporter)?;
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    // The batch processor exports from its own thread, keeping span export off request paths.
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Span, Tracer, TracerProvider};

    #[test]
    fn refuses_to_build_outside_a_runtime() {
        let err = tracer_provider("daisi-test", "http://127.0.0.1:4317")
            .expect_err("no runtime in a plain test");
        assert!(matches!(err, TelemetryError::NoTokioRuntime), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn builds_and_shuts_down_with_an_unreachable_collector() {
        // Port 9 (discard) on loopback is closed, so exports fail fast without hanging.
        let provider = tracer_provider("daisi-test", "http://127.0.0.1:9")
            .expect("provider builds inside a runtime");
        let mut span = provider.tracer("daisi-test").start("probe");
        assert!(span.span_context().is_valid());
        span.end();
        // Export to a closed port fails; shutdown must still return instead of hanging.
        let shutdown = tokio::task::spawn_blocking(move || provider.shutdown());
        tokio::time::timeout(std::time::Duration::from_secs(20), shutdown)
            .await
            .expect("shutdown finishes")
            .expect("shutdown task does not panic")
            .ok();
    }
}
