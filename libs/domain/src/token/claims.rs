//! What a token says about its bearer, and the JSON plaintext it is stored as.
//!
//! Decoding is strict about what matters (required fields present and non-empty, ids valid,
//! `expires_at` parseable) and lenient about the rest (unknown fields ignored, as the Go
//! service did). Encoding writes the field order and `omitempty` behaviour of the Go service.

use std::{borrow::Cow, str::FromStr};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{
    InvalidReason,
    expiry::{ExpiryError, expires_at_after, format_rfc3339_nano, parse_rfc3339},
    flat_json,
};
use crate::{
    ids::{AdminId, AgentId, CompanyId, IdError, UserId},
    session_key::SessionKey,
};

/// Claims of a user token. All fields are required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserClaims {
    /// The company the user belongs to; must match the socket path.
    pub company_id: CompanyId,
    /// The agent the user may connect to; must match the socket path.
    pub agent_id: AgentId,
    /// The user.
    pub user_id: UserId,
    /// The token is rejected after this instant.
    pub expires_at: Timestamp,
}

impl UserClaims {
    /// Claims expiring `expires_in_seconds` after `now`.
    pub fn expiring_in(
        company_id: CompanyId,
        agent_id: AgentId,
        user_id: UserId,
        now: Timestamp,
        expires_in_seconds: u64,
    ) -> Result<Self, ExpiryError> {
        Ok(Self {
            company_id,
            agent_id,
            user_id,
            expires_at: expires_at_after(now, expires_in_seconds)?,
        })
    }

    /// The session this token opens.
    pub fn session_key(&self) -> SessionKey {
        SessionKey::user(
            self.company_id.clone(),
            self.agent_id.clone(),
            self.user_id.clone(),
        )
    }
}

/// Claims of an admin token. Optional fields are `None` when absent or empty in the JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminClaims {
    /// The admin.
    pub admin_id: AdminId,
    /// The token is rejected after this instant.
    pub expires_at: Timestamp,
    /// If set, the admin only ever receives events of this company.
    pub company_id_restriction: Option<CompanyId>,
    /// If set, only `agents` events of this company are delivered; `None` means any.
    pub subscribed_company_id: Option<CompanyId>,
    /// If set, only `agents` events of this agent are delivered; `None` means any.
    pub subscribed_agent_id: Option<AgentId>,
}

impl AdminClaims {
    /// Unrestricted claims expiring `expires_in_seconds` after `now`.
    pub fn expiring_in(
        admin_id: AdminId,
        now: Timestamp,
        expires_in_seconds: u64,
    ) -> Result<Self, ExpiryError> {
        Ok(Self {
            admin_id,
            expires_at: expires_at_after(now, expires_in_seconds)?,
            company_id_restriction: None,
            subscribed_company_id: None,
            subscribed_agent_id: None,
        })
    }

    /// The session this token opens.
    pub fn session_key(&self) -> SessionKey {
        SessionKey::admin(self.admin_id.clone())
    }

    /// Whether an `agents` event of (`company`, `agent`) is delivered to this admin
    /// (compat.md, "Delivery"): subscriptions match or are unset, and the restriction, if
    /// set, equals the company.
    pub fn wants_agent_event(&self, company: &CompanyId, agent: &AgentId) -> bool {
        let matches = |want: &Option<_>, have| want.as_ref().is_none_or(|w| w == have);
        matches(&self.company_id_restriction, company)
            && matches(&self.subscribed_company_id, company)
            && self.subscribed_agent_id.as_ref().is_none_or(|w| w == agent)
    }
}

#[derive(Serialize, Deserialize)]
struct UserWire<'a> {
    #[serde(borrow, default)]
    company_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    agent_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    user_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    expires_at: Option<Cow<'a, str>>,
}

#[derive(Serialize, Deserialize)]
struct AdminWire<'a> {
    #[serde(borrow, default)]
    admin_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    company_id_restriction: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    subscribed_company_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    subscribed_agent_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    expires_at: Option<Cow<'a, str>>,
}

