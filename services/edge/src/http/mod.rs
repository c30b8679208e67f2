//! The client-facing HTTP surface (compat.md, "HTTP (edge)"): health, readiness, metrics,
//! token minting and the two socket routes, every response carrying `X-Request-ID`.

pub mod compat;
pub mod console;
pub mod error;
pub mod origin;
pub mod request_id;
pub mod serve;
pub mod tls;
pub mod tokens;

use crate::state::Edge;
use crate::ws::upgrade;
use axum::Router;
use axum::routing::{get, post};

/// Every route of the edge.
pub fn router(edge: Edge, metrics: &daisi_telemetry::Metrics) -> Router {
    let mut api = Router::new()
        .route("/generate-token", post(tokens::user_token))
        .route("/admin/generate-token", post(tokens::admin_token))
        .route("/ws/admin", get(upgrade::admin_socket))
        .route("/ws/{company_id}/{agent_id}", get(upgrade::user_socket))
        .with_state(edge.clone());
    if edge.config.console {
        api = api.route("/console", get(console::page));
    }
    api.merge(daisi_runtime::health::router(edge.readiness.clone()))
        .merge(metrics.router())
        .layer(axum::middleware::from_fn(compat::layer))
        .layer(axum::middleware::from_fn(request_id::layer))
}
