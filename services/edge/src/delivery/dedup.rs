//! Remembers the stream sequences delivered recently, so an event a router retries (delivery
//! is at-least-once) reaches each socket once. Bounded: the oldest sequences are forgotten
//! first. Sequence 0 means "unknown" and is never de-duplicated.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// The de-duplication window.
#[derive(Debug)]
pub struct Dedup {
    state: Mutex<(HashSet<u64>, VecDeque<u64>)>,
    window: usize,
}

impl Dedup {
    /// A window of `window` sequences (0 disables de-duplication).
    pub fn new(window: usize) -> Self {
        Self {
            state: Mutex::new((HashSet::new(), VecDeque::new())),
            window,
        }
    }

    /// Records `sequence`; `false` when it was seen within the window.
    pub fn first_time(&self, sequence: u64) -> bool {
        if sequence == 0 || self.window == 0 {
            return true;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (seen, order) = &mut *state;
        if !seen.insert(sequence) {
            return false;
        }
        order.push_back(sequence);
        while order.len() > self.window {
            if let Some(old) = order.pop_front() {
                seen.remove(&old);
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
}
