//! `GET /ws/{company_id}/{agent_id}` and `GET /ws/admin`: every check that can fail is made
//! before the upgrade, so failures are plain HTTP answers with the contract's error bodies.
//! Order: origin, path ids, API key, token, path/claims agreement, upgrade headers, then the
//! session (capacity, drain, coordinator).
//!
//! The edge answers the WebSocket handshake itself ([`Handshake`]) instead of through axum's
//! `WebSocketUpgrade`, so the socket task owns the connection ([`super::stream`]): one task
//! per socket whose future is the socket loop, and text frames written without tungstenite's
//! per-socket write buffer.

use super::admission::{self, Refusal, SocketLease};
use super::connection;
use super::handle::SocketKind;
use super::stream;
use crate::auth::Denied;
use crate::config::ExpiryEnforcement;
use crate::http::{error, origin};
use crate::state::Edge;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::response::{IntoResponse, Response};
use daisi_domain::protocol::{Position, Subprotocol};
use daisi_domain::token::AdminClaims;
use daisi_domain::{AgentId, CompanyId, ErrorBody, SessionKey};
use http::HeaderMap;
use http::request::Parts;
use http::{HeaderValue, Method, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Refusals for a coordinator that is down or refusing repeat for every client of a reconnect
/// storm: one line per reason and minute, with the count of the others.
static REFUSAL_LOGS: std::sync::LazyLock<daisi_runtime::ratelog::RateLimit> =
    std::sync::LazyLock::new(|| {
        daisi_runtime::ratelog::RateLimit::new(std::time::Duration::from_secs(60))
    });

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

/// The subprotocols offered, preferred first: a client that offers both gets `json.v2`.
pub const SUBPROTOCOLS: [&str; 2] = [Subprotocol::V2_NAME, Subprotocol::V1_NAME];

/// Query parameters of both socket routes.
#[derive(Debug, Default, Deserialize)]
pub struct SocketParams {
    /// The user or admin token.
    token: Option<String>,
    /// API key, when not in the `X-API-Key` header.
    #[serde(rename = "x-api-key")]
    api_key: Option<String>,
    /// `json.v2`: the last position the client saw, `<epoch>:<seq>`; the edge replays what
    /// the socket missed since then.
    since: Option<String>,
}

/// A WebSocket opening handshake (RFC 6455 §4.2.1) over HTTP/1.1: what the answer and the
/// upgraded connection need.
pub struct Handshake {
    /// `Sec-WebSocket-Key`.
    key: HeaderValue,
    /// The connection once hyper hands it over.
    on_upgrade: OnUpgrade,
    /// The subprotocol chosen from the client's offer, if any.
    protocol: Option<&'static str>,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

/// The request is not a WebSocket handshake the edge accepts.
#[derive(Debug)]
pub struct NotAHandshake;

impl IntoResponse for NotAHandshake {
    fn into_response(self) -> Response {
        bad_request(&ErrorBody::bad_request("WebSocket upgrade required"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Handshake {
    type Rejection = NotAHandshake;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::from_parts(parts).ok_or(NotAHandshake)
    }
}

impl Handshake {
    fn from_parts(parts: &mut Parts) -> Option<Self> {
        let headers = &parts.headers;
        let upgrade_requested = headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
            })
        });
        let websocket = headers
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
        let version_13 = headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v.as_bytes() == b"13");
        if parts.method != Method::GET
            || parts.version > http::Version::HTTP_11
            || !upgrade_requested
            || !websocket
            || !version_13
        {
            return None;
        }
        let key = headers.get(header::SEC_WEBSOCKET_KEY)?.clone();
        let offered = |name: &str| {
            headers
                .get_all(header::SEC_WEBSOCKET_PROTOCOL)
                .iter()
                .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                .any(|p| p.trim_ascii() == name.as_bytes())
        };
        let protocol = SUBPROTOCOLS.into_iter().find(|p| offered(p));
        let on_upgrade = parts.extensions.remove::<OnUpgrade>()?;
        Some(Self {
            key,
            on_upgrade,
            protocol,
        })
    }

    /// `101 Switching Protocols`, with the chosen subprotocol.
    fn switching_protocols(&self) -> Response {
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(self.key.as_bytes())) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(protocol) = self.protocol {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(protocol),
            );
        }
        response
    }
}

/// What the upgrade learned beyond who the socket is.
struct Extras {
    /// When the token expires (Unix milliseconds).
    expires_at_ms: i64,
    /// The position to recover from, if the client asked.
    since: Option<Position>,
}

