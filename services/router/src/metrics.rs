//! The router's Prometheus metrics, registered once at start-up (`daisi_router_*`).

use daisi_telemetry::{Metrics, TelemetryError};
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

/// Every metric the router exports.
#[derive(Debug, Clone)]
pub struct RouterMetrics {
    /// Deliveries taken from the stream (redeliveries included).
    pub consumed: IntCounter,
    /// Deliveries that were redeliveries (delivery count > 1): a router died or gave up.
    pub redelivered: IntCounter,
    /// Per (event, edge): `delivered`, `duplicate`, `rejected`, `pod_gone`, `unreachable`,
    /// `deferred` (a healthy edge's backlog and hold were full: handed back for a later
    /// redelivery), `backlog_full` (given up after waiting in the hold past the grace).
    pub forwarded: IntCounterVec,
    /// Events that waited in an edge's hold because its backlog was at the cap.
    pub edge_held: IntCounter,
    /// Messages settled, by verdict: `delivered`, `no_route`, `undeliverable` (acknowledged),
    /// `redeliver` (handed back with a delayed nak: an edge had no room in backlog nor hold).
    pub acked: IntCounterVec,
    /// Events acknowledged without reaching every target, by reason.
    pub undeliverable: IntCounterVec,
    /// Events republished to the dead-letter subject.
    pub dead_lettered: IntCounter,
    /// Settling a message with the server failed (it will be redelivered).
    pub ack_errors: IntCounter,
    /// Messages held by this router and not yet acknowledged.
    pub acks_pending: IntGauge,
    /// Messages the server holds for the consumer and has not delivered (`num_pending`).
    pub consumer_lag: IntGauge,
    /// Events per `Deliver` call.
    pub batch_size: Histogram,
    /// Duration of `Deliver` calls, by result.
    pub forward_latency: HistogramVec,
    /// Health per edge: 0 healthy, 1 failing, 2 unreachable (events fail fast).
    pub edge_state: IntGaugeVec,
    /// Failed route lookups (the coordinator did not answer).
    pub resolve_errors: IntCounter,
    /// Route lookup calls sent to the coordinator, by why: `miss` (on the event path),
    /// `refresh` (in the background, before entries in use expire).
    pub route_lookups: IntCounterVec,
    /// Queries in those calls, by why.
    pub route_queries: IntCounterVec,
    /// Messages published through the HTTP API, by outcome.
    pub published: IntCounterVec,
}

impl RouterMetrics {
    /// The route cache's counters.
    pub fn lookup_counters(&self) -> crate::resolve::cache::LookupCounters {
        crate::resolve::cache::LookupCounters {
            miss_calls: self.route_lookups.with_label_values(&["miss"]),
            miss_queries: self.route_queries.with_label_values(&["miss"]),
            refresh_calls: self.route_lookups.with_label_values(&["refresh"]),
            refresh_queries: self.route_queries.with_label_values(&["refresh"]),
        }
    }

    /// Registers every metric in `metrics`.
    pub fn register(metrics: &Metrics) -> Result<Self, TelemetryError> {
        let this = Self::new(metrics)?;
        this.start_at_zero();
        Ok(this)
    }

    /// Creates the labelled series the dashboards and alerts (deploy/) query at zero, so a
    /// healthy router exports them too and rates read 0 rather than "no data".
    fn start_at_zero(&self) {
        for verdict in ["delivered", "no_route", "undeliverable", "redeliver"] {
            self.acked.with_label_values(&[verdict]);
        }
        for outcome in [
            "delivered",
            "duplicate",
            "pod_gone",
            "rejected",
            "unreachable",
            "deferred",
            "backlog_full",
        ] {
            self.forwarded.with_label_values(&[outcome]);
        }
        for reason in [
            "malformed_subject",
            "malformed_payload",
            "rejected",
            "edge_unreachable",
            "edge_backlog_full",
            "pod_gone",
        ] {
            self.undeliverable.with_label_values(&[reason]);
        }
        for why in ["miss", "refresh"] {
            self.route_lookups.with_label_values(&[why]);
            self.route_queries.with_label_values(&[why]);
        }
        for outcome in ["ok", "failed", "invalid", "too_large", "unauthorized"] {
            self.published.with_label_values(&[outcome]);
        }
    }

    fn new(metrics: &Metrics) -> Result<Self, TelemetryError> {
        let latency_buckets = vec![
            0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            5.0,
        ];
        let batch_buckets = vec![1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
        Ok(Self {
            consumed: metrics
                .counter("router_consumed_total", "deliveries taken from the stream")?,
            redelivered: metrics.counter(
                "router_redelivered_total",
                "deliveries that were redeliveries of a message",
            )?,
            forwarded: metrics.counter_vec(
                "router_forwarded_total",
                "events forwarded to edges, per event and edge, by outcome",
                &["outcome"],
            )?,
            edge_held: metrics.counter(
                "router_edge_held_total",
                "events that waited in an edge's hold because its backlog was at the cap",
            )?,
            acked: metrics.counter_vec(
                "router_acked_total",
                "messages acknowledged, by verdict",
                &["verdict"],
            )?,
            undeliverable: metrics.counter_vec(
                "router_undeliverable_total",
                "messages acknowledged without reaching every target, by reason",
                &["reason"],
            )?,
            dead_lettered: metrics.counter(
                "router_dead_lettered_total",
                "messages republished to the dead-letter subject",
            )?,
            ack_errors: metrics.counter(
                "router_ack_errors_total",
                "acknowledgements that could not be sent",
            )?,
            acks_pending: metrics.gauge(
                "router_acks_pending",
                "messages held by this router and not yet acknowledged",
            )?,
            consumer_lag: metrics.gauge(
                "router_consumer_lag",
                "messages the server has not delivered to the consumer yet (num_pending)",
            )?,
            batch_size: metrics
                .histogram_vec(
                    "router_batch_size",
                    "events per Deliver call",
                    &[],
                    batch_buckets,
                )?
                .with_label_values(&[] as &[&str]),
            forward_latency: metrics.histogram_vec(
                "router_forward_latency_seconds",
                "duration of Deliver calls",
                &["result"],
                latency_buckets,
            )?,
            edge_state: metrics.gauge_vec(
                "router_edge_state",
                "health per edge pod: 0 healthy, 1 failing (events held), 2 unreachable (events fail fast)",
                &["edge"],
            )?,
            resolve_errors: metrics.counter(
                "router_resolve_errors_total",
                "route lookups the coordinator did not answer",
            )?,
            route_lookups: metrics.counter_vec(
                "router_route_lookups_total",
                "route lookup calls sent to the coordinator, by why (miss, refresh)",
                &["why"],
            )?,
            route_queries: metrics.counter_vec(
                "router_route_queries_total",
                "queries in route lookup calls sent to the coordinator, by why (miss, refresh)",
                &["why"],
            )?,
            published: metrics.counter_vec(
                "router_published_total",
                "messages published through POST /api/v1/publish, by outcome",
                &["outcome"],
            )?,
        })
    }
}
