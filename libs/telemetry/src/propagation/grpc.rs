//! Trace context and request id carried in gRPC (tonic) request metadata.

use super::{REQUEST_ID_HEADER, current_context, extract, inject, valid_request_id};
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector},
};
use tonic::metadata::{KeyRef, MetadataKey, MetadataMap, MetadataValue};

/// Writes propagation fields into gRPC metadata.
#[derive(Debug)]
pub struct GrpcInjector<'a>(pub &'a mut MetadataMap);

impl Injector for GrpcInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // Invalid keys or values are dropped: losing a trace beats failing the request.
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Reads propagation fields from gRPC metadata.
#[derive(Debug)]
pub struct GrpcExtractor<'a>(pub &'a MetadataMap);

impl Extractor for GrpcExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .map(|key| match key {
                KeyRef::Ascii(key) => key.as_str(),
                KeyRef::Binary(key) => key.as_str(),
            })
            .collect()
    }
}

/// Injects the current span's trace context into outgoing gRPC metadata.
pub fn inject_grpc(metadata: &mut MetadataMap) {
    inject_grpc_context(&current_context(), metadata);
}

/// Injects `cx` (e.g. one extracted from an incoming message, to forward it) into metadata.
pub fn inject_grpc_context(cx: &Context, metadata: &mut MetadataMap) {
    inject(cx, &mut GrpcInjector(metadata));
}

/// Extracts the caller's trace context from gRPC metadata (an empty context if absent).
pub fn extract_grpc(metadata: &MetadataMap) -> Context {
    extract(&GrpcExtractor(metadata))
}

/// A tonic client interceptor injecting the calling span's context into every request:
/// `FooClient::with_interceptor(channel, inject_grpc_interceptor)`.
pub fn inject_grpc_interceptor(
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    inject_grpc(request.metadata_mut());
    Ok(request)
}

/// The caller's request id, if present and sane.
pub fn request_id_grpc(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(valid_request_id)
}

/// Sets the request id on outgoing gRPC metadata (ignored if it is not a valid value).
pub fn set_request_id_grpc(metadata: &mut MetadataMap, request_id: &str) {
    GrpcInjector(metadata).set(REQUEST_ID_HEADER, request_id.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagation::{install_propagator, tests::*};
    use opentelemetry::trace::TraceContextExt;

    #[test]
    fn round_trip_keeps_trace_and_span_id() {
        install_propagator();
        let mut metadata = MetadataMap::new();
        inject_grpc_context(&remote_context(), &mut metadata);
        assert_eq!(
            metadata.get("traceparent").and_then(|v| v.to_str().ok()),
            Some(W3C_TRACEPARENT)
        );
        let extracted = extract_grpc(&metadata);
        assert_eq!(
            ids(&extracted),
            (W3C_TRACE_ID.to_owned(), W3C_SPAN_ID.to_owned())
        );
    }

    #[test]
    fn w3c_example_parses_to_expected_ids() {
        install_propagator();
        let mut metadata = MetadataMap::new();
        metadata.insert("traceparent", MetadataValue::from_static(W3C_TRACEPARENT));
        let extracted = extract_grpc(&metadata);
        assert_eq!(
            ids(&extracted),
            (W3C_TRACE_ID.to_owned(), W3C_SPAN_ID.to_owned())
        );
        assert!(extracted.span().span_context().is_remote());
        assert!(extracted.span().span_context().is_sampled());
    }

    #[test]
    fn interceptor_without_a_traced_span_adds_nothing() {
        install_propagator();
        let request = inject_grpc_interceptor(tonic::Request::new(())).expect("never fails");
        assert!(request.metadata().get("traceparent").is_none());
    }

    #[test]
    fn request_id_round_trip() {
        let mut metadata = MetadataMap::new();
        assert_eq!(request_id_grpc(&metadata), None);
        set_request_id_grpc(&mut metadata, "req-7");
        assert_eq!(request_id_grpc(&metadata), Some("req-7"));
        assert_eq!(
            GrpcExtractor(&metadata).keys(),
            vec![REQUEST_ID_HEADER],
            "keys are listed"
        );
    }
}
