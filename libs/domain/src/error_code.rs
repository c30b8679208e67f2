//! The one table of error codes: wire string, HTTP status and WebSocket close code.
//!
//! Every service maps failures through [`ErrorCode`] so the three representations of one error
//! cannot disagree (compat.md, error table). Close codes and close reasons that the contract
//! fixes outside that table are the constants of [`close`].

use std::{fmt, str::FromStr};

/// WebSocket close codes and fixed close reasons.
pub mod close {
    /// Server going away (shutdown). The old service sent 1011 here; fixed.
    pub const GOING_AWAY: u16 = 1001;
    /// Internal error, also used for a heartbeat (pong) timeout.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// `BadRequest` / `E4005`.
    pub const BAD_REQUEST: u16 = 4400;
    /// `InvalidAPIKey`.
    pub const UNAUTHORIZED: u16 = 4401;
    /// `SessionConflict`: the session was taken over by another connection.
    pub const SESSION_CONFLICT: u16 = 4402;
    /// `InvalidToken`, `E4001`, `E4003`.
    pub const FORBIDDEN: u16 = 4403;
    /// `RateLimitExceeded`.
    pub const RATE_LIMITED: u16 = 4429;

    /// Close reason sent with [`SESSION_CONFLICT`].
    pub const SESSION_TAKEN_OVER_REASON: &str =
        "SessionConflict: Session taken over by another connection";
    /// Close reason sent with [`INTERNAL_ERROR`] when the client stopped answering pings.
    pub const PONG_TIMEOUT_REASON: &str = "Pong timeout";
    /// Close reason sent with [`GOING_AWAY`] on shutdown.
    pub const SHUTTING_DOWN_REASON: &str = "Service shutting down";
}

/// An error code of the wire contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `InvalidAPIKey`: API key missing or wrong.
    InvalidApiKey,
    /// `InvalidToken`: token missing, expired, malformed, or disagreeing with the path.
    InvalidToken,
    /// `E4001`: admin API key missing.
    AdminKeyMissing,
    /// `E4003`: admin API key wrong.
    AdminKeyInvalid,
    /// `SessionConflict`: another connection took the session over.
    SessionConflict,
    /// `RateLimitExceeded`.
    RateLimitExceeded,
    /// `BadRequest`: malformed input, including invalid ids.
    BadRequest,
    /// `E4005`: HTTP method not allowed.
    MethodNotAllowed,
    /// `InternalServerError`.
    InternalServerError,
    /// `SubscriptionFailure`: the session could not be registered for events.
    SubscriptionFailure,
}

impl ErrorCode {
    /// Every code, for tests and exhaustive tables.
    pub const ALL: [Self; 10] = [
        Self::InvalidApiKey,
        Self::InvalidToken,
        Self::AdminKeyMissing,
        Self::AdminKeyInvalid,
        Self::SessionConflict,
        Self::RateLimitExceeded,
        Self::BadRequest,
        Self::MethodNotAllowed,
        Self::InternalServerError,
        Self::SubscriptionFailure,
    ];

    /// The `code` string on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidApiKey => "InvalidAPIKey",
            Self::InvalidToken => "InvalidToken",
            Self::AdminKeyMissing => "E4001",
            Self::AdminKeyInvalid => "E4003",
            Self::SessionConflict => "SessionConflict",
            Self::RateLimitExceeded => "RateLimitExceeded",
            Self::BadRequest => "BadRequest",
            Self::MethodNotAllowed => "E4005",
            Self::InternalServerError => "InternalServerError",
            Self::SubscriptionFailure => "SubscriptionFailure",
        }
    }

    /// The HTTP status when nothing the service depends on is down.
    pub const fn http_status(self) -> u16 {
        match self {
            Self::InvalidApiKey | Self::AdminKeyMissing => 401,
            Self::InvalidToken | Self::AdminKeyInvalid => 403,
            Self::SessionConflict => 409,
            Self::RateLimitExceeded => 429,
            Self::BadRequest => 400,
            Self::MethodNotAllowed => 405,
            Self::InternalServerError | Self::SubscriptionFailure => 500,
        }
    }

    /// The HTTP status when the failure was caused by a dependency (Redis, NATS, a peer) being
    /// down: 503 for the server-side codes, unchanged otherwise. The caller knows the cause.
    pub const fn http_status_when_dependency_down(self) -> u16 {
        match self {
            Self::InternalServerError | Self::SubscriptionFailure => 503,
            other => other.http_status(),
        }
    }

    /// The WebSocket close code.
    pub const fn close_code(self) -> u16 {
        match self {
            Self::InvalidApiKey => close::UNAUTHORIZED,
            Self::InvalidToken | Self::AdminKeyMissing | Self::AdminKeyInvalid => close::FORBIDDEN,
            Self::SessionConflict => close::SESSION_CONFLICT,
            Self::RateLimitExceeded => close::RATE_LIMITED,
            Self::BadRequest | Self::MethodNotAllowed => close::BAD_REQUEST,
            Self::InternalServerError | Self::SubscriptionFailure => close::INTERNAL_ERROR,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the wire codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code {0:?}")]
pub struct UnknownErrorCode(pub String);

impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;

    fn from_str(s: &str) -> Result<Self, UnknownErrorCode> {
        Self::ALL
            .into_iter()
            .find(|code| code.as_str() == s)
            .ok_or_else(|| UnknownErrorCode(s.to_owned()))
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn table_matches_compat() {
        use ErrorCode::*;
        let expected = [
            (InvalidApiKey, "InvalidAPIKey", 401, 4401),
            (InvalidToken, "InvalidToken", 403, 4403),
            (AdminKeyMissing, "E4001", 401, 4403),
            (AdminKeyInvalid, "E4003", 403, 4403),
            (SessionConflict, "SessionConflict", 409, 4402),
            (RateLimitExceeded, "RateLimitExceeded", 429, 4429),
            (BadRequest, "BadRequest", 400, 4400),
            (MethodNotAllowed, "E4005", 405, 4400),
            (InternalServerError, "InternalServerError", 500, 1011),
            (SubscriptionFailure, "SubscriptionFailure", 500, 1011),
        ];
        assert_eq!(expected.len(), ErrorCode::ALL.len());
        for (code, text, http, close) in expected {
            assert_eq!(code.as_str(), text);
            assert_eq!(code.http_status(), http, "{code}");
            assert_eq!(code.close_code(), close, "{code}");
        }
    }

    #[test]
    fn dependency_down_only_changes_server_errors() {
        for code in ErrorCode::ALL {
            let expected = match code {
                ErrorCode::InternalServerError | ErrorCode::SubscriptionFailure => 503,
                other => other.http_status(),
            };
            assert_eq!(code.http_status_when_dependency_down(), expected);
        }
    }

    #[test]
    fn string_form_round_trips() {
        for code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>().unwrap(), code);
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        assert!("Nope".parse::<ErrorCode>().is_err());
    }
}
