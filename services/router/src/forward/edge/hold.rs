//! The edge's overflow hold: events beyond the backlog cap of a healthy edge wait here, in
//! dispatch order, for room in the lanes, instead of being handed back to the server.
//!
//! **Why not hand them back.** A message handed back with a delayed nak is redelivered after
//! the delay, behind the later events of its key that fitted under the cap meanwhile; and
//! JetStream does not promise to redeliver naked messages in stream order either (the delay
//! grows with each delivery). A nak does not even save a slot of the ack window: the server
//! keeps the slot until the redelivery. Holding the event keeps it in order and costs the same
//! slot, now with a hard bound.
//!
//! **Invariant (per-key order).** An event enters its lane only when no older event for this
//! edge is in the hold. The dispatcher is the only producer: it queues an event straight on its
//! lane only while the hold is empty (only the dispatcher makes it non-empty, so the check
//! cannot go stale), and otherwise behind the hold's last entry; entries leave from the front,
//! under the hold's lock, into their lane. So the events of one key enter their lane in
//! dispatch order, which is stream order, and a lane keeps that order.
//!
//! **Bounds.** At most `max_held` entries: the router sets it to the cap, or less when the ack
//! window is smaller than twice the cap, so one edge in one replica never fills the window. An entry that has waited longer than the unreachable grace when it reaches the
//! front is given up rather than sent; the front is looked at whenever a lane settles a batch
//! or an event arrives for the edge, so an entry waits at most about the grace plus one
//! `Deliver` deadline. Given-up events count toward the edge's gap notice: giving up leaves a
//! gap the edge's sockets are told about, never a reordering.

use super::Obligation;
use parking_lot::{Mutex, MutexGuard};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::time::Instant;

/// One event waiting for room.
#[derive(Debug)]
pub(super) struct Waiting {
    /// The lane of its key.
    pub lane: usize,
    /// The event and its tracker.
    pub obligation: Obligation,
    /// When it entered the hold (for the grace).
    pub since: Instant,
}

/// The hold of one edge.
#[derive(Debug, Default)]
pub(super) struct Hold {
    queue: Mutex<VecDeque<Waiting>>,
    /// Entries in `queue`, readable without the lock (the dispatcher's fast path).
    len: AtomicUsize,
}

impl Hold {
    /// Whether nothing waits. Only the dispatcher adds entries, so `true` stays true for the
    /// dispatcher until it adds one itself.
    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// The queue, locked: the caller moves entries from its front or adds one at its back.
    /// Never held across an await.
    pub fn lock(&self) -> Locked<'_> {
        Locked {
            queue: self.queue.lock(),
            len: &self.len,
        }
    }
}

/// The locked queue. The lock-free length is published when the lock is released, not on
/// each change: an entry taken from the front is enqueued on its lane before the dispatcher
/// can see an empty hold and queue a newer event of the same key straight on that lane.
pub(super) struct Locked<'a> {
    queue: MutexGuard<'a, VecDeque<Waiting>>,
    len: &'a AtomicUsize,
}

impl Locked<'_> {
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn front(&self) -> Option<&Waiting> {
        self.queue.front()
    }

    pub fn pop_front(&mut self) -> Option<Waiting> {
        self.queue.pop_front()
    }

    pub fn push_back(&mut self, waiting: Waiting) {
        self.queue.push_back(waiting);
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // Runs before the guard field is dropped, so still under the lock.
        self.len.store(self.queue.len(), Ordering::Release);
    }
}
