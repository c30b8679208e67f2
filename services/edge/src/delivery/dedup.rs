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
    state: Mutex<State>,
    window: usize,
}

#[derive(Debug, Default)]
struct State {
    /// The stream epoch the sequences belong to (0: none seen yet).
    epoch: u64,
    seen: HashSet<u64>,
    order: VecDeque<u64>,
    /// The highest sequence pushed out of the window so far.
    forgotten: u64,
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
            state: Mutex::new(State::default()),
            window,
        }
    }

    /// Records `sequence` of stream `epoch` and says whether it was seen.
    ///
    /// Sequences count anew in a recreated stream (a newer epoch): the window then starts
    /// over, or the new stream's first sequences would pass for repeats of the old one's. An
    /// event of an older epoch than the window's (a late retry from before the stream was
    /// recreated) cannot be compared and is delivered. Epoch 0 (a router that does not send
    /// it) is taken to be the window's.
    pub fn check(&self, sequence: u64, epoch: u64) -> Seen {
        if sequence == 0 || self.window == 0 {
            return Seen::First;
        }
        let mut state = self.state.lock();
        if epoch != 0 && epoch != state.epoch {
            if epoch < state.epoch {
                return Seen::First;
            }
            *state = State {
                epoch,
                ..State::default()
            };
        }
        if !state.seen.insert(sequence) {
            return Seen::Repeat;
        }
        state.order.push_back(sequence);
        while state.order.len() > self.window {
            if let Some(old) = state.order.pop_front() {
                state.seen.remove(&old);
                state.forgotten = state.forgotten.max(old);
            }
        }
        if sequence <= state.forgotten {
            return Seen::Unsure;
        }
        Seen::First
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E1: u64 = 1_764_441_600_000_000_000;
    const E2: u64 = E1 + 1;

    #[test]
    fn drops_repeats_within_the_window() {
        let dedup = Dedup::new(2);
        assert_eq!(dedup.check(1, E1), Seen::First);
        assert_eq!(dedup.check(1, E1), Seen::Repeat);
        assert_eq!(dedup.check(2, E1), Seen::First);
        assert_eq!(dedup.check(3, E1), Seen::First);
        assert_ne!(dedup.check(1, E1), Seen::Repeat, "1 fell out of the window");
        assert_eq!(dedup.check(0, E1), Seen::First);
        assert_eq!(dedup.check(0, E1), Seen::First, "0 is never a repeat");
    }

    #[test]
    fn sequences_below_the_forgotten_ones_are_unsure() {
        let dedup = Dedup::new(2);
        assert_eq!(dedup.check(5, E1), Seen::First);
        assert_eq!(dedup.check(6, E1), Seen::First);
        assert_eq!(dedup.check(7, E1), Seen::First, "5 forgotten");
        assert_eq!(dedup.check(7, E1), Seen::Repeat);
        assert_eq!(dedup.check(4, E1), Seen::Unsure);
        assert_eq!(dedup.check(9, E1), Seen::First);
    }

    #[test]
    fn a_recreated_stream_starts_the_window_over() {
        let dedup = Dedup::new(2);
        for seq in 1..=5 {
            assert_eq!(dedup.check(seq, E1), Seen::First);
        }
        // The stream was recreated: its sequences start at 1 again, and are new.
        assert_eq!(dedup.check(1, E2), Seen::First);
        assert_eq!(dedup.check(2, E2), Seen::First);
        assert_eq!(dedup.check(2, E2), Seen::Repeat);
        // A late retry from the old stream is delivered, and leaves the new window alone.
        assert_eq!(dedup.check(5, E1), Seen::First);
        assert_eq!(dedup.check(2, E2), Seen::Repeat);
        // A router that sends no epoch is counted in the current one.
        assert_eq!(dedup.check(2, 0), Seen::Repeat);
        assert_eq!(dedup.check(3, 0), Seen::First);
    }
}
