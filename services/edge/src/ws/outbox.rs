//! A socket's bounded send queue, filled by delivery and control paths, drained by the socket's
//! own task.
//!
//! Pushing never waits: a slow client must not delay the delivery call (and with it every
//! other socket of the batch). When the queue is full the slow-consumer policy applies: drop
//! the oldest frame (default) or ask the socket to close. A close request (kill, shutdown, lost
//! session) overrides queued frames: the socket sends its error frame and close, nothing else.
//!
//! A `json.v2` socket's queue also remembers a *gap*: whenever it may have missed an event
//! (its own drop-oldest, or a gap the edge announces), the socket task sends one
//! `{"type":"resync"}` frame ahead of the frames still queued, at most once per
//! [`RESYNC_INTERVAL`]; gaps announced meanwhile are folded into that one frame. Under the
//! close policy a gap closes the socket with 4008 instead. While a recovery replays history
//! the queue *holds* live events aside (bounded), so the replay and the live stream meet
//! without a gap and without a duplicate ([`Outbox::release`]).
//!
//! With a write coalescing window (`DAISI_EDGE_WRITE_COALESCE`) the socket task, within a
//! window that has frames waiting, [defers](Outbox::defer): frames pushed until its next take
//! queue up without waking it (it comes back on its own timer at the window's end and writes
//! them together). Close requests and gaps (announced by the edge, or opened by this queue
//! dropping its oldest frame) still wake it at once. The queue's bound and the slow-consumer policy
//! are the same either way: a window longer than the queue's capacity over a socket's event
//! rate drops frames (drop-oldest) or closes the socket (close policy).

use crate::config::SlowConsumerPolicy;
use daisi_domain::ErrorBody;
use daisi_domain::protocol::GapCause;
use parking_lot::Mutex;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// At most one resync frame per socket per this interval: a client reloading its state should
/// not be told again while it reloads.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Close code for a socket closed because it could not keep up (4008: policy, "slow
/// consumer"); the client reconnects and catches up from its backend.
pub const SLOW_CONSUMER_CLOSE: u16 = 4008;

/// Why a socket is asked to close, for the disconnect metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// Another connection took the session (kill command, same-pod takeover).
    SessionConflict,
    /// The coordinator reported the session lost.
    SessionLost,
    /// The edge is shutting down.
    Shutdown,
    /// The send queue overflowed under the close policy.
    SlowConsumer,
    /// The socket itself broke a rule (pong timeout, rate limit, size limit).
    Protocol,
}

impl CloseCause {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionConflict => "session_conflict",
            Self::SessionLost => "session_lost",
            Self::Shutdown => "shutdown",
            Self::SlowConsumer => "slow_consumer",
            Self::Protocol => "protocol",
        }
    }
}

/// A request to close the socket: optional error frame first, then the close frame.
#[derive(Debug, Clone)]
pub struct CloseRequest {
    /// Sent as `{"type":"error",...}` before the close frame.
    pub error: Option<ErrorBody>,
    /// Close code.
    pub code: u16,
    /// Close reason.
    pub reason: Cow<'static, str>,
    /// For metrics.
    pub cause: CloseCause,
}

impl CloseRequest {
    /// The compat takeover close: SessionConflict frame, then 4402.
    pub fn session_conflict(cause: CloseCause) -> Self {
        Self {
            error: Some(ErrorBody::session_conflict()),
            code: daisi_domain::error_code::close::SESSION_CONFLICT,
            reason: Cow::Borrowed(daisi_domain::error_code::close::SESSION_TAKEN_OVER_REASON),
            cause,
        }
    }

    /// The compat shutdown close: "Service shutting down" frame, then 1001.
    pub fn shutdown() -> Self {
        Self {
            error: Some(ErrorBody::shutting_down()),
            code: daisi_domain::error_code::close::GOING_AWAY,
            reason: Cow::Borrowed(daisi_domain::error_code::close::SHUTTING_DOWN_REASON),
            cause: CloseCause::Shutdown,
        }
    }

