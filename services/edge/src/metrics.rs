//! The edge's Prometheus metrics, registered once at start-up.

use daisi_telemetry::{Metrics, TelemetryError};
use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

/// The socket loop's per-frame counters, resolved once: a labelled lookup hashes and locks,
/// which the hot path should not do per frame.
#[derive(Debug, Clone)]
pub struct FrameCounters {
    /// Client text frames.
    pub text_in: IntCounter,
    /// Client binary frames (ignored, but counted and rate limited).
    pub binary_in: IntCounter,
    /// Client pings.
    pub ping_in: IntCounter,
    /// Client pongs.
    pub pong_in: IntCounter,
    /// Text frames written.
    pub text_out: IntCounter,
}

impl FrameCounters {
    fn new(frames_in: &IntCounterVec, frames_out: &IntCounterVec) -> Self {
        Self {
            text_in: frames_in.with_label_values(&["text"]),
            binary_in: frames_in.with_label_values(&["binary"]),
            ping_in: frames_in.with_label_values(&["ping"]),
            pong_in: frames_in.with_label_values(&["pong"]),
            text_out: frames_out.with_label_values(&["text"]),
        }
    }
}

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
    /// `frames_in` / `frames_out` handles of the socket loop.
    pub frames: FrameCounters,
    /// `select_chat` requests by outcome: `selected`, `coalesced` (replaced by a newer one
    /// before it was sent), `failed`, `session_lost`, `abandoned` (the socket closed first).
    pub chat_selections: IntCounterVec,
    /// Sockets whose `select_chat` is on its way to the coordinator (a selection task runs).
    pub chat_selections_pending: IntGauge,
}

impl EdgeMetrics {
    /// Registers the metrics in `registry`.
    pub fn new(registry: &Metrics) -> Result<Self, TelemetryError> {
        let frames_in =
            registry.counter_vec("edge_frames_in_total", "client frames received", &["kind"])?;
        let frames_out = registry.counter_vec(
            "edge_frames_out_total",
            "frames written to clients",
            &["kind"],
        )?;
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
            frames: FrameCounters::new(&frames_in, &frames_out),
            frames_in,
            frames_out,
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
                "client frames refused by the per-socket rate limit",
            )?,
            chat_selections: registry.counter_vec(
                "edge_chat_selections_total",
                "select_chat requests by outcome",
                &["outcome"],
            )?,
            chat_selections_pending: registry.gauge(
                "edge_chat_selections_pending",
                "sockets whose select_chat is on its way to the coordinator",
            )?,
        })
    }
}
