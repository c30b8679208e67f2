//! In-band token refresh (`json.v2`): `{"type":"refresh","payload":{"token":"..."}}` with a
//! valid token of the same user (or admin) and a later expiry moves the socket's expiry; the
//! socket gets `{"type":"refreshed","payload":{"expires_at":"..."}}`. A token of another
//! user, an older one or an invalid one is refused with an `InvalidToken` error frame, counted
//! in `edge_token_refreshes_total{outcome}`, and changes nothing. So is an admin token whose
//! restriction or subscription differs from the socket's: a refresh extends the access the
//! socket has, so a token granting other access (narrower, say) must open a new socket.

use super::handle::{SocketHandle, SocketKind};
use crate::state::Edge;
use daisi_domain::protocol::ServerMessage;
use daisi_domain::{ErrorBody, ErrorCode, SessionKey};
use jiff::Timestamp;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Labels of `edge_token_refreshes_total`.
pub const OUTCOMES: [&str; 5] = [
    "accepted",
    "other_user",
    "other_scope",
    "not_newer",
    "invalid",
];

/// Handles one refresh; returns the frame to send back.
pub fn handle(edge: &Edge, socket: &SocketHandle, token: &str) -> Utf8Bytes {
    let now = Timestamp::now();
    // (session, expiry, whether the token grants the socket's access)
    let claims: Result<(SessionKey, Timestamp, bool), _> = match &socket.kind {
        SocketKind::User { .. } => edge
            .auth
            .user_token(Some(token), now, |c| (c.session_key(), c.expires_at, true)),
        SocketKind::Admin(held) => edge.auth.admin_token(Some(token), now, |c| {
            let same_scope = c.company_id_restriction == held.company_id_restriction
                && c.subscribed_company_id == held.subscribed_company_id
                && c.subscribed_agent_id == held.subscribed_agent_id;
            (c.session_key(), c.expires_at, same_scope)
        }),
    };
    let (outcome, reply) = match claims {
        Err(denied) => ("invalid", error(denied.body)),
        Ok((key, _, _)) if key != socket.key => (
            "other_user",
            error(ErrorBody::new(
                ErrorCode::InvalidToken,
                "Refresh token belongs to another user",
            )),
        ),
        Ok((_, _, false)) => (
            "other_scope",
            error(ErrorBody::new(
                ErrorCode::InvalidToken,
                "Refresh token grants other access than this connection's; reconnect with it",
            )),
        ),
        Ok((_, expires_at, true)) => {
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
