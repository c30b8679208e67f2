//! Integration tests of the process-global parts: `init` installs the subscriber and the
//! propagator exactly once. One test only, because the global subscriber cannot be reset.

use daisi_telemetry::{TelemetryConfig, TelemetryError, init, propagation};
use opentelemetry::trace::TraceContextExt;

#[test]
fn init_installs_once_and_propagation_works_without_otlp() {
    let config = TelemetryConfig::from_lookup("daisi-test", |name| match name {
        "DAISI_LOG_FORMAT" => Some("pretty".to_owned()),
        "RUST_LOG" => Some("debug".to_owned()),
        _ => None,
    })
    .expect("valid config");

    let guard = init(&config).expect("first init succeeds");
    assert!(!guard.otlp_enabled());
    tracing::info!(check = "subscriber", "log line from the integration test");

    let err = init(&config).expect_err("second init fails");
    assert!(matches!(err, TelemetryError::AlreadyInitialized), "{err}");

    // init installed the W3C propagator globally, so extraction works with OTLP off.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    );
    let cx = propagation::extract_nats(&headers);
    assert_eq!(
        cx.span().span_context().trace_id().to_string(),
        "0af7651916cd43dd8448eb211c80319c"
    );

    guard.shutdown().expect("nothing to flush");
}
