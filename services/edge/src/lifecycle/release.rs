//! Batched session release: closed sockets queue their sessions here and one task releases
//! them together every short interval, instead of one coordinator call per disconnect. During
//! the drain the queue is flushed once, in one batch, after every socket is closed.
//!
//! Abandoned connections (an acquire whose answer was lost, `HeldSession::abandoned`) ride in
//! the same batches, but unlike closed sockets' sessions they are kept and sent again until the
//! coordinator answers (for [`ABANDON_FOR`]): their release is what stops a late-applied
//! acquire. Once it is done, the route the acquire carried goes to the route syncer and a
//! route reconciliation is asked for (the acquire may have restored a chat route).

use crate::coordinator::{Coordinator, HeldSession, Route};
use crate::state::Edge;
use parking_lot::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long released sessions wait to be batched.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// How long an abandon is sent again while the coordinator does not answer. Past it the
/// session lease would have lapsed anyway; a late acquire is refused for the coordinator's
/// tombstone lifetime, which is longer.
pub const ABANDON_FOR: Duration = Duration::from_secs(30);

/// Most abandons kept while the coordinator does not answer (an outage during a connect storm);
/// beyond, the oldest are given up (their leases lapse).
const MAX_ABANDONS: usize = 100_000;

/// An abandoned connection and the route its acquire carried.
#[derive(Debug)]
struct Abandon {
    session: HeldSession,
    route: Route,
    until: Instant,
}

#[derive(Debug, Default)]
struct Pending {
    released: Vec<HeldSession>,
    abandoned: Vec<Abandon>,
}

/// Sessions waiting for release.
#[derive(Debug, Default)]
pub struct ReleaseQueue {
    pending: Mutex<Pending>,
}

impl ReleaseQueue {
    /// Queues `session`.
    pub fn push(&self, session: HeldSession) {
        self.lock().released.push(session);
    }

    /// Queues the abandon of a connection whose acquire (carrying `route`) was not answered.
    pub fn abandon(&self, session: HeldSession, route: Route) {
        let mut pending = self.lock();
        if pending.abandoned.len() >= MAX_ABANDONS {
            pending.abandoned.remove(0);
        }
        pending.abandoned.push(Abandon {
            session,
            route,
            until: Instant::now() + ABANDON_FOR,
        });
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock()
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *self.lock())
    }

    /// Releases everything queued in one batch (split only at the proto limit). A failed
    /// release of closed sockets is not retried (the leases lapse by themselves); abandons are
    /// queued again.
    pub async fn flush(&self, edge: &Edge) -> usize {
        let Pending {
            released,
            abandoned,
        } = self.take();
        let n = released.len() + abandoned.len();
        if n == 0 {
            return 0;
        }
        let mut sessions = released;
        sessions.extend(abandoned.iter().map(|a| a.session.clone()));
        match edge.coordinator.release(&edge.pod.pod, sessions).await {
            Ok(()) if abandoned.is_empty() => {}
            Ok(()) => {
                let routes = &edge.registry.routes;
                for abandon in abandoned {
                    // Unregistered by the syncer unless a socket counts it.
                    routes.retain(abandon.route.clone());
                    routes.release(&abandon.route);
                }
                routes.request_reconcile();
            }
            Err(error) => {
                tracing::warn!(%error, sessions = n, "session release failed; leases will lapse, abandons are retried");
                let now = Instant::now();
                let mut pending = self.lock();
                let kept = abandoned.into_iter().filter(|a| a.until > now);
                let room = MAX_ABANDONS.saturating_sub(pending.abandoned.len());
                let kept: Vec<Abandon> = kept.take(room).collect();
                pending.abandoned.splice(0..0, kept);
            }
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
