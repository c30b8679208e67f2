//! `X-Request-ID` on every response: the request's own when it sent a sane one, else a new
//! UUID. The id also lands in the request's log span.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;
use tracing::Instrument;

/// Header name (lowercase, as HTTP/2 requires).
pub const HEADER: &str = "x-request-id";

/// Longest id echoed back; longer or odd ones are replaced, since they end up in logs.
const MAX_LEN: usize = 128;

fn incoming(request: &Request) -> Option<HeaderValue> {
    let value = request.headers().get(HEADER)?;
    let text = value.to_str().ok()?;
    let sane =
        !text.is_empty() && text.len() <= MAX_LEN && text.bytes().all(|b| b.is_ascii_graphic());
    sane.then(|| value.clone())
}

/// The middleware.
pub async fn layer(request: Request, next: Next) -> Response {
    let id = incoming(&request).unwrap_or_else(|| {
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    });
    let span = tracing::debug_span!(
        "http",
        request_id = id.to_str().unwrap_or_default(),
        method = %request.method(),
        path = request.uri().path(),
    );
    let mut response = next.run(request).instrument(span).await;
    response.headers_mut().insert(HEADER, id);
    response
}
