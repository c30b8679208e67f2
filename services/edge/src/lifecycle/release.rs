//! Batched session release: closed sockets queue their sessions here and one task releases
//! them together every short interval, instead of one coordinator call per disconnect. During
//! the drain the queue is flushed once, in one batch, after every socket is closed.
//!
//! Sessions have no lease of their own any more: a release that is lost keeps the session held
//! (by a closed socket) until the pod's registration ends, and an if-vacant acquire of that
//! user elsewhere is refused meanwhile. So a failed release is sent again, with a jittered
//! exponential backoff (200 ms doubling to 10 s, on `backon`), until [`RETRY_FOR`] after it
//! was queued; each failure is counted (`daisi_edge_session_release_failures_total`). The
//! deadline is long because a coordinator that stays unreachable that long has stopped this
//! pod's heartbeats too: its registration lapsed, and its sessions with it.
//!
//! Abandoned connections (an acquire whose answer was lost, `HeldSession::abandoned`) ride in
//! the same batches and are retried the same way: their release is what stops a late-applied
//! acquire. Once it is done, the route the acquire carried goes to the route syncer and a
//! route reconciliation is asked for (the acquire may have restored a chat route).

use crate::coordinator::{Coordinator, CoordinatorError, HeldSession, Route};
use crate::state::Edge;
use backon::{BackoffBuilder, ExponentialBuilder};
use parking_lot::{Mutex, MutexGuard};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long released sessions wait to be batched.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Longest wait between two attempts while releases keep failing.
const RETRY_MAX: Duration = Duration::from_secs(10);

/// How long a release or an abandon is sent again while the coordinator does not take it.
/// Well past the pod lease: by then a coordinator that never answered has let the pod's
/// registration lapse, which frees its sessions.
pub const RETRY_FOR: Duration = Duration::from_secs(600);

/// Most releases, and most abandons, kept while the coordinator does not answer (an outage
/// during a disconnect storm); beyond, the oldest are given up (and counted).
const MAX_PENDING: usize = 100_000;

/// A queued release, sent until `until`.
#[derive(Debug)]
struct Release {
    session: HeldSession,
    until: Instant,
}

/// An abandoned connection and the route its acquire carried.
#[derive(Debug)]
struct Abandon {
    session: HeldSession,
    route: Route,
    until: Instant,
}

#[derive(Debug, Default)]
struct Pending {
    released: VecDeque<Release>,
    abandoned: VecDeque<Abandon>,
}

/// Sessions waiting for release.
#[derive(Debug, Default)]
pub struct ReleaseQueue {
    pending: Mutex<Pending>,
    /// Entries dropped at the bound since the last flush (counted there as given up).
    overflowed: AtomicU64,
}

/// What one [`ReleaseQueue::flush`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Sessions sent (released and abandoned).
    pub sent: usize,
    /// The call failed: what is still within its deadline was queued again.
    pub failed: bool,
}

impl ReleaseQueue {
    /// Queues `session`.
    pub fn push(&self, session: HeldSession) {
        let mut pending = self.lock();
        if pending.released.len() >= MAX_PENDING {
            pending.released.pop_front();
            self.overflowed.fetch_add(1, Ordering::Relaxed);
        }
        pending.released.push_back(Release {
            session,
            until: Instant::now() + RETRY_FOR,
        });
    }

    /// Queues the abandon of a connection whose acquire (carrying `route`) was not answered.
    pub fn abandon(&self, session: HeldSession, route: Route) {
        let mut pending = self.lock();
        if pending.abandoned.len() >= MAX_PENDING {
            pending.abandoned.pop_front();
            self.overflowed.fetch_add(1, Ordering::Relaxed);
        }
        pending.abandoned.push_back(Abandon {
            session,
            route,
            until: Instant::now() + RETRY_FOR,
        });
    }

