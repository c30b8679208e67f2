//! Trace context and request id carried in NATS message headers.

use super::{REQUEST_ID_HEADER, current_context, extract, inject, valid_request_id};
use async_nats::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector},
};
use std::str::FromStr;

/// Writes propagation fields into NATS headers.
#[derive(Debug)]
pub struct NatsInjector<'a>(pub &'a mut HeaderMap);

impl Injector for NatsInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // async-nats panics on invalid names given as &str, so parse both sides first.
        if let (Ok(name), Ok(value)) = (HeaderName::from_str(key), HeaderValue::from_str(&value)) {
            self.0.insert(name, value);
        }
    }
}

/// Reads propagation fields from NATS headers.
#[derive(Debug)]
pub struct NatsExtractor<'a>(pub &'a HeaderMap);

impl Extractor for NatsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        header(self.0, key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Looks a header up by name.
///
/// NATS header names are case-sensitive, but publishers outside daisi may capitalise them
/// (`Traceparent`, `X-Request-ID`): fall back to a case-insensitive match.
fn header<'a>(headers: &'a HeaderMap, key: &str) -> Option<&'a str> {
    let exact = HeaderName::from_str(key)
        .ok()
        .and_then(|name| headers.get(name));
    exact
        .or_else(|| {
            headers
                .iter()
                .find(|(name, _)| AsRef::<str>::as_ref(*name).eq_ignore_ascii_case(key))
                .and_then(|(_, values)| values.first())
        })
        .map(HeaderValue::as_str)
}

/// Injects the current span's trace context into outgoing NATS headers.
pub fn inject_nats(headers: &mut HeaderMap) {
    inject_nats_context(&current_context(), headers);
}

/// Injects `cx` (e.g. one extracted from an incoming message, to forward it) into NATS headers.
pub fn inject_nats_context(cx: &Context, headers: &mut HeaderMap) {
    inject(cx, &mut NatsInjector(headers));
}

/// Extracts the sender's trace context from NATS headers (an empty context if absent).
pub fn extract_nats(headers: &HeaderMap) -> Context {
    extract(&NatsExtractor(headers))
}

/// The sender's request id, if present and sane.
pub fn request_id_nats(headers: &HeaderMap) -> Option<&str> {
    header(headers, REQUEST_ID_HEADER).and_then(valid_request_id)
}

/// Sets the request id header on outgoing NATS headers (ignored if it is not a valid value).
pub fn set_request_id_nats(headers: &mut HeaderMap, request_id: &str) {
    NatsInjector(headers).set(REQUEST_ID_HEADER, request_id.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagation::{install_propagator, set_parent, tests::*};
    use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn round_trip_keeps_trace_and_span_id() {
        install_propagator();
        let mut headers = HeaderMap::new();
        inject_nats_context(&remote_context(), &mut headers);
        assert_eq!(
            headers.get("traceparent").map(HeaderValue::as_str),
            Some(W3C_TRACEPARENT)
        );
        let extracted = extract_nats(&headers);
        assert_eq!(
            ids(&extracted),
            (W3C_TRACE_ID.to_owned(), W3C_SPAN_ID.to_owned())
        );
    }

    #[test]
    fn w3c_example_parses_even_with_capitalised_name() {
        install_propagator();
        let mut headers = HeaderMap::new();
        headers.insert("Traceparent", W3C_TRACEPARENT);
        let extracted = extract_nats(&headers);
        assert_eq!(ids(&extracted).0, W3C_TRACE_ID);
        assert!(extracted.has_active_span());
    }

    #[test]
    fn missing_or_garbage_headers_give_an_empty_context() {
        install_propagator();
        let mut headers = HeaderMap::new();
        assert!(!extract_nats(&headers).has_active_span());
        headers.insert("traceparent", "00-not-a-trace-01");
        assert!(!extract_nats(&headers).has_active_span());
    }

    #[test]
    fn current_span_context_is_injected_as_child_of_extracted_parent() {
        install_propagator();
        // A provider without exporters: spans get real ids but go nowhere.
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let mut outgoing = HeaderMap::new();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("handle");
            set_parent(&span, remote_context());
            let _entered = span.enter();
            inject_nats(&mut outgoing);
        });
        let (trace_id, span_id) = ids(&extract_nats(&outgoing));
        assert_eq!(trace_id, W3C_TRACE_ID);
        assert_ne!(span_id, W3C_SPAN_ID, "the child span has its own id");
    }

    #[test]
    fn request_id_is_read_case_insensitively() {
        let mut headers = HeaderMap::new();
        assert_eq!(request_id_nats(&headers), None);
        headers.insert("X-Request-ID", "req-42");
        assert_eq!(request_id_nats(&headers), Some("req-42"));

        let mut ours = HeaderMap::new();
        set_request_id_nats(&mut ours, "req-43");
        assert_eq!(request_id_nats(&ours), Some("req-43"));
        set_request_id_nats(&mut ours, "bad\r\nvalue");
        assert_eq!(request_id_nats(&ours), Some("req-43"));
    }
}
