//! A bounded cache of validated tokens, so a reconnect storm does not redo base64 and AES-GCM
//! for tokens seen seconds ago.
//!
//! **Key.** The token text itself: an entry is found by a seeded 64-bit hash (foldhash,
//! random seed per cache) of the text's length and last bytes, and used only if its stored
//! text is equal byte for byte, so no token can ever be served another token's claims,
//! whatever the hash does. The hash only spreads entries; a collision costs a probe, not a
//! wrong answer. Entries
//! hold the token text (readable in a memory dump for as long as the token is cached and
//! valid, like the request that carried it).
//!
//! **Bounds.** At most `capacity` entries (oldest inserted evicted first, per shard), and an
//! entry is never used past the token's own `expires_at`: an expired token is refused exactly
//! as if it had been decoded again.
//!
//! **Cheap hits.** One hash, one shared (read) lock of one shard (large caches are split into
//! [`SHARDS`] tables, chosen by hash bits the table itself does not use, so concurrent
//! upgrades rarely meet on a lock), one probe, one comparison of the text, one expiry
//! comparison, and the caller reads the claims in place: a hit allocates nothing and
//! touches no reference count.

use daisi_domain::token::MAX_TOKEN_LEN;
use hashbrown::HashTable;
use jiff::Timestamp;
use parking_lot::RwLock;
use std::collections::VecDeque;
use std::hash::BuildHasher;

/// Shards of a large cache.
pub const SHARDS: usize = 16;

/// Bytes at the end of a token text that its hash covers (with the length).
const HASHED_TAIL: usize = 16;

/// Caches smaller than this stay one shard, so small capacities are exact.
const SHARDED_FROM: usize = 1024;

/// Validated claims by token text.
pub struct TokenCache<C> {
    /// Empty when the cache is disabled; otherwise a power of two of them.
    shards: Box<[RwLock<Shard<C>>]>,
    /// Entries per shard: their sum never exceeds the configured capacity.
    shard_capacity: usize,
    /// The hash under this cache's random seed.
    hasher: foldhash::fast::RandomState,
}

impl<C> std::fmt::Debug for TokenCache<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("shards", &self.shards.len())
            .field("shard_capacity", &self.shard_capacity)
            .finish_non_exhaustive()
    }
}

struct Entry<C> {
    /// The token text.
    token: Box<[u8]>,
    /// Its hash, kept for the table's growth and for eviction.
    hash: u64,
    /// Insertion number within the shard: tells an entry apart from a later one of the same
    /// token when the order queue names it.
    seq: u64,
    claims: C,
    expires_at: Timestamp,
}

struct Shard<C> {
    entries: HashTable<Entry<C>>,
    /// Insertion order (hash and insertion number), for eviction.
    order: VecDeque<(u64, u64)>,
    next_seq: u64,
}

/// Where a token lives in a cache: its hash, computed once for the lookup and for the insert
/// that follows a miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(u64);

/// A cache answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached<R> {
    /// What the caller read from the valid claims.
    Valid(R),
    /// The token was valid but has expired since.
    Expired,
    /// Not cached: decode it.
    Miss,
}

impl<C> TokenCache<C> {
    /// A cache of at most `capacity` tokens (0 disables it).
    pub fn new(capacity: usize) -> Self {
        let shards = match capacity {
            0 => 0,
            c if c < SHARDED_FROM => 1,
            _ => SHARDS,
        };
        Self {
            shards: (0..shards)
                .map(|_| {
                    RwLock::new(Shard {
                        entries: HashTable::new(),
                        order: VecDeque::new(),
                        next_seq: 0,
                    })
                })
                .collect(),
            shard_capacity: capacity.checked_div(shards).unwrap_or(0),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// The shard of `slot`, by hash bits the table does not use (it takes the low bits for
    /// the bucket and the top seven for its tags).
    fn shard(&self, slot: Slot) -> Option<&RwLock<Shard<C>>> {
        // The shard count is a power of two (or zero, then this is `None`).
        let mask = self.shards.len().wrapping_sub(1);
        self.shards.get((slot.0 >> 40) as usize & mask)
    }

    /// Where `token` lives in this cache; `None` when the cache is disabled or the token too
    /// long to be valid.
    pub fn slot(&self, token: &str) -> Option<Slot> {
        if self.shards.is_empty() || token.len() > MAX_TOKEN_LEN {
            return None;
        }
        // The last bytes of a token are the base64 of its GCM tag, random per token, so they
        // spread real tokens as well as the whole text would at a fraction of the cost. Texts
        // chosen to share them only meet other texts in a probe: stored texts are all real
        // tokens, and every hit compares the whole text.
        let text = token.as_bytes();
        let tail = text
            .get(text.len().saturating_sub(HASHED_TAIL)..)
            .unwrap_or(text);
        Some(Slot(self.hasher.hash_one((text.len(), tail))))
    }

    /// `read` of the claims cached for `token` (at `slot`), looked up at `now`. `read` runs
    /// under the shard's read lock: it must be short and must not use this cache.
    pub fn get<R>(
        &self,
        slot: Slot,
        token: &str,
        now: Timestamp,
        read: impl FnOnce(&C) -> R,
    ) -> Cached<R> {
        let Some(shard) = self.shard(slot) else {
            return Cached::Miss;
        };
        let shard = shard.read();
        match shard
            .entries
            .find(slot.0, |e| *e.token == *token.as_bytes())
        {
            Some(e) if now <= e.expires_at => Cached::Valid(read(&e.claims)),
            Some(_) => Cached::Expired,
            None => Cached::Miss,
        }
    }

    /// Remembers that `token` (at `slot`) carries `claims` until `expires_at`.
    pub fn insert(&self, slot: Slot, token: &str, claims: C, expires_at: Timestamp) {
        let Some(shard) = self.shard(slot) else {
            return;
        };
        let mut guard = shard.write();
        let shard = &mut *guard;
        // The order queue may name entries already replaced; bounding it too keeps memory
        // bounded whatever the access pattern.
        while shard.entries.len() >= self.shard_capacity
            || shard.order.len() >= 2 * self.shard_capacity
        {
            let Some((hash, seq)) = shard.order.pop_front() else {
                break;
            };
            if let Ok(oldest) = shard.entries.find_entry(hash, |e| e.seq == seq) {
                oldest.remove();
            }
        }
        let seq = shard.next_seq;
        shard.next_seq += 1;
        let text = token.as_bytes();
        match shard.entries.find_entry(slot.0, |e| *e.token == *text) {
            // Two upgrades that missed at once: the later one's entry replaces the earlier.
            Ok(mut same) => {
                let e = same.get_mut();
                e.seq = seq;
                e.claims = claims;
                e.expires_at = expires_at;
            }
            Err(_) => {
                shard.entries.insert_unique(
                    slot.0,
                    Entry {
                        token: text.into(),
                        hash: slot.0,
                        seq,
                        claims,
                        expires_at,
                    },
                    |e| e.hash,
                );
            }
        }
        shard.order.push_back((slot.0, seq));
    }

    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().entries.len()).sum()
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
        Cached::Valid(claims)
    }

