//! The error body shared by HTTP responses and WebSocket error frames, with a constructor for
//! every fixed message of the wire contract so the texts live in one place.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::{error_code::ErrorCode, ids::IdError};

/// `{"code": "...", "message": "...", "details": "..."}`; `details` is omitted when empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The wire code; also decides HTTP status and close code.
    pub code: ErrorCode,
    /// A fixed, human-readable message.
    pub message: Cow<'static, str>,
    /// Optional context; `None` and `Some("")` both serialize without the field.
    #[serde(default, skip_serializing_if = "is_blank")]
    pub details: Option<Cow<'static, str>>,
}

fn is_blank(details: &Option<Cow<'static, str>>) -> bool {
    details.as_deref().is_none_or(str::is_empty)
}

impl ErrorBody {
    /// A body without details.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// The same body with `details` set.
    #[must_use]
    pub fn with_details(mut self, details: impl Into<Cow<'static, str>>) -> Self {
        self.details = Some(details.into());
        self
    }

    /// Serializes to the JSON object of the contract.
    pub fn to_json(&self) -> String {
        // Serializing this struct cannot fail: every field is a string.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `InvalidAPIKey` "API key is required".
    pub fn api_key_missing() -> Self {
        Self::new(ErrorCode::InvalidApiKey, "API key is required")
    }

    /// `InvalidAPIKey` "Invalid API key".
    pub fn api_key_invalid() -> Self {
        Self::new(ErrorCode::InvalidApiKey, "Invalid API key")
    }

    /// `E4001`: the admin API key is missing. The message is ours (compat.md fixes only the code).
    pub fn admin_key_missing() -> Self {
        Self::new(ErrorCode::AdminKeyMissing, "API key is required")
    }

    /// `E4003`: the admin API key is wrong. The message is ours (compat.md fixes only the code).
    pub fn admin_key_invalid() -> Self {
        Self::new(ErrorCode::AdminKeyInvalid, "Invalid API key")
    }

    /// `InvalidToken` "Company token is required".
    pub fn token_missing() -> Self {
        Self::new(ErrorCode::InvalidToken, "Company token is required")
    }

    /// `InvalidToken` "Company token has expired.".
    pub fn token_expired() -> Self {
        Self::new(ErrorCode::InvalidToken, "Company token has expired.")
    }

    /// `InvalidToken` "Company token is invalid or malformed.".
    pub fn token_invalid() -> Self {
        Self::new(
            ErrorCode::InvalidToken,
            "Company token is invalid or malformed.",
        )
    }

    /// `InvalidToken` for a valid token whose claims disagree with the ids in the path.
    pub fn token_path_mismatch() -> Self {
        Self::token_invalid().with_details("token claims do not match the request path")
    }

    /// `SessionConflict` sent before closing with 4402.
    pub fn session_conflict() -> Self {
        Self::new(ErrorCode::SessionConflict, "Session conflict")
            .with_details("Session taken over by another connection")
    }

    /// `InternalServerError` "Service shutting down" sent before closing with 1001.
    pub fn shutting_down() -> Self {
        Self::new(ErrorCode::InternalServerError, "Service shutting down")
    }

    /// `InternalServerError` with a generic message; details must not leak internals.
    pub fn internal() -> Self {
        Self::new(ErrorCode::InternalServerError, "Internal server error")
    }

    /// `SubscriptionFailure`: the session could not be registered for events.
    pub fn subscription_failure() -> Self {
        Self::new(
            ErrorCode::SubscriptionFailure,
            "Failed to subscribe to events",
        )
    }

    /// `RateLimitExceeded`.
    pub fn rate_limited() -> Self {
        Self::new(ErrorCode::RateLimitExceeded, "Rate limit exceeded")
    }

    /// `E4005`.
    pub fn method_not_allowed() -> Self {
        Self::new(ErrorCode::MethodNotAllowed, "Method not allowed")
    }

    /// `BadRequest` with a free message.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// `BadRequest` for a rejected id; details say which id and why.
    pub fn invalid_id(error: &IdError) -> Self {
        Self::bad_request("Invalid identifier").with_details(error.to_string())
    }

    /// `BadRequest` "Invalid message format" (client frame is not valid JSON).
    pub fn invalid_message_format() -> Self {
        Self::bad_request("Invalid message format")
    }

    /// `BadRequest` "Unhandled message type", details `Type: <t>`.
    pub fn unhandled_message_type(message_type: &str) -> Self {
        Self::bad_request("Unhandled message type").with_details(format!("Type: {message_type}"))
    }

    /// `BadRequest` "Invalid select_chat payload".
    pub fn invalid_select_chat_payload() -> Self {
        Self::bad_request("Invalid select_chat payload")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn serializes_exactly_and_omits_empty_details() {
        assert_eq!(
            ErrorBody::api_key_missing().to_json(),
            r#"{"code":"InvalidAPIKey","message":"API key is required"}"#
        );
        assert_eq!(
            ErrorBody::token_invalid().with_details("").to_json(),
            r#"{"code":"InvalidToken","message":"Company token is invalid or malformed."}"#
        );
        assert_eq!(
            ErrorBody::session_conflict().to_json(),
            r#"{"code":"SessionConflict","message":"Session conflict","details":"Session taken over by another connection"}"#
        );
        assert_eq!(
            ErrorBody::unhandled_message_type("x\"y").to_json(),
            r#"{"code":"BadRequest","message":"Unhandled message type","details":"Type: x\"y"}"#
        );
    }

    #[test]
    fn fixed_messages_match_compat() {
        let cases = [
            (
                ErrorBody::api_key_invalid(),
                "InvalidAPIKey",
                "Invalid API key",
            ),
            (
                ErrorBody::token_missing(),
                "InvalidToken",
                "Company token is required",
            ),
            (
                ErrorBody::token_expired(),
                "InvalidToken",
                "Company token has expired.",
            ),
            (
                ErrorBody::shutting_down(),
                "InternalServerError",
                "Service shutting down",
            ),
            (
                ErrorBody::invalid_message_format(),
                "BadRequest",
                "Invalid message format",
            ),
            (
                ErrorBody::invalid_select_chat_payload(),
                "BadRequest",
                "Invalid select_chat payload",
            ),
            (
                ErrorBody::admin_key_missing(),
                "E4001",
                "API key is required",
            ),
            (ErrorBody::admin_key_invalid(), "E4003", "Invalid API key"),
        ];
        for (body, code, message) in cases {
            assert_eq!(body.code.as_str(), code);
            assert_eq!(body.message, message);
        }
    }

    #[test]
    fn deserializes_what_it_serializes() {
        let body = ErrorBody::session_conflict();
        let back: ErrorBody = serde_json::from_str(&body.to_json()).unwrap();
        assert_eq!(back, body);
        let bare: ErrorBody = serde_json::from_str(r#"{"code":"E4005","message":"m"}"#).unwrap();
        assert_eq!(bare.details, None);
    }
}
