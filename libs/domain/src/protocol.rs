//! WebSocket frames of subprotocol `json.v1` (compat.md, "WebSocket protocol").
//!
//! Envelope `{"type": string, "payload"?: any}`. Parsing client frames borrows from the input
//! and never builds a JSON tree, so hostile frames cost little; every failure maps to exactly
//! one `BadRequest` error frame.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{error_body::ErrorBody, ids::ChatId};

/// The server's ready frame; the client's `{"type":"ready"}` gets an echo.
pub const READY_FRAME: &str = r#"{"type":"ready"}"#;

/// A frame the server sends.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum ServerMessage {
    /// `{"type":"ready"}`: the session is established.
    Ready,
    /// `{"type":"event","payload":{...}}`. On the hot path prefer
    /// [`crate::event::render_event_frame`], which writes the frame without this detour.
    Event(Box<RawValue>),
    /// `{"type":"error","payload":{"code","message","details"?}}`.
    Error(ErrorBody),
}

impl ServerMessage {
    /// The frame text.
    pub fn to_json(&self) -> String {
        match self {
            Self::Ready => READY_FRAME.to_owned(),
            // Raw JSON and string fields always serialize.
            other => serde_json::to_string(other).unwrap_or_default(),
        }
    }
}

impl From<ErrorBody> for ServerMessage {
    fn from(body: ErrorBody) -> Self {
        Self::Error(body)
    }
}

/// A frame the client sent, once understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// `{"type":"select_chat","payload":{"chat_id":"X"}}`: receive `messages` of chat X only.
    SelectChat {
        /// The chat to receive messages of from now on.
        chat_id: ChatId,
    },
    /// `{"type":"ready"}`: the edge echoes the received frame text back verbatim.
    Ready,
}

/// A client frame that could not be understood; each maps to one error frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Not JSON, not an object, or `type`/`payload` of the wrong JSON type.
    #[error("invalid message format")]
    InvalidFormat,
    /// A `type` this server does not handle (absent `type` counts as the empty type, as in Go).
    #[error("unhandled message type {0:?}")]
    UnhandledType(String),
    /// `select_chat` without a valid `{"chat_id": "..."}` payload.
    #[error("invalid select_chat payload")]
    InvalidSelectChat,
}

impl ProtocolError {
    /// The error body to send back.
    pub fn error_body(&self) -> ErrorBody {
        match self {
            Self::InvalidFormat => ErrorBody::invalid_message_format(),
            Self::UnhandledType(kind) => ErrorBody::unhandled_message_type(kind),
            Self::InvalidSelectChat => ErrorBody::invalid_select_chat_payload(),
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct SelectChatPayload<'a> {
    #[serde(borrow)]
    chat_id: Cow<'a, str>,
}

/// Understands one client text frame.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ProtocolError> {
    let envelope: Envelope<'_> =
        serde_json::from_str(text).map_err(|_| ProtocolError::InvalidFormat)?;
    match envelope.kind.as_ref() {
        "ready" => Ok(ClientMessage::Ready),
        "select_chat" => {
            let payload = envelope.payload.ok_or(ProtocolError::InvalidSelectChat)?;
            let payload: SelectChatPayload<'_> = serde_json::from_str(payload.get())
                .map_err(|_| ProtocolError::InvalidSelectChat)?;
            let chat_id =
                ChatId::new(payload.chat_id).map_err(|_| ProtocolError::InvalidSelectChat)?;
            Ok(ClientMessage::SelectChat { chat_id })
        }
        other => Err(ProtocolError::UnhandledType(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn server_frames_are_exact() {
        assert_eq!(ServerMessage::Ready.to_json(), r#"{"type":"ready"}"#);
        assert_eq!(
            serde_json::to_string(&ServerMessage::Ready).unwrap(),
            READY_FRAME
        );
        let event = RawValue::from_string(r#"{"a":[1, 2]}"#.to_owned()).unwrap();
        assert_eq!(
            ServerMessage::Event(event).to_json(),
            r#"{"type":"event","payload":{"a":[1, 2]}}"#
        );
        assert_eq!(
            ServerMessage::from(ErrorBody::invalid_message_format()).to_json(),
            r#"{"type":"error","payload":{"code":"BadRequest","message":"Invalid message format"}}"#
        );
    }

    #[test]
    fn parses_known_messages() {
        assert_eq!(
            parse_client_message(r#"{"type":"ready"}"#),
            Ok(ClientMessage::Ready)
        );
        assert_eq!(
            parse_client_message(
                r#" {"payload":{"chat_id":"c\u0031","x":1},"type":"select_chat"} "#
            ),
            Ok(ClientMessage::SelectChat {
                chat_id: "c1".parse().unwrap()
            })
        );
    }

    #[test]
    fn maps_failures_to_the_contract_errors() {
        for bad in [
            "",
            "nope",
            "{",
            "[1]",
            "42",
            r#"{"type":1}"#,
            r#"{"type":"ready","payload":}"#,
        ] {
            assert_eq!(
                parse_client_message(bad),
                Err(ProtocolError::InvalidFormat),
                "{bad}"
            );
        }
        let err = parse_client_message(r#"{"type":"subscribe"}"#).unwrap_err();
        assert_eq!(err.error_body().details.as_deref(), Some("Type: subscribe"));
        assert_eq!(
            parse_client_message("{}"),
            Err(ProtocolError::UnhandledType(String::new()))
        );
        for bad in [
            r#"{"type":"select_chat"}"#,
            r#"{"type":"select_chat","payload":null}"#,
            r#"{"type":"select_chat","payload":"c1"}"#,
            r#"{"type":"select_chat","payload":{}}"#,
            r#"{"type":"select_chat","payload":{"chat_id":7}}"#,
            r#"{"type":"select_chat","payload":{"chat_id":""}}"#,
            r#"{"type":"select_chat","payload":{"chat_id":"a.b"}}"#,
        ] {
            assert_eq!(
                parse_client_message(bad),
                Err(ProtocolError::InvalidSelectChat),
                "{bad}"
            );
        }
        assert_eq!(
            ProtocolError::InvalidSelectChat.error_body().message,
            "Invalid select_chat payload"
        );
    }
}
