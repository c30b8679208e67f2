//! The edge's HTTP surfaces (compat.md, "HTTP (edge)"), every response carrying `X-Request-ID`:
//! - the public port: the two socket routes, health, readiness, metrics, the console when on,
//!   and the token routes only in the migration window (`DAISI_EDGE_PUBLIC_MINTING`);
//! - the internal minting listener: the token routes behind the backend credentials.
//!
//! Both are served by [`serve`] behind a [`door`]; the socket and token routes of the public
//! port are charged to the client address's [`budget`].

pub mod budget;
pub mod client_addr;
pub mod compat;
pub mod console;
pub mod door;
pub mod error;
pub mod origin;
pub mod request_id;
pub mod serve;
pub mod tls;
pub mod tokens;

use crate::auth::api_key::ApiKey;
use crate::state::Edge;
use crate::ws::upgrade;
use axum::Router;
use axum::routing::get;
use budget::AddressBudget;
use std::sync::Arc;
use tokens::MintKeys;

/// Every route of the public port.
pub fn router(
    edge: Edge,
    metrics: &daisi_telemetry::Metrics,
    budget: Option<Arc<AddressBudget>>,
) -> Router {
    let sockets = Router::new()
        .route("/ws/admin", get(upgrade::admin_socket))
        .route("/ws/{company_id}/{agent_id}", get(upgrade::user_socket))
        .with_state(edge.clone());
    let config = &edge.config;
    let tokens = if config.minting.public {
        tokens::routes(
            edge.clone(),
            MintKeys {
                user: Some(ApiKey::any_of(config.user_socket_keys())),
                admin: Some(ApiKey::any_of(config.admin_socket_keys())),
                in_query: true,
                listener: "public",
            },
        )
    } else {
        tokens::moved()
    };
    let mut api = sockets.merge(tokens);
    if let Some(budget) = budget {
        api = api.route_layer(axum::middleware::from_fn_with_state(budget, budget::layer));
    }
    if config.console {
        api = api.route("/console", get(console::page));
    }
    api.merge(daisi_runtime::health::router(edge.readiness.clone()))
        .merge(metrics.router())
        .layer(axum::middleware::from_fn(compat::layer))
        .layer(axum::middleware::from_fn(request_id::layer))
}

/// The routes of the internal minting listener.
pub fn mint_router(edge: Edge) -> Router {
    let minting = &edge.config.minting;
    let keys = MintKeys {
        user: (!minting.user_keys.is_empty()).then(|| ApiKey::any_of(&minting.user_keys)),
        admin: (!minting.admin_keys.is_empty()).then(|| ApiKey::any_of(&minting.admin_keys)),
        in_query: false,
        listener: "mint",
    };
    tokens::routes(edge, keys)
        .layer(axum::middleware::from_fn(compat::layer))
        .layer(axum::middleware::from_fn(request_id::layer))
}