    fn slow_consumer() -> Self {
        Self {
            error: None,
            code: SLOW_CONSUMER_CLOSE,
            reason: Cow::Borrowed("Slow consumer"),
            cause: CloseCause::SlowConsumer,
        }
    }
}

/// Live events a recovery may set aside, at least (the send queue's size otherwise).
const HELD_MIN: usize = 4096;

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Queued after dropping the oldest frame.
    DroppedOldest,
    /// `json.v2`: set aside while a recovery runs; queued when it ends, unless the replay
    /// wrote it already. Either way the socket gets it.
    Held,
    /// `json.v2`: not queued, a recovery replayed it to the socket already.
    Repeat,
    /// `json.v2`: not queued, the events a recovery holds overflowed their bound (the
    /// recovery ends in a resync).
    HeldOverflow,
    /// Not queued: the queue was full and the socket is now asked to close.
    ClosedSlow,
    /// Not queued: the socket is closing anyway.
    Closing,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Utf8Bytes>,
    close: Option<CloseRequest>,
    /// Set once a close was requested, so later pushes and closes are no-ops.
    closing: bool,
    /// `json.v2`: a gap to announce with the next resync frame (the first cause wins).
    gap: Option<GapCause>,
    /// `json.v2`: no resync frame before this instant.
    resync_after: Option<Instant>,
    /// While a recovery runs: live events set aside with their stream sequences and epochs.
    held: Option<VecDeque<(u64, u64, Utf8Bytes)>>,
    /// The held events overflowed their bound: the recovery ends in a resync.
    held_overflow: bool,
    /// The last sequence a recovery replayed: a live event of the same epoch at or below it (a
    /// router's retry or a JetStream redelivery of an event this socket got from the replay)
    /// is a repeat.
    floor: u64,
    /// The stream epoch of `floor` (sequences of another epoch are not comparable with it).
    floor_epoch: u64,
    /// The socket task waits out its write coalescing window and comes back on its timer:
    /// pushed frames need not wake it. Cleared by the next [`Outbox::take`].
    deferred: bool,
}

/// How a gap announcement was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announced {
    /// A resync frame is on its way (or one already was pending).
    Resync,
    /// The close policy applies: the socket closes with 4008.
    Closed,
    /// Nothing to do: a `json.v1` socket, or one closing anyway.
    Ignored,
}

/// The send queue of one socket.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
    policy: SlowConsumerPolicy,
    /// `json.v2`: gaps are announced.
    announces_gaps: bool,
    /// Test seam: runs in [`Self::release`] as soon as its lock is let go, where a delivery on
    /// another thread may push.
    #[cfg(test)]
    after_release_lock: Option<fn(&Outbox)>,
}

impl Outbox {
    /// An empty queue of `capacity` frames.
    pub fn new(capacity: usize, policy: SlowConsumerPolicy) -> Self {
        Self {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            capacity: capacity.max(1),
            policy,
            announces_gaps: false,
            #[cfg(test)]
            after_release_lock: None,
        }
    }

    /// The queue of a `json.v2` socket: gaps are announced.
    pub fn announcing_gaps(mut self) -> Self {
        self.announces_gaps = true;
        self
    }

    /// Whether gaps are announced (a `json.v2` socket).
    pub fn announces_gaps(&self) -> bool {
        self.announces_gaps
    }

    /// Tells the socket it may have missed events: a resync frame soon, or (close policy) a
    /// close with 4008.
    pub fn announce_gap(&self, cause: GapCause) -> Announced {
        if !self.announces_gaps {
            return Announced::Ignored;
        }
        {
            let mut state = self.state();
            if state.closing {
                return Announced::Ignored;
            }
            if self.policy == SlowConsumerPolicy::Close {
                state.closing = true;
                state.frames.clear();
                state.held = None;
                state.close = Some(CloseRequest::slow_consumer());
            } else if state.gap.is_none() {
                state.gap = Some(cause);
            }
        }
        self.notify.notify_one();
        if self.policy == SlowConsumerPolicy::Close {
            Announced::Closed
        } else {
            Announced::Resync
        }
    }