fn required<T: FromStr<Err = IdError>>(
    field: &'static str,
    value: Option<&str>,
) -> Result<T, InvalidReason> {
    match value {
        None | Some("") => Err(InvalidReason::MissingClaim(field)),
        Some(text) => text.parse().map_err(InvalidReason::BadClaim),
    }
}

fn optional<T: FromStr<Err = IdError>>(value: Option<&str>) -> Result<Option<T>, InvalidReason> {
    match value {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(InvalidReason::BadClaim),
    }
}

fn expiry(value: Option<&str>) -> Result<Timestamp, InvalidReason> {
    match value {
        None | Some("") => Err(InvalidReason::MissingClaim("expires_at")),
        Some(text) => parse_rfc3339(text).ok_or(InvalidReason::BadExpiry),
    }
}

fn json_error(error: &serde_json::Error) -> InvalidReason {
    InvalidReason::Json(error.to_string())
}

fn text(value: &str) -> Option<Cow<'_, str>> {
    Some(Cow::Borrowed(value))
}

impl UserClaims {
    /// The claims in `plaintext`: the usual flat object is read in place (quickest in the
    /// order we and the Go service write), anything else by serde_json (same answer either
    /// way, see `flat_json`).
    pub(super) fn from_json(plaintext: &[u8]) -> Result<Self, InvalidReason> {
        const NAMES: [&str; 4] = ["company_id", "agent_id", "user_id", "expires_at"];
        let in_order =
            flat_json::in_order!(plaintext; "company_id", "agent_id", "user_id", "expires_at");
        if let Some([company, agent, user, expires]) = in_order {
            return Self::from_fields(Some(company), Some(agent), Some(user), Some(expires));
        }
        if let Some([company, agent, user, expires]) = flat_json::string_fields(plaintext, NAMES) {
            return Self::from_fields(company, agent, user, expires);
        }
        Self::from_json_by_serde(plaintext)
    }

    fn from_json_by_serde(plaintext: &[u8]) -> Result<Self, InvalidReason> {
        let wire: UserWire<'_> = serde_json::from_slice(plaintext).map_err(|e| json_error(&e))?;
        Self::from_fields(
            wire.company_id.as_deref(),
            wire.agent_id.as_deref(),
            wire.user_id.as_deref(),
            wire.expires_at.as_deref(),
        )
    }

    fn from_fields(
        company: Option<&str>,
        agent: Option<&str>,
        user: Option<&str>,
        expires: Option<&str>,
    ) -> Result<Self, InvalidReason> {
        Ok(Self {
            company_id: required("company_id", company)?,
            agent_id: required("agent_id", agent)?,
            user_id: required("user_id", user)?,
            expires_at: expiry(expires)?,
        })
    }

    pub(super) fn to_json(&self) -> Vec<u8> {
        let expires_at = format_rfc3339_nano(self.expires_at);
        let wire = UserWire {
            company_id: text(self.company_id.as_str()),
            agent_id: text(self.agent_id.as_str()),
            user_id: text(self.user_id.as_str()),
            expires_at: text(&expires_at),
        };
        // A struct of strings always serializes.
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}

impl AdminClaims {
    /// The claims in `plaintext`, read as `UserClaims::from_json` reads a user token's.
    pub(super) fn from_json(plaintext: &[u8]) -> Result<Self, InvalidReason> {
        const NAMES: [&str; 5] = [
            "admin_id",
            "expires_at",
            "company_id_restriction",
            "subscribed_company_id",
            "subscribed_agent_id",
        ];
        if let Some(fields) = flat_json::string_fields(plaintext, NAMES) {
            return Self::from_fields(fields);
        }
        Self::from_json_by_serde(plaintext)
    }

