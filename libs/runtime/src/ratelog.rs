//! Logging that cannot flood: a burst of malformed messages or a dead edge is logged once per
//! key and interval, with the number of occurrences suppressed in between.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// Grants at most one log line per key and interval.
#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    keys: Mutex<HashMap<String, (Instant, u64)>>,
}

impl RateLimit {
    /// One line per key every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(suppressed)` when a line for `key` may be written now, with how many were
    /// suppressed since the last one; `None` to stay quiet.
    pub fn check(&self, key: &str) -> Option<u64> {
        let mut keys = self.keys.lock();
        let now = Instant::now();
        if keys.len() > 10_000 {
            // Keys come from a small set of reasons and pods; this only guards against a bug.
            keys.clear();
        }
        match keys.get_mut(key) {
            Some((last, suppressed)) if now.duration_since(*last) < self.interval => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                *last = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                keys.insert(key.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_interval_with_the_count_of_the_rest() {
        let limit = RateLimit::new(Duration::from_secs(10));
        assert_eq!(limit.check("a"), Some(0));
        assert_eq!(limit.check("a"), None);
        assert_eq!(limit.check("a"), None);
        assert_eq!(limit.check("b"), Some(0));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(limit.check("a"), Some(2));
    }
}
