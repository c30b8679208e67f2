//! A per-edge circuit breaker: after a run of failures the edge gets a rest before one probe
//! call; a success closes it. While open, lanes wait instead of hammering a dead address, and
//! the wait grows with repeated failed probes.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Consecutive failures that open the breaker.
const OPEN_AFTER: u32 = 3;
/// First rest; doubles per failed probe up to [`MAX_REST`].
const FIRST_REST: Duration = Duration::from_millis(250);
const MAX_REST: Duration = Duration::from_secs(5);

/// The breaker's position, also exported as a gauge (0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls wait until the rest is over.
    Open,
    /// One probe call is allowed.
    HalfOpen,
}

impl BreakerState {
    /// Gauge value.
    pub fn as_gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
struct Inner {
    failures: u32,
    rest: Duration,
    open_until: Option<Instant>,
    probing: bool,
}

/// Circuit breaker of one edge, shared by its lanes.
#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<Inner>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                failures: 0,
                rest: FIRST_REST,
                open_until: None,
                probing: false,
            }),
        }
    }
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long to wait before calling; `None` means call now. A caller told to call while
    /// the breaker is half-open is the probe.
    pub fn wait(&self) -> Option<Duration> {
        let mut inner = self.lock();
        let until = inner.open_until?;
        let now = Instant::now();
        if now < until {
            return Some(until - now);
        }
        if inner.probing {
            // Someone else probes; check back shortly.
            return Some(Duration::from_millis(50));
        }
        inner.probing = true;
        None
    }

    /// The edge answered.
    pub fn success(&self) {
        let mut inner = self.lock();
        inner.failures = 0;
        inner.rest = FIRST_REST;
        inner.open_until = None;
        inner.probing = false;
    }

    /// The edge did not answer.
    pub fn failure(&self) {
        let mut inner = self.lock();
        inner.failures = inner.failures.saturating_add(1);
        if inner.probing {
            inner.probing = false;
            inner.rest = (inner.rest * 2).min(MAX_REST);
            inner.open_until = Some(Instant::now() + inner.rest);
        } else if inner.open_until.is_none() && inner.failures >= OPEN_AFTER {
            inner.open_until = Some(Instant::now() + inner.rest);
        }
    }

    /// Current position.
    pub fn state(&self) -> BreakerState {
        let inner = self.lock();
        match inner.open_until {
            None => BreakerState::Closed,
            Some(until) if Instant::now() < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_failures_then_probes_once() {
        let b = Breaker::default();
        assert_eq!(b.wait(), None);
        for _ in 0..OPEN_AFTER {
            b.failure();
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.wait().is_some());
        tokio::time::advance(FIRST_REST).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.wait(), None, "the first caller probes");
        assert!(b.wait().is_some(), "others wait for the probe");
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.wait(), Some(FIRST_REST * 2), "rest doubles");
        tokio::time::advance(FIRST_REST * 2).await;
        assert_eq!(b.wait(), None);
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.wait(), None);
    }
}
