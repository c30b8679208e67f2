//! AES-256-GCM keys and the keyring that seals and opens token bytes.
//!
//! A keyring holds several keys so keys can be rotated without logging everyone out: the first
//! key encrypts, every key is tried for decryption (compat.md, "Key rotation").

use std::fmt;

use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};

/// Bytes of the random nonce in front of every token.
pub const NONCE_LEN: usize = 12;
/// Bytes of the GCM tag at the end of every token.
pub const TAG_LEN: usize = 16;

/// A key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is not 64 hex characters.
    #[error("token key must be 64 hex characters (32 bytes), got {0} characters")]
    WrongLength(usize),
    /// The text has the right length but is not hex.
    #[error("token key must be hex")]
    NotHex,
    /// A keyring needs at least one key.
    #[error("at least one token key is required")]
    NoKeys,
}

/// Sealing failed; only the system random generator can cause this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token encryption failed: {0}")]
pub struct SealError(&'static str);

/// One AES-256 key, with its cipher state (key schedule and GHASH table) prepared once.
/// `Debug` never shows the key.
///
/// The cipher is ring's: its assembly AES-GCM (AES-NI with CLMUL, or VAES with AVX2, chosen
/// at run time; a constant-time fallback otherwise) opens a ~150-byte token in about a third of
/// the instructions of the `aes-gcm` crate (docs/performance.md, levers table). The tests
/// check it against `aes-gcm` as an independent implementation.
#[derive(Clone)]
pub struct TokenKey {
    cipher: LessSafeKey,
}

impl TokenKey {
    /// A key from 64 hex characters (either case).
    pub fn from_hex(hex_text: &str) -> Result<Self, KeyError> {
        let hex_text = hex_text.trim();
        if hex_text.len() != 64 {
            return Err(KeyError::WrongLength(hex_text.chars().count()));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_text, &mut bytes).map_err(|_| KeyError::NotHex)?;
        Ok(Self::from_bytes(bytes))
    }

    /// A key from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        // ring refuses only a key of the wrong length, and AES-256 takes exactly 32 bytes.
        #[allow(clippy::expect_used)]
        let key = UnboundKey::new(&AES_256_GCM, &bytes).expect("a 32-byte AES-256 key");
        Self {
            cipher: LessSafeKey::new(key),
        }
    }

    /// `nonce || ciphertext || tag` of `plaintext` under a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError("random generator failed"))?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut out[NONCE_LEN..],
            )
            .map_err(|_| SealError("plaintext too long"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// The plaintext of `nonce || ciphertext || tag`, or `None` if it was not sealed by this key
    /// (or was altered, or is too short).
    pub fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        let mut copy = sealed.to_vec();
        let len = self.open_in_place(&mut copy)?.len();
        copy.drain(..NONCE_LEN);
        copy.truncate(len);
        Some(copy)
    }

    /// Opens `nonce || ciphertext || tag` where it lies: the plaintext (in place of the
    /// ciphertext) when this key authenticates it. On `None` the ciphertext has been
    /// overwritten (ring decrypts while it authenticates and zeroes the output of a failed
    /// open), so a caller trying another key must keep a copy.
    fn open_in_place<'a>(&self, sealed: &'a mut [u8]) -> Option<&'a [u8]> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let text = self.cipher.open_in_place(nonce, Aad::empty(), rest).ok()?;
        Some(text)
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(***)")
    }
}

/// Keys of one token kind: the first encrypts, all decrypt.
#[derive(Debug, Clone)]
pub struct TokenKeyring {
    /// Never empty; index 0 is the encryption key.
    keys: Vec<TokenKey>,
}

impl TokenKeyring {
    /// A keyring with a single key.
    pub fn single(key: TokenKey) -> Self {
        Self { keys: vec![key] }
    }

    /// A keyring from keys in priority order; the first one encrypts.
    pub fn new(keys: impl IntoIterator<Item = TokenKey>) -> Result<Self, KeyError> {
        let keys: Vec<_> = keys.into_iter().collect();
        if keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(Self { keys })
    }