    fn from_json_by_serde(plaintext: &[u8]) -> Result<Self, InvalidReason> {
        let wire: AdminWire<'_> = serde_json::from_slice(plaintext).map_err(|e| json_error(&e))?;
        Self::from_fields([
            wire.admin_id.as_deref(),
            wire.expires_at.as_deref(),
            wire.company_id_restriction.as_deref(),
            wire.subscribed_company_id.as_deref(),
            wire.subscribed_agent_id.as_deref(),
        ])
    }

    /// From the fields in the order of `from_json`'s `NAMES`.
    fn from_fields(
        [admin, expires, restriction, company, agent]: [Option<&str>; 5],
    ) -> Result<Self, InvalidReason> {
        Ok(Self {
            admin_id: required("admin_id", admin)?,
            expires_at: expiry(expires)?,
            company_id_restriction: optional(restriction)?,
            subscribed_company_id: optional(company)?,
            subscribed_agent_id: optional(agent)?,
        })
    }

    pub(super) fn to_json(&self) -> Vec<u8> {
        let expires_at = format_rfc3339_nano(self.expires_at);
        let wire = AdminWire {
            admin_id: text(self.admin_id.as_str()),
            company_id_restriction: self
                .company_id_restriction
                .as_ref()
                .and_then(|c| text(c.as_str())),
            subscribed_company_id: self
                .subscribed_company_id
                .as_ref()
                .and_then(|c| text(c.as_str())),
            subscribed_agent_id: self
                .subscribed_agent_id
                .as_ref()
                .and_then(|a| text(a.as_str())),
            expires_at: text(&expires_at),
        };
        // A struct of strings always serializes.
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// The plaintexts of the token vectors (spec/token-vectors.json), user and admin.
    fn vector_plaintexts() -> Vec<String> {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/token-vectors.json")).unwrap();
        vectors["cases"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|case| Some(case["plaintext"].as_str()?.to_owned()))
            .collect()
    }

    /// Both readers give the same claims or the same error (JSON error texts aside: the fast
    /// path hands every text it cannot read to serde_json, which writes them).
    fn same_answer(plaintext: &[u8]) {
        assert_eq!(
            UserClaims::from_json(plaintext),
            UserClaims::from_json_by_serde(plaintext),
            "{:?}",
            String::from_utf8_lossy(plaintext)
        );
        assert_eq!(
            AdminClaims::from_json(plaintext),
            AdminClaims::from_json_by_serde(plaintext),
            "{:?}",
            String::from_utf8_lossy(plaintext)
        );
    }

    #[test]
    fn vectors_read_the_same_by_both_readers() {
        let plaintexts = vector_plaintexts();
        assert!(plaintexts.len() >= 10, "{}", plaintexts.len());
        // The user vectors with all four claims are in the order the in-order reader expects.
        let in_order = plaintexts
            .iter()
            .filter(|p| {
                let text = p.as_bytes();
                flat_json::in_order!(text; "company_id", "agent_id", "user_id", "expires_at")
                    .is_some()
            })
            .count();
        assert!(in_order >= 8, "{in_order}");
        for plaintext in &plaintexts {
            same_answer(plaintext.as_bytes());
            // Every object among them has the usual shape: the fast path reads it.
            if plaintext.starts_with('{') {
                let fields = flat_json::string_fields(plaintext.as_bytes(), ["expires_at"]);
                assert!(fields.is_some(), "{plaintext}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A vector's plaintext with one byte replaced, inserted or removed.
        #[test]
        fn edited_vectors_read_the_same_by_both_readers(
            which in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            byte in prop_oneof![
                Just(b'"'), Just(b'\\'), Just(b','), Just(b':'), Just(b'{'), Just(b'}'),
                Just(b' '), Just(b'.'), Just(0u8), Just(0xc3), any::<u8>(),
            ],
            edit in 0..3u8,
        ) {
            let plaintexts = vector_plaintexts();
            let mut text = plaintexts[which.index(plaintexts.len())].clone().into_bytes();
            let at = at.index(text.len());
            match edit {
                0 => text[at] = byte,
                1 => text.insert(at, byte),
                _ => {
                    text.remove(at);
                }
            }
            same_answer(&text);
        }
    }
}
