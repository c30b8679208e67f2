//! Token minting (issue 11, part A): off the public port unless the compat setting is on, and
//! served on the internal listener behind the backends' own credentials.

use crate::support::*;
use daisi_domain::token::TokenKeyring;
use daisi_testkit::ServiceProcess;
use serde_json::json;
use std::time::Duration;

const USER_BODY: &str =
    r#"{"company_id":"c1","agent_id":"a1","user_id":"u1","expires_in_seconds":60}"#;
const ADMIN_BODY: &str = r#"{"admin_id":"ad1","expires_in_seconds":60,"subscribed_company_id":"c1","company_id_restriction":"c1"}"#;

#[tokio::test]
async fn public_port_refuses_minting_unless_the_compat_setting_is_on() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-mint-public-off", |_| {}).await;
    for (path, body) in [
        ("/generate-token", USER_BODY),
        ("/admin/generate-token", ADMIN_BODY),
    ] {
        for key in [API_KEY, ADMIN_API_KEY, MINT_KEY, ADMIN_MINT_KEY] {
            let (status, _, err) = post(edge.http, path, Some(("X-API-Key", key)), body).await;
            assert_eq!(status, 404, "{path} with {key}: {err}");
            assert_eq!(err["message"], "Token minting is not served on this port");
            let (status, _, _) =
                post(edge.http, &format!("{path}?x-api-key={key}"), None, body).await;
            assert_eq!(status, 404, "{path} with ?x-api-key");
        }
    }

    // The migration window: the old routes, keys and codes, query parameter included.
    let compat = TestEdge::start(&coord.url, "edge-mint-public-on", |c| {
        c.minting.public = true;
    })
    .await;
    let (status, _, err) = post(compat.http, "/generate-token", None, USER_BODY).await;
    assert_eq!(
        (status, err),
        (
            401,
            json!({"code":"InvalidAPIKey","message":"API key is required"})
        )
    );
    let (status, _, _) = post(
        compat.http,
        "/generate-token",
        Some(("X-API-Key", MINT_KEY)),
        USER_BODY,
    )
    .await;
    assert_eq!(
        status, 401,
        "the backend credential belongs to the internal listener"
    );
    let (status, _, ok) = post(
        compat.http,
        &format!("/generate-token?x-api-key={API_KEY}"),
        None,
        USER_BODY,
    )
    .await;
    assert_eq!(status, 200, "{ok}");
    user_socket_opens_with(compat.http, ok["token"].as_str().unwrap()).await;
    let (status, _, err) = post(
        compat.http,
        "/admin/generate-token",
        Some(("X-API-Key", API_KEY)),
        ADMIN_BODY,
    )
    .await;
    assert_eq!((status, err["code"].clone()), (403, json!("E4003")));
    let (status, _, ok) = post(
        compat.http,
        "/admin/generate-token",
        Some(("X-API-Key", ADMIN_API_KEY)),
        ADMIN_BODY,
    )
    .await;
    assert_eq!(status, 200, "{ok}");
    // What a migration watches go flat.
    let metrics = compat.metrics().await;
    for kind in ["user", "admin"] {
        let minted = metric(
            &metrics,
            "daisi_edge_tokens_minted_total",
            &[r#"listener="public""#, &format!(r#"kind="{kind}""#)],
        );
        assert_eq!(minted, 1, "{kind}: {metrics}");
    }
}