    /// A keyring from hex keys in priority order; the first one encrypts.
    pub fn from_hex<S: AsRef<str>>(hex_keys: &[S]) -> Result<Self, KeyError> {
        let keys = hex_keys
            .iter()
            .map(|k| TokenKey::from_hex(k.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys)
    }

    /// How many keys decrypt.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a keyring has at least one key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Seals with the first key.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        match self.keys.first() {
            Some(key) => key.seal(plaintext),
            None => Err(SealError("empty keyring")),
        }
    }

    /// Opens with the first key that authenticates `sealed`.
    pub fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        self.keys.iter().find_map(|key| key.open(sealed))
    }

    /// Opens `sealed` in place with the first key that authenticates it: the plaintext, as a
    /// part of `sealed`, without allocating when the ring has one key. On `None` the contents
    /// of `sealed` are unspecified (a failed open overwrites the ciphertext). With several keys
    /// (a rotation) the original bytes are copied once, so that every further key gets them
    /// back after a failed open.
    pub fn open_in_place<'a>(&self, sealed: &'a mut [u8]) -> Option<&'a [u8]> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let original = (self.keys.len() > 1).then(|| sealed.to_vec());
        let mut opened = None;
        for (index, key) in self.keys.iter().enumerate() {
            if index > 0
                && let Some(original) = &original
            {
                sealed.copy_from_slice(original);
            }
            if let Some(text) = key.open_in_place(sealed) {
                opened = Some(text.len());
                break;
            }
        }
        sealed.get(NONCE_LEN..NONCE_LEN + opened?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const HEX: &str = "3a7bd3e2360a3d29eea436e864a1b8d5f2f5d5e4dba8ac39d465fc3488db3915";

    #[test]
    fn debug_hides_the_key() {
        let key = TokenKey::from_hex(HEX).unwrap();
        assert_eq!(format!("{key:?}"), "TokenKey(***)");
        let ring = TokenKeyring::single(key);
        assert!(!format!("{ring:?}").contains("3a7b"));
    }

    #[test]
    fn rejects_bad_hex() {
        assert_eq!(
            TokenKey::from_hex("abcd").unwrap_err(),
            KeyError::WrongLength(4)
        );
        let not_hex = "z".repeat(64);
        assert_eq!(TokenKey::from_hex(&not_hex).unwrap_err(), KeyError::NotHex);
        assert!(TokenKey::from_hex(&HEX.to_uppercase()).is_ok());
        assert_eq!(
            TokenKeyring::from_hex::<&str>(&[]).unwrap_err(),
            KeyError::NoKeys
        );
    }

    #[test]
    fn seal_then_open_and_nonces_differ() {
        let key = TokenKey::from_hex(HEX).unwrap();
        let a = key.seal(b"hello").unwrap();
        let b = key.seal(b"hello").unwrap();
        assert_eq!(a.len(), NONCE_LEN + 5 + TAG_LEN);
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
        assert_eq!(key.open(&a).unwrap(), b"hello");
        assert!(key.open(&a[..NONCE_LEN + TAG_LEN - 1]).is_none());
    }

    #[test]
    fn opens_in_place_with_any_key_of_the_ring() {
        let old = TokenKey::from_hex(HEX).unwrap();
        let new = TokenKey::from_bytes([7; 32]);
        let ring = TokenKeyring::new([new.clone(), old.clone()]).unwrap();
        let mut sealed = old.seal(b"claims").unwrap();
        assert_eq!(ring.open_in_place(&mut sealed).unwrap(), b"claims");

        // The second key gets the original bytes although the first one's failed open
        // overwrote them.
        let mut sealed = old.seal(b"claims").unwrap();
        let reversed = TokenKeyring::new([old.clone(), new.clone()]).unwrap();
        let mut by_new = new.seal(b"other").unwrap();
        assert_eq!(reversed.open_in_place(&mut by_new).unwrap(), b"other");
        assert_eq!(reversed.open_in_place(&mut sealed).unwrap(), b"claims");

        let original = new.seal(b"other").unwrap();
        let mut tampered = original.clone();
        tampered[NONCE_LEN] ^= 1;
        assert!(ring.open_in_place(&mut tampered).is_none());
        let only_old = TokenKeyring::single(old);
        let mut foreign = original.clone();
        assert!(only_old.open_in_place(&mut foreign).is_none());
        assert!(
            ring.open_in_place(&mut [0u8; NONCE_LEN + TAG_LEN - 1])
                .is_none()
        );
    }
}
