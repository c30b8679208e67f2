//! The id rules, shared by every id type and by subject tokens.
//!
//! compat.md: reject ids that are empty, longer than 128 bytes, or contain whitespace, `.`,
//! `*`, `>`, `:`, `{`, `}` or control characters (NATS wildcards and separators, Redis key
//! separators and hash-tag braces).

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

/// Bytes that are a whole char passing every rule: printable ASCII (no space, no control)
/// except `.`, `*`, `>`, `:`, `{`, `}`.
const PLAIN_ASCII: [bool; 256] = {
    let mut plain = [false; 256];
    let mut b = 0x21;
    while b < 0x7f {
        plain[b] = !matches!(b as u8, b'.' | b'*' | b'>' | b':' | b'{' | b'}');
        b += 1;
    }
    plain
};

/// Checks `value` against the id rules; the one validator behind every id type.
pub fn validate_id(kind: IdKind, value: &str) -> Result<(), IdError> {
    let fail = |problem| Err(IdError { kind, problem });
    if value.is_empty() {
        return fail(IdProblem::Empty);
    }
    if value.len() > MAX_ID_LEN {
        return fail(IdProblem::TooLong(value.len()));
    }
    // Printable ASCII other than the forbidden six is always fine; most ids are only that
    // (ids are checked on every token decoded, so the per-char rules below are the slow path).
    if value.bytes().all(|b| PLAIN_ASCII[usize::from(b)]) {
        return Ok(());
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

#[cfg(test)]
mod tests {
    use super::*;

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
            let err = validate_id(IdKind::Company, input).err();
            assert_eq!(
                err.map(|e| e.to_string()).as_deref(),
                Some(message),
                "input {input:?}"
            );
        }
        let long = "x".repeat(MAX_ID_LEN + 1);
        assert_eq!(
            validate_id(IdKind::Company, &long).err().map(|e| e.problem),
            Some(IdProblem::TooLong(129))
        );
        assert!(validate_id(IdKind::Company, &"x".repeat(MAX_ID_LEN)).is_ok());
    }

    /// The per-char rules alone, as they were before the ASCII shortcut.
    fn by_chars(value: &str) -> Option<IdProblem> {
        value.chars().find_map(|c| match c {
            '.' | '*' | '>' | ':' | '{' | '}' => Some(IdProblem::Forbidden(c)),
            c if c.is_control() => Some(IdProblem::Control),
            c if c.is_whitespace() => Some(IdProblem::Whitespace),
            _ => None,
        })
    }

    #[test]
    fn ascii_shortcut_agrees_with_the_char_rules_on_every_byte() {
        for b in 0u8..0x80 {
            let text = format!("a{}b", char::from(b));
            let problem = validate_id(IdKind::Chat, &text).err().map(|e| e.problem);
            assert_eq!(problem, by_chars(&text), "byte {b:#x}");
        }
        for text in ["ÄÖ-ünicode", "a\u{2028}b", "x\u{85}", "ok-ok_ok@ok"] {
            let problem = validate_id(IdKind::Chat, text).err().map(|e| e.problem);
            assert_eq!(problem, by_chars(text), "{text:?}");
        }
    }
}
