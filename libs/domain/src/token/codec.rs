//! Turning claims into token text and back: base64, sealing, expiry check.

use base64::Engine as _;
use jiff::Timestamp;

use super::{
    AdminClaims, InvalidReason, TokenError, UserClaims,
    base64_decode::{self, ENGINE, decoded_len_estimate},
    key::{SealError, TokenKeyring},
};

/// Longest token text accepted, in bytes. Real tokens are ~200 bytes; the cap keeps hostile
/// input from costing base64 and AES work.
pub const MAX_TOKEN_LEN: usize = 4096;

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
        let claims = self.with_plaintext(token, |text| Ok(UserClaims::from_json(text)?))?;
        check_expiry(claims.expires_at, now)?;
        Ok(claims)
    }

    /// The claims of an admin token that is authentic and not expired at `now`.
    pub fn decode_admin(&self, token: &str, now: Timestamp) -> Result<AdminClaims, TokenError> {
        let claims = self.with_plaintext(token, |text| Ok(AdminClaims::from_json(text)?))?;
        check_expiry(claims.expires_at, now)?;
        Ok(claims)
    }

    /// Runs `read` on the plaintext of `token`. Tokens of usual size are decoded and opened
    /// in a buffer on the stack (no allocation), the smaller of two sizes that fits (zeroing
    /// the larger one costs ~70 instructions, a sixtieth of a validation); longer ones, up to
    /// [`MAX_TOKEN_LEN`], on the heap.
    fn with_plaintext<T>(
        &self,
        token: &str,
        read: impl FnOnce(&[u8]) -> Result<T, TokenError>,
    ) -> Result<T, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(InvalidReason::TooLong.into());
        }
        let estimate = decoded_len_estimate(token.len());
        if estimate <= STACK_SMALL {
            self.open_in(token, &mut [0u8; STACK_SMALL], read)
        } else if estimate <= STACK_SEALED {
            self.open_in(token, &mut [0u8; STACK_SEALED], read)
        } else {
            self.open_in(token, &mut vec![0u8; estimate], read)
        }
    }

    /// [`Self::with_plaintext`] in `buffer`, which holds the decoded token.
    fn open_in<T>(
        &self,
        token: &str,
        buffer: &mut [u8],
        read: impl FnOnce(&[u8]) -> Result<T, TokenError>,
    ) -> Result<T, TokenError> {
        let len = base64_decode::decode(token.as_bytes(), buffer)
            .ok_or(TokenError::from(InvalidReason::Base64))?;
        let sealed = buffer
            .get_mut(..len)
            .ok_or(TokenError::from(InvalidReason::Base64))?;
        if sealed.len() < super::NONCE_LEN + super::TAG_LEN {
            return Err(InvalidReason::TooShort.into());
        }
        let text = self
            .open_in_place(sealed)
            .ok_or(TokenError::from(InvalidReason::Decrypt))?;
        read(text)
    }
}

/// Decoded tokens up to this many bytes are opened in a small stack buffer: a user token with
/// ids of ~10 characters is ~125 bytes, with three 24-byte ids ~170.
const STACK_SMALL: usize = 256;
/// Decoded tokens up to this many bytes are opened on the stack; longer ones on the heap.
const STACK_SEALED: usize = 512;

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
    fn tokens_of_every_buffer_size_round_trip() {
        for len in [1, 24, 60, 100, crate::ids::MAX_ID_LEN] {
            let id = |c: &str| c.repeat(len);
            let claims = UserClaims::expiring_in(
                id("c").parse().unwrap(),
                id("a").parse().unwrap(),
                id("u").parse().unwrap(),
                now(),
                60,
            )
            .unwrap();
            let token = ring().encode_user(&claims).unwrap();
            assert_eq!(ring().decode_user(&token, now()).unwrap(), claims, "{len}");
            let mut tampered = token.into_bytes();
            tampered[20] = if tampered[20] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(tampered).unwrap();
            assert_eq!(
                ring().decode_user(&tampered, now()),
                Err(TokenError::Invalid(InvalidReason::Decrypt)),
                "{len}"
            );
        }
    }

    #[test]
    fn long_tokens_are_opened_on_the_heap() {
        // An admin token with every optional claim at the longest id: its sealed bytes exceed
        // the stack buffer.
        let id = |c: &str| c.repeat(crate::ids::MAX_ID_LEN);
        let mut claims = AdminClaims::expiring_in(id("a").parse().unwrap(), now(), 60).unwrap();
        claims.company_id_restriction = Some(id("c").parse().unwrap());
        claims.subscribed_company_id = Some(id("c").parse().unwrap());
        claims.subscribed_agent_id = Some(id("g").parse().unwrap());
        let token = ring().encode_admin(&claims).unwrap();
        assert!(decoded_len_estimate(token.len()) > STACK_SEALED);
        assert_eq!(ring().decode_admin(&token, now()).unwrap(), claims);
        let mut tampered = token.into_bytes();
        let middle = tampered.len() / 2;
        tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            ring().decode_admin(&tampered, now()),
            Err(TokenError::Invalid(InvalidReason::Decrypt))
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
