//! The health of one edge pod as this router sees it: one state shared by all the edge's
//! lanes, so every lane waits on the same clock and gives up at the same moment.
//!
//! ```text
//!            call or probe gets no answer                 grace since the first failure
//!  Healthy ───────────────────────────────► Failing(T) ─────────────────────────────► Unreachable(T)
//!     ▲  ◄──────── probe or Deliver answered ────┘                                        │
//!     └──────────────────────────── probe or Deliver answered ───────────────────────────┘
//! ```
//!
//! - **Healthy**: lanes send.
//! - **Failing since T**: T is the start of the first call that got no answer. Lanes park their
//!   batch and wait for this state to change; one prober asks the edge with a short deadline.
//! - **Unreachable since T**: once `T + grace` has passed. Every queued and new event for the
//!   edge is settled at once (dead-lettered or dropped and counted), so acknowledgements flow
//!   and the edge's events stop occupying the consumer's ack window.
//!
//! An answered probe returns the edge to healthy so the lanes try again, but the failing clock
//! is kept until a `Deliver` is answered: an edge that answers probes yet times out every
//! delivery still reaches the grace. The clock is forgotten when no failure was seen for a
//! whole grace.
//!
//! The machine is pure (no I/O, time from `tokio::time`), unit-tested with a paused clock.
//!
//! Why not a tower layer: tower has no circuit breaker, and its fail-fast pieces
//! (`load_shed` over a service that reports not ready) decide per call. What is needed here
//! is one clock per edge that parks the batches of several ordered lanes, releases them all at
//! the same moment, and settles queued events that never reach a call; that is this small
//! state machine, while the calls themselves keep tonic's deadline and the retries' pacing
//! comes from `backon`.

use parking_lot::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Where an edge stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Calls flow.
    Healthy,
    /// A call got no answer; lanes wait for the prober or the grace.
    Failing {
        /// Start of the first call that got no answer.
        since: Instant,
    },
    /// Past the grace: events for the edge fail fast.
    Unreachable {
        /// Start of the first call that got no answer.
        since: Instant,
    },
}

impl HealthState {
    /// Gauge value of `router_edge_state`: 0 healthy, 1 failing, 2 unreachable.
    pub fn as_gauge(self) -> i64 {
        match self {
            Self::Healthy => 0,
            Self::Failing { .. } => 1,
            Self::Unreachable { .. } => 2,
        }
    }

