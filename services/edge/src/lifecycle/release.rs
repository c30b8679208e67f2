//! Batched session release: closed sockets queue their sessions here and one task releases
//! them together every short interval, instead of one coordinator call per disconnect. During
//! the drain the queue is flushed once, in one batch, after every socket is closed.

use crate::coordinator::{Coordinator, HeldSession};
use crate::state::Edge;
use std::sync::Mutex;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long released sessions wait to be batched.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Sessions waiting for release.
#[derive(Debug, Default)]
pub struct ReleaseQueue {
    pending: Mutex<Vec<HeldSession>>,
}

impl ReleaseQueue {
    /// Queues `session`.
    pub fn push(&self, session: HeldSession) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(session);
    }

    fn take(&self) -> Vec<HeldSession> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Releases everything queued in one batch (split only at the proto limit). A failed
    /// release is not retried: the leases lapse by themselves.
    pub async fn flush(&self, edge: &Edge) -> usize {
        let sessions = self.take();
        let n = sessions.len();
        if n == 0 {
            return 0;
        }
        if let Err(error) = edge.coordinator.release(&edge.pod.pod, sessions).await {
            tracing::warn!(%error, sessions = n, "session release failed; leases will lapse");
        }
        n
    }
}

/// Flushes the queue periodically until `stop`; the drain does the last flush itself.
pub async fn run(edge: Edge, stop: CancellationToken) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                edge.releases.flush(&edge).await;
            }
        }
    }
}
