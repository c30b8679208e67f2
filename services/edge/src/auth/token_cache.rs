//! A bounded cache of validated tokens, so a reconnect storm does not redo base64 and AES-GCM
//! for tokens seen seconds ago.
//!
//! **Key.** A keyed digest of the token text (see [`super::token_digest`]): 2^-128 chance
//! for two different tokens to share one, the key never leaves the process, and the cache
//! never holds a usable token, only digests.
//!
//! **Bounds.** At most `capacity` entries (oldest inserted evicted first, per shard), and an
//! entry is never used past the token's own `expires_at`: an expired token is refused exactly
//! as if it had been decoded again.
//!
//! **Cheap hits.** One digest, one lock of one shard (large caches are split into
//! [`SHARDS`] maps, chosen by digest bits the map itself does not use, so concurrent
//! upgrades rarely meet on a lock), one map lookup, one expiry comparison and an `Arc` clone:
//! a hit allocates nothing.

use super::token_digest::{Digest, TokenHasher};
use jiff::Timestamp;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// Passes the digest's own bits through (the digest is keyed and random-looking already).
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `Digest`; folding keeps any other use correct.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Entries<C> = HashMap<Digest, (Arc<C>, Timestamp), BuildHasherDefault<PassThrough>>;

/// Shards of a large cache.
pub const SHARDS: usize = 16;

/// Caches smaller than this stay one shard, so small capacities are exact.
const SHARDED_FROM: usize = 1024;

/// Validated claims by token digest.
pub struct TokenCache<C> {
    /// Empty when the cache is disabled; otherwise a power of two of them.
    shards: Box<[Mutex<Shard<C>>]>,
    /// Entries per shard: their sum never exceeds the configured capacity.
    shard_capacity: usize,
    /// The digest under this cache's random keys; `None` when the cache is disabled.
    hasher: Option<TokenHasher>,
}

impl<C> std::fmt::Debug for TokenCache<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("shards", &self.shards.len())
            .field("shard_capacity", &self.shard_capacity)
            .finish_non_exhaustive()
    }
}

struct Shard<C> {
    entries: Entries<C>,
    /// Insertion order, for eviction.
    order: VecDeque<Digest>,
}

/// Where a token lives in a cache: its digest, computed once for the lookup and for the insert
/// that follows a miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(Digest);

/// A cache answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached<C> {
    /// Valid claims.
    Valid(Arc<C>),
    /// The token was valid but has expired since.
    Expired,
    /// Not cached: decode it.
    Miss,
}

