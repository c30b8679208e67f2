//! The identity of a live session: whose second connection takes the first one over.
//!
//! compat.md says "one live session per user". A user token always carries company, agent and
//! user, and a user socket is opened on `/ws/{company}/{agent}`, so the identity of a user
//! session is the triple (company_id, agent_id, user_id): the same user connected to two
//! different agents holds two sessions, the same user connecting twice to one agent takes the
//! first connection over. An admin session is identified by its `admin_id` alone.
//!
//! The string form (`u:{company}:{agent}:{user}`, `a:{admin}`) is stable and used as a Redis key
//! part; it is unambiguous because ids cannot contain `:`.

use std::{fmt, str::FromStr};

use crate::ids::{AdminId, AgentId, CompanyId, IdError, UserId};

/// Who owns a session; at most one live connection exists per key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SessionKey {
    /// A user session of one agent of one company.
    User {
        /// The user's company.
        company: CompanyId,
        /// The agent the user is connected to.
        agent: AgentId,
        /// The user.
        user: UserId,
    },
    /// An admin session.
    Admin {
        /// The admin.
        admin: AdminId,
    },
}

/// A string that is not a [`SessionKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionKeyError {
    /// Not `u:{company}:{agent}:{user}` or `a:{admin}`.
    #[error("session key must look like 'u:company:agent:user' or 'a:admin'")]
    Shape,
    /// The shape is right but an id is invalid.
    #[error(transparent)]
    Id(#[from] IdError),
}

impl SessionKey {
    /// The key of a user session.
    pub fn user(company: CompanyId, agent: AgentId, user: UserId) -> Self {
        Self::User {
            company,
            agent,
            user,
        }
    }

    /// The key of an admin session.
    pub fn admin(admin: AdminId) -> Self {
        Self::Admin { admin }
    }

    /// The company of a user session; admins belong to none.
    pub fn company(&self) -> Option<&CompanyId> {
        match self {
            Self::User { company, .. } => Some(company),
            Self::Admin { .. } => None,
        }
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User {
                company,
                agent,
                user,
            } => write!(f, "u:{company}:{agent}:{user}"),
            Self::Admin { admin } => write!(f, "a:{admin}"),
        }
    }
}

impl FromStr for SessionKey {
    type Err = SessionKeyError;

    fn from_str(s: &str) -> Result<Self, SessionKeyError> {
        let mut parts = s.split(':');
        let key = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("u"), Some(company), Some(agent), Some(user)) => {
                Self::user(company.parse()?, agent.parse()?, user.parse()?)
            }
            (Some("a"), Some(admin), None, None) => Self::admin(admin.parse()?),
            _ => return Err(SessionKeyError::Shape),
        };
        if parts.next().is_some() {
            return Err(SessionKeyError::Shape);
        }
        Ok(key)
    }
}

impl serde::Serialize for SessionKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SessionKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn user_key() -> SessionKey {
        SessionKey::user(
            "c1".parse().unwrap(),
            "a1".parse().unwrap(),
            "u1".parse().unwrap(),
        )
    }

    #[test]
    fn renders_stable_strings() {
        assert_eq!(user_key().to_string(), "u:c1:a1:u1");
        let admin = SessionKey::admin("ad1".parse().unwrap());
        assert_eq!(admin.to_string(), "a:ad1");
    }

    #[test]
    fn parses_back_what_it_renders() {
        let admin = SessionKey::admin("ad1".parse().unwrap());
        for key in [user_key(), admin] {
            assert_eq!(key.to_string().parse::<SessionKey>().unwrap(), key);
        }
    }

    #[test]
    fn rejects_malformed_keys() {
        for bad in [
            "",
            "u:c1:a1",
            "u:c1:a1:u1:x",
            "a:",
            "a:x:y",
            "x:c1",
            "u::a1:u1",
        ] {
            assert!(bad.parse::<SessionKey>().is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            "u:c1:a1:".parse::<SessionKey>(),
            Err(SessionKeyError::Id(_))
        ));
    }

    #[test]
    fn serde_uses_the_string_form() {
        let json = serde_json::to_string(&user_key()).unwrap();
        assert_eq!(json, "\"u:c1:a1:u1\"");
        assert_eq!(
            serde_json::from_str::<SessionKey>(&json).unwrap(),
            user_key()
        );
    }
}