async fn user_socket_opens_with(http: std::net::SocketAddr, token: &str) {
    let mut client = open(
        http,
        &format!("/ws/c1/a1?token={}", enc(token)),
        Some(API_KEY),
    )
    .await
    .expect("the minted token opens a socket");
    assert_eq!(client.next_text().await, r#"{"type":"ready"}"#);
    client.close().await;
}

#[tokio::test]
async fn internal_listener_mints_with_its_own_credential() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-mint-internal", |_| {}).await;
    let mint = edge.mint.expect("minting listener bound");

    let (status, _, err) = post(mint, "/generate-token", None, USER_BODY).await;
    assert_eq!(
        (status, err),
        (
            401,
            json!({"code":"InvalidAPIKey","message":"API key is required"})
        )
    );
    // The keys browsers hold do not mint here.
    for key in [API_KEY, ADMIN_API_KEY, ADMIN_MINT_KEY] {
        let (status, _, err) =
            post(mint, "/generate-token", Some(("X-API-Key", key)), USER_BODY).await;
        assert_eq!(
            (status, err),
            (
                401,
                json!({"code":"InvalidAPIKey","message":"Invalid API key"})
            ),
            "{key}"
        );
    }
    // Only the header: query strings end up in access logs.
    let (status, _, _) = post(
        mint,
        &format!("/generate-token?x-api-key={MINT_KEY}"),
        None,
        USER_BODY,
    )
    .await;
    assert_eq!(status, 401);

    let (status, headers, ok) = post(
        mint,
        "/generate-token",
        Some(("X-API-Key", MINT_KEY)),
        USER_BODY,
    )
    .await;
    assert_eq!(status, 200, "{ok}");
    assert!(headers.contains_key("x-request-id"));
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
    user_socket_opens_with(edge.http, token).await;

    for bad in [
        "not json",
        r#"{"company_id":"c1","agent_id":"a1","user_id":"u1","expires_in_seconds":0}"#,
        r#"{"company_id":"c1","agent_id":"a1","user_id":"u1","expires_in_seconds":-5}"#,
        r#"{"company_id":"c1","agent_id":"a1","user_id":"u1"}"#,
        r#"{"company_id":"c.1","agent_id":"a1","user_id":"u1","expires_in_seconds":60}"#,
        r#"{"company_id":"","agent_id":"a1","user_id":"u1","expires_in_seconds":60}"#,
    ] {
        let (status, _, err) =
            post(mint, "/generate-token", Some(("X-API-Key", MINT_KEY)), bad).await;
        assert_eq!(
            (status, err["code"].clone()),
            (400, json!("BadRequest")),
            "{bad}"
        );
    }
    let response = reqwest::get(format!("http://{mint}/generate-token"))
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["code"],
        "E4005"
    );

    // Admin tokens: their own credential and the admin codes.
    let (status, _, err) = post(mint, "/admin/generate-token", None, ADMIN_BODY).await;
    assert_eq!((status, err["code"].clone()), (401, json!("E4001")));
    for key in [MINT_KEY, ADMIN_API_KEY] {
        let (status, _, err) = post(
            mint,
            "/admin/generate-token",
            Some(("X-API-Key", key)),
            ADMIN_BODY,
        )
        .await;
        assert_eq!(
            (status, err["code"].clone()),
            (403, json!("E4003")),
            "{key}"
        );
    }
    let (status, _, ok) = post(
        mint,
        "/admin/generate-token",
        Some(("X-API-Key", ADMIN_MINT_KEY)),
        ADMIN_BODY,
    )
    .await;
    assert_eq!(status, 200, "{ok}");
    let claims = TokenKeyring::from_hex(&[ADMIN_KEY])
        .unwrap()
        .decode_admin(ok["token"].as_str().unwrap(), jiff::Timestamp::now())
        .unwrap();
    assert_eq!(claims.subscribed_company_id.unwrap().as_str(), "c1");
    assert_eq!(claims.subscribed_agent_id, None);

    let metrics = edge.metrics().await;
    let minted = metric(
        &metrics,
        "daisi_edge_tokens_minted_total",
        &[r#"listener="mint""#, r#"kind="user""#],
    );
    assert_eq!(minted, 1, "{metrics}");

    // Nothing else is served there.
    let (status, _, _) = post(mint, "/ws/c1/a1", None, "").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_route_without_a_credential_is_not_served() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-mint-user-only", |c| {
        c.minting.admin_keys.clear();
    })
    .await;
    let mint = edge.mint.expect("minting listener bound");
    let (status, _, _) = post(
        mint,
        "/admin/generate-token",
        Some(("X-API-Key", ADMIN_MINT_KEY)),
        ADMIN_BODY,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, _) = post(
        mint,
        "/generate-token",
        Some(("X-API-Key", MINT_KEY)),
        USER_BODY,
    )
    .await;
    assert_eq!(status, 200);
}

