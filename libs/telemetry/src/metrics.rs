//! Prometheus metrics: a per-service registry with helper constructors, and the `/metrics`
//! HTTP endpoint that serves it in the text exposition format.
//!
//! Besides the service's own `daisi_*` metrics, every registry serves `daisi_build_info` and,
//! on Linux, the standard `process_*` metrics (resident memory, open and maximum file
//! descriptors, CPU seconds, threads, start time) under their usual unprefixed names, so the
//! dashboards and troubleshooting guides written for any Prometheus client apply.

use crate::TelemetryError;
use axum::{Router, extract::State, response::IntoResponse, routing::get};
use http::header::CONTENT_TYPE;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder, core::Collector,
};
use std::collections::HashMap;

/// Prefix of every metric name (`daisi_...`), so dashboards can find ours among others.
pub const NAMESPACE: &str = "daisi";

/// Content type of the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A registry whose metrics are named `daisi_*` and labelled `service="<name>"`.
///
/// Cheap to clone (the registry is shared); register each metric once at start-up and keep
/// the returned handle.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Unprefixed standard metrics (`process_*`), labelled with the service too.
    standard: Registry,
}

impl Metrics {
    /// A fresh registry for `service` (e.g. `edge`), with `daisi_build_info` and the process
    /// collector registered.
    pub fn new(service: &str) -> Result<Self, TelemetryError> {
        let labels = HashMap::from([("service".to_owned(), service.to_owned())]);
        let registry = Registry::new_custom(Some(NAMESPACE.to_owned()), Some(labels.clone()))?;
        let standard = Registry::new_custom(None, Some(labels))?;
        let metrics = Self { registry, standard };
        metrics
            .gauge_vec(
                "build_info",
                "always 1; the labels say which build runs",
                &["version"],
            )?
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        #[cfg(target_os = "linux")]
        metrics.standard.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(metrics)
    }

    /// The registry of the service's own `daisi_*` metrics, for custom collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Registers a counter without labels.
    pub fn counter(&self, name: &str, help: &str) -> Result<IntCounter, TelemetryError> {
        self.register(IntCounter::with_opts(Opts::new(name, help))?)
    }

    /// Registers a counter with the given label names.
    pub fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, TelemetryError> {
        self.register(IntCounterVec::new(Opts::new(name, help), labels)?)
    }

    /// Registers a gauge without labels.
    pub fn gauge(&self, name: &str, help: &str) -> Result<IntGauge, TelemetryError> {
        self.register(IntGauge::with_opts(Opts::new(name, help))?)
    }

    /// Registers a gauge with the given label names.
    pub fn gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, TelemetryError> {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels)?)
    }

    /// Registers a histogram with the given label names; `buckets` are upper bounds in the
    /// observed unit (seconds for latencies, by Prometheus convention).
    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: Vec<f64>,
    ) -> Result<HistogramVec, TelemetryError> {
        let opts = HistogramOpts::new(name, help).buckets(buckets);
        self.register(HistogramVec::new(opts, labels)?)
    }

    /// Registers `metric` and hands it back; a duplicate name is an error, not a panic.
    fn register<M: Collector + Clone + 'static>(&self, metric: M) -> Result<M, TelemetryError> {
        self.registry.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    /// The current values in the text exposition format: the service's metrics, then the
    /// standard ones.
    pub fn encode(&self) -> String {
        encode_text(&[&self.registry, &self.standard])
    }

    /// An axum router serving `GET /metrics` from this registry.
    pub fn router(&self) -> Router {
        metrics_router(self.clone())
    }
}

/// Renders every metric of `registries` in the Prometheus text format.
pub fn encode_text(registries: &[&Registry]) -> String {
    let families: Vec<_> = registries.iter().flat_map(|r| r.gather()).collect();
    let mut buffer = Vec::new();
    // Encoding only fails on inconsistent metric families, which registration already rejects;
    // a partial page is still more useful to a scraper than none.
    if let Err(error) = TextEncoder::new().encode(&families, &mut buffer) {
        tracing::warn!(error = %error, "encoding metrics failed");
    }
    String::from_utf8_lossy(&buffer).into_owned()
}

