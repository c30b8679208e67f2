//! How a socket ends: the WebSocket closing handshake in both directions (RFC 6455 §7), and
//! the closes the socket loop itself decides on (pong timeout, rate limit, size limit).
//!
//! - Client-initiated: tungstenite answers a Close by queueing the reply, which leaves only on
//!   the next read or flush. The reply is flushed here, within [`REPLY_DEADLINE`], before the
//!   connection is dropped; otherwise the client sees the connection end without it (1006,
//!   `wasClean = false` in a browser).
//! - Server-initiated: the error frame (if any) and the close frame are written, then the
//!   client's Close is awaited for up to [`HANDSHAKE_DEADLINE`], so the connection is not torn
//!   down under frames the client is still writing.
//!
//! Both run after the socket loop, boxed by the caller: they are cold, and their timers should
//! not sit in every idle socket's future.

use super::outbox::{CloseCause, CloseRequest};
use super::stream::{self, Socket};
use daisi_domain::ErrorBody;
use daisi_domain::error_code::close;
use daisi_domain::protocol::ServerMessage;
use futures_util::{SinkExt, StreamExt};
use std::borrow::Cow;
use std::time::Duration;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// How long the answer to a client's Close may take to leave.
pub const REPLY_DEADLINE: Duration = Duration::from_secs(1);
/// How long a socket closed by the server waits for the client's Close.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(1);
/// Upper bound of writing the error and close frames of a server-initiated close.
pub const SEND_DEADLINE: Duration = Duration::from_secs(5);
/// Close code for a client message above the size limit (RFC 6455 "message too big").
pub const MESSAGE_TOO_BIG: u16 = 1009;

/// Sends the client's Close back (tungstenite queued it, echoing the client's code) and
/// flushes it. Best effort, bounded.
pub async fn answer(socket: &mut Socket) {
    match tokio::time::timeout(REPLY_DEADLINE, socket.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "close reply not sent"),
        Err(_) => tracing::debug!("close reply not sent in time"),
    }
}

/// Error frame (if any), then the close frame, then a short wait for the client's Close.
/// Best effort, bounded by `write_timeout` (at most [`SEND_DEADLINE`]) plus
/// [`HANDSHAKE_DEADLINE`].
pub async fn initiate(socket: &mut Socket, request: CloseRequest, write_timeout: Duration) {
    let send = async {
        if let Some(body) = request.error {
            let frame = Utf8Bytes::from(ServerMessage::Error(body).to_json());
            stream::write_text(socket, std::slice::from_ref(&frame))
                .await
                .map_err(WsError::Io)?;
        }
        let reason: Utf8Bytes = match request.reason {
            Cow::Borrowed(s) => Utf8Bytes::from_static(s),
            Cow::Owned(s) => s.into(),
        };
        socket
            .send(Message::Close(Some(CloseFrame {
                code: request.code.into(),
                reason,
            })))
            .await
    };
    match tokio::time::timeout(write_timeout.min(SEND_DEADLINE), send).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::debug!(%error, "close frame not sent");
            return;
        }
        Err(_) => {
            tracing::debug!("close frame not sent in time");
            return;
        }
    }
    let _ = tokio::time::timeout(HANDSHAKE_DEADLINE, async {
        while let Some(Ok(message)) = socket.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Whether a read failed because the client's frame or message exceeded the size limit, or
/// the message came in too many frames ([`super::in_frames::MAX_FRAGMENTS`]).
pub fn is_too_big(error: &WsError) -> bool {
    match error {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => true,
        // A message in too many fragments is refused as too big as well.
        WsError::Io(io) => io
            .get_ref()
            .is_some_and(|inner| inner.is::<super::stream::TooFragmented>()),
        _ => false,
    }
}

/// No pong (or any frame) for `pong_wait`: 1011 "Pong timeout" (compat.md).
pub fn pong_timeout() -> CloseRequest {
    CloseRequest {
        error: None,
        code: close::INTERNAL_ERROR,
        reason: Cow::Borrowed(close::PONG_TIMEOUT_REASON),
        cause: CloseCause::Protocol,
    }
}

/// The client kept exceeding its rate limit: 4429.
pub fn rate_limited() -> CloseRequest {
    CloseRequest {
        error: Some(ErrorBody::rate_limited()),
        code: close::RATE_LIMITED,
        reason: Cow::Borrowed("RateLimitExceeded: Rate limit exceeded"),
        cause: CloseCause::Protocol,
    }
}

/// The socket's token expired without a refresh: `InvalidToken` "Company token has
/// expired.", then 4401.
pub fn token_expired() -> CloseRequest {
    CloseRequest {
        error: Some(ErrorBody::token_expired()),
        code: close::UNAUTHORIZED,
        reason: Cow::Borrowed("InvalidToken: Company token has expired."),
        cause: CloseCause::Protocol,
    }
}

/// A client frame or message above `DAISI_EDGE_MAX_MESSAGE_SIZE`: 1009.
pub fn too_big() -> CloseRequest {
    CloseRequest {
        error: Some(ErrorBody::bad_request("Message too large")),
        code: MESSAGE_TOO_BIG,
        reason: Cow::Borrowed("Message too large"),
        cause: CloseCause::Protocol,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_errors_are_recognised_by_type() {
        let too_long = WsError::Capacity(CapacityError::MessageTooLong {
            size: 20_000,
            max_size: 16_384,
        });
        assert!(is_too_big(&too_long));
        // Errors whose text mentions limits or capacity are not size errors.
        let io = WsError::Io(std::io::Error::other("capacity limit: message too long"));
        assert!(!is_too_big(&io));
        let headers = WsError::Capacity(CapacityError::TooManyHeaders);
        assert!(!is_too_big(&headers));
    }
}
