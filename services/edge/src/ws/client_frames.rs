//! What the edge does with a client's text frame (compat.md, "Client → server"): `ready` is
//! echoed verbatim, `select_chat` is handed to [`super::selection`] (which answers only on
//! failure), anything else gets one `BadRequest` error frame. Admin sockets ignore client
//! messages. `json.v2` adds `refresh` ([`super::refresh`]), which admin sockets may send too.
//! Nothing here waits, so the socket loop never stalls on a client message.

use super::handle::SocketHandle;
use super::{refresh, selection};
use crate::state::Edge;
use daisi_domain::protocol::{ClientMessage, ServerMessage, Subprotocol, parse_client_message_as};
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// The frame to send back, if any.
pub fn handle(edge: &Edge, socket: &Arc<SocketHandle>, text: Utf8Bytes) -> Option<Utf8Bytes> {
    let is_user = socket.user_agent().is_some();
    if !is_user && socket.protocol == Subprotocol::V1 {
        return None;
    }
    let parsed = parse_client_message_as(&text, socket.protocol);
    if let Ok(ClientMessage::Refresh { token }) = &parsed {
        return Some(refresh::handle(edge, socket, token));
    }
    if !is_user {
        return None;
    }
    match parsed {
        Ok(ClientMessage::Ready) => Some(text),
        Ok(ClientMessage::Refresh { .. }) => None,
        Ok(ClientMessage::SelectChat { chat_id }) => {
            selection::request(edge, socket, chat_id);
            None
        }
        Err(problem) => Some(ServerMessage::Error(problem.error_body()).to_json().into()),
    }
}
