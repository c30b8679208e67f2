//! A bounded cache of validated tokens, so a reconnect storm does not redo base64 and AES-GCM
//! for tokens seen seconds ago.
//!
//! Keyed by the SHA-256 of the token text (the cache never holds a usable token), bounded in
//! entries (oldest inserted evicted first), and an entry is never used past the token's own
//! `expires_at`: an expired token is refused exactly as if it had been decoded again.

use jiff::Timestamp;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

type Digest32 = [u8; 32];

/// Validated claims by token digest.
#[derive(Debug)]
pub struct TokenCache<C> {
    state: Mutex<State<C>>,
    capacity: usize,
}

#[derive(Debug)]
struct State<C> {
    entries: HashMap<Digest32, (C, Timestamp)>,
    order: VecDeque<Digest32>,
}

/// A cache answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached<C> {
    /// Valid claims.
    Valid(C),
    /// The token was valid but has expired since.
    Expired,
    /// Not cached: decode it.
    Miss,
}

impl<C: Clone> TokenCache<C> {
    /// A cache of at most `capacity` tokens (0 disables it).
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                entries: HashMap::new(),
                order: VecDeque::new(),
            }),
            capacity,
        }
    }

    fn digest(token: &str) -> Digest32 {
        Sha256::digest(token.as_bytes()).into()
    }

    /// Looks `token` up at `now`.
    pub fn get(&self, token: &str, now: Timestamp) -> Cached<C> {
        if self.capacity == 0 {
            return Cached::Miss;
        }
        let digest = Self::digest(token);
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.entries.get(&digest) {
            Some((claims, expires_at)) if now <= *expires_at => Cached::Valid(claims.clone()),
            Some(_) => Cached::Expired,
            None => Cached::Miss,
        }
    }

    /// Remembers that `token` carries `claims` until `expires_at`.
    pub fn insert(&self, token: &str, claims: C, expires_at: Timestamp) {
        if self.capacity == 0 {
            return;
        }
        let digest = Self::digest(token);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // The order queue may hold digests already evicted or re-inserted; bounding it too
        // keeps memory bounded whatever the access pattern.
        while state.entries.len() >= self.capacity || state.order.len() >= 2 * self.capacity {
            let Some(oldest) = state.order.pop_front() else {
                break;
            };
            state.entries.remove(&oldest);
        }
        state.entries.insert(digest, (claims, expires_at));
        state.order.push_back(digest);
    }

    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn never_serves_past_expiry() {
        let cache = TokenCache::new(10);
        cache.insert("t", 7, at("2030-01-01T00:00:10Z"));
        assert_eq!(cache.get("t", at("2030-01-01T00:00:09Z")), Cached::Valid(7));
        assert_eq!(cache.get("t", at("2030-01-01T00:00:11Z")), Cached::Expired);
        assert_eq!(cache.get("u", at("2030-01-01T00:00:09Z")), Cached::Miss);
    }

    #[test]
    fn stays_bounded_and_evicts_oldest() {
        let cache = TokenCache::new(3);
        let exp = at("2030-01-01T00:00:00Z");
        for i in 0..10 {
            cache.insert(&format!("t{i}"), i, exp);
            assert!(cache.len() <= 3);
        }
        let now = at("2029-01-01T00:00:00Z");
        assert_eq!(cache.get("t0", now), Cached::Miss);
        assert_eq!(cache.get("t9", now), Cached::Valid(9));
        let disabled = TokenCache::new(0);
        disabled.insert("t", 1, exp);
        assert_eq!(disabled.get("t", now), Cached::Miss);
    }
}
