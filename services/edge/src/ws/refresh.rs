//! In-band token refresh (`json.v2`): `{"type":"refresh","payload":{"token":"..."}}` with a
//! valid token of the same user (or admin) and a later expiry moves the socket's expiry; the
//! socket gets `{"type":"refreshed","payload":{"expires_at":"..."}}`. A token of another
//! user, an older one or an invalid one is refused with an `InvalidToken` error frame, counted
//! in `edge_token_refreshes_total{outcome}`, and changes nothing.

use super::handle::{SocketHandle, SocketKind};
use crate::state::Edge;
use daisi_domain::protocol::ServerMessage;
use daisi_domain::{ErrorBody, ErrorCode, SessionKey};
use jiff::Timestamp;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Labels of `edge_token_refreshes_total`.
pub const OUTCOMES: [&str; 4] = ["accepted", "other_user", "not_newer", "invalid"];

/// Handles one refresh; returns the frame to send back.
pub fn handle(edge: &Edge, socket: &SocketHandle, token: &str) -> Utf8Bytes {
    let now = Timestamp::now();
    let claims: Result<(SessionKey, Timestamp), _> = match &socket.kind {
        SocketKind::User { .. } => edge
            .auth
            .user_token(Some(token), now, |c| (c.session_key(), c.expires_at)),
        SocketKind::Admin(_) => edge
            .auth
            .admin_token(Some(token), now, |c| (c.session_key(), c.expires_at)),
    };
    let (outcome, reply) = match claims {
        Err(denied) => ("invalid", error(denied.body)),
        Ok((key, _)) if key != socket.key => (
            "other_user",
            error(ErrorBody::new(
                ErrorCode::InvalidToken,
                "Refresh token belongs to another user",
            )),
        ),
        Ok((_, expires_at)) => {
            let at_ms = expires_at.as_millisecond();
            if socket.extend_expiry(at_ms) {
                let frame =
                    format!(r#"{{"type":"refreshed","payload":{{"expires_at":"{expires_at}"}}}}"#);
                ("accepted", Utf8Bytes::from(frame))
            } else {
                (
                    "not_newer",
                    error(ErrorBody::new(
                        ErrorCode::InvalidToken,
                        "Refresh token does not expire later than the current one",
                    )),
                )
            }
        }
    };
    edge.metrics
        .token_refreshes
        .with_label_values(&[outcome])
        .inc();
    if outcome != "accepted" {
        tracing::debug!(outcome, "token refresh refused");
    }
    reply
}

fn error(body: ErrorBody) -> Utf8Bytes {
    ServerMessage::Error(body).to_json().into()
}
