//! compat.md "HTTP (edge)": health, readiness, metrics, error bodies, `X-Request-ID`, the
//! console. Token minting is in `minting.rs`.

use crate::support::*;
use serde_json::{Value, json};

#[tokio::test]
async fn health_ready_metrics_and_request_ids() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-http", |_| {}).await;
    let client = reqwest::Client::new();

    let health = client
        .get(format!("http://{}/health", edge.http))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let generated = health.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(generated.len(), 36, "a new uuid: {generated}");
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({"status": "OK"})
    );

    let ready = client
        .get(format!("http://{}/ready", edge.http))
        .header("x-request-id", "req-123")
        .send()
        .await
        .unwrap();
    assert_eq!(ready.headers()["x-request-id"], "req-123", "echoed");
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.unwrap(),
        json!({"status": "READY", "dependencies": {"coordinator": "UP", "kill_commands": "UP"}})
    );

    let metrics = edge.metrics().await;
    assert!(metrics.contains("daisi_edge_sockets"), "{metrics}");

    // Every response carries the id, errors included.
    let (status, headers, _) = post(edge.http, "/generate-token", None, "{}").await;
    assert_eq!(status, 404);
    assert!(headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn ready_is_503_without_coordinator_and_sockets_get_503_retry_after() {
    // Nothing listens on port 1.
    let edge = TestEdge::spawn("http://127.0.0.1:1", "edge-nocoord", |_| {}, None).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, body) = daisi_testkit::get_json(edge.http, "/ready").await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(body["status"], "NOT_READY");
    assert_eq!(body["dependencies"]["coordinator"], "DOWN");

    let token = user_token("c1", "a1", "u1");
    let refused = open(
        edge.http,
        &format!("/ws/c1/a1?token={}", enc(&token)),
        Some(API_KEY),
    )
    .await
    .err()
    .expect("no socket without a coordinator");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.headers["retry-after"], "5");
    assert_eq!(refused.body["code"], "SubscriptionFailure");
    assert!(refused.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn console_page_is_served_only_when_enabled() {
    let coord = Coord::start().await;
    let off = TestEdge::start(&coord.url, "edge-console-off", |_| {}).await;
    let on = TestEdge::start(&coord.url, "edge-console-on", |c| c.console = true).await;
    let client = reqwest::Client::new();

    let hidden = client
        .get(format!("http://{}/console", off.http))
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), 404);

    let page = client
        .get(format!("http://{}/console", on.http))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("daisi console") && html.contains("json.v1"),
        "{html}"
    );
    // Self-contained: no external scripts, styles or fonts.
    assert!(
        !html.contains("<script src") && !html.contains("<link"),
        "external assets"
    );
}
