//! compat.md "HTTP (edge)" and "Tokens" on the socket routes: API keys, tokens (the shared
//! vectors of an independent implementation included), path/claims agreement, invalid ids,
//! subprotocol, origin allow-list.

use crate::support::*;
use daisi_edge::config::Origins;
use serde_json::{Value, json};

const VECTORS: &str = include_str!("../../../../libs/domain/tests/data/token-vectors.json");

#[tokio::test]
async fn token_vectors_open_or_refuse_sockets() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-vectors", |_| {}).await;
    let vectors: Value = serde_json::from_str(VECTORS).unwrap();
    for case in vectors["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let token = case["token"].as_str().unwrap();
        let claims: Value =
            serde_json::from_str(case["plaintext"].as_str().unwrap()).unwrap_or(Value::Null);
        let (path, key) = if case["kind"] == "admin" {
            (format!("/ws/admin?token={}", enc(token)), ADMIN_API_KEY)
        } else {
            let company = claims["company_id"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or("c1");
            let agent = claims["agent_id"].as_str().unwrap_or("a1");
            (
                format!("/ws/{company}/{agent}?token={}", enc(token)),
                API_KEY,
            )
        };
        let result = open(edge.http, &path, Some(key)).await;
        match case["expect"].as_str().unwrap() {
            "valid" => {
                let mut client = result.unwrap_or_else(|r| panic!("{name}: refused {r:?}"));
                assert_eq!(client.protocol.as_deref(), Some("json.v1"), "{name}");
                assert_eq!(client.next_text().await, r#"{"type":"ready"}"#, "{name}");
                client.close().await;
            }
            "expired" => {
                let refused = result.err().unwrap_or_else(|| panic!("{name}: accepted"));
                assert_eq!(refused.status, 403, "{name}");
                assert_eq!(
                    refused.body,
                    json!({"code":"InvalidToken","message":"Company token has expired."}),
                    "{name}"
                );
            }
            _ => {
                let refused = result.err().unwrap_or_else(|| panic!("{name}: accepted"));
                assert_eq!(refused.status, 403, "{name}");
                assert_eq!(
                    refused.body,
                    json!({"code":"InvalidToken","message":"Company token is invalid or malformed."}),
                    "{name}"
                );
            }
        }
    }
}

#[tokio::test]
async fn user_socket_checks_key_token_and_path() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-auth", |_| {}).await;
    let token = user_token("c1", "a1", "u1");
    let q = format!("?token={}", enc(&token));

    let r = open(edge.http, &format!("/ws/c1/a1{q}"), None)
        .await
        .err()
        .unwrap();
    assert_eq!(
        (r.status, r.body),
        (
            401,
            json!({"code":"InvalidAPIKey","message":"API key is required"})
        )
    );
    assert!(r.headers.contains_key("x-request-id"));
    let r = open(edge.http, &format!("/ws/c1/a1{q}"), Some("wrong"))
        .await
        .err()
        .unwrap();
    assert_eq!(
        (r.status, r.body),
        (
            401,
            json!({"code":"InvalidAPIKey","message":"Invalid API key"})
        )
    );
    // API key in the query works too.
    let mut ok = open(
        edge.http,
        &format!("/ws/c1/a1{q}&x-api-key={API_KEY}"),
        None,
    )
    .await
    .expect("query key");
    assert_eq!(ok.next_text().await, r#"{"type":"ready"}"#);
    ok.close().await;

    let r = open(edge.http, "/ws/c1/a1", Some(API_KEY))
        .await
        .err()
        .unwrap();
    assert_eq!(
        (r.status, r.body),
        (
            403,
            json!({"code":"InvalidToken","message":"Company token is required"})
        )
    );
    let r = open(edge.http, "/ws/c1/a1?token=garbage", Some(API_KEY))
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(r.body["message"], "Company token is invalid or malformed.");

    // Claims are authoritative: a path that disagrees is refused.
    for path in ["/ws/c2/a1", "/ws/c1/a2"] {
        let r = open(edge.http, &format!("{path}{q}"), Some(API_KEY))
            .await
            .err()
            .unwrap();
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.body["code"], "InvalidToken", "{path}");
    }
    // An admin token is not a user token.
    let admin = admin_token("ad1", None, None, None);
    let r = open(
        edge.http,
        &format!("/ws/c1/a1?token={}", enc(&admin)),
        Some(API_KEY),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(r.status, 403);

    // Invalid ids in the path: 400 BadRequest.
    for path in ["/ws/c.1/a1", "/ws/c1/a*1", "/ws/c%20x/a1"] {
        let r = open(edge.http, &format!("{path}{q}"), Some(API_KEY))
            .await
            .err()
            .unwrap();
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.body["code"], "BadRequest", "{path}");
    }

    // A plain GET (no upgrade) after authentication: 400; another method: 405 E4005.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/ws/c1/a1{q}", edge.http))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    let post = reqwest::Client::new()
        .post(format!("http://{}/ws/c1/a1{q}", edge.http))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.json::<Value>().await.unwrap()["code"], "E4005");
}

