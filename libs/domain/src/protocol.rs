//! WebSocket frames of subprotocols `json.v1` (compat.md, "WebSocket protocol") and `json.v2`
//! (docs/protocol.md: `json.v1` plus event positions, `resync` and in-band token refresh).
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

/// The two subprotocols a socket can speak; a client that names none gets `json.v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Subprotocol {
    /// The contract of the old service, byte for byte.
    #[default]
    V1,
    /// `json.v1` plus positions on events, `resync` frames and `refresh`.
    V2,
}

impl Subprotocol {
    /// `Sec-WebSocket-Protocol` of `json.v1`.
    pub const V1_NAME: &'static str = "json.v1";
    /// `Sec-WebSocket-Protocol` of `json.v2`.
    pub const V2_NAME: &'static str = "json.v2";

    /// The header value.
    pub fn name(self) -> &'static str {
        match self {
            Self::V1 => Self::V1_NAME,
            Self::V2 => Self::V2_NAME,
        }
    }

    /// The subprotocol a selected header value names (`None`: no subprotocol, i.e. `json.v1`).
    pub fn from_selected(name: Option<&[u8]>) -> Self {
        match name {
            Some(n) if n == Self::V2_NAME.as_bytes() => Self::V2,
            _ => Self::V1,
        }
    }
}

/// Why a `json.v2` socket is told to resync: it may have missed events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GapCause {
    /// Its send queue overflowed and the oldest frames were dropped.
    DropOldest,
    /// A router gave up delivering events to this pod (it was unreachable past the grace).
    RouterGiveUp,
    /// The pod was purged from the coordinator's registry and re-attached its sockets.
    PodPurge,
    /// An event older than the edge's de-duplication window arrived.
    DedupOverflow,
    /// Recovery asked for a position beyond the replay window.
    BeyondWindow,
    /// Recovery asked for a position of another stream epoch (the stream was recreated).
    EpochChanged,
    /// Recovery was asked for but could not be served (no history configured, stream
    /// unreachable, too slow).
    RecoveryUnavailable,
}

impl GapCause {
    /// Every cause, for metric labels created at start.
    pub const ALL: [Self; 7] = [
        Self::DropOldest,
        Self::RouterGiveUp,
        Self::PodPurge,
        Self::DedupOverflow,
        Self::BeyondWindow,
        Self::EpochChanged,
        Self::RecoveryUnavailable,
    ];

    /// Metric label and the `reason` of the resync frame.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DropOldest => "drop_oldest",
            Self::RouterGiveUp => "router_give_up",
            Self::PodPurge => "pod_purge",
            Self::DedupOverflow => "dedup_overflow",
            Self::BeyondWindow => "beyond_window",
            Self::EpochChanged => "epoch_changed",
            Self::RecoveryUnavailable => "recovery_unavailable",
        }
    }

    /// `{"type":"resync","payload":{"reason":"..."}}`.
    pub fn resync_frame(self) -> String {
        format!(
            r#"{{"type":"resync","payload":{{"reason":"{}"}}}}"#,
            self.as_str()
        )
    }
}

/// Where a `json.v2` client stands in the stream: `epoch` names the stream incarnation (it
/// changes when the stream is recreated), `seq` is the JetStream stream sequence of the last
/// event it saw. Written `<epoch>:<seq>` in the `since` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Stream incarnation (the stream's creation time in Unix nanoseconds).
    pub epoch: u64,
    /// Stream sequence.
    pub seq: u64,
}

impl std::str::FromStr for Position {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (epoch, seq) = s
            .split_once(':')
            .ok_or_else(|| "expected <epoch>:<seq>".to_owned())?;
        let epoch = epoch
            .parse()
            .map_err(|_| "epoch must be an unsigned integer".to_owned())?;
        let seq = seq
            .parse()
            .map_err(|_| "seq must be an unsigned integer".to_owned())?;
        Ok(Self { epoch, seq })
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.epoch, self.seq)
    }
}

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
    /// `{"type":"refresh","payload":{"token":"..."}}` (`json.v2` only): a newer token of the
    /// same user extends the socket's life.
    Refresh {
        /// The new token, as the client sent it.
        token: String,
    },
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
    /// `refresh` without a `{"token": "..."}` payload.
    #[error("invalid refresh payload")]
    InvalidRefresh,
}

impl ProtocolError {
    /// The error body to send back.
    pub fn error_body(&self) -> ErrorBody {
        match self {
            Self::InvalidFormat => ErrorBody::invalid_message_format(),
            Self::UnhandledType(kind) => ErrorBody::unhandled_message_type(kind),
            Self::InvalidSelectChat => ErrorBody::invalid_select_chat_payload(),
            Self::InvalidRefresh => ErrorBody::bad_request("Invalid refresh payload"),
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

#[derive(Deserialize)]
struct RefreshPayload<'a> {
    #[serde(borrow)]
    token: Cow<'a, str>,
}

/// Understands one client text frame of `json.v1`.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ProtocolError> {
    parse_client_message_as(text, Subprotocol::V1)
}

/// Understands one client text frame of `protocol` (`refresh` exists in `json.v2` only; in
/// `json.v1` it stays an unhandled type, as in the old service).
pub fn parse_client_message_as(
    text: &str,
    protocol: Subprotocol,
) -> Result<ClientMessage, ProtocolError> {
    let envelope: Envelope<'_> =
        serde_json::from_str(text).map_err(|_| ProtocolError::InvalidFormat)?;
    match envelope.kind.as_ref() {
        "refresh" if protocol == Subprotocol::V2 => {
            let payload = envelope.payload.ok_or(ProtocolError::InvalidRefresh)?;
            let payload: RefreshPayload<'_> =
                serde_json::from_str(payload.get()).map_err(|_| ProtocolError::InvalidRefresh)?;
            if payload.token.is_empty() {
                return Err(ProtocolError::InvalidRefresh);
            }
            Ok(ClientMessage::Refresh {
                token: payload.token.into_owned(),
            })
        }
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

    #[test]
    fn refresh_exists_in_v2_only() {
        let frame = r#"{"type":"refresh","payload":{"token":"abc="}}"#;
        assert_eq!(
            parse_client_message(frame),
            Err(ProtocolError::UnhandledType("refresh".into()))
        );
        assert_eq!(
            parse_client_message_as(frame, Subprotocol::V2),
            Ok(ClientMessage::Refresh {
                token: "abc=".into()
            })
        );
        for bad in [
            r#"{"type":"refresh"}"#,
            r#"{"type":"refresh","payload":{"token":""}}"#,
            r#"{"type":"refresh","payload":{"token":1}}"#,
        ] {
            assert_eq!(
                parse_client_message_as(bad, Subprotocol::V2),
                Err(ProtocolError::InvalidRefresh),
                "{bad}"
            );
        }
    }

    #[test]
    fn positions_and_resync_frames() {
        let p: Position = "1764441600123456789:42".parse().unwrap();
        assert_eq!(
            p,
            Position {
                epoch: 1_764_441_600_123_456_789,
                seq: 42
            }
        );
        assert_eq!(p.to_string(), "1764441600123456789:42");
        for bad in ["", "1", "a:1", "1:b", "1:-2", ":"] {
            assert!(bad.parse::<Position>().is_err(), "{bad}");
        }
        assert_eq!(
            GapCause::DropOldest.resync_frame(),
            r#"{"type":"resync","payload":{"reason":"drop_oldest"}}"#
        );
        assert_eq!(
            Subprotocol::from_selected(Some(b"json.v2")),
            Subprotocol::V2
        );
        assert_eq!(Subprotocol::from_selected(None), Subprotocol::V1);
    }
}
