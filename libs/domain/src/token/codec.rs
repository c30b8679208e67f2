//! Turning claims into token text and back: base64, sealing, expiry check.

use base64::{
    Engine as _, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use jiff::Timestamp;

use super::{
    AdminClaims, InvalidReason, TokenError, UserClaims,
    key::{SealError, TokenKeyring},
};

/// Longest token text accepted, in bytes. Real tokens are ~200 bytes; the cap keeps hostile
/// input from costing base64 and AES work.
pub const MAX_TOKEN_LEN: usize = 4096;

/// URL-safe alphabet, `=` padding on output, padding optional on input. Non-zero trailing bits
/// are tolerated like Go's non-strict decoder; GCM authenticates the bytes anyway.
const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

impl TokenKeyring {
    /// A user token for `claims`, sealed with the first key under a random nonce.
    pub fn encode_user(&self, claims: &UserClaims) -> Result<String, SealError> {
        Ok(ENGINE.encode(self.seal(&claims.to_json())?))
    }

    /// An admin token for `claims`, sealed with the first key under a random nonce.
    pub fn encode_admin(&self, claims: &AdminClaims) -> Result<String, SealError> {
        Ok(ENGINE.encode(self.seal(&claims.to_json())?))
    }

    /// The claims of a user token that is authentic and not expired at `now`.
    pub fn decode_user(&self, token: &str, now: Timestamp) -> Result<UserClaims, TokenError> {
        let claims = UserClaims::from_json(&self.open_text(token)?)?;
        check_expiry(claims.expires_at, now)?;
        Ok(claims)
    }

    /// The claims of an admin token that is authentic and not expired at `now`.
    pub fn decode_admin(&self, token: &str, now: Timestamp) -> Result<AdminClaims, TokenError> {
        let claims = AdminClaims::from_json(&self.open_text(token)?)?;
        check_expiry(claims.expires_at, now)?;
        Ok(claims)
    }

    fn open_text(&self, token: &str) -> Result<Vec<u8>, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(InvalidReason::TooLong.into());
        }
        let sealed = ENGINE
            .decode(token)
            .map_err(|_| TokenError::from(InvalidReason::Base64))?;
        if sealed.len() < super::NONCE_LEN + super::TAG_LEN {
            return Err(InvalidReason::TooShort.into());
        }
        self.open(&sealed).ok_or(InvalidReason::Decrypt.into())
    }
}

/// Go's `time.Now().After(expires_at)`: the token is still good at the very instant.
fn check_expiry(expires_at: Timestamp, now: Timestamp) -> Result<(), TokenError> {
    if now > expires_at {
        Err(TokenError::Expired)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::token::TokenKey;

    const HEX: &str = "3a7bd3e2360a3d29eea436e864a1b8d5f2f5d5e4dba8ac39d465fc3488db3915";

    fn ring() -> TokenKeyring {
        TokenKeyring::single(TokenKey::from_hex(HEX).unwrap())
    }

    fn now() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn user() -> UserClaims {
        UserClaims::expiring_in(
            "c1".parse().unwrap(),
            "a1".parse().unwrap(),
            "u1".parse().unwrap(),
            now(),
            60,
        )
        .unwrap()
    }

    #[test]
    fn user_round_trip_and_padding() {
        let token = ring().encode_user(&user()).unwrap();
        assert_eq!(token.len() % 4, 0, "always padded");
        assert_eq!(ring().decode_user(&token, now()).unwrap(), user());
        let unpadded = token.trim_end_matches('=');
        assert_eq!(ring().decode_user(unpadded, now()).unwrap(), user());
    }

    #[test]
    fn expiry_boundary_follows_go() {
        let token = ring().encode_user(&user()).unwrap();
        let at = user().expires_at;
        assert!(ring().decode_user(&token, at).is_ok());
        let after = at.checked_add(jiff::SignedDuration::from_nanos(1)).unwrap();
        assert_eq!(ring().decode_user(&token, after), Err(TokenError::Expired));
    }

    #[test]
    fn refuses_missing_long_and_garbage() {
        assert_eq!(ring().decode_user("", now()), Err(TokenError::Missing));
        let long = "A".repeat(MAX_TOKEN_LEN + 4);
        assert_eq!(
            ring().decode_user(&long, now()),
            Err(TokenError::Invalid(InvalidReason::TooLong))
        );
        assert_eq!(
            ring().decode_user("a+b/", now()),
            Err(TokenError::Invalid(InvalidReason::Base64))
        );
        assert_eq!(
            ring().decode_user("AAAA", now()),
            Err(TokenError::Invalid(InvalidReason::TooShort))
        );
    }

    #[test]
    fn admin_token_is_not_a_user_token() {
        let admin = AdminClaims::expiring_in("ad1".parse().unwrap(), now(), 60).unwrap();
        let token = ring().encode_admin(&admin).unwrap();
        assert_eq!(ring().decode_admin(&token, now()).unwrap(), admin);
        assert_eq!(
            ring().decode_user(&token, now()),
            Err(TokenError::Invalid(InvalidReason::MissingClaim(
                "company_id"
            )))
        );
    }
}