    /// Whether events for the edge are settled at once.
    pub fn fails_fast(self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

#[derive(Debug)]
struct Inner {
    state: HealthState,
    /// The failing clock: kept across answered probes, forgotten after a whole grace
    /// without failure or on an answered `Deliver`.
    failing_since: Option<Instant>,
    last_failure: Option<Instant>,
}

/// The health of one edge, shared by its lanes and its prober.
#[derive(Debug)]
pub struct EdgeHealth {
    grace: Duration,
    inner: Mutex<Inner>,
    changes: watch::Sender<HealthState>,
}

impl EdgeHealth {
    /// A healthy edge whose events are given up `grace` after it stops answering.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            inner: Mutex::new(Inner {
                state: HealthState::Healthy,
                failing_since: None,
                last_failure: None,
            }),
            changes: watch::Sender::new(HealthState::Healthy),
        }
    }

    /// The current state; a failing edge past its grace turns unreachable here.
    pub fn state(&self) -> HealthState {
        let mut inner = self.inner.lock();
        if let HealthState::Failing { since } = inner.state
            && Instant::now().duration_since(since) >= self.grace
        {
            self.set(&mut inner, HealthState::Unreachable { since });
        }
        inner.state
    }

    /// When a failing edge turns unreachable; `None` unless failing.
    pub fn fail_fast_at(&self) -> Option<Instant> {
        match self.inner.lock().state {
            HealthState::Failing { since } => Some(since + self.grace),
            _ => None,
        }
    }

    /// A `Deliver` was answered: healthy, and the failing clock is forgotten.
    pub fn delivered(&self) {
        let mut inner = self.inner.lock();
        inner.failing_since = None;
        inner.last_failure = None;
        self.set(&mut inner, HealthState::Healthy);
    }

    /// A probe was answered: healthy, so the lanes try again; the failing clock is kept until
    /// a `Deliver` is answered.
    pub fn probe_answered(&self) {
        let mut inner = self.inner.lock();
        self.set(&mut inner, HealthState::Healthy);
    }

    /// A call or probe that started at `started` got no answer. Returns the new state.
    pub fn failed(&self, started: Instant) -> HealthState {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let recent = inner
            .last_failure
            .is_some_and(|last| now.duration_since(last) < self.grace);
        let since = match inner.failing_since {
            Some(since) if recent => since,
            _ => started,
        };
        inner.failing_since = Some(since);
        inner.last_failure = Some(now);
        let next = if now.duration_since(since) >= self.grace {
            HealthState::Unreachable { since }
        } else {
            HealthState::Failing { since }
        };
        // Unreachable stays unreachable until something answers.
        if !inner.state.fails_fast() {
            self.set(&mut inner, next);
        }
        inner.state
    }

    /// Follows state changes (lanes wait on it while the edge is failing).
    pub fn subscribe(&self) -> watch::Receiver<HealthState> {
        self.changes.subscribe()
    }

    /// Wakes every waiter without a change (the pod was reported gone or moved).
    pub fn wake(&self) {
        self.changes.send_modify(|_| {});
    }

    fn set(&self, inner: &mut Inner, state: HealthState) {
        if inner.state != state {
            inner.state = state;
            self.changes.send_replace(state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn a_failure_starts_the_clock_and_the_grace_turns_it_unreachable() {
        let health = EdgeHealth::new(GRACE);
        assert_eq!(health.state(), HealthState::Healthy);
        assert_eq!(health.fail_fast_at(), None);
        let started = Instant::now();
        tokio::time::advance(Duration::from_secs(2)).await; // the call's deadline
        assert_eq!(
            health.failed(started),
            HealthState::Failing { since: started }
        );
        assert_eq!(health.fail_fast_at(), Some(started + GRACE));
        tokio::time::advance(GRACE - Duration::from_secs(2) - Duration::from_millis(1)).await;
        assert_eq!(health.state(), HealthState::Failing { since: started });
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            health.state(),
            HealthState::Unreachable { since: started },
            "no further failure needed: time alone ends the grace"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_told_of_every_change() {
        let health = EdgeHealth::new(GRACE);
        let mut changes = health.subscribe();
        let started = Instant::now();
        health.failed(started);
        assert!(changes.has_changed().expect("open"));
        assert_eq!(
            *changes.borrow_and_update(),
            HealthState::Failing { since: started }
        );
        health.failed(Instant::now());
        assert!(
            !changes.has_changed().expect("open"),
            "same state: no wake-up"
        );
        health.wake();
        assert!(changes.has_changed().expect("open"));
        changes.mark_unchanged();
        health.probe_answered();
        assert_eq!(*changes.borrow_and_update(), HealthState::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answered_probe_keeps_the_clock_until_a_delivery_is_answered() {
        let health = EdgeHealth::new(GRACE);
        let first = Instant::now();
        health.failed(first);
        tokio::time::advance(Duration::from_secs(4)).await;
        health.probe_answered();
        assert_eq!(health.state(), HealthState::Healthy);
        tokio::time::advance(Duration::from_secs(4)).await;
        // The edge answers probes but the next delivery times out again: same clock.
        assert_eq!(
            health.failed(Instant::now()),
            HealthState::Failing { since: first }
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        health.probe_answered();
        assert_eq!(
            health.failed(Instant::now()),
            HealthState::Unreachable { since: first },
            "past the grace at once"
        );
        // An answered delivery forgets everything.
        health.delivered();
        let again = Instant::now();
        assert_eq!(health.failed(again), HealthState::Failing { since: again });
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_is_forgotten_after_a_whole_grace_without_failure() {
        let health = EdgeHealth::new(GRACE);
        health.failed(Instant::now());
        health.probe_answered();
        tokio::time::advance(GRACE * 3).await;
        let later = Instant::now();
        assert_eq!(health.failed(later), HealthState::Failing { since: later });
    }

    #[tokio::test(start_paused = true)]
    async fn unreachable_stays_until_something_answers() {
        let health = EdgeHealth::new(GRACE);
        let since = Instant::now();
        health.failed(since);
        tokio::time::advance(GRACE).await;
        assert_eq!(health.state(), HealthState::Unreachable { since });
        tokio::time::advance(GRACE * 2).await;
        // Failures long after (the prober keeps asking) do not reopen the grace.
        assert!(health.failed(Instant::now()).fails_fast());
        assert!(health.state().fails_fast());
        health.probe_answered();
        assert_eq!(health.state(), HealthState::Healthy);
    }
}
