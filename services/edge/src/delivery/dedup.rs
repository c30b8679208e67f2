//! Remembers the stream sequences delivered recently, so an event a router retries (delivery
//! is at-least-once) reaches each socket once. Bounded: the oldest sequences are forgotten
//! first. Sequence 0 means "unknown" and is never de-duplicated.
//!
//! An event whose sequence is at or below the highest one already forgotten may be a repeat
//! the window can no longer recognise: it is delivered (as before), and reported as
//! [`Seen::Unsure`] so `json.v2` sockets are told to resync.

use parking_lot::Mutex;
use std::collections::{HashSet, VecDeque};

/// The de-duplication window.
#[derive(Debug)]
pub struct Dedup {
    state: Mutex<(HashSet<u64>, VecDeque<u64>)>,
    window: usize,
    /// The highest sequence pushed out of the window so far.
    forgotten: std::sync::atomic::AtomicU64,
}

/// What the window says about a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen within the window, and newer than anything forgotten.
    First,
    /// Seen within the window: drop it.
    Repeat,
    /// Not in the window, but not newer than what it forgot: maybe a repeat.
    Unsure,
}

impl Dedup {
    /// A window of `window` sequences (0 disables de-duplication).
    pub fn new(window: usize) -> Self {
        Self {
            state: Mutex::new((HashSet::new(), VecDeque::new())),
            window,
            forgotten: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Records `sequence` and says whether it was seen.
    pub fn check(&self, sequence: u64) -> Seen {
        if !self.first_time(sequence) {
            return Seen::Repeat;
        }
        if sequence != 0 && sequence <= self.forgotten.load(std::sync::atomic::Ordering::Relaxed) {
            return Seen::Unsure;
        }
        Seen::First
    }

    /// Records `sequence`; `false` when it was seen within the window.
    pub fn first_time(&self, sequence: u64) -> bool {
        if sequence == 0 || self.window == 0 {
            return true;
        }
        let mut state = self.state.lock();
        let (seen, order) = &mut *state;
        if !seen.insert(sequence) {
            return false;
        }
        order.push_back(sequence);
        while order.len() > self.window {
            if let Some(old) = order.pop_front() {
                seen.remove(&old);
                self.forgotten
                    .fetch_max(old, std::sync::atomic::Ordering::Relaxed);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_repeats_within_the_window() {
        let dedup = Dedup::new(2);
        assert!(dedup.first_time(1));
        assert!(!dedup.first_time(1));
        assert!(dedup.first_time(2));
        assert!(dedup.first_time(3));
        assert!(dedup.first_time(1), "1 fell out of the window");
        assert!(dedup.first_time(0) && dedup.first_time(0));
    }

    #[test]
    fn sequences_below_the_forgotten_ones_are_unsure() {
        let dedup = Dedup::new(2);
        assert_eq!(dedup.check(5), Seen::First);
        assert_eq!(dedup.check(6), Seen::First);
        assert_eq!(dedup.check(7), Seen::First, "5 forgotten");
        assert_eq!(dedup.check(7), Seen::Repeat);
        assert_eq!(dedup.check(4), Seen::Unsure);
        assert_eq!(dedup.check(9), Seen::First);
    }
}
