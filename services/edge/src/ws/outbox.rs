//! A socket's bounded send queue, filled by delivery and control paths, drained by the socket's
//! own task.
//!
//! Pushing never waits: a slow client must not delay the delivery call (and with it every
//! other socket of the batch). When the queue is full the slow-consumer policy applies: drop
//! the oldest frame (default) or ask the socket to close. A close request (kill, shutdown, lost
//! session) overrides queued frames: the socket sends its error frame and close, nothing else.

use crate::config::SlowConsumerPolicy;
use axum::extract::ws::Utf8Bytes;
use daisi_domain::ErrorBody;
use parking_lot::Mutex;
use std::borrow::Cow;
use std::collections::VecDeque;
use tokio::sync::Notify;

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

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Queued after dropping the oldest frame.
    DroppedOldest,
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
}

/// The send queue of one socket.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
    policy: SlowConsumerPolicy,
}

impl Outbox {
    /// An empty queue of `capacity` frames.
    pub fn new(capacity: usize, policy: SlowConsumerPolicy) -> Self {
        Self {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            capacity: capacity.max(1),
            policy,
        }
    }

    fn state(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Queues `frame` without waiting.
    pub fn push(&self, frame: Utf8Bytes) -> Pushed {
        let outcome = {
            let mut state = self.state();
            if state.closing {
                return Pushed::Closing;
            }
            if state.frames.len() < self.capacity {
                state.frames.push_back(frame);
                Pushed::Queued
            } else {
                match self.policy {
                    SlowConsumerPolicy::DropOldest => {
                        state.frames.pop_front();
                        state.frames.push_back(frame);
                        Pushed::DroppedOldest
                    }
                    SlowConsumerPolicy::Close => {
                        state.closing = true;
                        state.frames.clear();
                        state.close = Some(CloseRequest::slow_consumer());
                        Pushed::ClosedSlow
                    }
                }
            }
        };
        self.notify.notify_one();
        outcome
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
    }

    /// Whether a close was requested.
    pub fn is_closing(&self) -> bool {
        self.state().closing
    }

    /// Moves up to `max` frames into `out`, or returns the pending close request.
    pub fn take(&self, max: usize, out: &mut Vec<Utf8Bytes>) -> Option<CloseRequest> {
        let mut state = self.state();
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

    /// Frames waiting.
    pub fn depth(&self) -> usize {
        self.state().frames.len()
    }

    /// Resolves when something was pushed or a close requested since the last wait.
    pub async fn ready(&self) {
        self.notify.notified().await;
    }
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
