//! The reaper: purges pods whose lease lapsed, with all their sessions and routes, so a crashed
//! pod's state disappears within about one pod lease instead of timing out session by session.
//! Runs on every replica; the store claims each pod atomically, so concurrent reapers never
//! purge a pod twice nor one that heartbeated meanwhile (the Redis store then sweeps the
//! claimed pod in bounded chunks, so a pod of 50,000 sessions never blocks Redis at once).

use crate::metrics::CoordinatorMetrics;
use crate::store::SessionStore;
use daisi_runtime::CancellationToken;
use std::sync::Arc;
use std::time::Duration;

/// How often to look for expired pods: a quarter of the lease (so purges land within 1.25
/// leases of the last heartbeat), bounded so tiny test leases do not spin and long ones still
/// purge promptly.
pub(crate) fn interval(pod_lease: Duration) -> Duration {
    (pod_lease / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
}

/// Reaps until `stop`.
pub(crate) async fn run<S: SessionStore>(
    store: Arc<S>,
    metrics: CoordinatorMetrics,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match metrics.timed("reap", store.reap_expired_pods()).await {
            Ok(purged) => {
                for (pod, counts) in purged {
                    metrics.purged("expired");
                    tracing::info!(
                        %pod,
                        sessions = counts.sessions,
                        routes = counts.routes,
                        "purged a pod whose lease lapsed"
                    );
                }
            }
            // Redis being down is already visible in health and metrics; no log per tick.
            Err(error) => tracing::debug!(%error, "reaper pass failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_is_a_bounded_quarter_lease() {
        assert_eq!(interval(Duration::from_secs(30)), Duration::from_secs(5));
        assert_eq!(interval(Duration::from_secs(1)), Duration::from_millis(250));
        assert_eq!(
            interval(Duration::from_millis(10)),
            Duration::from_millis(50)
        );
    }
}
