//! `GET /console`: the live console, one static page compiled into the binary (no build step,
//! no CDN). Served only when `DAISI_EDGE_CONSOLE` is on: it is a development tool, and a
//! production edge should expose nothing a client does not need.

use axum::http::header;
use axum::response::IntoResponse;

/// The page itself (`services/edge/console/index.html`).
pub const PAGE: &str = include_str!("../../console/index.html");

/// Serves [`PAGE`]. The page only talks to the origin it came from and never stores tokens.
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src ws: wss:; base-uri 'none'; form-action 'none'",
            ),
        ],
        PAGE,
    )
}