impl<C> TokenCache<C> {
    /// A cache of at most `capacity` tokens (0 disables it; so does a system without a random
    /// source, which is logged).
    pub fn new(capacity: usize) -> Self {
        let hasher = (capacity > 0).then(TokenHasher::random).flatten();
        if hasher.is_none() && capacity > 0 {
            tracing::warn!("no system randomness for the token cache key: token cache disabled");
        }
        let shards = match (hasher.is_some(), capacity) {
            (false, _) | (_, 0) => 0,
            (true, c) if c < SHARDED_FROM => 1,
            (true, _) => SHARDS,
        };
        Self {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        entries: Entries::default(),
                        order: VecDeque::new(),
                    })
                })
                .collect(),
            shard_capacity: capacity.checked_div(shards).unwrap_or(0),
            hasher,
        }
    }

    /// The shard of `digest` (by bits the map does not hash).
    fn shard(&self, digest: &Digest) -> Option<&Mutex<Shard<C>>> {
        // The shard count is a power of two (or zero, then this is `None`).
        let mask = self.shards.len().wrapping_sub(1);
        self.shards.get(digest.shard_bits() & mask)
    }

    /// Where `token` lives in this cache; `None` when the cache is disabled or the token too
    /// long to be valid.
    pub fn slot(&self, token: &str) -> Option<Slot> {
        self.hasher.as_ref()?.digest(token.as_bytes()).map(Slot)
    }

    /// The claims cached at `slot`, looked up at `now`.
    pub fn get(&self, slot: &Slot, now: Timestamp) -> Cached<C> {
        let Some(shard) = self.shard(&slot.0) else {
            return Cached::Miss;
        };
        let shard = shard.lock();
        match shard.entries.get(&slot.0) {
            Some((claims, expires_at)) if now <= *expires_at => Cached::Valid(claims.clone()),
            Some(_) => Cached::Expired,
            None => Cached::Miss,
        }
    }

    /// Remembers that the token of `slot` carries `claims` until `expires_at`.
    pub fn insert(&self, slot: Slot, claims: Arc<C>, expires_at: Timestamp) {
        let Some(shard) = self.shard(&slot.0) else {
            return;
        };
        let mut shard = shard.lock();
        // The order queue may hold digests already evicted or re-inserted; bounding it too
        // keeps memory bounded whatever the access pattern.
        while shard.entries.len() >= self.shard_capacity
            || shard.order.len() >= 2 * self.shard_capacity
        {
            let Some(oldest) = shard.order.pop_front() else {
                break;
            };
            shard.entries.remove(&oldest);
        }
        shard.entries.insert(slot.0, (claims, expires_at));
        shard.order.push_back(slot.0);
    }

    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().entries.len()).sum()
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

    fn valid<C>(claims: C) -> Cached<C> {
        Cached::Valid(Arc::new(claims))
    }

    /// Looks `token` up (a miss when the cache is disabled, as the authenticator treats it).
    fn get<C>(cache: &TokenCache<C>, token: &str, now: Timestamp) -> Cached<C> {
        cache
            .slot(token)
            .map_or(Cached::Miss, |slot| cache.get(&slot, now))
    }

    fn insert<C>(cache: &TokenCache<C>, token: &str, claims: C, expires_at: Timestamp) {
        if let Some(slot) = cache.slot(token) {
            cache.insert(slot, Arc::new(claims), expires_at);
        }
    }

    #[test]
    fn never_serves_past_expiry() {
        let cache = TokenCache::new(10);
        insert(&cache, "t", 7, at("2030-01-01T00:00:10Z"));
        assert_eq!(get(&cache, "t", at("2030-01-01T00:00:09Z")), valid(7));
        assert_eq!(
            get(&cache, "t", at("2030-01-01T00:00:11Z")),
            Cached::Expired
        );
        assert_eq!(get(&cache, "u", at("2030-01-01T00:00:09Z")), Cached::Miss);
    }

    #[test]
    fn stays_bounded_and_evicts_oldest() {
        let cache = TokenCache::new(3);
        let exp = at("2030-01-01T00:00:00Z");
        for i in 0..10 {
            insert(&cache, &format!("t{i}"), i, exp);
            assert!(cache.len() <= 3);
        }
        let now = at("2029-01-01T00:00:00Z");
        assert_eq!(get(&cache, "t0", now), Cached::Miss);
        assert_eq!(get(&cache, "t9", now), valid(9));
        let disabled = TokenCache::new(0);
        insert(&disabled, "t", 1, exp);
        assert_eq!(get(&disabled, "t", now), Cached::Miss);
    }

    #[test]
    fn a_large_cache_is_sharded_and_stays_within_its_capacity() {
        let capacity = 4 * SHARDED_FROM;
        let cache = TokenCache::new(capacity);
        assert_eq!(cache.shards.len(), SHARDS);
        let exp = at("2030-01-01T00:00:00Z");
        let now = at("2029-01-01T00:00:00Z");
        for i in 0..3 * capacity {
            insert(&cache, &format!("token-{i}"), i, exp);
        }
        assert!(cache.len() <= capacity, "{}", cache.len());
        // Every shard got some of the tokens and is full (digests spread over the shards).
        for shard in cache.shards.iter() {
            assert_eq!(shard.lock().entries.len(), capacity / SHARDS);
        }
        let last = 3 * capacity - 1;
        assert_eq!(get(&cache, &format!("token-{last}"), now), valid(last));
        assert_eq!(get(&cache, "token-0", now), Cached::Miss);
    }

    #[test]
    fn texts_that_differ_only_in_padding_or_one_byte_are_different_keys() {
        let cache = TokenCache::new(100);
        let exp = at("2030-01-01T00:00:00Z");
        let now = at("2029-01-01T00:00:00Z");
        let base = "A".repeat(40);
        insert(&cache, &base, 1, exp);
        // Same blocks once zero-padded: only the length block tells them apart.
        for other in [
            format!("{base}\0"),
            format!("{base}\0\0\0"),
            base[..39].to_owned(),
        ] {
            assert_eq!(get(&cache, &other, now), Cached::Miss, "{other:?}");
        }
        for i in 0..base.len() {
            let mut flipped = base.clone().into_bytes();
            flipped[i] = b'B';
            let flipped = String::from_utf8(flipped).expect("ascii");
            assert_eq!(get(&cache, &flipped, now), Cached::Miss, "byte {i}");
        }
        assert_eq!(get(&cache, &base, now), valid(1));
    }

    #[test]
    fn two_caches_use_different_keys() {
        let a = TokenCache::<u8>::new(1);
        let b = TokenCache::<u8>::new(1);
        assert_ne!(a.slot("same token"), b.slot("same token"));
        assert_eq!(a.slot("same token"), a.slot("same token"));
    }
}
