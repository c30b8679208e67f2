//! Trace context across the router: the NATS message's `traceparent` becomes the parent of the
//! router's span for the event, and that span (or, when traces are not exported, the
//! publisher's context unchanged) is what the edge receives, per event and on the call.

use daisi_telemetry::propagation::{current_context, set_parent};
use opentelemetry::Context;
use opentelemetry::trace::TraceContextExt;
use std::collections::HashMap;

/// The context described by W3C headers (empty when absent or invalid).
pub fn context_of(traceparent: Option<&str>, tracestate: Option<&str>) -> Context {
    let Some(traceparent) = traceparent else {
        return Context::new();
    };
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    if let Some(state) = tracestate {
        carrier.insert("tracestate".to_owned(), state.to_owned());
    }
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier))
}

/// W3C headers of `cx`, if it carries a valid span.
fn headers_of(cx: &Context) -> Option<(String, Option<String>)> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::with_capacity(2);
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(cx, &mut carrier));
    let parent = carrier.remove("traceparent")?;
    Some((parent, carrier.remove("tracestate")))
}

/// Runs `f` inside a span `router.event` whose parent is the message's context, and returns
/// the trace headers the edge should continue: the span's own when traces are exported, the
/// message's otherwise.
pub fn event_headers(
    stream_sequence: u64,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> (Option<String>, Option<String>) {
    if traceparent.is_none() {
        return (None, None);
    }
    let span = tracing::info_span!("router.event", stream_sequence);
    set_parent(&span, context_of(traceparent, tracestate));
    let own = span.in_scope(|| headers_of(&current_context()));
    match own {
        Some((parent, state)) => (Some(parent), state),
        None => (
            traceparent.map(str::to_owned),
            tracestate.map(str::to_owned),
        ),
    }
}
