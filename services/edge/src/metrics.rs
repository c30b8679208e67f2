//! The edge's Prometheus metrics, registered once at start-up.

use daisi_telemetry::{Metrics, TelemetryError};
use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

/// Every metric the edge exports (`daisi_edge_*`).
#[derive(Debug, Clone)]
pub struct EdgeMetrics {
    /// Open sockets by kind (`user`, `admin`).
    pub sockets: IntGaugeVec,
    /// Sockets opened, by kind.
    pub connects: IntCounterVec,
    /// Sockets closed, by reason.
    pub disconnects: IntCounterVec,
    /// Refused upgrades and token requests, by reason.
    pub auth_failures: IntCounterVec,
    /// Upgrades whose API key and token were accepted, by kind (`user`, `admin`).
    pub auth_successes: IntCounterVec,
    /// Lifetime of sockets that ran, by kind, observed when they close.
    pub connection_seconds: HistogramVec,
    /// Upgrades refused for capacity, draining or coordinator trouble, by reason.
    pub rejected: IntCounterVec,
    /// Client frames received, by kind.
    pub frames_in: IntCounterVec,
    /// Frames written to sockets, by kind.
    pub frames_out: IntCounterVec,
    /// Events handed to a socket queue (one per socket reached).
    pub events_delivered: IntCounter,
    /// Events received over gRPC, by outcome.
    pub events_received: IntCounterVec,
    /// Frames dropped by the drop-oldest policy.
    pub queue_drops: IntCounter,
    /// Sockets closed by the close-slow-consumer policy.
    pub slow_consumer_closes: IntCounter,
    /// Frames waiting in send queues, summed over sockets.
    pub queue_depth: IntGauge,
    /// Kill commands received, by result (`closed`, `ignored`).
    pub kills: IntCounterVec,
    /// Session acquire latency, by outcome.
    pub acquire_seconds: HistogramVec,
    /// Client messages refused by the rate limit.
    pub rate_limited: IntCounter,
}

impl EdgeMetrics {
    /// Registers the metrics in `registry`.
    pub fn new(registry: &Metrics) -> Result<Self, TelemetryError> {
        Ok(Self {
            sockets: registry.gauge_vec("edge_sockets", "open websockets", &["kind"])?,
            connects: registry.counter_vec(
                "edge_connects_total",
                "websockets opened",
                &["kind"],
            )?,
            disconnects: registry.counter_vec(
                "edge_disconnects_total",
                "websockets closed",
                &["reason"],
            )?,
            auth_failures: registry.counter_vec(
                "edge_auth_failures_total",
                "requests refused by authentication",
                &["reason"],
            )?,
            auth_successes: registry.counter_vec(
                "edge_auth_successes_total",
                "upgrades whose API key and token were accepted",
                &["kind"],
            )?,
            connection_seconds: registry.histogram_vec(
                "edge_connection_duration_seconds",
                "lifetime of websockets, observed when they close",
                &["kind"],
                // 0.1 s to about 27 h, doubling: the old service's buckets plus two.
                prometheus::exponential_buckets(0.1, 2.0, 21)?,
            )?,
            rejected: registry.counter_vec(
                "edge_upgrades_rejected_total",
                "upgrades refused before authentication mattered (capacity, draining, coordinator)",
                &["reason"],
            )?,
            frames_in: registry.counter_vec(
                "edge_frames_in_total",
                "client frames received",
                &["kind"],
            )?,
            frames_out: registry.counter_vec(
                "edge_frames_out_total",
                "frames written to clients",
                &["kind"],
            )?,
            events_delivered: registry.counter(
                "edge_events_delivered_total",
                "event frames queued to sockets",
            )?,
            events_received: registry.counter_vec(
                "edge_events_received_total",
                "events received from routers",
                &["outcome"],
            )?,
            queue_drops: registry.counter(
                "edge_send_queue_drops_total",
                "frames dropped because a socket's send queue was full",
            )?,
            slow_consumer_closes: registry.counter(
                "edge_slow_consumer_closes_total",
                "sockets closed because they could not keep up",
            )?,
            queue_depth: registry.gauge(
                "edge_send_queue_frames",
                "frames waiting in socket send queues",
            )?,
            kills: registry.counter_vec(
                "edge_kill_commands_total",
                "kill commands received",
                &["result"],
            )?,
            acquire_seconds: registry.histogram_vec(
                "edge_session_acquire_seconds",
                "latency of session acquisition before the upgrade",
                &["outcome"],
                vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ],
            )?,
            rate_limited: registry.counter(
                "edge_rate_limited_total",
                "client messages refused by the per-socket rate limit",
            )?,
        })
    }
}
