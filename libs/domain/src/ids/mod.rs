//! Validated identifiers.
//!
//! Ids become NATS subject tokens and Redis key parts, so a single validator rejects anything
//! that could steer a message onto another subject or key (compat.md, "Identifiers"): empty,
//! longer than [`MAX_ID_LEN`] bytes, whitespace, `.`, `*`, `>`, `:`, `{`, `}` or control
//! characters. Every id newtype is built by one macro so the rules cannot drift apart.

mod rules;

use std::fmt;

use compact_str::CompactString;

pub use rules::{IdError, IdKind, IdProblem, MAX_ID_LEN, validate_id};

/// Defines a validated string id newtype with parsing, display and serde. The text is a
/// `CompactString`: ids up to 24 bytes (nearly all) live inline in the 24 bytes a `String`
/// takes, so making or cloning one does not allocate (a token's three ids were ~370 of the
/// ~4,000 instructions of its validation as `String`s).
macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident, $kind:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(CompactString);

        impl $name {
            /// The kind used in error messages.
            pub const KIND: IdKind = $kind;

            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate_id(Self::KIND, &value)?;
                Ok(Self(CompactString::from(value)))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }

            /// The id as an owned string.
            pub fn into_string(self) -> String {
                self.0.into_string()
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, IdError> {
                validate_id(Self::KIND, s)?;
                Ok(Self(CompactString::new(s)))
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;

            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;

            fn try_from(value: &str) -> Result<Self, IdError> {
                value.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.into_string()
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.0.as_str())
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.0.as_str()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0.as_str())
            }
        }
    };
}

define_id!(
    /// A tenant (`company_id`).
    CompanyId,
    IdKind::Company
);
define_id!(
    /// An agent (inbox) of a company (`agent_id`).
    AgentId,
    IdKind::Agent
);
define_id!(
    /// An end user holding a user token (`user_id`).
    UserId,
    IdKind::User
);
define_id!(
    /// An administrator holding an admin token (`admin_id`).
    AdminId,
    IdKind::Admin
);
define_id!(
    /// A chat whose `messages` events a socket can select (`chat_id`).
    ChatId,
    IdKind::Chat
);
define_id!(
    /// One running edge pod; same rules as the other ids because it is a key part too.
    PodId,
    IdKind::Pod
);
define_id!(
    /// One WebSocket connection, unique across pods and restarts.
    ConnectionId,
    IdKind::Connection
);

impl ConnectionId {
    /// A fresh random id (UUID v4, 32 hex digits without hyphens).
    pub fn generate() -> Self {
        let mut text = [0u8; uuid::fmt::Simple::LENGTH];
        Self(CompactString::new(
            uuid::Uuid::new_v4().simple().encode_lower(&mut text),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        for ok in [
            "c1",
            "comp-9",
            "user_42",
            "ÄÖ-ünicode",
            "a@b",
            &"x".repeat(128),
        ] {
            assert_eq!(CompanyId::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn every_type_applies_the_rules() {
        assert_eq!(
            CompanyId::new("a.b").unwrap_err().to_string(),
            "company_id must not contain '.'"
        );
        assert!(CompanyId::new("x".repeat(129)).is_err());
        assert!(UserId::new("a b").is_err());
        assert!(AdminId::new("").is_err());
        assert!("a:b".parse::<AgentId>().is_err());
        assert!(ConnectionId::try_from("a{b".to_owned()).is_err());
    }

    #[test]
    fn error_names_the_id_kind() {
        assert!(
            ChatId::new("")
                .unwrap_err()
                .to_string()
                .starts_with("chat_id ")
        );
        assert!(
            PodId::new("")
                .unwrap_err()
                .to_string()
                .starts_with("pod_id ")
        );
    }

    #[test]
    fn serde_validates_on_deserialize() {
        let id: AgentId = serde_json::from_str("\"a1\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"a1\"");
        let err = serde_json::from_str::<AgentId>("\"a.1\"").unwrap_err();
        assert!(err.to_string().contains("agent_id must not contain '.'"));
    }

    #[test]
    fn short_ids_are_inline_and_long_ones_still_whole() {
        assert!(!CompanyId::new("comp-9").unwrap().0.is_heap_allocated());
        assert!(
            !"x".repeat(24)
                .parse::<UserId>()
                .unwrap()
                .0
                .is_heap_allocated()
        );
        let long = "y".repeat(128);
        let id = AgentId::new(long.clone()).unwrap();
        assert_eq!(id.as_str(), long);
        assert_eq!(String::from(id.clone()), long);
        assert_eq!(id.into_string(), long);
    }

    #[test]
    fn generated_connection_ids_are_valid_and_distinct() {
        let a = ConnectionId::generate();
        let b = ConnectionId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert!(ConnectionId::new(a.as_str()).is_ok());
    }
}