    /// The gap to announce now, if one is pending and the rate limit allows it; the caller
    /// sends its resync frame ahead of the queued frames.
    pub fn take_resync(&self, now: Instant) -> Option<GapCause> {
        let mut state = self.state();
        state.gap?;
        if state.resync_after.is_some_and(|at| now < at) {
            return None;
        }
        state.resync_after = Some(now + RESYNC_INTERVAL);
        state.gap.take()
    }

    /// When a pending gap may be announced (the socket task sets a timer), if one is pending.
    pub fn resync_due(&self) -> Option<Instant> {
        let state = self.state();
        state.gap?;
        Some(state.resync_after.unwrap_or_else(Instant::now))
    }

    /// Queues the `json.v2` frame of the event at stream sequence `seq` of stream `epoch`: set
    /// aside while a recovery runs, queued otherwise.
    pub fn push_event(&self, frame: Utf8Bytes, seq: u64, epoch: u64) -> Pushed {
        let (outcome, wake) = {
            let mut state = self.state();
            if state.closing {
                return Pushed::Closing;
            }
            if seq != 0 && seq <= state.floor && same_epoch(epoch, state.floor_epoch) {
                return Pushed::Repeat;
            }
            let capacity = self.capacity;
            if let Some(held) = state.held.as_mut() {
                // Bounded like the queue (the replay itself is bounded by its window).
                if held.len() < capacity.max(HELD_MIN) {
                    held.push_back((seq, epoch, frame));
                    return Pushed::Held;
                }
                state.held_overflow = true;
                return Pushed::HeldOverflow;
            }
            // Under the lock that found no hold: a hold ending meanwhile cannot slip its
            // events in behind this one.
            self.enqueue(&mut state, frame)
        };
        if wake {
            self.notify.notify_one();
        }
        outcome
    }

    /// Starts setting live events aside (a recovery begins).
    pub fn hold(&self) {
        let mut state = self.state();
        if state.held.is_none() {
            state.held = Some(VecDeque::new());
            state.held_overflow = false;
        }
    }

    /// Ends the hold: the events set aside are queued in arrival order, except those the
    /// replay covered: of the stream epoch `replayed` names, at or below its sequence. `None`
    /// when nothing was replayed against a known epoch (the client's position could not be
    /// checked, or named another stream): then every held event is queued and no floor is
    /// set. `false` when the held events overflowed their bound (the caller announces a gap).
    pub fn release(&self, replayed: Option<(u64, u64)>) -> bool {
        let (overflow, wake) = {
            let mut state = self.state();
            if let Some((epoch, seq)) = replayed {
                if state.floor_epoch != epoch {
                    state.floor = 0;
                }
                state.floor_epoch = epoch;
                state.floor = state.floor.max(seq);
            }
            let overflow = std::mem::take(&mut state.held_overflow);
            // Queued under the same lock that ends the hold: a delivery on another thread
            // either still finds the hold (and its event is held behind these) or finds these
            // queued ahead of its own. Queued one by one after unlocking, a newer event of the
            // same key could overtake them.
            let mut wake = false;
            for (seq, epoch, frame) in state.held.take().unwrap_or_default() {
                let covered = replayed.is_some_and(|(replayed_epoch, replayed_seq)| {
                    seq != 0 && seq <= replayed_seq && same_epoch(epoch, replayed_epoch)
                });
                if covered {
                    continue;
                }
                let (outcome, wakes) = self.enqueue(&mut state, frame);
                wake |= wakes;
                if matches!(outcome, Pushed::ClosedSlow | Pushed::Closing) {
                    break;
                }
            }
            (overflow, wake)
        };
        #[cfg(test)]
        if let Some(seam) = self.after_release_lock {
            seam(self);
        }
        if wake {
            self.notify.notify_one();
        }
        !overflow
    }

