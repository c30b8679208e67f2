//! `POST /generate-token` and `POST /admin/generate-token`: token minting for backends, behind
//! the user and admin API keys respectively.

use super::error;
use crate::auth::Denied;
use crate::state::Edge;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use daisi_domain::token::{AdminClaims, UserClaims};
use daisi_domain::{AdminId, AgentId, CompanyId, ErrorBody, IdError, UserId};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::json;

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

fn token_response(token: Result<String, impl std::fmt::Display>) -> Response {
    match token {
        Ok(token) => Json(json!({ "token": token })).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "token sealing failed");
            error::compat(&ErrorBody::internal())
        }
    }
}

/// `POST /generate-token`.
pub async fn user_token(
    State(edge): State<Edge>,
    headers: HeaderMap,
    query: Result<Query<KeyParam>, QueryRejection>,
    body: Bytes,
) -> Response {
    let query_key = query
        .as_ref()
        .ok()
        .and_then(|Query(q)| q.api_key.as_deref());
    let key = crate::auth::api_key::presented_key(&headers, query_key);
    if let Err(d) = edge.auth.check_user_key(key) {
        return denied(&edge, &d);
    }
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
        Ok(claims) => token_response(edge.auth.user_keyring().encode_user(&claims)),
        Err(body) => error::compat(&body),
    }
}

/// `POST /admin/generate-token`.
pub async fn admin_token(
    State(edge): State<Edge>,
    headers: HeaderMap,
    query: Result<Query<KeyParam>, QueryRejection>,
    body: Bytes,
) -> Response {
    let query_key = query
        .as_ref()
        .ok()
        .and_then(|Query(q)| q.api_key.as_deref());
    let key = crate::auth::api_key::presented_key(&headers, query_key);
    if let Err(d) = edge.auth.check_admin_key(key) {
        return denied(&edge, &d);
    }
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
        Ok(claims) => token_response(edge.auth.admin_keyring().encode_admin(&claims)),
        Err(body) => error::compat(&body),
    }
}
