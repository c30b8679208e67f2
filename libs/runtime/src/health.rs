//! `/health` (liveness: the process answers) and `/ready` (readiness: the dependencies the
//! service needs are up and it is not draining), in the response shapes of the wire contract:
//! `{"status":"OK"}`, `{"status":"READY","dependencies":{...}}` and 503 `{"status":"NOT_READY",...}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

/// Readiness state shared between the tasks that watch dependencies and the `/ready` handler.
/// Cloning is cheap; all clones see the same state.
#[derive(Debug, Clone)]
pub struct Readiness {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// One flag per dependency, fixed at construction so `/ready` always lists every one.
    dependencies: BTreeMap<&'static str, AtomicBool>,
    /// Set once at the start of shutdown: load balancers must stop sending new clients here.
    draining: AtomicBool,
    /// Bumped on every change, so mirrors (gRPC health) follow without polling.
    changes: watch::Sender<u64>,
}

impl Readiness {
    /// A readiness with the given dependencies, all initially down.
    pub fn new(dependencies: &[&'static str]) -> Self {
        Self {
            inner: Arc::new(Inner {
                dependencies: dependencies
                    .iter()
                    .map(|d| (*d, AtomicBool::new(false)))
                    .collect(),
                draining: AtomicBool::new(false),
                changes: watch::Sender::new(0),
            }),
        }
    }

    /// Records whether `dependency` is reachable. Unknown names are ignored (and logged), so a
    /// typo cannot make the service report ready.
    pub fn set(&self, dependency: &str, up: bool) {
        match self.inner.dependencies.get(dependency) {
            Some(flag) => {
                let was = flag.swap(up, Ordering::Relaxed);
                if was != up {
                    tracing::info!(dependency, up, "dependency state changed");
                    self.inner.changes.send_modify(|n| *n += 1);
                }
            }
            None => tracing::warn!(dependency, "readiness update for an unknown dependency"),
        }
    }

    /// Whether `dependency` is currently up.
    pub fn is_up(&self, dependency: &str) -> bool {
        self.inner
            .dependencies
            .get(dependency)
            .is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// Marks the service as draining; it stays not ready from then on.
    pub fn start_draining(&self) {
        if !self.inner.draining.swap(true, Ordering::Relaxed) {
            self.inner.changes.send_modify(|n| *n += 1);
        }
    }

    /// A receiver that wakes on every change of dependencies or draining.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Whether shutdown has started.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    /// Ready: every dependency up and not draining.
    pub fn is_ready(&self) -> bool {
        !self.is_draining()
            && self
                .inner
                .dependencies
                .values()
                .all(|f| f.load(Ordering::Relaxed))
    }

    fn report(&self) -> Response {
        let dependencies: Map<String, Value> = self
            .inner
            .dependencies
            .iter()
            .map(|(name, f)| {
                let state = if f.load(Ordering::Relaxed) {
                    "UP"
                } else {
                    "DOWN"
                };
                ((*name).to_owned(), Value::from(state))
            })
            .collect();
        if self.is_ready() {
            (
                StatusCode::OK,
                Json(json!({"status": "READY", "dependencies": dependencies})),
            )
                .into_response()
        } else {
            let mut body = json!({"status": "NOT_READY", "dependencies": dependencies});
            if self.is_draining() {
                body["reason"] = Value::from("draining");
            }
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

/// `GET /health` and `GET /ready` over `readiness`.
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "OK"})) }))
        .route(
            "/ready",
            get(|State(r): State<Readiness>| async move { r.report() }),
        )
        .with_state(readiness)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(readiness: &Readiness, path: &str) -> (StatusCode, Value) {
        let response = router(readiness.clone())
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 16).await.expect("body");
        (status, serde_json::from_slice(&body).expect("json"))
    }

    #[tokio::test]
    async fn health_is_always_ok() {
        let r = Readiness::new(&["redis"]);
        assert_eq!(
            get(&r, "/health").await,
            (StatusCode::OK, json!({"status": "OK"}))
        );
    }

    #[tokio::test]
    async fn ready_follows_dependencies_and_draining() {
        let r = Readiness::new(&["redis", "nats"]);
        let (status, body) = get(&r, "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "NOT_READY");
        assert_eq!(body["dependencies"]["redis"], "DOWN");

        r.set("redis", true);
        r.set("nats", true);
        r.set("typo", true);
        let (status, body) = get(&r, "/ready").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({"status": "READY", "dependencies": {"nats": "UP", "redis": "UP"}})
        );

        r.start_draining();
        let (status, body) = get(&r, "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["reason"], "draining");
    }
}
