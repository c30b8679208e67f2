//! `POST /generate-token` and `POST /admin/generate-token`: token minting for backends.
//!
//! Served on the internal minting listener behind the backend credentials
//! (`DAISI_EDGE_MINT_API_KEY`, `DAISI_EDGE_ADMIN_MINT_API_KEY`), and on the public port only in
//! the migration window (`DAISI_EDGE_PUBLIC_MINTING`) behind the socket API keys, as the old
//! service did. Otherwise the public port answers 404 on both routes.

use super::error;
use crate::auth::api_key::ApiKey;
use crate::auth::{Denied, admin_key_outcome, user_key_outcome};
use crate::state::Edge;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use bytes::Bytes;
use daisi_domain::token::{AdminClaims, UserClaims};
use daisi_domain::{AdminId, AgentId, CompanyId, ErrorBody, IdError, UserId};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::json;

/// The two routes.
pub const PATHS: [&str; 2] = ["/generate-token", "/admin/generate-token"];

/// Token requests are a few hundred bytes; nothing larger is read.
const MAX_BODY_BYTES: usize = 16 * 1024;
/// A token request's body (a few ids) must arrive within this long once the key was accepted:
/// a request counts as in flight at its door, so a body sent slowly would hold a slot.
const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// The body of a request whose key was accepted, within [`MAX_BODY_BYTES`] and
/// [`BODY_DEADLINE`]. Read only after the key check: a caller without the key makes the edge
/// wait for nothing.
async fn read_body(body: axum::body::Body) -> Result<Bytes, Response> {
    match tokio::time::timeout(BODY_DEADLINE, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(error::compat(&bad("Invalid request body"))),
        Err(_late) => Err(error::compat(&bad("Request body too slow"))),
    }
}

/// Who may mint: the credential of each route; a route without one is not served.
#[derive(Debug, Clone)]
pub struct MintKeys {
    /// Credential of `/generate-token`.
    pub user: Option<ApiKey>,
    /// Credential of `/admin/generate-token`.
    pub admin: Option<ApiKey>,
    /// Whether the key may come as `?x-api-key=` (the old service's public routes). The
    /// internal listener takes it from `X-API-Key` only: query strings end up in access logs.
    pub in_query: bool,
    /// `listener` label of `daisi_edge_tokens_minted_total` (`public`, `mint`): the public
    /// count going flat is how a migration shows it is done.
    pub listener: &'static str,
}

#[derive(Debug, Clone)]
struct Minter {
    edge: Edge,
    keys: MintKeys,
}

/// The minting routes guarded by `keys`.
pub fn routes(edge: Edge, keys: MintKeys) -> Router {
    let mut router = Router::new();
    if keys.user.is_some() {
        router = router.route(PATHS[0], post(user_token));
    }
    if keys.admin.is_some() {
        router = router.route(PATHS[1], post(admin_token));
    }
    router
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Minter { edge, keys })
}

/// The public port outside the migration window: both routes answer 404, saying why.
pub fn moved() -> Router {
    let answer = || async {
        error::with_status(
            http::StatusCode::NOT_FOUND,
            &ErrorBody::bad_request("Token minting is not served on this port"),
        )
    };
    Router::new()
        .route(PATHS[0], any(answer))
        .route(PATHS[1], any(answer))
}

/// Query parameters: only the API key may come this way.
#[derive(Debug, Default, Deserialize)]
pub struct KeyParam {
    #[serde(rename = "x-api-key")]
    api_key: Option<String>,
}

#[derive(Debug, Deserialize)]
struct UserTokenRequest {
    company_id: Option<String>,
    agent_id: Option<String>,
    user_id: Option<String>,
    expires_in_seconds: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct AdminTokenRequest {
    admin_id: Option<String>,
    expires_in_seconds: Option<i64>,
    subscribed_company_id: Option<String>,
    subscribed_agent_id: Option<String>,
    company_id_restriction: Option<String>,
}

fn denied(edge: &Edge, d: &Denied) -> Response {
    edge.metrics
        .auth_failures
        .with_label_values(&[d.reason])
        .inc();
    error::compat(&d.body)
}

fn bad(message: &'static str) -> ErrorBody {
    ErrorBody::bad_request(message)
}

fn id<T>(
    value: Option<String>,
    parse: impl FnOnce(String) -> Result<T, IdError>,
) -> Result<T, ErrorBody> {
    parse(value.unwrap_or_default()).map_err(|e| ErrorBody::invalid_id(&e))
}

fn optional_id<T>(
    value: Option<String>,
    parse: impl FnOnce(String) -> Result<T, IdError>,
) -> Result<Option<T>, ErrorBody> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => parse(v).map(Some).map_err(|e| ErrorBody::invalid_id(&e)),
    }
}

