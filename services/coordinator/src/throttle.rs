//! Rate-limited logging: a condition that repeats on every call (a store outage, a malformed
//! entry that every heartbeat reads again) is logged at most once per period, with a count of
//! the repeats left out, so one line says what an operator needs to know.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Lets one event through per period, across threads, and counts the others.
#[derive(Debug)]
pub(crate) struct Throttle {
    /// Least time between two events let through, in ms.
    period_ms: u64,
    /// When the last event went through (ms since the epoch; 0: never).
    last: AtomicU64,
    /// Events held back since then.
    held_back: AtomicU64,
}

impl Throttle {
    /// A throttle that lets the first event through, then one per `period`.
    pub(crate) const fn new(period: Duration) -> Self {
        Self {
            period_ms: period.as_secs() * 1000 + period.subsec_millis() as u64,
            last: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(events held back since the last one let through)` when this event may be logged,
    /// `None` when it is held back.
    pub(crate) fn admit(&self) -> Option<u64> {
        self.admit_at(now_ms())
    }

    fn admit_at(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now >= last.saturating_add(self.period_ms);
        if due
            && self
                .last
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::Relaxed));
        }
        self.held_back.fetch_add(1, Ordering::Relaxed);
        None
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_period_goes_through_with_the_count_of_the_others() {
        let throttle = Throttle::new(Duration::from_secs(60));
        let t0 = 1_700_000_000_000;
        assert_eq!(throttle.admit_at(t0), Some(0));
        assert_eq!(throttle.admit_at(t0 + 1), None);
        assert_eq!(throttle.admit_at(t0 + 59_999), None);
        assert_eq!(throttle.admit_at(t0 + 60_000), Some(2));
        assert_eq!(throttle.admit_at(t0 + 60_001), None);
    }
}
