//! Exponential backoff with full jitter, for reconnects and retries: many routers retrying a
//! recovering dependency must not arrive in lockstep.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// Delays growing from `base` to `max`, each drawn uniformly from the upper half of the
/// current step (so a delay is never near zero, yet replicas spread out).
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempts: u32,
}

impl Backoff {
    /// A backoff starting at `base`, capped at `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            attempts: 0,
        }
    }

    /// The delay of retry number `attempt` (0-based), jittered.
    pub fn delay(&self, attempt: usize) -> Duration {
        let shift = u32::try_from(attempt).unwrap_or(u32::MAX).min(20);
        let step = self.base.saturating_mul(1 << shift).min(self.max);
        let half = step / 2;
        half + half.mul_f64(random_unit())
    }

    /// The next delay, counting the attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.delay(self.attempts as usize);
        self.attempts = self.attempts.saturating_add(1);
        delay
    }

    /// Attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Back to `base` after a success.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

/// A number in `[0, 1)` from the process's randomly seeded hasher: jitter needs no
/// cryptographic quality and this avoids a dependency.
fn random_unit() -> f64 {
    let bits = RandomState::new().hash_one(std::time::Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_bounded() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 0..40 {
            let d = b.delay(attempt);
            let step = Duration::from_millis(100)
                .saturating_mul(1 << attempt.min(20))
                .min(Duration::from_secs(2));
            assert!(d >= step / 2 && d <= step, "{attempt}: {d:?}");
        }
        let mut b = b;
        b.next_delay();
        b.next_delay();
        assert_eq!(b.attempts(), 2);
        b.reset();
        assert_eq!(b.attempts(), 0);
    }
}
