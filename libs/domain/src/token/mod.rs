//! User and admin tokens, byte-compatible with the deployed Go service (compat.md, "Tokens").
//!
//! Format: URL-safe base64 (emitted with `=` padding, accepted with or without) of
//! `nonce(12) || ciphertext || tag(16)`, AES-256-GCM without associated data, over the JSON
//! claims. Decoding takes `now` from the caller so expiry is testable and no clock is hidden
//! in here.

mod base64_decode;
mod claims;
mod codec;
mod expiry;
mod flat_json;
mod key;

pub use claims::{AdminClaims, UserClaims};
pub use codec::MAX_TOKEN_LEN;
pub use expiry::{ExpiryError, expires_at_after, format_rfc3339_nano, parse_rfc3339};
pub use key::{KeyError, NONCE_LEN, SealError, TAG_LEN, TokenKey, TokenKeyring};

use crate::{error_body::ErrorBody, ids::IdError};

/// Why a token was refused. The three variants map to the three client-visible messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token was given (empty string).
    #[error("token is missing")]
    Missing,
    /// The token cannot be trusted or read; the reason is for logs only, never for clients.
    #[error("token is invalid: {0}")]
    Invalid(InvalidReason),
    /// The token was valid but `expires_at` has passed.
    #[error("token has expired")]
    Expired,
}

impl TokenError {
    /// The body sent to the client (`InvalidToken` with the matching fixed message).
    pub fn error_body(&self) -> ErrorBody {
        match self {
            Self::Missing => ErrorBody::token_missing(),
            Self::Invalid(_) => ErrorBody::token_invalid(),
            Self::Expired => ErrorBody::token_expired(),
        }
    }
}

/// The internal reason behind [`TokenError::Invalid`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidReason {
    /// Longer than [`MAX_TOKEN_LEN`]; refused before any work is done.
    #[error("token longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    /// Not URL-safe base64.
    #[error("not url-safe base64")]
    Base64,
    /// Shorter than a nonce plus a tag.
    #[error("shorter than nonce and tag")]
    TooShort,
    /// No configured key authenticates it (wrong key or tampered).
    #[error("authentication failed with every key")]
    Decrypt,
    /// The plaintext is not the expected JSON.
    #[error("claims are not valid json: {0}")]
    Json(String),
    /// A required claim is absent or empty.
    #[error("claim {0} is missing or empty")]
    MissingClaim(&'static str),
    /// A claim holds an invalid id.
    #[error("bad claim: {0}")]
    BadClaim(IdError),
    /// `expires_at` is not RFC 3339 with an offset.
    #[error("expires_at is not rfc 3339 with an offset")]
    BadExpiry,
}

impl From<InvalidReason> for TokenError {
    fn from(reason: InvalidReason) -> Self {
        Self::Invalid(reason)
    }
}
