//! Delivery accounting of one socket and of a whole run: which events arrived (a bitset over
//! the socket's slots, see [`super::plan::Plan::slot`]), how many arrived twice, out of order,
//! or at a socket that should never have had them; then, once the driver says how many events
//! it published, how many were lost. A socket that never got `ready` could not receive
//! anything: what it would have been owed is counted apart, not as lost.

use super::plan::Plan;
use serde::{Deserialize, Serialize};

/// What one socket received during the measured phase.
#[derive(Debug, Default, Clone)]
pub(crate) struct SocketTally {
    /// The socket got `ready` at least once; until then it owes nothing.
    opened: bool,
    /// Bit `k` set: slot `k` arrived.
    seen: Vec<u64>,
    /// Highest slot seen so far, to count arrivals behind it.
    highest: Option<u64>,
    unique: u64,
    duplicates: u64,
    reordered: u64,
    unexpected: u64,
}

impl SocketTally {
    /// The socket got `ready`: from now on it owes its events.
    pub(crate) fn mark_opened(&mut self) {
        self.opened = true;
    }

    /// Records event `seq` arriving at socket `index`; `true` when it is the first arrival of
    /// an event the socket must receive (not a duplicate, not another socket's).
    pub(crate) fn record(&mut self, plan: &Plan, index: u64, seq: u64) -> bool {
        let Some(slot) = plan.slot(index, seq) else {
            self.unexpected += 1;
            return false;
        };
        let (word, bit) = (usize::try_from(slot / 64).unwrap_or(usize::MAX), slot % 64);
        if word >= self.seen.len() {
            // A slot far beyond anything published is a corrupt stamp, not a reason to
            // allocate gigabytes.
            if word > MAX_WORDS {
                self.unexpected += 1;
                return false;
            }
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return false;
        }
        self.seen[word] |= 1 << bit;
        self.unique += 1;
        match self.highest {
            Some(h) if slot < h => self.reordered += 1,
            _ => self.highest = Some(slot),
        }
        true
    }

    fn has(&self, slot: u64) -> bool {
        usize::try_from(slot / 64)
            .ok()
            .and_then(|w| self.seen.get(w))
            .is_some_and(|w| w & (1 << (slot % 64)) != 0)
    }

    /// The socket's counts once `published` events went out, `excluded` (sorted) of which
    /// may never have reached the stream (their publish failed).
    pub(crate) fn settle(
        &self,
        plan: &Plan,
        index: u64,
        published: u64,
        excluded: &[u64],
    ) -> Counts {
        let owed = plan.expected(index, published);
        let mut expected = owed;
        let mut unique = self.unique;
        for seq in excluded.iter().filter(|s| **s < published) {
            if let Some(slot) = plan.slot(index, *seq) {
                expected -= 1;
                if self.has(slot) {
                    unique -= 1;
                }
            }
        }
        if !self.opened {
            // A failed handshake is reported with the opening; its events were never lost.
            return Counts {
                never_opened_sockets: 1,
                owed_to_never_opened: expected,
                ..Counts::default()
            };
        }
        // Slots past what was published cannot be deliveries of this run's events.
        let first_word = usize::try_from(owed / 64).unwrap_or(usize::MAX);
        let beyond: u64 = self
            .seen
            .iter()
            .enumerate()
            .skip(first_word)
            .map(|(w, bits)| {
                let base = w as u64 * 64;
                let mask = if base >= owed {
                    u64::MAX
                } else {
                    u64::MAX << (owed - base)
                };
                u64::from((bits & mask).count_ones())
            })
            .sum();
        let unique = unique - beyond;
        Counts {
            expected,
            unique,
            lost: expected - unique,
            duplicates: self.duplicates,
            reordered: self.reordered,
            unexpected: self.unexpected + beyond,
            ..Counts::default()
        }
    }
}

/// Slots a socket may record (64 per word): 64 million events per socket per run.
const MAX_WORDS: usize = 1 << 20;

