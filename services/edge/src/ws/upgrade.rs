//! `GET /ws/{company_id}/{agent_id}` and `GET /ws/admin`: every check that can fail is made
//! before the upgrade, so failures are plain HTTP answers with the contract's error bodies.
//! Order: origin, path ids, API key, token, path/claims agreement, upgrade headers, then the
//! session (capacity, drain, coordinator).

use super::admission::{self, Refusal};
use super::connection;
use super::handle::SocketKind;
use crate::auth::Denied;
use crate::http::{error, origin};
use crate::state::Edge;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use daisi_domain::{AgentId, CompanyId, ErrorBody, SessionKey};
use http::HeaderMap;
use serde::Deserialize;

/// Labels of `edge_upgrades_rejected_total`, one per [`Refusal`] (created at zero at start).
/// `client_gone` counts admissions that finished after their client left (and were undone).
pub const REFUSAL_LABELS: [&str; 6] = [
    "draining",
    "capacity",
    "coordinator_unavailable",
    "coordinator_refused",
    "conflict",
    "client_gone",
];

/// The subprotocol of the contract.
pub const SUBPROTOCOL: &str = "json.v1";

/// Query parameters of both socket routes.
#[derive(Debug, Default, Deserialize)]
pub struct SocketParams {
    /// The user or admin token.
    token: Option<String>,
    /// API key, when not in the `X-API-Key` header.
    #[serde(rename = "x-api-key")]
    api_key: Option<String>,
}

fn denied(edge: &Edge, denied: &Denied) -> Response {
    edge.metrics
        .auth_failures
        .with_label_values(&[denied.reason])
        .inc();
    error::compat(&denied.body)
}

/// Counts an upgrade whose API key and token passed (`dws_auth_success_total` of the old
/// service); what happens next (capacity, coordinator) is counted elsewhere.
fn authenticated(edge: &Edge, kind: &'static str) {
    edge.metrics.auth_successes.with_label_values(&[kind]).inc();
}

fn bad_request(body: &ErrorBody) -> Response {
    error::compat(body)
}

fn origin_refused(edge: &Edge) -> Response {
    edge.metrics
        .auth_failures
        .with_label_values(&["origin"])
        .inc();
    error::with_status(
        http::StatusCode::FORBIDDEN,
        &ErrorBody::bad_request("Origin not allowed"),
    )
}

fn params(query: Result<Query<SocketParams>, QueryRejection>) -> Result<SocketParams, ErrorBody> {
    query
        .map(|Query(p)| p)
        .map_err(|_| ErrorBody::bad_request("Invalid query string"))
}

/// `GET /ws/{company_id}/{agent_id}`.
pub async fn user_socket(
    State(edge): State<Edge>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    query: Result<Query<SocketParams>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !origin::allowed(&edge.config.origins, &headers) {
        return origin_refused(&edge);
    }
    let Ok(Path((company, agent))) = path else {
        return bad_request(&ErrorBody::bad_request("Invalid path"));
    };
    let company = match CompanyId::new(company) {
        Ok(id) => id,
        Err(e) => return bad_request(&ErrorBody::invalid_id(&e)),
    };
    let agent = match AgentId::new(agent) {
        Ok(id) => id,
        Err(e) => return bad_request(&ErrorBody::invalid_id(&e)),
    };
    let params = match params(query) {
        Ok(p) => p,
        Err(body) => return bad_request(&body),
    };
    let key = crate::auth::api_key::presented_key(&headers, params.api_key.as_deref());
    if let Err(d) = edge.auth.check_user_key(key) {
        return denied(&edge, &d);
    }
    let claims = match edge
        .auth
        .user_token(params.token.as_deref(), jiff::Timestamp::now())
    {
        Ok(claims) => claims,
        Err(d) => return denied(&edge, &d),
    };
    if claims.company_id != company || claims.agent_id != agent {
        return denied(&edge, &crate::auth::Authenticator::path_mismatch());
    }
    authenticated(&edge, "user");
    let Ok(upgrade) = upgrade else {
        return bad_request(&ErrorBody::bad_request("WebSocket upgrade required"));
    };
    let key = claims.session_key();
    let kind = SocketKind::User {
        company: claims.company_id,
        agent: claims.agent_id,
    };
    accept(edge, upgrade, kind, key).await
}

/// `GET /ws/admin`.
pub async fn admin_socket(
    State(edge): State<Edge>,
    headers: HeaderMap,
    query: Result<Query<SocketParams>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !origin::allowed(&edge.config.origins, &headers) {
        return origin_refused(&edge);
    }
    let params = match params(query) {
        Ok(p) => p,
        Err(body) => return bad_request(&body),
    };
    let key = crate::auth::api_key::presented_key(&headers, params.api_key.as_deref());
    if let Err(d) = edge.auth.check_admin_key(key) {
        return denied(&edge, &d);
    }
    let claims = match edge
        .auth
        .admin_token(params.token.as_deref(), jiff::Timestamp::now())
    {
        Ok(claims) => claims,
        Err(d) => return denied(&edge, &d),
    };
    authenticated(&edge, "admin");
    let Ok(upgrade) = upgrade else {
        return bad_request(&ErrorBody::bad_request("WebSocket upgrade required"));
    };
    let key = claims.session_key();
    accept(edge, upgrade, SocketKind::Admin(Box::new(claims)), key).await
}

async fn accept(
    edge: Edge,
    upgrade: WebSocketUpgrade,
    kind: SocketKind,
    key: SessionKey,
) -> Response {
    let lease = match admission::admit_detached(&edge, kind, key).await {
        Ok(lease) => lease,
        Err(refusal) => return refused(&edge, &refusal),
    };
    let tuning = &edge.config.sockets;
    let max = edge.config.limits.max_message_size;
    upgrade
        .protocols([SUBPROTOCOL])
        .read_buffer_size(tuning.read_buffer)
        .write_buffer_size(tuning.write_buffer)
        .max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade(|error| tracing::debug!(%error, "websocket upgrade failed"))
        // Boxed: thousands of these futures live at once, and their size is dominated by the
        // socket; a box keeps the spawned task's own footprint small.
        .on_upgrade(move |socket| Box::pin(connection::run(lease, socket)))
}

fn refused(edge: &Edge, refusal: &Refusal) -> Response {
    let label = match refusal {
        Refusal::Draining => "draining",
        Refusal::Capacity => "capacity",
        Refusal::CoordinatorDown(_) => "coordinator_unavailable",
        Refusal::CoordinatorRefused(_) => "coordinator_refused",
        Refusal::Conflict => "conflict",
    };
    edge.metrics.rejected.with_label_values(&[label]).inc();
    match refusal {
        Refusal::Draining => error::unavailable(&ErrorBody::shutting_down()),
        Refusal::Capacity => error::unavailable(&ErrorBody::new(
            daisi_domain::ErrorCode::InternalServerError,
            "Too many connections",
        )),
        Refusal::CoordinatorDown(reason) => {
            tracing::warn!(reason = %reason, "session not acquired: coordinator unavailable");
            error::unavailable(&ErrorBody::subscription_failure())
        }
        Refusal::CoordinatorRefused(reason) => {
            tracing::error!(reason = %reason, "session not acquired: coordinator refused");
            error::compat(&ErrorBody::internal())
        }
        Refusal::Conflict => error::compat(&ErrorBody::session_conflict()),
    }
}
