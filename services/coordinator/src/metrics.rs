//! The coordinator's Prometheus metrics (`daisi_coordinator_*`), registered once per `run`.

use crate::store::{EndReason, StoreError};
use daisi_telemetry::{Metrics, TelemetryError};
use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge};
use std::future::Future;
use std::time::Instant;

/// Store latency buckets, in seconds: sub-millisecond Redis calls up to the 1 s timeout.
const LATENCY_BUCKETS: [f64; 12] = [
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Handles of every coordinator metric.
#[derive(Debug, Clone)]
pub(crate) struct CoordinatorMetrics {
    /// Acquires by outcome: `granted`, `refused`.
    acquires: IntCounterVec,
    /// Grants that took a session from another connection.
    takeovers: IntCounter,
    /// Sessions a renew (the edges' session audit) found still held; nothing is extended.
    renewed: IntCounter,
    /// Sessions a renew reported lost, by reason.
    lost: IntCounterVec,
    /// Sessions released.
    released: IntCounter,
    /// Kill commands raised, by reason.
    kills: IntCounterVec,
    /// Pods purged, by cause: `expired`, `deregistered`, `new_instance`.
    purges: IntCounterVec,
    /// Store call latency by operation.
    store_seconds: HistogramVec,
    /// Failed store calls by operation and kind (`unavailable` = Redis unreachable or slow).
    store_errors: IntCounterVec,
    /// Open `WatchPodCommands` streams on this replica.
    watch_streams: IntGauge,
}

/// Store operations, as labelled by the call sites of [`CoordinatorMetrics::timed`].
const STORE_OPS: [&str; 18] = [
    "acquire",
    "kill_session",
    "register_routes",
    "unregister_routes",
    "deregister",
    "get_session",
    "heartbeat",
    "list_pods",
    "list_routes",
    "list_sessions",
    "lookup_routes",
    "pod_inbox",
    "reap",
    "release",
    "renew",
    "resolve_pods",
    "select_chat",
    "watch",
];

impl CoordinatorMetrics {
    pub(crate) fn new(metrics: &Metrics) -> Result<Self, TelemetryError> {
        let this = Self::register(metrics)?;
        this.start_at_zero();
        Ok(this)
    }

    /// Creates the labelled series the dashboards and alerts (deploy/) query at zero, so a
    /// healthy coordinator exports them too and rates read 0 rather than "no data".
    fn start_at_zero(&self) {
        for outcome in ["granted", "refused"] {
            self.acquires.with_label_values(&[outcome]);
        }
        for reason in [
            EndReason::TakenOver,
            EndReason::KilledByAdmin,
            EndReason::Expired,
            EndReason::PodPurged,
        ] {
            self.lost.with_label_values(&[reason.as_str()]);
            self.kills.with_label_values(&[reason.as_str()]);
        }
        for cause in ["expired", "deregistered", "new_instance"] {
            self.purges.with_label_values(&[cause]);
        }
        for op in STORE_OPS {
            self.store_errors.with_label_values(&[op, "unavailable"]);
        }
    }

    fn register(metrics: &Metrics) -> Result<Self, TelemetryError> {
        Ok(Self {
            acquires: metrics.counter_vec(
                "coordinator_acquires_total",
                "session acquires by outcome",
                &["outcome"],
            )?,
            takeovers: metrics.counter(
                "coordinator_takeovers_total",
                "acquires that took the session from another connection",
            )?,
            renewed: metrics.counter(
                "coordinator_renewed_sessions_total",
                "sessions a renew (the edges' read-only session audit) found still held",
            )?,
            lost: metrics.counter_vec(
                "coordinator_lost_sessions_total",
                "sessions a renew reported lost, by reason",
                &["reason"],
            )?,
            released: metrics.counter(
                "coordinator_released_sessions_total",
                "sessions released by their connection",
            )?,
            kills: metrics.counter_vec(
                "coordinator_kills_total",
                "kill commands raised, by reason",
                &["reason"],
            )?,
            purges: metrics.counter_vec(
                "coordinator_pod_purges_total",
                "pods purged with their sessions and routes, by cause",
                &["cause"],
            )?,
            store_seconds: metrics.histogram_vec(
                "coordinator_store_seconds",
                "latency of store calls",
                &["op"],
                LATENCY_BUCKETS.to_vec(),
            )?,
            store_errors: metrics.counter_vec(
                "coordinator_store_errors_total",
                "failed store calls by operation and kind",
                &["op", "kind"],
            )?,
            watch_streams: metrics.gauge(
                "coordinator_watch_streams",
                "open WatchPodCommands streams on this replica",
            )?,
        })
    }

    /// Awaits a store call, recording its latency and failure.
    pub(crate) async fn timed<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        self.store_seconds
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = &result {
            self.store_errors
                .with_label_values(&[op, error.kind()])
                .inc();
        }
        result
    }

    pub(crate) fn acquired(&self, granted: bool, took_over: bool) {
        let outcome = if granted { "granted" } else { "refused" };
        self.acquires.with_label_values(&[outcome]).inc();
        if took_over {
            self.takeovers.inc();
            self.killed(EndReason::TakenOver);
        }
    }

    pub(crate) fn renewed(&self, renewed: usize, lost: impl Iterator<Item = EndReason>) {
        self.renewed.inc_by(renewed as u64);
        for reason in lost {
            self.lost.with_label_values(&[reason.as_str()]).inc();
        }
    }

    pub(crate) fn released(&self, count: u32) {
        self.released.inc_by(u64::from(count));
    }

    pub(crate) fn killed(&self, reason: EndReason) {
        self.kills.with_label_values(&[reason.as_str()]).inc();
    }

    pub(crate) fn purged(&self, cause: &'static str) {
        self.purges.with_label_values(&[cause]).inc();
    }

    /// Counts a stream as open until the guard drops.
    pub(crate) fn watch_stream(&self) -> StreamGuard {
        self.watch_streams.inc();
        StreamGuard(self.watch_streams.clone())
    }
}

/// Decrements the open-streams gauge when dropped.
#[derive(Debug)]
pub(crate) struct StreamGuard(IntGauge);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
