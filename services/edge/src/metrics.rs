//! The edge's Prometheus metrics, registered once at start-up.

use crate::http::door::DoorMetrics;
use daisi_domain::protocol::GapCause;
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

/// `edge_resyncs_total` by cause, resolved once (announced from delivery's hot path).
#[derive(Debug, Clone)]
pub struct GapCounters(Vec<(GapCause, IntCounter)>);

impl GapCounters {
    fn new(vec: &IntCounterVec) -> Self {
        Self(
            GapCause::ALL
                .iter()
                .map(|c| (*c, vec.with_label_values(&[c.as_str()])))
                .collect(),
        )
    }

    /// The counter of `cause`.
    pub fn of(&self, cause: GapCause) -> &IntCounter {
        // Every cause has an entry (built from GapCause::ALL).
        &self
            .0
            .iter()
            .find(|(c, _)| *c == cause)
            .unwrap_or(&self.0[0])
            .1
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
    /// Writes of text frames by the socket loops (one vectored write round per wake-up, or
    /// per coalescing window): `frames_out{kind="text"}` over this is frames per write.
    pub socket_writes: IntCounter,
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
    /// Kill commands by result: `closed`, `already_closing`, `ignored`, `remembered` (socket
    /// not indexed yet), `applied_at_admission` (a remembered kill hit its socket at indexing),
    /// `closed_locally` (same-pod takeover).
    pub kills: IntCounterVec,
    /// Kill commands taken from the pod's inbox (heartbeat answers), counted before they are
    /// applied (and counted in `kills`): the repair path for kills the command stream missed.
    pub inbox_kills: IntCounter,
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
    /// Connections not yet admitted (or plain HTTP), by listener (`public`, `mint`).
    pub pending_connections: IntGaugeVec,
    /// Connections the door closed, by listener and reason (`deadline`, `evicted`, `refused`).
    pub door_closes: IntCounterVec,
    /// Upgrades and token requests refused by the per-address budget (429).
    pub address_budget_refusals: IntCounter,
    /// Tokens minted, by listener (`public` in the migration window, `mint`) and kind.
    pub tokens_minted: IntCounterVec,
    /// How long connections the door closed had been accepted, by listener and reason.
    pub door_close_seconds: HistogramVec,
    /// `json.v2` sockets told they may have missed events (resync frame, or close 4008 under
    /// the close policy), by cause.
    pub resyncs: IntCounterVec,
    /// `resyncs` handles by cause.
    pub gaps: GapCounters,
    /// In-band token refreshes by outcome (`accepted`, `other_user`, `not_newer`, `invalid`).
    pub token_refreshes: IntCounterVec,
    /// Recoveries after a reconnect by outcome (`replayed`, `resync`, `failed`).
    pub recoveries: IntCounterVec,
    /// Events replayed into reconnected sockets.
    pub recovery_events: IntCounter,
    /// Session releases that did not go through, counted per session: `retried` (the call
    /// failed; sent again after a backoff), `given_up` (still failing at the retry deadline,
    /// or over the queue's bound: the session stays held until the pod's registration ends).
    pub release_failures: IntCounterVec,
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
        let resyncs = registry.counter_vec(
            "edge_resyncs_total",
            "json.v2 sockets told they may have missed events (resync frame or close 4008), by cause",
            &["cause"],
        )?;
        Ok(Self {
            gaps: GapCounters::new(&resyncs),
            resyncs,
            token_refreshes: registry.counter_vec(
                "edge_token_refreshes_total",
                "in-band token refreshes of json.v2 sockets, by outcome",
                &["outcome"],
            )?,
            recoveries: registry.counter_vec(
                "edge_recoveries_total",
                "json.v2 reconnects that asked for missed events, by outcome",
                &["outcome"],
            )?,
            recovery_events: registry.counter(
                "edge_recovery_events_total",
                "events replayed from the stream into reconnected json.v2 sockets",
            )?,
            release_failures: registry.counter_vec(
                "edge_session_release_failures_total",
                "session releases that failed, per session: retried or given_up",
                &["result"],
            )?,
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
            socket_writes: registry.counter(
                "edge_socket_writes_total",
                "writes of text frames to sockets by the socket loops (text frames out / this = frames per write)",
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
            inbox_kills: registry.counter(
                "edge_inbox_kills_total",
                "kill commands taken from the pod's inbox (heartbeat answers)",
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
            pending_connections: registry.gauge_vec(
                "edge_pending_connections",
                "connections accepted but not yet admitted sockets",
                &["listener"],
            )?,
            door_closes: registry.counter_vec(
                "edge_door_closes_total",
                "connections closed before admission: deadline passed, evicted at the cap, refused",
                &["listener", "reason"],
            )?,
            address_budget_refusals: registry.counter(
                "edge_address_budget_refusals_total",
                "upgrades and token requests refused by the per-address budget",
            )?,
            door_close_seconds: registry.histogram_vec(
                "edge_door_close_seconds",
                "time from accept to the door closing a connection (deadline, evicted)",
                &["listener", "reason"],
                vec![
                    0.1, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 12.5, 15.0, 20.0, 30.0, 60.0,
                ],
            )?,
            tokens_minted: registry.counter_vec(
                "edge_tokens_minted_total",
                "tokens minted, by listener (public: the migration window) and kind",
                &["listener", "kind"],
            )?,
        })
    }

    /// The handles of one listener's door.
    pub fn door(&self, listener: &str) -> DoorMetrics {
        DoorMetrics {
            pending: self.pending_connections.with_label_values(&[listener]),
            evicted: self.door_closes.with_label_values(&[listener, "evicted"]),
            refused: self.door_closes.with_label_values(&[listener, "refused"]),
            deadline: self.door_closes.with_label_values(&[listener, "deadline"]),
            deadline_after: self
                .door_close_seconds
                .with_label_values(&[listener, "deadline"]),
            evicted_after: self
                .door_close_seconds
                .with_label_values(&[listener, "evicted"]),
        }
    }
}
