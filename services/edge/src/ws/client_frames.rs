//! What the edge does with a client's text frame (compat.md, "Client → server"): `ready` is
//! echoed verbatim, `select_chat` moves the socket's chat subscription, anything else gets one
//! `BadRequest` error frame. Admin sockets ignore client messages.

use super::handle::SocketHandle;
use super::outbox::{CloseCause, CloseRequest};
use crate::coordinator::{Coordinator, CoordinatorError};
use crate::state::Edge;
use axum::extract::ws::Utf8Bytes;
use daisi_domain::protocol::{ClientMessage, ServerMessage, parse_client_message};
use daisi_domain::{ChatId, ErrorBody};
use std::sync::Arc;

/// What to send back.
#[derive(Debug)]
pub enum Reply {
    /// Nothing.
    Nothing,
    /// This frame.
    Frame(Utf8Bytes),
    /// The socket was asked to close (its outbox carries the close).
    Closing,
}

fn error(body: ErrorBody) -> Reply {
    Reply::Frame(ServerMessage::Error(body).to_json().into())
}

/// Handles one client text frame.
pub async fn handle(edge: &Edge, socket: &Arc<SocketHandle>, text: Utf8Bytes) -> Reply {
    if socket.user_agent().is_none() {
        return Reply::Nothing;
    }
    match parse_client_message(&text) {
        Ok(ClientMessage::Ready) => Reply::Frame(text),
        Ok(ClientMessage::SelectChat { chat_id }) => select_chat(edge, socket, chat_id).await,
        Err(problem) => error(problem.error_body()),
    }
}

async fn select_chat(edge: &Edge, socket: &Arc<SocketHandle>, chat: ChatId) -> Reply {
    if socket.selected_chat().as_ref() == Some(&chat) {
        return Reply::Nothing;
    }
    let gate = edge.registry.routes.gate().await;
    let result = edge
        .coordinator
        .select_chat(&edge.pod.pod, &socket.held(), &chat)
        .await;
    match result {
        Ok(true) => {
            edge.registry.select_chat(socket, chat);
            Reply::Nothing
        }
        Ok(false) => {
            drop(gate);
            socket.mark_session_lost();
            socket
                .outbox
                .close(CloseRequest::session_conflict(CloseCause::SessionLost));
            Reply::Closing
        }
        Err(error) => {
            drop(gate);
            tracing::warn!(%error, "select_chat failed");
            if matches!(error, CoordinatorError::UnknownPod) {
                edge.heartbeat_now.notify_one();
            }
            self::error(ErrorBody::subscription_failure())
        }
    }
}
