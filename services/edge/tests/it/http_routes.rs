//! compat.md "HTTP (edge)": health, readiness, metrics, token minting, API keys, error bodies,
//! `X-Request-ID`, 405 `E4005`.

use crate::support::*;
use daisi_domain::token::TokenKeyring;
use serde_json::{Value, json};

async fn post(
    edge: &TestEdge,
    path: &str,
    key: Option<(&str, &str)>,
    body: &str,
) -> (u16, http::HeaderMap, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}{path}", edge.http))
        .body(body.to_owned());
    if let Some((name, value)) = key {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

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
        json!({"status": "READY", "dependencies": {"coordinator": "UP"}})
    );

    let metrics = edge.metrics().await;
    assert!(metrics.contains("daisi_edge_sockets"), "{metrics}");

    // Every response carries the id, errors and upgrades refused included.
    let (status, headers, _) = post(&edge, "/generate-token", None, "{}").await;
    assert_eq!(status, 401);
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
async fn generate_token_checks_key_and_body() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-mint", |_| {}).await;
    let body = r#"{"company_id":"c1","agent_id":"a1","user_id":"u1","expires_in_seconds":60}"#;

    let (status, _, err) = post(&edge, "/generate-token", None, body).await;
    assert_eq!(
        (status, err),
        (
            401,
            json!({"code":"InvalidAPIKey","message":"API key is required"})
        )
    );
    let (status, _, err) = post(&edge, "/generate-token", Some(("X-API-Key", "nope")), body).await;
    assert_eq!(
        (status, err),
        (
            401,
            json!({"code":"InvalidAPIKey","message":"Invalid API key"})
        )
    );
    // The admin key is not the user key.
    let (status, _, _) = post(
        &edge,
        "/generate-token",
        Some(("X-API-Key", ADMIN_API_KEY)),
        body,
    )
    .await;
    assert_eq!(status, 401);

    let (status, _, ok) = post(&edge, "/generate-token", Some(("X-API-Key", API_KEY)), body).await;
    assert_eq!(status, 200, "{ok}");
    let token = ok["token"].as_str().unwrap();
    assert!(
        token.ends_with('=') || token.len() % 4 == 0,
        "padded: {token}"
    );
    let claims = TokenKeyring::from_hex(&[USER_KEY])
        .unwrap()
        .decode_user(token, jiff::Timestamp::now())
        .unwrap();
    assert_eq!(claims.user_id.as_str(), "u1");

    // Query parameter works as well.
    let (status, _, _) = post(
        &edge,
        &format!("/generate-token?x-api-key={API_KEY}"),
        None,
        body,
    )
    .await;
    assert_eq!(status, 200);

    for bad in [
        "not json",
        r#"{"company_id":"c1","agent_id":"a1","user_id":"u1","expires_in_seconds":0}"#,
        r#"{"company_id":"c1","agent_id":"a1","user_id":"u1","expires_in_seconds":-5}"#,
        r#"{"company_id":"c1","agent_id":"a1","user_id":"u1"}"#,
        r#"{"company_id":"c.1","agent_id":"a1","user_id":"u1","expires_in_seconds":60}"#,
        r#"{"company_id":"","agent_id":"a1","user_id":"u1","expires_in_seconds":60}"#,
    ] {
        let (status, _, err) =
            post(&edge, "/generate-token", Some(("X-API-Key", API_KEY)), bad).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(err["code"], "BadRequest", "{bad}");
    }

    // Wrong method: 405 E4005 with the error body.
    let response = reqwest::get(format!("http://{}/generate-token", edge.http))
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], "E4005");
}

#[tokio::test]
async fn admin_generate_token_uses_admin_codes() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-admin-mint", |_| {}).await;
    let body = r#"{"admin_id":"ad1","expires_in_seconds":60,"subscribed_company_id":"c1","company_id_restriction":"c1"}"#;
    let (status, _, err) = post(&edge, "/admin/generate-token", None, body).await;
    assert_eq!((status, err["code"].clone()), (401, json!("E4001")));
    let (status, _, err) = post(
        &edge,
        "/admin/generate-token",
        Some(("X-API-Key", API_KEY)),
        body,
    )
    .await;
    assert_eq!((status, err["code"].clone()), (403, json!("E4003")));
    let (status, _, ok) = post(
        &edge,
        "/admin/generate-token",
        Some(("X-API-Key", ADMIN_API_KEY)),
        body,
    )
    .await;
    assert_eq!(status, 200, "{ok}");
    let claims = TokenKeyring::from_hex(&[ADMIN_KEY])
        .unwrap()
        .decode_admin(ok["token"].as_str().unwrap(), jiff::Timestamp::now())
        .unwrap();
    assert_eq!(claims.subscribed_company_id.unwrap().as_str(), "c1");
    assert_eq!(claims.subscribed_agent_id, None);
    let (status, _, _) = post(
        &edge,
        "/admin/generate-token",
        Some(("X-API-Key", ADMIN_API_KEY)),
        r#"{"admin_id":"ad1","expires_in_seconds":0}"#,
    )
    .await;
    assert_eq!(status, 400);
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
