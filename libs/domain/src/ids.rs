//! Validated identifiers.
//!
//! Ids become NATS subject tokens and Redis key parts, so a single validator rejects anything
//! that could steer a message onto another subject or key (compat.md, "Identifiers"): empty,
//! longer than [`MAX_ID_LEN`] bytes, whitespace, `.`, `*`, `>`, `:`, `{`, `}` or control
//! characters. Every id newtype is built by one macro so the rules cannot drift apart.

use std::fmt;

/// Longest accepted id, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Which kind of identifier was being validated; names the field in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    /// `company_id`.
    Company,
    /// `agent_id`.
    Agent,
    /// `user_id`.
    User,
    /// `admin_id`.
    Admin,
    /// `chat_id`.
    Chat,
    /// `pod_id`.
    Pod,
    /// `connection_id`.
    Connection,
    /// The event type token of a subject (`websocket.c.a.{event_type}`).
    EventType,
    /// One dot-separated token of the subject prefix.
    SubjectPrefix,
}

impl IdKind {
    /// The field name used in messages, e.g. `company_id`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Company => "company_id",
            Self::Agent => "agent_id",
            Self::User => "user_id",
            Self::Admin => "admin_id",
            Self::Chat => "chat_id",
            Self::Pod => "pod_id",
            Self::Connection => "connection_id",
            Self::EventType => "event_type",
            Self::SubjectPrefix => "subject prefix",
        }
    }
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is wrong with a rejected id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdProblem {
    /// The id is the empty string.
    Empty,
    /// The id is longer than [`MAX_ID_LEN`] bytes; carries the actual length.
    TooLong(usize),
    /// The id contains a whitespace character.
    Whitespace,
    /// The id contains a control character.
    Control,
    /// The id contains one of `.`, `*`, `>`, `:`, `{`, `}`.
    Forbidden(char),
}

/// A rejected id: which kind and why. Displays as e.g. "company_id must not contain '.'".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {problem}")]
pub struct IdError {
    /// The kind of id that was rejected.
    pub kind: IdKind,
    /// The rule it broke.
    pub problem: IdProblem,
}

impl fmt::Display for IdProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("must not be empty"),
            Self::TooLong(len) => write!(f, "must be at most {MAX_ID_LEN} bytes (got {len})"),
            Self::Whitespace => f.write_str("must not contain whitespace"),
            Self::Control => f.write_str("must not contain control characters"),
            Self::Forbidden(c) => write!(f, "must not contain '{c}'"),
        }
    }
}

/// Checks `value` against the id rules; the one validator behind every id type.
pub fn validate_id(kind: IdKind, value: &str) -> Result<(), IdError> {
    let fail = |problem| Err(IdError { kind, problem });
    if value.is_empty() {
        return fail(IdProblem::Empty);
    }
    if value.len() > MAX_ID_LEN {
        return fail(IdProblem::TooLong(value.len()));
    }
    for c in value.chars() {
        match c {
            '.' | '*' | '>' | ':' | '{' | '}' => return fail(IdProblem::Forbidden(c)),
            c if c.is_control() => return fail(IdProblem::Control),
            c if c.is_whitespace() => return fail(IdProblem::Whitespace),
            _ => {}
        }
    }
    Ok(())
}

/// Defines a validated string id newtype with parsing, display and serde.
macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident, $kind:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The kind used in error messages.
            pub const KIND: IdKind = $kind;

            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate_id(Self::KIND, &value)?;
                Ok(Self(value))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, IdError> {
                validate_id(Self::KIND, s)?;
                Ok(Self(s.to_owned()))
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
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
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
        Self(uuid::Uuid::new_v4().simple().to_string())
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
    fn rejects_each_forbidden_input_with_a_precise_message() {
        let cases = [
            ("", "company_id must not be empty"),
            ("a.b", "company_id must not contain '.'"),
            ("a*", "company_id must not contain '*'"),
            (">", "company_id must not contain '>'"),
            ("a:b", "company_id must not contain ':'"),
            ("{x", "company_id must not contain '{'"),
            ("x}", "company_id must not contain '}'"),
            ("a b", "company_id must not contain whitespace"),
            ("a\u{a0}b", "company_id must not contain whitespace"),
            ("a\tb", "company_id must not contain control characters"),
            ("a\u{7f}", "company_id must not contain control characters"),
        ];
        for (input, message) in cases {
            let err = CompanyId::new(input).unwrap_err();
            assert_eq!(err.to_string(), message, "input {input:?}");
        }
        let long = "x".repeat(129);
        assert_eq!(
            CompanyId::new(long).unwrap_err().problem,
            IdProblem::TooLong(129)
        );
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
    fn generated_connection_ids_are_valid_and_distinct() {
        let a = ConnectionId::generate();
        let b = ConnectionId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert!(ConnectionId::new(a.as_str()).is_ok());
    }
}
