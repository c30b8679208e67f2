//! Per-socket frame rate limit: a token bucket for the rate and burst, and a count of
//! refusals in a window so a client that keeps flooding is closed (4429) while one that bursts
//! now and then only loses the frames over the limit.
//!
//! Every client frame draws from the same bucket: text, binary, ping and pong alike, so a
//! client cannot make the socket work for free with control frames. What a refusal costs the
//! client differs by frame (see the socket loop): a refused text frame is answered with a
//! `RateLimitExceeded` error frame, a refused control or binary frame is dropped silently.
//!
//! Time is tokio's, so paused-time tests drive it.

use std::time::Duration;
use tokio::time::Instant;

/// Window in which refusals are counted towards closing the socket.
const STRIKE_WINDOW: Duration = Duration::from_secs(10);

/// The decision for one client frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handle it.
    Allow,
    /// Drop it and tell the client.
    Refuse,
    /// Drop it and close the socket: the client keeps exceeding the limit.
    Close,
}

/// One socket's limiter.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    close_after: u32,
    strikes: u32,
    window_start: Instant,
}

impl RateLimiter {
    /// `rate` frames per second sustained, `burst` at once, closing after `close_after`
    /// refusals within ten seconds.
    pub fn new(rate: u32, burst: u32, close_after: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
            close_after: close_after.max(1),
            strikes: 0,
            window_start: now,
        }
    }

    /// Decides about a frame arriving at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        if now.saturating_duration_since(self.window_start) > STRIKE_WINDOW {
            self.window_start = now;
            self.strikes = 0;
        }
        self.strikes += 1;
        if self.strikes >= self.close_after {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_bursts_then_refuses_then_closes() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(10, 3, 3, t0);
        assert_eq!(limiter.check(t0), Verdict::Allow);
        assert_eq!(limiter.check(t0), Verdict::Allow);
        assert_eq!(limiter.check(t0), Verdict::Allow);
        assert_eq!(limiter.check(t0), Verdict::Refuse);
        // 100 ms later one token is back.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(limiter.check(t1), Verdict::Allow);
        assert_eq!(limiter.check(t1), Verdict::Refuse);
        assert_eq!(limiter.check(t1), Verdict::Close);
    }

    #[test]
    fn strikes_expire_with_the_window() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(1, 1, 2, t0);
        assert_eq!(limiter.check(t0), Verdict::Allow);
        assert_eq!(limiter.check(t0), Verdict::Refuse);
        let later = t0 + STRIKE_WINDOW + Duration::from_millis(1);
        assert_eq!(limiter.check(later), Verdict::Allow);
        assert_eq!(limiter.check(later), Verdict::Refuse);
    }
}
