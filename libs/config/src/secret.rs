//! Comparing secrets without leaking them through timing: the one helper every service uses
//! where a presented credential meets a configured one (API keys, the publish key, bearer
//! tokens).
//!
//! Both sides are hashed with SHA-256 before a constant-time comparison of the digests, so
//! neither the content nor the length of the configured secret shows in how long a refusal
//! takes (`subtle`'s `ct_eq` on the raw bytes returns early when the lengths differ).

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Whether `presented` equals `expected`, in time that depends on neither's content or length
/// (beyond hashing `presented`, whose length the caller already knows).
pub fn secrets_equal(presented: &[u8], expected: &[u8]) -> bool {
    let a: [u8; 32] = Sha256::digest(presented).into();
    let b: [u8; 32] = Sha256::digest(expected).into();
    bool::from(a.ct_eq(&b))
}

/// A configured secret kept only as its SHA-256 digest: the clear text is not held in memory
/// after start-up, and [`SecretDigest::matches`] compares in constant time.
#[derive(Clone)]
pub struct SecretDigest {
    digest: [u8; 32],
}

impl SecretDigest {
    /// Keeps the digest of `secret`.
    pub fn new(secret: &SecretString) -> Self {
        Self::from_bytes(secret.expose_secret().as_bytes())
    }

    /// Keeps the digest of `secret`.
    pub fn from_bytes(secret: &[u8]) -> Self {
        Self {
            digest: Sha256::digest(secret).into(),
        }
    }

    /// Whether `presented` is the secret.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        bool::from(digest.ct_eq(&self.digest))
    }
}

impl std::fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretDigest(<redacted>)")
    }
}

/// `url` as text with its credentials hidden: the password of `user:password@`, or a lone
/// user name (NATS and Redis read `scheme://token@host` as a token). For logs, errors and
/// `Debug` output.
pub fn url_without_credentials(url: &url::Url) -> String {
    const HIDDEN: &str = "***";
    if url.password().is_none() && url.username().is_empty() {
        return url.to_string();
    }
    let mut shown = url.clone();
    // Only URLs that cannot have credentials (`mailto:`, `data:`) refuse these, and they have
    // none to hide.
    let hidden = if url.password().is_some() {
        shown.set_password(Some(HIDDEN))
    } else {
        shown.set_username(HIDDEN)
    };
    if hidden.is_err() {
        return url.to_string();
    }
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_only_when_identical() {
        assert!(secrets_equal(b"s3cret-value", b"s3cret-value"));
        assert!(!secrets_equal(b"s3cret-valu", b"s3cret-value"));
        assert!(!secrets_equal(b"s3cret-valuf", b"s3cret-value"));
        assert!(!secrets_equal(b"", b"s3cret-value"));
        assert!(secrets_equal(b"", b""));
    }

    #[test]
    fn digest_matches_and_hides_the_secret() {
        let digest = SecretDigest::new(&SecretString::from("hunter2-hunter2".to_owned()));
        assert!(digest.matches(b"hunter2-hunter2"));
        assert!(!digest.matches(b"hunter2"));
        assert!(!digest.matches(b"hunter2-hunter2 "));
        assert!(!format!("{digest:?}").contains("hunter2"));
    }
}
