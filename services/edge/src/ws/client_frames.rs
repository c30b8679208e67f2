//! What the edge does with a client's text frame (compat.md, "Client → server"): `ready` is
//! echoed verbatim, `select_chat` is handed to [`super::selection`] (which answers only on
//! failure), anything else gets one `BadRequest` error frame. Admin sockets ignore client
//! messages. Nothing here waits, so the socket loop never stalls on a client message.

use super::handle::SocketHandle;
use super::selection;
use crate::state::Edge;
use axum::extract::ws::Utf8Bytes;
use daisi_domain::protocol::{ClientMessage, ServerMessage, parse_client_message};
use std::sync::Arc;

/// The frame to send back, if any.
pub fn handle(edge: &Edge, socket: &Arc<SocketHandle>, text: Utf8Bytes) -> Option<Utf8Bytes> {
    socket.user_agent()?;
    match parse_client_message(&text) {
        Ok(ClientMessage::Ready) => Some(text),
        Ok(ClientMessage::SelectChat { chat_id }) => {
            selection::request(edge, socket, chat_id);
            None
        }
        Err(problem) => Some(ServerMessage::Error(problem.error_body()).to_json().into()),
    }
}
