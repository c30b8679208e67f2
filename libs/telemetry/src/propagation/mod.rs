//! W3C trace-context propagation across service boundaries (NATS headers, gRPC metadata) and
//! the `x-request-id` correlation header.
//!
//! Receivers extract a [`Context`] and make it the parent of their handling span
//! ([`set_parent`]); senders inject the current span's context (`inject_*`) or forward an
//! extracted one unchanged (`inject_*_context`), which also works while OTLP export is off.

mod grpc;
mod nats;

pub use grpc::{
    GrpcExtractor, GrpcInjector, extract_grpc, inject_grpc, inject_grpc_context,
    inject_grpc_interceptor, request_id_grpc, set_request_id_grpc,
};
pub use nats::{
    NatsExtractor, NatsInjector, extract_nats, inject_nats, inject_nats_context, request_id_nats,
    set_request_id_nats,
};

use opentelemetry::{
    Context, global,
    propagation::{Extractor, Injector},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::{OpenTelemetrySpanExt, SetParentError};

/// Correlation id header, lowercase because gRPC metadata keys must be.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest request id we accept from a peer; longer ones are ignored rather than logged.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Makes W3C `traceparent`/`tracestate` the process-wide propagation format.
///
/// [`crate::init`] calls it; tests that skip `init` call it themselves. Idempotent.
pub fn install_propagator() {
    global::set_text_map_propagator(TraceContextPropagator::new());
}

/// The OpenTelemetry context of the current tracing span (empty when OTLP export is off).
pub fn current_context() -> Context {
    tracing::Span::current().context()
}

/// Makes `parent` (usually extracted from an incoming message) the parent of `span`.
///
/// Call it right after creating the span, before entering it. Without the OpenTelemetry layer
/// (OTLP off) there is nothing to attach to and the call does nothing.
pub fn set_parent(span: &tracing::Span, parent: Context) {
    match span.set_parent(parent) {
        Ok(()) | Err(SetParentError::LayerNotFound | SetParentError::SpanDisabled) => {}
        Err(error) => tracing::debug!(error = %error, "span parent not set"),
    }
}

fn inject(cx: &Context, injector: &mut dyn Injector) {
    global::get_text_map_propagator(|propagator| propagator.inject_context(cx, injector));
}

fn extract(extractor: &dyn Extractor) -> Context {
    global::get_text_map_propagator(|propagator| propagator.extract(extractor))
}

/// Accepts a peer's request id only if it is short, non-empty, visible ASCII: it ends up in
/// every log line of the request.
fn valid_request_id(value: &str) -> Option<&str> {
    let value = value.trim();
    let valid = !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value.bytes().all(|b| b.is_ascii_graphic());
    valid.then_some(value)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };

    /// The example of the W3C Trace Context recommendation.
    pub(crate) const W3C_TRACEPARENT: &str =
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    pub(crate) const W3C_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
    pub(crate) const W3C_SPAN_ID: &str = "b7ad6b7169203331";

    /// A context as if received from a peer with the W3C example ids.
    pub(crate) fn remote_context() -> Context {
        let span_context = SpanContext::new(
            TraceId::from_hex(W3C_TRACE_ID).expect("valid trace id"),
            SpanId::from_hex(W3C_SPAN_ID).expect("valid span id"),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        Context::new().with_remote_span_context(span_context)
    }

    pub(crate) fn ids(cx: &Context) -> (String, String) {
        let span = cx.span();
        let sc = span.span_context();
        (sc.trace_id().to_string(), sc.span_id().to_string())
    }

    #[test]
    fn request_ids_are_validated() {
        assert_eq!(valid_request_id(" abc-123 "), Some("abc-123"));
        assert_eq!(valid_request_id(""), None);
        assert_eq!(valid_request_id("has space"), None);
        assert_eq!(valid_request_id("line\nbreak"), None);
        assert_eq!(valid_request_id(&"x".repeat(MAX_REQUEST_ID_LEN + 1)), None);
    }

    #[test]
    fn set_parent_without_otel_layer_is_harmless() {
        let span = tracing::info_span!("orphan");
        set_parent(&span, remote_context());
        assert!(!current_context().span().span_context().is_valid());
    }
}