fn since(params: &SocketParams) -> Result<Option<Position>, ErrorBody> {
    match params.since.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(raw) => raw
            .parse()
            .map(Some)
            .map_err(|e: String| ErrorBody::bad_request("Invalid since parameter").with_details(e)),
    }
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
    upgrade: Result<Handshake, NotAHandshake>,
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
    // What the socket needs, taken from the claims where they are (the token cache on a hit);
    // `None` when the token is for another company or agent than the path.
    let taken = edge
        .auth
        .user_token(params.token.as_deref(), jiff::Timestamp::now(), |claims| {
            (claims.company_id == company && claims.agent_id == agent)
                .then(|| (claims.session_key(), claims.expires_at))
        });
    let (key, expires_at) = match taken {
        Ok(Some(taken)) => taken,
        Ok(None) => return denied(&edge, &crate::auth::Authenticator::path_mismatch()),
        Err(d) => return denied(&edge, &d),
    };
    authenticated(&edge, "user");
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(not) => return not.into_response(),
    };
    let extras = match since(&params) {
        Ok(since) => Extras {
            expires_at_ms: expires_at.as_millisecond(),
            since,
        },
        Err(body) => return bad_request(&body),
    };
    let kind = SocketKind::User { company, agent };
    accept(edge, upgrade, kind, key, extras).await
}

/// `GET /ws/admin`.
pub async fn admin_socket(
    State(edge): State<Edge>,
    headers: HeaderMap,
    query: Result<Query<SocketParams>, QueryRejection>,
    upgrade: Result<Handshake, NotAHandshake>,
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
    let claims = match edge.auth.admin_token(
        params.token.as_deref(),
        jiff::Timestamp::now(),
        AdminClaims::clone,
    ) {
        Ok(claims) => claims,
        Err(d) => return denied(&edge, &d),
    };
    authenticated(&edge, "admin");
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(not) => return not.into_response(),
    };
    let extras = match since(&params) {
        Ok(since) => Extras {
            expires_at_ms: claims.expires_at.as_millisecond(),
            since,
        },
        Err(body) => return bad_request(&body),
    };
    let key = claims.session_key();
    accept(
        edge,
        upgrade,
        SocketKind::Admin(Box::new(claims)),
        key,
        extras,
    )
    .await
}

async fn accept(
    edge: Edge,
    upgrade: Handshake,
    kind: SocketKind,
    key: SessionKey,
    extras: Extras,
) -> Response {
    let protocol = Subprotocol::from_selected(upgrade.protocol.map(str::as_bytes));
    let enforce_expiry = match edge.config.recovery.expiry {
        ExpiryEnforcement::All => true,
        ExpiryEnforcement::V2 => protocol == Subprotocol::V2,
        ExpiryEnforcement::Off => false,
    };
    let recover = extras.since.filter(|_| protocol == Subprotocol::V2);
    let options = admission::SocketOptions {
        protocol,
        expires_at_ms: extras.expires_at_ms,
        enforce_expiry,
        recover: recover.is_some(),
    };
    let lease = match admission::admit_detached(&edge, kind, key, options).await {
        Ok(lease) => lease,
        Err(refusal) => return refused(&edge, &refusal),
    };
    let tuning = &edge.config.sockets;
    let max = edge.config.limits.max_message_size;
    let config = WebSocketConfig::default()
        .read_buffer_size(tuning.read_buffer)
        .write_buffer_size(tuning.write_buffer)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let response = upgrade.switching_protocols();
    tokio::spawn(socket_task(upgrade.on_upgrade, config, lease, recover));
    response
}

/// The socket's task: the connection once hyper hands it over (after the 101 left), then the
/// socket loop. Dropping the lease (upgrade failed, or the socket ended) releases the session.
async fn socket_task(
    on_upgrade: OnUpgrade,
    config: WebSocketConfig,
    lease: SocketLease,
    recover: Option<Position>,
) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(%error, "websocket upgrade failed");
            return;
        }
    };
    let socket = stream::from_upgraded(upgraded, config).await;
    connection::run(lease, socket, recover).await;
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
            if let Some(suppressed) = REFUSAL_LOGS.check("unavailable") {
                tracing::warn!(reason = %reason, suppressed, "session not acquired: coordinator unavailable");
            }
            error::unavailable(&ErrorBody::subscription_failure())
        }
        Refusal::CoordinatorRefused(reason) => {
            if let Some(suppressed) = REFUSAL_LOGS.check("refused") {
                tracing::error!(reason = %reason, suppressed, "session not acquired: coordinator refused");
            }
            error::compat(&ErrorBody::internal())
        }
        Refusal::Conflict => error::compat(&ErrorBody::session_conflict()),
    }
}
