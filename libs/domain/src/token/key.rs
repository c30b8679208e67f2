//! AES-256-GCM keys and the keyring that seals and opens token bytes.
//!
//! A keyring holds several keys so keys can be rotated without logging everyone out: the first
//! key encrypts, every key is tried for decryption (compat.md, "Key rotation").

use std::fmt;

use aes_gcm::{
    Aes256Gcm,
    aead::{Aead, AeadInOut, Generate, KeyInit},
};

/// Bytes of the random nonce in front of every token.
pub const NONCE_LEN: usize = 12;
/// Bytes of the GCM tag at the end of every token.
pub const TAG_LEN: usize = 16;

type Nonce = aes_gcm::aead::Nonce<Aes256Gcm>;

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

/// One AES-256 key, with its cipher state prepared once. `Debug` never shows the key.
#[derive(Clone)]
pub struct TokenKey {
    cipher: Aes256Gcm,
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
        let key = aes_gcm::Key::<Aes256Gcm>::from(bytes);
        Self {
            cipher: Aes256Gcm::new(&key),
        }
    }

    /// `nonce || ciphertext || tag` of `plaintext` under a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let nonce = Nonce::try_generate().map_err(|_| SealError("random generator failed"))?;
        let sealed = self
            .cipher
            .encrypt(&nonce, plaintext)
            .map_err(|_| SealError("plaintext too long"))?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plaintext of `nonce || ciphertext || tag`, or `None` if it was not sealed by this key
    /// (or was altered, or is too short).
    pub fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).ok()?;
        self.cipher.decrypt(&nonce, ciphertext).ok()
    }

    /// Opens `nonce || ciphertext || tag` where it lies: `true` when this key authenticates
    /// it, the ciphertext then replaced by the plaintext. On `false`, `sealed` is unchanged
    /// (the tag is checked before anything is decrypted), so another key can be tried.
    fn open_in_place(&self, sealed: &mut [u8]) -> bool {
        let Some(body_len) = sealed.len().checked_sub(NONCE_LEN + TAG_LEN) else {
            return false;
        };
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let (body, tag) = rest.split_at_mut(body_len);
        let tag: Result<aes_gcm::Tag, _> = (&*tag).try_into();
        let (Ok(nonce), Ok(tag)) = (Nonce::try_from(&*nonce), tag) else {
            return false;
        };
        self.cipher
            .decrypt_inout_detached(&nonce, b"", body.into(), &tag)
            .is_ok()
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
    /// part of `sealed`, without allocating.
    pub fn open_in_place<'a>(&self, sealed: &'a mut [u8]) -> Option<&'a [u8]> {
        let end = sealed.len().checked_sub(TAG_LEN)?;
        if end < NONCE_LEN {
            return None;
        }
        self.keys
            .iter()
            .any(|key| key.open_in_place(sealed))
            .then(|| &sealed[NONCE_LEN..end])
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
    fn opens_in_place_with_any_key_of_the_ring_and_leaves_failures_untouched() {
        let old = TokenKey::from_hex(HEX).unwrap();
        let new = TokenKey::from_bytes([7; 32]);
        let ring = TokenKeyring::new([new.clone(), old.clone()]).unwrap();
        let mut sealed = old.seal(b"claims").unwrap();
        assert_eq!(ring.open_in_place(&mut sealed).unwrap(), b"claims");

        let original = new.seal(b"other").unwrap();
        let mut tampered = original.clone();
        tampered[NONCE_LEN] ^= 1;
        let before = tampered.clone();
        assert!(ring.open_in_place(&mut tampered).is_none());
        assert_eq!(tampered, before, "a failed open changes nothing");
        let only_old = TokenKeyring::single(old);
        let mut foreign = original.clone();
        assert!(only_old.open_in_place(&mut foreign).is_none());
        assert_eq!(foreign, original);
        assert!(
            ring.open_in_place(&mut [0u8; NONCE_LEN + TAG_LEN - 1])
                .is_none()
        );
    }
}