#[tokio::test]
async fn admin_socket_uses_admin_key_and_token() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-admin-auth", |_| {}).await;
    let token = admin_token("ad1", None, None, None);
    let q = format!("/ws/admin?token={}", enc(&token));
    let r = open(edge.http, &q, None).await.err().unwrap();
    assert_eq!((r.status, r.body["code"].clone()), (401, json!("E4001")));
    let r = open(edge.http, &q, Some(API_KEY)).await.err().unwrap();
    assert_eq!((r.status, r.body["code"].clone()), (403, json!("E4003")));
    let user = user_token("c1", "a1", "u1");
    let r = open(
        edge.http,
        &format!("/ws/admin?token={}", enc(&user)),
        Some(ADMIN_API_KEY),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(
        (r.status, r.body["code"].clone()),
        (403, json!("InvalidToken"))
    );
    let ok = admin(edge.http, &token).await;
    assert_eq!(ok.protocol.as_deref(), Some("json.v1"));
    ok.close().await;
}

/// Opens a user socket with `origin` (when given); the upgrade's status.
async fn status_with_origin(edge: &TestEdge, user_id: &str, origin: Option<&str>) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let token = user_token("c1", "a1", user_id);
    let url = format!("ws://{}/ws/c1/a1?token={}", edge.http, enc(&token));
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-api-key", API_KEY.parse().unwrap());
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, response)) => {
            drop(ws);
            response.status().as_u16()
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn origins_default_to_the_old_services_same_host_rule() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-origin-default", |_| {}).await;
    let same = format!("http://{}", edge.http);
    let other_port = format!("http://127.0.0.1:{}", edge.http.port() + 1);
    for (origin, status) in [
        (None, 101),
        (Some(same.as_str()), 101),
        (Some("https://evil.example.com"), 403),
        (Some(other_port.as_str()), 403),
        (Some("null"), 403),
    ] {
        assert_eq!(
            status_with_origin(&edge, "u1", origin).await,
            status,
            "{origin:?}"
        );
    }
}

#[tokio::test]
async fn an_origin_list_widens_the_default_and_a_star_opens_it() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-origin-list", |c| {
        c.origins = Origins::SameHostOr(vec!["https://app.example.com".into()]);
    })
    .await;
    let same = format!("http://{}", edge.http);
    for (origin, status) in [
        (Some("https://app.example.com"), 101),
        (Some(same.as_str()), 101),
        (Some("https://evil.example.com"), 403),
        (None, 101),
    ] {
        assert_eq!(
            status_with_origin(&edge, "u1", origin).await,
            status,
            "{origin:?}"
        );
    }
    let any = TestEdge::start(&coord.url, "edge-origin-any", |c| c.origins = Origins::Any).await;
    assert_eq!(
        status_with_origin(&any, "u2", Some("https://evil.example.com")).await,
        101
    );
}

#[tokio::test]
async fn during_a_rotation_the_previous_api_key_still_opens_sockets() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-rotate", |c| {
        c.previous_secret_token = Some(API_KEY.to_owned().into());
        c.secret_token = "the-new-user-api-key".to_owned().into();
    })
    .await;
    for (user_id, key) in [("u1", API_KEY), ("u2", "the-new-user-api-key")] {
        let token = user_token("c1", "a1", user_id);
        let mut client = open(
            edge.http,
            &format!("/ws/c1/a1?token={}", enc(&token)),
            Some(key),
        )
        .await
        .unwrap_or_else(|r| panic!("{key}: {r:?}"));
        assert_eq!(client.next_text().await, r#"{"type":"ready"}"#);
    }
    let token = user_token("c1", "a1", "u3");
    let refused = open(
        edge.http,
        &format!("/ws/c1/a1?token={}", enc(&token)),
        Some("some-other-key"),
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(refused.status, 401);
}

/// The value of the metric line starting with `prefix` (name and labels as printed), or 0.
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn accepted_sockets_count_as_auth_successes_and_their_lifetime_is_observed() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-auth-metrics", |_| {}).await;
    let before = edge.metrics().await;
    // Series exist at zero from the start, so rates and alerts see zeros, not gaps.
    assert_eq!(
        metric(&before, r#"daisi_edge_auth_successes_total{kind="user""#),
        0.0,
        "{before}"
    );
    assert!(
        before.contains(r#"daisi_edge_connection_duration_seconds_count{kind="admin""#),
        "{before}"
    );

    let client = user(edge.http, "c1", "a1", "u1").await;
    let refused = open(edge.http, "/ws/c1/a1?token=nonsense", Some(API_KEY)).await;
    assert!(refused.is_err(), "a bad token is refused");
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    client.close().await;
    eventually("the closed socket's lifetime is observed", || async {
        let text = edge.metrics().await;
        metric(
            &text,
            r#"daisi_edge_connection_duration_seconds_count{kind="user""#,
        ) == 1.0
    })
    .await;
    let text = edge.metrics().await;
    assert_eq!(
        metric(&text, r#"daisi_edge_auth_successes_total{kind="user""#),
        1.0,
        "only the accepted socket counts: {text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"daisi_edge_auth_failures_total{reason="token_invalid""#
        ),
        1.0
    );
    let lifetime = metric(
        &text,
        r#"daisi_edge_connection_duration_seconds_sum{kind="user""#,
    );
    assert!(
        (0.1..30.0).contains(&lifetime),
        "lifetime {lifetime}s of a socket held for 150 ms"
    );
    // Below the first bucket above its lifetime: the 0.1 s bucket is empty, the 0.2 s one
    // is not unless the machine stalled; a bucket far above it holds it.
    assert_eq!(
        metric(
            &text,
            r#"daisi_edge_connection_duration_seconds_bucket{kind="user",service="edge",le="0.1"}"#
        ),
        0.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"daisi_edge_connection_duration_seconds_bucket{kind="user",service="edge",le="51.2"}"#
        ),
        1.0,
        "{text}"
    );
}
