//! The token cache's key for a token text: NH, the hash inside UMAC (RFC 4418, section 5), on
//! 64-bit words under two independent random keys, together with the text's length.
//!
//! NH on `w`-bit words is `2^-w`-almost-Δ-universal (Black, Halevi, Krawczyk, Krovetz,
//! Rogaway: "UMAC: fast and secure message authentication", 1999): for two different texts of
//! the same length, the chance over a random key that their 128-bit sums agree is at most
//! `2^-64`, and with two independent keys at most `2^-128`. Texts of different lengths never
//! share a digest (the length is part of it). Like every universal hash this needs the key to
//! stay secret and digests never to be shown: both stay inside the process, so a token can only
//! hit an entry it was not cached for by that chance, and one cannot aim at someone else's
//! entry without holding that token already. It costs two 64×64→128-bit multiplications per
//! 16 bytes, independent of each other (the POLYVAL digest it replaces chained carry-less
//! multiplications and cost most of a cached lookup).

use daisi_domain::token::MAX_TOKEN_LEN;
use std::hash::{Hash, Hasher};

/// A token's digest: both NH sums and the text's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    sums: [u128; 2],
    len: usize,
}

impl Digest {
    /// Bits for choosing a shard, independent of the ones the map hashes.
    pub fn shard_bits(&self) -> usize {
        // The high half of a sum of products is well mixed (the low bits of a product are not:
        // three in four products are even).
        (self.sums[1] >> 64) as usize
    }
}

impl Hash for Digest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64((self.sums[0] >> 64) as u64);
    }
}

/// Key words per 16-byte block: two for each of the two NH keys.
const WORDS_PER_BLOCK: usize = 4;

/// NH under two random keys long enough for [`MAX_TOKEN_LEN`] bytes.
pub struct TokenHasher {
    /// Block `i` uses words `4i..4i + 4`: the first two for one key, the last two for the other.
    keys: Box<[u64]>,
}

impl std::fmt::Debug for TokenHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHasher(***)")
    }
}

impl TokenHasher {
    /// A hasher under fresh random keys; `None` if the system has no randomness to give.
    pub fn random() -> Option<Self> {
        let mut bytes = vec![0u8; MAX_TOKEN_LEN.div_ceil(16) * WORDS_PER_BLOCK * 8];
        getrandom::fill(&mut bytes).ok()?;
        let keys = bytes
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
            .collect();
        Some(Self { keys })
    }

    /// The digest of `text`; `None` past [`MAX_TOKEN_LEN`] bytes (no such token is valid).
    pub fn digest(&self, text: &[u8]) -> Option<Digest> {
        if text.len() > MAX_TOKEN_LEN {
            return None;
        }
        let mut sums = [0u128; 2];
        let mut blocks = text.chunks_exact(16);
        let mut keys = self.keys.chunks_exact(WORDS_PER_BLOCK);
        for (block, key) in (&mut blocks).zip(&mut keys) {
            add_block(&mut sums, block, key);
        }
        let rest = blocks.remainder();
        if !rest.is_empty() {
            // Zero padding; the length in the digest tells apart texts it would confuse.
            let mut last = [0u8; 16];
            last[..rest.len()].copy_from_slice(rest);
            add_block(&mut sums, &last, keys.next()?);
        }
        Some(Digest {
            sums,
            len: text.len(),
        })
    }
}

/// One NH step per key: `(m0 + k0 mod 2^64) * (m1 + k1 mod 2^64)` added mod 2^128.
#[inline]
fn add_block(sums: &mut [u128; 2], block: &[u8], key: &[u64]) {
    let word = |at: usize| {
        let bytes = block.get(at..at + 8).and_then(|b| b.try_into().ok());
        u64::from_le_bytes(bytes.unwrap_or_default())
    };
    let (m0, m1) = (word(0), word(8));
    let &[a0, a1, b0, b1] = key else {
        return;
    };
    let nh = |k0: u64, k1: u64| u128::from(m0.wrapping_add(k0)) * u128::from(m1.wrapping_add(k1));
    sums[0] = sums[0].wrapping_add(nh(a0, a1));
    sums[1] = sums[1].wrapping_add(nh(b0, b1));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn is_nh_under_each_key() {
        let hasher = TokenHasher::random().unwrap();
        let text: Vec<u8> = (0..40u8).collect();
        // By hand: three blocks (the last one zero-padded), per key.
        let mut padded = text.clone();
        padded.resize(48, 0);
        let mut expected = [0u128; 2];
        for (block, chunk) in padded.chunks_exact(16).enumerate() {
            let m0 = u64::from_le_bytes(chunk[..8].try_into().unwrap());
            let m1 = u64::from_le_bytes(chunk[8..].try_into().unwrap());
            for (n, sum) in expected.iter_mut().enumerate() {
                let k0 = hasher.keys[block * 4 + 2 * n];
                let k1 = hasher.keys[block * 4 + 2 * n + 1];
                let product = u128::from(m0.wrapping_add(k0)) * u128::from(m1.wrapping_add(k1));
                *sum = sum.wrapping_add(product);
            }
        }
        let digest = hasher.digest(&text).unwrap();
        assert_eq!(digest.sums, expected);
        assert_eq!(digest.len, 40);
    }

    #[test]
    fn covers_every_length_up_to_the_longest_token() {
        let hasher = TokenHasher::random().unwrap();
        let longest = vec![b'A'; MAX_TOKEN_LEN];
        assert!(hasher.digest(&longest).is_some());
        assert!(hasher.digest(&longest[..MAX_TOKEN_LEN - 1]).is_some());
        assert!(hasher.digest(b"").is_some());
        assert!(hasher.digest(&[b'A'; MAX_TOKEN_LEN + 1]).is_none());
    }

    #[test]
    fn padding_and_single_bytes_change_the_digest() {
        let hasher = TokenHasher::random().unwrap();
        let base = hasher.digest(b"AAAAAAAAAAAAAAAAAAAA").unwrap();
        assert_ne!(hasher.digest(b"AAAAAAAAAAAAAAAAAAAA\0").unwrap(), base);
        for i in 0..20 {
            let mut text = *b"AAAAAAAAAAAAAAAAAAAA";
            text[i] = b'B';
            assert_ne!(hasher.digest(&text).unwrap(), base, "byte {i}");
        }
    }
}
