//! Kills for connections this pod has not indexed yet.
//!
//! A socket enters the index only once the coordinator's acquire reply is back. A takeover on
//! another pod (or an operator's kill) raised in between reaches this pod's command stream
//! first, names a connection nobody here knows, and would be dropped: the socket would then
//! receive `ready` and stream the user's events next to the new holder until the next renew.
//! So unknown kills are remembered for a few seconds (bounded) and applied when the socket
//! is indexed. The registry checks and records under its index lock, so a kill is either
//! found by the lookup or found by the indexing, never missed in between.

use daisi_domain::{ConnectionId, SessionKey};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How long an unknown kill is kept: longer than an acquire may take (its deadline is the
/// coordinator timeout, seconds) and short enough that the map stays small.
pub const TTL: Duration = Duration::from_secs(10);
/// Most kills kept; beyond it the oldest is forgotten (a reconnect storm of thousands of users
/// on other pods produces as many unknown kills as it produces takeovers).
pub const MAX: usize = 16_384;

/// A kill for a connection not indexed (yet).
#[derive(Debug, Clone)]
struct Remembered {
    key: SessionKey,
    fencing: u64,
    at: Instant,
}

/// The bounded, expiring map of unknown kills.
#[derive(Debug, Default)]
pub struct PendingKills {
    by_connection: HashMap<ConnectionId, Remembered>,
    /// Insertion order, for expiry and the bound; may name connections taken since.
    order: VecDeque<(Instant, ConnectionId)>,
}

impl PendingKills {
    /// Remembers a kill of `connection` (holding `key` up to `fencing`) at `now`.
    pub fn remember(
        &mut self,
        connection: ConnectionId,
        key: SessionKey,
        fencing: u64,
        now: Instant,
    ) {
        self.expire(now);
        while self.by_connection.len() >= MAX {
            let Some((_, oldest)) = self.order.pop_front() else {
                break;
            };
            self.by_connection.remove(&oldest);
        }
        let entry = self
            .by_connection
            .entry(connection.clone())
            .or_insert(Remembered {
                key: key.clone(),
                fencing,
                at: now,
            });
        // Two kills of one connection: the higher fencing token covers more grants.
        if fencing >= entry.fencing {
            *entry = Remembered {
                key,
                fencing,
                at: now,
            };
        }
        self.order.push_back((now, connection));
    }

    /// Takes the kill remembered for `connection`, if one applies to a socket holding `key`
    /// with grant `fencing`.
    pub fn take(
        &mut self,
        connection: &ConnectionId,
        key: &SessionKey,
        fencing: u64,
        now: Instant,
    ) -> bool {
        self.expire(now);
        match self.by_connection.remove(connection) {
            Some(kill) => &kill.key == key && fencing <= kill.fencing,
            None => false,
        }
    }

    /// Kills currently remembered.
    pub fn len(&self) -> usize {
        self.by_connection.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_connection.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < TTL && self.order.len() <= 2 * MAX {
                break;
            }
            let Some((at, connection)) = self.order.pop_front() else {
                break;
            };
            // Only if the entry is the one this slot recorded (not re-remembered since).
            if self
                .by_connection
                .get(&connection)
                .is_some_and(|k| k.at == at)
            {
                self.by_connection.remove(&connection);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str) -> SessionKey {
        SessionKey::user(
            "c".parse().expect("id"),
            "a".parse().expect("id"),
            user.parse().expect("id"),
        )
    }

    #[test]
    fn applies_once_to_the_named_grant_and_expires() {
        let t0 = Instant::now();
        let mut kills = PendingKills::default();
        let (c1, c2) = (ConnectionId::generate(), ConnectionId::generate());
        kills.remember(c1.clone(), key("u"), 7, t0);
        kills.remember(c2.clone(), key("u"), 8, t0);
        // A newer grant than the one killed is not closed.
        assert!(!kills.take(&c1, &key("u"), 8, t0));
        // Taken: the kill was consumed by the check above.
        assert!(!kills.take(&c1, &key("u"), 7, t0));
        // Another key never matches.
        assert!(!kills.take(&c2, &key("other"), 1, t0));
        kills.remember(c2.clone(), key("u"), 8, t0);
        assert!(kills.take(&c2, &key("u"), 8, t0 + Duration::from_secs(1)));
        kills.remember(c1.clone(), key("u"), 7, t0);
        assert!(!kills.take(&c1, &key("u"), 7, t0 + TTL));
        assert!(kills.is_empty());
    }

    #[test]
    fn stays_bounded() {
        let t0 = Instant::now();
        let mut kills = PendingKills::default();
        for _ in 0..MAX + 100 {
            kills.remember(ConnectionId::generate(), key("u"), 1, t0);
        }
        assert_eq!(kills.len(), MAX);
        assert!(kills.order.len() <= 2 * MAX);
    }
}
