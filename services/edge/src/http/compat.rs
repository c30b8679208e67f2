//! Statuses axum answers on its own, reshaped into the contract: a method a route does not
//! serve gets 405 `E4005` with the error body instead of an empty 405.

use super::error;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use daisi_domain::ErrorBody;
use http::StatusCode;

/// The middleware.
pub async fn layer(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        let mut compat = error::compat(&ErrorBody::method_not_allowed());
        if let Some(allow) = response.headers().get(http::header::ALLOW) {
            compat
                .headers_mut()
                .insert(http::header::ALLOW, allow.clone());
        }
        return compat;
    }
    response
}