/// Delivery counts of a socket, a worker or a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counts {
    /// Deliveries owed (events published to the interest of sockets that got `ready`).
    pub(crate) expected: u64,
    /// Owed deliveries that arrived (each once).
    pub(crate) unique: u64,
    /// Owed deliveries that never arrived.
    pub(crate) lost: u64,
    /// Arrivals of an event the socket already had.
    pub(crate) duplicates: u64,
    /// Arrivals behind a later event of the same socket.
    pub(crate) reordered: u64,
    /// Arrivals of events the socket should never have had (another agent's, or never
    /// published).
    pub(crate) unexpected: u64,
    /// Sockets that never got `ready` (their handshake failed): left out of the counts above.
    pub(crate) never_opened_sockets: u64,
    /// Deliveries those sockets would have been owed.
    pub(crate) owed_to_never_opened: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Self) {
        self.expected += o.expected;
        self.unique += o.unique;
        self.lost += o.lost;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.unexpected += o.unexpected;
        self.never_opened_sockets += o.never_opened_sockets;
        self.owed_to_never_opened += o.owed_to_never_opened;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plan::Shape;

    fn plan(shape: Shape, sockets: u64) -> Plan {
        Plan {
            company: "c".into(),
            sockets,
            shape,
        }
    }

    /// The tally of a socket that got `ready`.
    fn opened() -> SocketTally {
        let mut t = SocketTally::default();
        t.mark_opened();
        t
    }

    #[test]
    fn counts_losses_duplicates_and_reorders() {
        let p = plan(Shape::Fanout, 2);
        let mut t = opened();
        // 10 published; 3 and 7 lost; 5 twice; 2 after 4.
        let fresh: Vec<bool> = [0, 1, 4, 2, 5, 5, 6, 8, 9, 5]
            .into_iter()
            .map(|seq| t.record(&p, 1, seq))
            .collect();
        // Only first arrivals count towards what the socket is owed.
        assert_eq!(
            fresh,
            [true, true, true, true, true, false, true, true, true, false]
        );
        let c = t.settle(&p, 1, 10, &[]);
        assert_eq!(
            c,
            Counts {
                expected: 10,
                unique: 8,
                lost: 2,
                duplicates: 2,
                reordered: 1,
                ..Counts::default()
            }
        );
    }

    #[test]
    fn misrouted_and_unpublished_events_are_unexpected() {
        let p = plan(Shape::Spread, 3);
        let mut t = opened();
        // Socket 2 owes seq 2, 5, 8 of 9 published; gets 2, 4 (socket 1's), 5 and 11 (never
        // published in this count).
        let fresh: Vec<bool> = [2, 4, 5, 11]
            .into_iter()
            .map(|seq| t.record(&p, 2, seq))
            .collect();
        // Another socket's event is no arrival of this one's (11 is in its slots: the driver's
        // count of what was published decides, see `settle`).
        assert_eq!(fresh, [true, false, true, true]);
        let c = t.settle(&p, 2, 9, &[]);
        assert_eq!((c.expected, c.unique, c.lost), (3, 2, 1));
        assert_eq!(c.unexpected, 2);
        assert_eq!(c.duplicates, 0);
    }

    #[test]
    fn failed_publishes_are_not_owed() {
        let p = plan(Shape::Fanout, 1);
        let mut t = opened();
        for seq in [0, 1, 3] {
            t.record(&p, 0, seq);
        }
        // seq 2 and 3 failed to publish: 3 arrived anyway (the ack was lost), 2 did not.
        let c = t.settle(&p, 0, 4, &[2, 3]);
        assert_eq!((c.expected, c.unique, c.lost), (2, 2, 0));
    }

    #[test]
    fn a_socket_that_never_opened_owes_nothing_and_loses_nothing() {
        let p = plan(Shape::Spread, 3);
        // Socket 1 of 3 never got `ready`: of 10 published it would have had seq 1, 4, 7; 4
        // failed to publish.
        let c = SocketTally::default().settle(&p, 1, 10, &[4]);
        assert_eq!(
            c,
            Counts {
                never_opened_sockets: 1,
                owed_to_never_opened: 2,
                ..Counts::default()
            }
        );
        let mut run = opened().settle(&p, 0, 10, &[4]);
        run += c;
        assert_eq!((run.expected, run.lost), (4, 4));
        assert_eq!((run.never_opened_sockets, run.owed_to_never_opened), (1, 2));
    }

    #[test]
    fn a_corrupt_slot_does_not_allocate() {
        let p = plan(Shape::Fanout, 1);
        let mut t = opened();
        t.record(&p, 0, u64::MAX / 2);
        assert_eq!(t.settle(&p, 0, 1, &[]).unexpected, 1);
        assert!(t.seen.is_empty());
    }

    #[test]
    fn counts_add_up() {
        let mut total = Counts::default();
        total += Counts {
            expected: 2,
            unique: 1,
            lost: 1,
            duplicates: 3,
            reordered: 0,
            unexpected: 1,
            never_opened_sockets: 1,
            owed_to_never_opened: 4,
        };
        total += Counts {
            expected: 5,
            unique: 5,
            ..Counts::default()
        };
        assert_eq!((total.expected, total.unique, total.lost), (7, 6, 1));
        assert_eq!((total.duplicates, total.unexpected), (3, 1));
        assert_eq!(
            (total.never_opened_sockets, total.owed_to_never_opened),
            (1, 4)
        );
    }
}