    /// Looks `token` up (a miss when the cache is disabled, as the authenticator treats it).
    fn get<C: Clone>(cache: &TokenCache<C>, token: &str, now: Timestamp) -> Cached<C> {
        cache
            .slot(token)
            .map_or(Cached::Miss, |slot| cache.get(slot, token, now, C::clone))
    }

    fn insert<C>(cache: &TokenCache<C>, token: &str, claims: C, expires_at: Timestamp) {
        if let Some(slot) = cache.slot(token) {
            cache.insert(slot, token, claims, expires_at);
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
            assert_eq!(shard.read().entries.len(), capacity / SHARDS);
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
        // Other lengths, and (below) every single-byte change: the whole text is compared.
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
    fn a_hash_shared_with_another_text_is_a_miss() {
        let cache = TokenCache::new(10);
        let exp = at("2030-01-01T00:00:00Z");
        let now = at("2029-01-01T00:00:00Z");
        insert(&cache, "token-a", 1, exp);
        let slot = cache.slot("token-a").expect("enabled");
        // Another text presented under token-a's slot, as if the two hashes collided.
        assert_eq!(cache.get(slot, "token-b", now, |c| *c), Cached::Miss);
        assert_eq!(cache.get(slot, "token-a", now, |c| *c), valid(1));
        // Inserting it there keeps both apart.
        cache.insert(slot, "token-b", 2, exp);
        assert_eq!(cache.get(slot, "token-b", now, |c| *c), valid(2));
        assert_eq!(cache.get(slot, "token-a", now, |c| *c), valid(1));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn texts_sharing_their_hashed_tail_are_told_apart() {
        let cache = TokenCache::new(10);
        let exp = at("2030-01-01T00:00:00Z");
        let now = at("2029-01-01T00:00:00Z");
        let tail = "T".repeat(HASHED_TAIL);
        let (a, b) = (format!("aaaa{tail}"), format!("bbbb{tail}"));
        assert_eq!(
            cache.slot(&a),
            cache.slot(&b),
            "same length and tail, same hash"
        );
        insert(&cache, &a, 1, exp);
        assert_eq!(get(&cache, &b, now), Cached::Miss);
        insert(&cache, &b, 2, exp);
        assert_eq!(get(&cache, &a, now), valid(1));
        assert_eq!(get(&cache, &b, now), valid(2));
    }

    #[test]
    fn inserting_a_token_again_replaces_its_entry() {
        let cache = TokenCache::new(2);
        let now = at("2029-01-01T00:00:00Z");
        insert(&cache, "t", 1, at("2030-01-01T00:00:00Z"));
        insert(&cache, "t", 2, at("2030-01-01T00:00:00Z"));
        assert_eq!(cache.len(), 1);
        assert_eq!(get(&cache, "t", now), valid(2));
        // The stale order record of the first insert evicts nothing it should not.
        insert(&cache, "u", 3, at("2030-01-01T00:00:00Z"));
        assert_eq!(get(&cache, "t", now), valid(2));
        assert_eq!(get(&cache, "u", now), valid(3));
    }

    #[test]
    fn two_caches_use_different_keys() {
        let a = TokenCache::<u8>::new(1);
        let b = TokenCache::<u8>::new(1);
        // 2^-64 chance of a false failure.
        assert_ne!(a.slot("same token"), b.slot("same token"));
        assert_eq!(a.slot("same token"), a.slot("same token"));
    }
}