const BIN: &str = env!("CARGO_BIN_EXE_daisi-edge");

fn binary_env(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = vec![
        ("DAISI_EDGE_HTTP_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_GRPC_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_MINT_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_POD_ID", "edge-mint-bin"),
        ("DAISI_EDGE_TOKEN_AES_KEY", USER_KEY),
        ("DAISI_EDGE_ADMIN_TOKEN_AES_KEY", ADMIN_KEY),
        ("DAISI_EDGE_SECRET_TOKEN", API_KEY),
        ("DAISI_EDGE_ADMIN_SECRET_TOKEN", ADMIN_API_KEY),
        ("DAISI_EDGE_COORDINATOR_URL", "http://127.0.0.1:1"),
        ("DAISI_EDGE_SHUTDOWN_GRACE", "1s"),
    ];
    env.extend_from_slice(extra);
    env
}

#[tokio::test]
async fn the_compat_setting_warns_at_start_up_and_the_listener_is_logged() {
    let edge = ServiceProcess::spawn(
        BIN,
        &binary_env(&[
            ("DAISI_EDGE_PUBLIC_MINTING", "true"),
            ("DAISI_EDGE_MINT_API_KEY", MINT_KEY),
        ]),
        "edge listening",
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let mint = edge
        .addr("mint")
        .expect("the start line names the minting listener");
    wait_logged(&edge, "DAISI_EDGE_PUBLIC_MINTING is on").await;
    let (status, _, _) = post(
        mint,
        "/generate-token",
        Some(("X-API-Key", MINT_KEY)),
        USER_BODY,
    )
    .await;
    assert_eq!(status, 200);

    // Without the compat setting: no warning, and no minting listener without a credential.
    let plain = ServiceProcess::spawn(
        BIN,
        &binary_env(&[]),
        "edge listening",
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let http = plain.addr("http").unwrap();
    let (status, _, _) = post(
        http,
        "/generate-token",
        Some(("X-API-Key", API_KEY)),
        USER_BODY,
    )
    .await;
    assert_eq!(status, 404);
    assert!(plain.addr("mint").is_none(), "{}", plain.logs());
    // Logged after the warning would have been.
    wait_logged(&plain, "token minting is off").await;
    assert!(!plain.logged("DAISI_EDGE_PUBLIC_MINTING is on"));
}

async fn wait_logged(process: &ServiceProcess, needle: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !process.logged(needle) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never logged {needle:?}:\n{}",
            process.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a request head announcing a body that never comes; the status line of the answer, if
/// one comes within `within`.
async fn head_only(
    addr: std::net::SocketAddr,
    path: &str,
    key: Option<&str>,
    within: Duration,
) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let key = key.map_or(String::new(), |k| format!("x-api-key: {k}\r\n"));
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: edge\r\ncontent-type: application/json\r\n{key}content-length: 16000\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(within, tcp.read(&mut answer))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&answer[..n]).into_owned();
    text.lines().next().map(str::to_owned)
}

/// A token request without the key is refused on its head, without waiting for its body; one
/// with the key whose body does not come is refused after a short deadline, so slow bodies
/// cannot hold the door's in-flight slots.
#[tokio::test]
async fn token_requests_are_refused_before_their_body_and_slow_bodies_time_out() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-mint-slow-body", |c| {
        c.minting.public = true;
    })
    .await;
    let status = head_only(edge.http, "/generate-token", None, Duration::from_secs(1)).await;
    assert!(
        status.as_deref().is_some_and(|s| s.contains(" 401 ")),
        "{status:?}"
    );
    let started = std::time::Instant::now();
    let status = head_only(
        edge.http,
        "/generate-token",
        Some(API_KEY),
        Duration::from_secs(8),
    )
    .await;
    assert!(
        status.as_deref().is_some_and(|s| s.contains(" 400 ")),
        "{status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "refused after {:?}, before the request deadline",
        started.elapsed()
    );
}