    fn state(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Queues `frame` without waiting.
    pub fn push(&self, frame: Utf8Bytes) -> Pushed {
        let (outcome, wake) = self.enqueue(&mut self.state(), frame);
        if wake {
            self.notify.notify_one();
        }
        outcome
    }

    /// Queues `frame` under the slow-consumer policy; the outcome and whether the socket task
    /// is to be woken.
    fn enqueue(&self, state: &mut State, frame: Utf8Bytes) -> (Pushed, bool) {
        if state.closing {
            return (Pushed::Closing, false);
        }
        let mut gap_opened = false;
        let outcome = if state.frames.len() < self.capacity {
            state.frames.push_back(frame);
            Pushed::Queued
        } else {
            match self.policy {
                SlowConsumerPolicy::DropOldest => {
                    state.frames.pop_front();
                    state.frames.push_back(frame);
                    if self.announces_gaps && state.gap.is_none() {
                        state.gap = Some(GapCause::DropOldest);
                        gap_opened = true;
                    }
                    Pushed::DroppedOldest
                }
                SlowConsumerPolicy::Close => {
                    state.closing = true;
                    state.frames.clear();
                    state.close = Some(CloseRequest::slow_consumer());
                    Pushed::ClosedSlow
                }
            }
        };
        // A deferring task comes back by itself, except for a close or a gap to announce:
        // those must not wait for the window (a gap wakes it once per announcement at most).
        let wake = !state.deferred || outcome == Pushed::ClosedSlow || gap_opened;
        (outcome, wake)
    }

    /// The socket task starts waiting out its write coalescing window: frames pushed until
    /// its next [`Self::take`] queue up without waking it. It must come back on its own by
    /// then (its timer is armed at the window's end).
    pub fn defer(&self) {
        self.state().deferred = true;
    }

    /// Defers (see [`Self::defer`]) if frames are queued; whether it did. A task inside its
    /// window calls this: an empty queue lets it sleep with no timer for the window, and the
    /// next push wakes it.
    pub fn defer_if_queued(&self) -> bool {
        let mut state = self.state();
        state.deferred = !state.frames.is_empty();
        state.deferred
    }

    /// The pending close request, if any; queued frames stay (a deferring task checks for a
    /// close without taking the frames it lets wait).
    pub fn take_close(&self) -> Option<CloseRequest> {
        self.state().close.take()
    }

    /// Asks the socket to close; `false` when it was already closing.
    pub fn close(&self, request: CloseRequest) -> bool {
        {
            let mut state = self.state();
            if state.closing {
                return false;
            }
            state.closing = true;
            state.frames.clear();
            state.close = Some(request);
        }
        self.notify.notify_one();
        true
    }

    /// The socket's task ended: queued frames are dropped, later pushes and closes are
    /// no-ops, and [`Self::is_closing`] tells a pending selection not to bother.
    pub fn shut(&self) {
        let mut state = self.state();
        state.closing = true;
        state.frames = VecDeque::new();
        state.close = None;
        state.held = None;
    }

    /// Whether a close was requested.
    pub fn is_closing(&self) -> bool {
        self.state().closing
    }

    /// Moves up to `max` frames into `out`, or returns the pending close request.
    pub fn take(&self, max: usize, out: &mut Vec<Utf8Bytes>) -> Option<CloseRequest> {
        let mut state = self.state();
        state.deferred = false;
        if let Some(close) = state.close.take() {
            return Some(close);
        }
        let n = state.frames.len().min(max);
        out.extend(state.frames.drain(..n));
        if !state.frames.is_empty() {
            // More than one batch waiting: make sure the socket task comes back.
            self.notify.notify_one();
        }
        None
    }

    /// Moves up to `max` queued frames into `out`, leaving a pending close request in place.
    pub fn take_frames(&self, max: usize, out: &mut Vec<Utf8Bytes>) {
        let mut state = self.state();
        let n = state.frames.len().min(max);
        out.extend(state.frames.drain(..n));
    }

    /// Gives back the room the queue grew to, once it is empty: an idle socket keeps none.
    pub fn trim(&self) {
        let mut state = self.state();
        if state.frames.is_empty() && state.frames.capacity() > 0 {
            state.frames = VecDeque::new();
        }
    }

    /// Frames waiting.
    pub fn depth(&self) -> usize {
        self.state().frames.len()
    }

    /// Resolves when something was pushed or a close requested since the last wait.
    pub async fn ready(&self) {
        self.notify.notified().await;
    }
}

/// Whether an event of `epoch` belongs to the stream epoch `of` (0: a router that sends no
/// epoch, taken to be the same stream).
fn same_epoch(epoch: u64, of: u64) -> bool {
    epoch == 0 || epoch == of
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(outbox: &Outbox) -> Vec<String> {
        let mut out = Vec::new();
        assert!(outbox.take(100, &mut out).is_none());
        out.iter().map(|f| f.as_str().to_owned()).collect()
    }

    #[test]
    fn drop_oldest_keeps_the_newest_frames() {
        let outbox = Outbox::new(2, SlowConsumerPolicy::DropOldest);
        assert_eq!(outbox.push("a".into()), Pushed::Queued);
        assert_eq!(outbox.push("b".into()), Pushed::Queued);
        assert_eq!(outbox.push("c".into()), Pushed::DroppedOldest);
        assert_eq!(frames(&outbox), ["b", "c"]);
    }

    #[test]
    fn close_policy_asks_to_close_once() {
        let outbox = Outbox::new(1, SlowConsumerPolicy::Close);
        assert_eq!(outbox.push("a".into()), Pushed::Queued);
        assert_eq!(outbox.push("b".into()), Pushed::ClosedSlow);
        assert_eq!(outbox.push("c".into()), Pushed::Closing);
        let close = outbox.take(10, &mut Vec::new()).expect("close requested");
        assert_eq!(close.code, SLOW_CONSUMER_CLOSE);
        assert!(!outbox.close(CloseRequest::shutdown()));
    }

    #[tokio::test(start_paused = true)]
    async fn v2_gaps_become_one_rate_limited_resync() {
        let outbox = Outbox::new(1, SlowConsumerPolicy::DropOldest).announcing_gaps();
        outbox.push("a".into());
        assert_eq!(outbox.push("b".into()), Pushed::DroppedOldest);
        assert_eq!(outbox.announce_gap(GapCause::PodPurge), Announced::Resync);
        let now = Instant::now();
        assert_eq!(outbox.take_resync(now), Some(GapCause::DropOldest));
        assert_eq!(outbox.take_resync(now), None, "folded into one");
        outbox.announce_gap(GapCause::RouterGiveUp);
        assert_eq!(outbox.take_resync(now), None, "rate limited");
        assert_eq!(outbox.resync_due(), Some(now + RESYNC_INTERVAL));
        assert_eq!(
            outbox.take_resync(now + RESYNC_INTERVAL),
            Some(GapCause::RouterGiveUp)
        );
        assert_eq!(frames(&outbox), ["b"]);
        let v1 = Outbox::new(1, SlowConsumerPolicy::DropOldest);
        v1.push("a".into());
        v1.push("b".into());
        assert_eq!(v1.announce_gap(GapCause::PodPurge), Announced::Ignored);
        assert_eq!(v1.take_resync(now), None);
    }

    #[test]
    fn v2_gap_under_the_close_policy_closes_4008() {
        let outbox = Outbox::new(4, SlowConsumerPolicy::Close).announcing_gaps();
        outbox.push("a".into());
        assert_eq!(
            outbox.announce_gap(GapCause::RouterGiveUp),
            Announced::Closed
        );
        let close = outbox.take(10, &mut Vec::new()).expect("close");
        assert_eq!(close.code, SLOW_CONSUMER_CLOSE);
    }

    const E1: u64 = 1_764_441_600_000_000_000;
    const E2: u64 = E1 + 1;

    #[test]
    fn held_events_meet_the_replay_without_duplicates() {
        let outbox = Outbox::new(8, SlowConsumerPolicy::DropOldest).announcing_gaps();
        outbox.push("ready".into());
        outbox.hold();
        for seq in [5, 6, 7] {
            assert_eq!(
                outbox.push_event(format!("e{seq}").into(), seq, E1),
                Pushed::Held
            );
        }
        assert_eq!(frames(&outbox), ["ready"], "held events wait");
        assert!(outbox.release(Some((E1, 6))));
        assert_eq!(frames(&outbox), ["e7"]);
        assert_eq!(outbox.push_event("e8".into(), 8, E1), Pushed::Queued);
        assert_eq!(frames(&outbox), ["e8"], "live again");
        assert_eq!(outbox.push_event("e6 again".into(), 6, E1), Pushed::Repeat);
        assert!(
            frames(&outbox).is_empty(),
            "a redelivery of a replayed event"
        );
        // The stream is recreated while the socket lives: its sequences start over.
        outbox.push_event("new e1".into(), 1, E2);
        assert_eq!(
            frames(&outbox),
            ["new e1"],
            "another epoch is not below the floor"
        );
    }

    #[test]
    fn without_a_replay_in_a_known_epoch_nothing_held_is_dropped() {
        let outbox = Outbox::new(8, SlowConsumerPolicy::DropOldest).announcing_gaps();
        outbox.hold();
        // The client came back from E1:4711; the stream is now E2 at 30.
        for seq in [31, 32] {
            outbox.push_event(format!("e{seq}").into(), seq, E2);
        }
        assert!(outbox.release(None));
        assert_eq!(frames(&outbox), ["e31", "e32"]);
        outbox.push_event("e33".into(), 33, E2);
        assert_eq!(frames(&outbox), ["e33"], "no floor was set");
        // A replay in E2 up to 40 covers held events of E2 only.
        outbox.hold();
        outbox.push_event("e40".into(), 40, E2);
        outbox.push_event("old e7".into(), 7, E1);
        outbox.push_event("e41".into(), 41, E2);
        assert!(outbox.release(Some((E2, 40))));
        assert_eq!(frames(&outbox), ["old e7", "e41"]);
    }

    /// A delivery that pushes the moment a recovery's release lets go of the lock (another
    /// thread) finds the held events queued already: its event goes after them, not before.
    #[test]
    fn a_push_racing_the_release_goes_after_the_held_events() {
        let mut outbox = Outbox::new(8, SlowConsumerPolicy::DropOldest).announcing_gaps();
        outbox.after_release_lock = Some(|outbox| {
            assert_eq!(outbox.push_event("e6".into(), 6, E1), Pushed::Queued);
        });
        outbox.hold();
        outbox.push_event("e4".into(), 4, E1);
        outbox.push_event("e5".into(), 5, E1);
        assert!(outbox.release(Some((E1, 4))));
        assert_eq!(frames(&outbox), ["e5", "e6"], "per-key order kept");
    }

    /// Live events beyond the hold's bound are not queued, and the release says so.
    #[test]
    fn events_beyond_the_hold_are_dropped_and_said_so() {
        let outbox = Outbox::new(1, SlowConsumerPolicy::DropOldest).announcing_gaps();
        outbox.hold();
        for seq in 1..=HELD_MIN as u64 {
            assert_eq!(outbox.push_event("e".into(), seq, E1), Pushed::Held);
        }
        assert_eq!(
            outbox.push_event("one too many".into(), HELD_MIN as u64 + 1, E1),
            Pushed::HeldOverflow
        );
        assert!(!outbox.release(Some((E1, HELD_MIN as u64))), "overflowed");
        outbox.close(CloseRequest::shutdown());
        assert_eq!(outbox.push_event("late".into(), 9999, E1), Pushed::Closing);
    }

    /// Held events released into a queue too small for them meet its policy, as if pushed.
    #[tokio::test(start_paused = true)]
    async fn released_events_obey_the_queue_bound() {
        let outbox = Outbox::new(2, SlowConsumerPolicy::DropOldest).announcing_gaps();
        outbox.hold();
        for seq in 1..=3 {
            outbox.push_event(format!("e{seq}").into(), seq, E1);
        }
        assert!(outbox.release(None));
        assert_eq!(
            outbox.take_resync(Instant::now()),
            Some(GapCause::DropOldest)
        );
        assert_eq!(frames(&outbox), ["e2", "e3"]);

        let slow = Outbox::new(2, SlowConsumerPolicy::Close).announcing_gaps();
        slow.hold();
        for seq in 1..=3 {
            slow.push_event(format!("e{seq}").into(), seq, E1);
        }
        slow.release(None);
        let close = slow.take(10, &mut Vec::new()).expect("closed");
        assert_eq!(close.code, SLOW_CONSUMER_CLOSE);
    }

    /// While the socket task defers, pushes do not wake it (it comes back on its timer), a
    /// close still does, and the next take ends the deferral.
    #[tokio::test(start_paused = true)]
    async fn a_deferring_task_is_woken_only_for_a_close() {
        use std::time::Duration;
        async fn woken(outbox: &Outbox) -> bool {
            tokio::time::timeout(Duration::from_secs(1), outbox.ready())
                .await
                .is_ok()
        }
        let outbox = Outbox::new(2, SlowConsumerPolicy::DropOldest);
        outbox.defer();
        outbox.push("a".into());
        outbox.push("b".into());
        assert_eq!(outbox.push("c".into()), Pushed::DroppedOldest, "same bound");
        assert!(!woken(&outbox).await, "pushes wait for the task's timer");
        assert!(outbox.take_close().is_none());
        assert_eq!(frames(&outbox), ["b", "c"], "take ends the deferral");
        outbox.push("d".into());
        assert!(woken(&outbox).await, "pushes wake the task again");

        outbox.defer();
        outbox.push("e".into());
        assert!(outbox.close(CloseRequest::shutdown()));
        assert!(woken(&outbox).await, "a close wakes a deferring task");
        assert_eq!(outbox.take_close().map(|c| c.code), Some(1001));

        // Inside a window with nothing queued the task sleeps undeferred: a push wakes it.
        let lazy = Outbox::new(4, SlowConsumerPolicy::DropOldest);
        assert!(!lazy.defer_if_queued());
        lazy.push("a".into());
        assert!(
            woken(&lazy).await,
            "the first frame within the window wakes the task"
        );
        assert!(lazy.defer_if_queued(), "which then defers");
        lazy.push("b".into());
        assert!(!woken(&lazy).await, "later frames wait for its timer");

        let slow = Outbox::new(1, SlowConsumerPolicy::Close);
        slow.push("a".into());
        slow.defer();
        assert_eq!(slow.push("b".into()), Pushed::ClosedSlow);
        assert!(woken(&slow).await, "a slow-consumer close wakes it too");
    }

    #[test]
    fn close_overrides_queued_frames() {
        let outbox = Outbox::new(8, SlowConsumerPolicy::DropOldest);
        outbox.push("a".into());
        assert!(outbox.close(CloseRequest::session_conflict(CloseCause::SessionConflict)));
        let mut out = Vec::new();
        let close = outbox.take(10, &mut out).expect("close");
        assert!(out.is_empty());
        assert_eq!(close.code, 4402);
    }
}
