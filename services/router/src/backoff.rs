//! Jittered exponential backoff for reconnects and retries, on `backon`: many routers
//! retrying a recovering dependency must not arrive in lockstep. This wrapper only adds what
//! the loops here need around backon's iterator: a delay by attempt number (the NATS client's
//! reconnect callback asks that way), an attempt count for rate-limited logs, and a reset.

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::time::Duration;

/// Delays doubling from `base` up to `max`, each drawn from the upper half of its step
/// (`[step/2, step)`): never near zero, never above `max`, yet replicas spread out.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    current: ExponentialBackoff,
    max: Duration,
    attempts: u32,
}

impl Backoff {
    /// A backoff starting at `base`, capped at `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        let max = max.max(base);
        // backon's jitter adds up to 100 % of the step: halve the steps to stay within them.
        let builder = ExponentialBuilder::default()
            .with_min_delay(base / 2)
            .with_max_delay(max / 2)
            .with_jitter()
            .without_max_times();
        Self {
            current: builder.build(),
            builder,
            max,
            attempts: 0,
        }
    }

    /// The delay of retry number `attempt` (0-based), jittered.
    pub fn delay(&self, attempt: usize) -> Duration {
        self.builder.build().nth(attempt).unwrap_or(self.max)
    }

    /// The next delay, counting the attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.attempts = self.attempts.saturating_add(1);
        self.current.next().unwrap_or(self.max)
    }

    /// Attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Back to `base` after a success.
    pub fn reset(&mut self) {
        self.current = self.builder.build();
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_bounded() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let b = Backoff::new(base, max);
        for attempt in 0..40 {
            let d = b.delay(attempt);
            let step = base.saturating_mul(1 << attempt.min(20)).min(max);
            assert!(d >= step / 2 && d <= step, "{attempt}: {d:?}");
        }
        let mut b = b;
        assert!(b.next_delay() <= base);
        assert!(b.next_delay() >= base);
        assert_eq!(b.attempts(), 2);
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert!(b.next_delay() <= base, "back to base");
    }
}
