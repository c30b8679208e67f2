//! Error responses in the contract's shape: `{"code","message","details"?}` with the status the
//! code maps to, or 503 + `Retry-After` when a dependency is down or the edge is draining.

use axum::response::{IntoResponse, Response};
use daisi_domain::ErrorBody;
use http::{HeaderValue, StatusCode, header};

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_SECONDS: &str = "5";

/// `body` with an explicit `status`.
pub fn with_status(status: StatusCode, body: &ErrorBody) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_json(),
    )
        .into_response()
}

/// `body` with the status its code maps to.
pub fn compat(body: &ErrorBody) -> Response {
    let status =
        StatusCode::from_u16(body.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    with_status(status, body)
}

/// 503 with `Retry-After`: the request may succeed later (coordinator back, another pod).
pub fn unavailable(body: &ErrorBody) -> Response {
    let mut response = with_status(StatusCode::SERVICE_UNAVAILABLE, body);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECONDS),
    );
    response
}
