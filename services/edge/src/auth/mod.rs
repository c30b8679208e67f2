//! Who may connect: API keys per route, user and admin tokens (through the token cache), and
//! the failure each problem maps to (body for the client, reason label for the metric).

pub mod api_key;
pub mod token_cache;

use crate::config::Config;
use api_key::{ApiKey, KeyCheck};
use daisi_domain::ErrorBody;
use daisi_domain::token::{AdminClaims, TokenError, TokenKeyring, UserClaims};
use jiff::Timestamp;
use token_cache::{Cached, TokenCache};

/// A refused request: what the client is told and the metric label.
#[derive(Debug, Clone)]
pub struct Denied {
    /// The compat error body (its code decides the HTTP status).
    pub body: ErrorBody,
    /// `auth_failures_total{reason}`.
    pub reason: &'static str,
}

impl Denied {
    fn new(body: ErrorBody, reason: &'static str) -> Self {
        Self { body, reason }
    }
}

/// API keys, token keyrings and the caches of validated tokens.
#[derive(Debug)]
pub struct Authenticator {
    user_key: ApiKey,
    admin_key: ApiKey,
    user_tokens: TokenKeyring,
    admin_tokens: TokenKeyring,
    user_cache: TokenCache<UserClaims>,
    admin_cache: TokenCache<AdminClaims>,
}

fn token_denied(error: &TokenError) -> Denied {
    let reason = match error {
        TokenError::Missing => "token_missing",
        TokenError::Expired => "token_expired",
        TokenError::Invalid(_) => "token_invalid",
    };
    Denied::new(error.error_body(), reason)
}

/// `read` of the claims of `token`, from `cache` or `decode`d (and then cached until they
/// expire). The token is hashed once, for the lookup and the insert alike; on a hit `read` runs
/// under the cache shard's read lock, so it must stay short.
fn through_cache<C, R>(
    cache: &TokenCache<C>,
    token: &str,
    now: Timestamp,
    expires_at: impl FnOnce(&C) -> Timestamp,
    decode: impl FnOnce() -> Result<C, TokenError>,
    read: impl Fn(&C) -> R,
) -> Result<R, Denied> {
    let slot = cache.slot(token);
    if let Some(slot) = slot {
        match cache.get(slot, token, now, &read) {
            Cached::Valid(read) => return Ok(read),
            Cached::Expired => return Err(token_denied(&TokenError::Expired)),
            Cached::Miss => {}
        }
    }
    let claims = decode().map_err(|e| token_denied(&e))?;
    let answer = read(&claims);
    if let Some(slot) = slot {
        let expires_at = expires_at(&claims);
        cache.insert(slot, token, claims, expires_at);
    }
    Ok(answer)
}

/// What a user-side key check means for the client: `InvalidAPIKey` when missing or wrong.
pub fn user_key_outcome(check: KeyCheck) -> Result<(), Denied> {
    match check {
        KeyCheck::Valid => Ok(()),
        KeyCheck::Missing => Err(Denied::new(ErrorBody::api_key_missing(), "api_key_missing")),
        KeyCheck::Wrong => Err(Denied::new(ErrorBody::api_key_invalid(), "api_key_invalid")),
    }
}

/// What an admin-side key check means for the client: `E4001` missing, `E4003` wrong.
pub fn admin_key_outcome(check: KeyCheck) -> Result<(), Denied> {
    match check {
        KeyCheck::Valid => Ok(()),
        KeyCheck::Missing => Err(Denied::new(
            ErrorBody::admin_key_missing(),
            "admin_key_missing",
        )),
        KeyCheck::Wrong => Err(Denied::new(
            ErrorBody::admin_key_invalid(),
            "admin_key_invalid",
        )),
    }
}

impl Authenticator {
    /// From the edge settings.
    pub fn new(config: &Config) -> Self {
        Self {
            user_key: ApiKey::any_of(config.user_socket_keys()),
            admin_key: ApiKey::any_of(config.admin_socket_keys()),
            user_tokens: config.user_keys.clone(),
            admin_tokens: config.admin_keys.clone(),
            user_cache: TokenCache::new(config.token_cache_size),
            admin_cache: TokenCache::new(config.token_cache_size),
        }
    }

    /// The user API key (`secret_token`): `InvalidAPIKey` when missing or wrong.
    pub fn check_user_key(&self, presented: Option<&str>) -> Result<(), Denied> {
        user_key_outcome(self.user_key.check(presented))
    }

    /// The admin API key (`admin_secret_token`): `E4001` missing, `E4003` wrong.
    pub fn check_admin_key(&self, presented: Option<&str>) -> Result<(), Denied> {
        admin_key_outcome(self.admin_key.check(presented))
    }

    /// `read` of the claims of a user token. They are read in place (in the cache on a hit:
    /// a hit allocates nothing), so `read` takes what it needs and must stay short.
    pub fn user_token<R>(
        &self,
        token: Option<&str>,
        now: Timestamp,
        read: impl Fn(&UserClaims) -> R,
    ) -> Result<R, Denied> {
        let token = token.unwrap_or_default();
        through_cache(
            &self.user_cache,
            token,
            now,
            |claims| claims.expires_at,
            || self.user_tokens.decode_user(token, now),
            read,
        )
    }

    /// `read` of the claims of an admin token (read in place, like [`Self::user_token`]).
    pub fn admin_token<R>(
        &self,
        token: Option<&str>,
        now: Timestamp,
        read: impl Fn(&AdminClaims) -> R,
    ) -> Result<R, Denied> {
        let token = token.unwrap_or_default();
        through_cache(
            &self.admin_cache,
            token,
            now,
            |claims| claims.expires_at,
            || self.admin_tokens.decode_admin(token, now),
            read,
        )
    }

    /// Keyring minting user tokens.
    pub fn user_keyring(&self) -> &TokenKeyring {
        &self.user_tokens
    }

    /// Keyring minting admin tokens.
    pub fn admin_keyring(&self) -> &TokenKeyring {
        &self.admin_tokens
    }

    /// A path id that disagrees with the token.
    pub fn path_mismatch() -> Denied {
        Denied::new(ErrorBody::token_path_mismatch(), "path_mismatch")
    }
}