fn lifetime(seconds: Option<i64>) -> Result<u64, ErrorBody> {
    seconds
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .ok_or_else(|| bad("expires_in_seconds must be greater than 0"))
}

fn token_response(
    minter: &Minter,
    kind: &str,
    token: Result<String, impl std::fmt::Display>,
) -> Response {
    match token {
        Ok(token) => {
            minter
                .edge
                .metrics
                .tokens_minted
                .with_label_values(&[minter.keys.listener, kind])
                .inc();
            Json(json!({ "token": token })).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "token sealing failed");
            error::compat(&ErrorBody::internal())
        }
    }
}

fn presented<'a>(
    keys: &MintKeys,
    headers: &'a HeaderMap,
    query: &'a Result<Query<KeyParam>, QueryRejection>,
) -> Option<&'a str> {
    let query_key = query
        .as_ref()
        .ok()
        .and_then(|Query(q)| q.api_key.as_deref())
        .filter(|_| keys.in_query);
    crate::auth::api_key::presented_key(headers, query_key)
}

fn check(key: Option<&ApiKey>, presented: Option<&str>) -> crate::auth::api_key::KeyCheck {
    match key {
        Some(key) => key.check(presented),
        // Not routed without a key; refuse anyway should that ever change.
        None => crate::auth::api_key::KeyCheck::Wrong,
    }
}

/// `POST /generate-token`.
async fn user_token(
    State(minter): State<Minter>,
    headers: HeaderMap,
    query: Result<Query<KeyParam>, QueryRejection>,
    body: axum::body::Body,
) -> Response {
    let (edge, keys) = (&minter.edge, &minter.keys);
    let presented = presented(keys, &headers, &query);
    if let Err(d) = user_key_outcome(check(keys.user.as_ref(), presented)) {
        return denied(edge, &d);
    }
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Ok(request) = serde_json::from_slice::<UserTokenRequest>(&body) else {
        return error::compat(&bad("Invalid request body"));
    };
    let result = (|| {
        let company = id(request.company_id, CompanyId::new)?;
        let agent = id(request.agent_id, AgentId::new)?;
        let user = id(request.user_id, UserId::new)?;
        let seconds = lifetime(request.expires_in_seconds)?;
        UserClaims::expiring_in(company, agent, user, jiff::Timestamp::now(), seconds)
            .map_err(|_| bad("expires_in_seconds is too large"))
    })();
    match result {
        Ok(claims) => token_response(
            &minter,
            "user",
            edge.auth.user_keyring().encode_user(&claims),
        ),
        Err(body) => error::compat(&body),
    }
}

/// `POST /admin/generate-token`.
async fn admin_token(
    State(minter): State<Minter>,
    headers: HeaderMap,
    query: Result<Query<KeyParam>, QueryRejection>,
    body: axum::body::Body,
) -> Response {
    let (edge, keys) = (&minter.edge, &minter.keys);
    let presented = presented(keys, &headers, &query);
    if let Err(d) = admin_key_outcome(check(keys.admin.as_ref(), presented)) {
        return denied(edge, &d);
    }
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Ok(request) = serde_json::from_slice::<AdminTokenRequest>(&body) else {
        return error::compat(&bad("Invalid request body"));
    };
    let result = (|| {
        let admin = id(request.admin_id, AdminId::new)?;
        let seconds = lifetime(request.expires_in_seconds)?;
        let mut claims = AdminClaims::expiring_in(admin, jiff::Timestamp::now(), seconds)
            .map_err(|_| bad("expires_in_seconds is too large"))?;
        claims.subscribed_company_id = optional_id(request.subscribed_company_id, CompanyId::new)?;
        claims.subscribed_agent_id = optional_id(request.subscribed_agent_id, AgentId::new)?;
        claims.company_id_restriction =
            optional_id(request.company_id_restriction, CompanyId::new)?;
        Ok::<_, ErrorBody>(claims)
    })();
    match result {
        Ok(claims) => token_response(
            &minter,
            "admin",
            edge.auth.admin_keyring().encode_admin(&claims),
        ),
        Err(body) => error::compat(&body),
    }
}