/// A router with `GET /metrics`; merge it into a service's admin/health router.
pub fn metrics_router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .with_state(metrics)
}

async fn serve_metrics(State(metrics): State<Metrics>) -> impl IntoResponse {
    ([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], metrics.encode())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::{Request, StatusCode};
    use tower::ServiceExt;

    #[test]
    fn metrics_are_prefixed_and_labelled_with_the_service() {
        let metrics = Metrics::new("edge").expect("valid registry");
        let connections = metrics
            .gauge("connections", "open websocket connections")
            .expect("registers");
        connections.set(3);
        let text = metrics.encode();
        assert!(
            text.contains(r#"daisi_connections{service="edge"} 3"#),
            "{text}"
        );
    }

    #[test]
    fn build_info_and_process_metrics_come_with_every_registry() {
        let metrics = Metrics::new("edge").expect("valid registry");
        let text = metrics.encode();
        let version = format!(r#"version="{}""#, env!("CARGO_PKG_VERSION"));
        assert!(
            text.lines().any(|l| l.starts_with("daisi_build_info{")
                && l.contains(&version)
                && l.contains(r#"service="edge""#)
                && l.ends_with(" 1")),
            "{text}"
        );
        if cfg!(target_os = "linux") {
            for name in [
                "process_resident_memory_bytes{service=\"edge\"}",
                "process_open_fds{service=\"edge\"}",
                "process_max_fds{service=\"edge\"}",
                "process_cpu_seconds_total{service=\"edge\"}",
                "process_threads{service=\"edge\"}",
                "process_start_time_seconds{service=\"edge\"}",
            ] {
                let line = text
                    .lines()
                    .find(|l| l.starts_with(name))
                    .unwrap_or_else(|| panic!("{name} missing: {text}"));
                let value: f64 = line
                    .rsplit(' ')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("numeric value");
                assert!(value >= 0.0, "{line}");
            }
            let rss = text
                .lines()
                .find(|l| l.starts_with("process_resident_memory_bytes"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .expect("rss");
            assert!(
                rss > 1_000_000.0,
                "a test process holds more than 1 MB: {rss}"
            );
        }
    }

    #[test]
    fn duplicate_registration_is_an_error() {
        let metrics = Metrics::new("router").expect("valid registry");
        metrics
            .counter_vec("deliveries_total", "deliveries", &["outcome"])
            .expect("first registration");
        let err = metrics
            .counter_vec("deliveries_total", "deliveries", &["outcome"])
            .expect_err("second registration fails");
        assert!(matches!(err, TelemetryError::Metrics(_)), "{err}");
        assert!(metrics.counter("bad name", "spaces are invalid").is_err());
    }

    #[test]
    fn histograms_use_the_given_buckets() {
        let metrics = Metrics::new("coordinator").expect("valid registry");
        let latency = metrics
            .histogram_vec("rpc_seconds", "rpc latency", &["method"], vec![0.01, 0.1])
            .expect("registers");
        latency.with_label_values(&["renew"]).observe(0.05);
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"daisi_rpc_seconds_bucket{method="renew",service="coordinator",le="0.1"} 1"#
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn metrics_endpoint_serves_registered_counters() {
        let metrics = Metrics::new("edge").expect("valid registry");
        let frames = metrics
            .counter_vec("frames_sent_total", "frames sent", &["kind"])
            .expect("registers");
        frames.with_label_values(&["event"]).inc_by(7);

        let response = metrics
            .router()
            .oneshot(
                Request::get("/metrics")
                    .body(Body::empty())
                    .expect("valid request"),
            )
            .await
            .expect("router is infallible");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers().get(CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(CONTENT_TYPE_TEXT.as_bytes())
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body reads");
        let body = String::from_utf8(body.to_vec()).expect("utf-8 body");
        assert!(
            body.contains(r#"daisi_frames_sent_total{kind="event",service="edge"} 7"#),
            "{body}"
        );
    }
}