    /// Sessions waiting (released and abandoned).
    pub fn len(&self) -> usize {
        let pending = self.lock();
        pending.released.len() + pending.abandoned.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock()
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *self.lock())
    }

    /// Releases everything queued in one batch (split only at the proto limit). On failure,
    /// what is within its deadline is queued again (in front of newer entries) and the rest
    /// given up; the caller waits a backoff before the next flush.
    pub async fn flush(&self, edge: &Edge) -> Flushed {
        let failures = &edge.metrics.release_failures;
        let overflowed = self.overflowed.swap(0, Ordering::Relaxed);
        if overflowed > 0 {
            failures.with_label_values(&["given_up"]).inc_by(overflowed);
        }
        let Pending {
            released,
            abandoned,
        } = self.take();
        let sent = released.len() + abandoned.len();
        if sent == 0 {
            return Flushed {
                sent,
                failed: false,
            };
        }
        let mut sessions: Vec<HeldSession> = released.iter().map(|r| r.session.clone()).collect();
        sessions.extend(abandoned.iter().map(|a| a.session.clone()));
        let error = match edge.coordinator.release(&edge.pod.pod, sessions).await {
            Ok(()) => {
                if !abandoned.is_empty() {
                    let routes = &edge.registry.routes;
                    for abandon in abandoned {
                        // Unregistered by the syncer unless a socket counts it.
                        routes.retain(abandon.route.clone());
                        routes.release(&abandon.route);
                    }
                    routes.request_reconcile();
                }
                return Flushed {
                    sent,
                    failed: false,
                };
            }
            Err(error) => error,
        };
        // The coordinator does not know the pod: its registration ended, and with it every
        // session it held. Abandons are kept: the pod's next registration could still be
        // granted a late acquire.
        let released = if matches!(error, CoordinatorError::UnknownPod) {
            edge.heartbeat_now.notify_one();
            VecDeque::new()
        } else {
            released
        };
        let now = Instant::now();
        let (released, late): (Vec<_>, Vec<_>) = released.into_iter().partition(|r| r.until > now);
        let (abandoned, late_abandons): (Vec<_>, Vec<_>) =
            abandoned.into_iter().partition(|a| a.until > now);
        let given_up = late.len() + late_abandons.len();
        let retried = released.len() + abandoned.len();
        tracing::warn!(%error, sessions = sent, retried, given_up, "session release failed");
        failures
            .with_label_values(&["retried"])
            .inc_by(u64::try_from(retried).unwrap_or(u64::MAX));
        failures
            .with_label_values(&["given_up"])
            .inc_by(u64::try_from(given_up).unwrap_or(u64::MAX));
        let mut pending = self.lock();
        let dropped =
            requeue(&mut pending.released, released) + requeue(&mut pending.abandoned, abandoned);
        self.overflowed.fetch_add(
            u64::try_from(dropped).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        Flushed { sent, failed: true }
    }
}

/// Puts `older` back in front of `queue`, keeping at most [`MAX_PENDING`] (the newest);
/// answers how many were dropped.
fn requeue<T>(queue: &mut VecDeque<T>, older: Vec<T>) -> usize {
    let room = MAX_PENDING.saturating_sub(queue.len());
    let skip = older.len().saturating_sub(room);
    for item in older.into_iter().skip(skip).rev() {
        queue.push_front(item);
    }
    skip
}

/// Flushes the queue every `FLUSH_EVERY`, backing off while flushes fail, until `stop`; the
/// drain does the last flush itself.
pub async fn run(edge: Edge, stop: CancellationToken) {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(FLUSH_EVERY)
        // backon's jitter adds up to one more step: halve the cap to stay within RETRY_MAX.
        .with_max_delay(RETRY_MAX / 2)
        .with_jitter()
        .without_max_times();
    let mut delays = backoff.build();
    let mut wait = FLUSH_EVERY;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = if edge.releases.flush(&edge).await.failed {
            delays.next().unwrap_or(RETRY_MAX)
        } else {
            delays = backoff.build();
            FLUSH_EVERY
        };
    }
}
