//! No secret reaches the logs (issue 11): the edge binary runs with every log level turned up,
//! is driven through everything that handles a secret (socket API keys and tokens in headers
//! and query strings, right and wrong; both minting routes on both ports; refusals; a drain),
//! and refused with bad settings; then its whole output is searched for every secret and
//! every token it saw.

use crate::support::*;
use daisi_testkit::{ServiceProcess, run_with_args};
use nix::sys::signal::Signal;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_daisi-edge");
/// Distinctive, so a hit in the output can only be a leak.
const SOCKET_KEY: &str = "sekrit-socket-key-5d1e7";
const ADMIN_SOCKET_KEY: &str = "sekrit-admin-socket-key-82c4a";
const BACKEND_KEY: &str = "sekrit-backend-mint-key-9f03b";
const ADMIN_BACKEND_KEY: &str = "sekrit-admin-backend-key-4be61";

fn env<'a>(coordinator: &'a str, log_filter: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("DAISI_EDGE_HTTP_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_GRPC_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_MINT_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_POD_ID", "edge-secrets"),
        ("DAISI_EDGE_COORDINATOR_URL", coordinator),
        ("DAISI_EDGE_TOKEN_AES_KEY", USER_KEY),
        ("DAISI_EDGE_ADMIN_TOKEN_AES_KEY", ADMIN_KEY),
        ("DAISI_EDGE_SECRET_TOKEN", SOCKET_KEY),
        ("DAISI_EDGE_ADMIN_SECRET_TOKEN", ADMIN_SOCKET_KEY),
        ("DAISI_EDGE_MINT_API_KEY", BACKEND_KEY),
        ("DAISI_EDGE_ADMIN_MINT_API_KEY", ADMIN_BACKEND_KEY),
        ("DAISI_EDGE_PUBLIC_MINTING", "true"),
        ("DAISI_EDGE_ADDRESS_RATE_BURST", "30"),
        ("DAISI_EDGE_SHUTDOWN_GRACE", "1s"),
        ("DAISI_LOG_FORMAT", "json"),
        ("RUST_LOG", log_filter),
    ]
}

/// Every form a secret could take in a log line: as it is, URL-encoded, JSON-escaped.
fn leaks<'a>(output: &str, secrets: &[&'a str]) -> Vec<&'a str> {
    secrets
        .iter()
        .copied()
        .filter(|s| {
            output.contains(s)
                || output.contains(&enc(s))
                || output.contains(serde_json::to_string(s).unwrap().trim_matches('"'))
        })
        .collect()
}

/// Drives everything that handles a secret; returns the tokens it used.
async fn exercise(edge: &ServiceProcess) -> Vec<String> {
    let http = edge.addr("http").unwrap();
    let mint = edge.addr("mint").unwrap();
    let user_body =
        r#"{"company_id":"c1","agent_id":"a1","user_id":"u1","expires_in_seconds":600}"#;
    let admin_body = r#"{"admin_id":"ad1","expires_in_seconds":600}"#;
    let mut tokens = Vec::new();
    // Minting: right and wrong keys, both ports, header and query.
    for (addr, path, key, body) in [
        (mint, "/generate-token", BACKEND_KEY, user_body),
        (mint, "/admin/generate-token", ADMIN_BACKEND_KEY, admin_body),
        (http, "/generate-token", SOCKET_KEY, user_body),
        (http, "/admin/generate-token", ADMIN_SOCKET_KEY, admin_body),
    ] {
        let (status, _, ok) = post(addr, path, Some(("X-API-Key", key)), body).await;
        assert_eq!(status, 200, "{path}: {ok}");
        tokens.push(ok["token"].as_str().unwrap().to_owned());
        let (status, _, _) = post(addr, &format!("{path}?x-api-key={key}"), None, body).await;
        assert!(status == 200 || status == 401, "{path}: {status}");
        let wrong = format!("{key}-wrong");
        let (status, _, _) = post(addr, path, Some(("X-API-Key", &wrong)), body).await;
        assert!(status == 401 || status == 403, "{path}: {status}");
    }
    let (user_token, admin_token) = (tokens[0].clone(), tokens[1].clone());
    // Sockets: admitted with the key in the query, refused with a wrong key, a wrong token, a
    // token of the other kind, a forbidden origin.
    let mut client = open(
        http,
        &format!(
            "/ws/c1/a1?token={}&x-api-key={SOCKET_KEY}",
            enc(&user_token)
        ),
        None,
    )
    .await
    .expect("user socket");
    assert_eq!(client.next_text().await, r#"{"type":"ready"}"#);
    client
        .send_text(r#"{"type":"select_chat","payload":{"chat_id":"x"}}"#)
        .await;
    client.send_text("not json").await;
    let mut admin = open(
        http,
        &format!("/ws/admin?token={}", enc(&admin_token)),
        Some(ADMIN_SOCKET_KEY),
    )
    .await
    .expect("admin socket");
    assert_eq!(admin.next_text().await, r#"{"type":"ready"}"#);
    let refusals = [
        (
            format!("/ws/c1/a1?token={}", enc(&user_token)),
            Some("wrong-key"),
        ),
        (
            format!("/ws/c1/a1?token={}", enc(&admin_token)),
            Some(SOCKET_KEY),
        ),
        (
            format!("/ws/c2/a1?token={}", enc(&user_token)),
            Some(SOCKET_KEY),
        ),
        (
            format!("/ws/admin?token={}", enc(&user_token)),
            Some(ADMIN_SOCKET_KEY),
        ),
        (
            "/ws/c1/a1?token=bm90LWEtdG9rZW4=".to_owned(),
            Some(SOCKET_KEY),
        ),
    ];
    for (path, key) in &refusals {
        assert!(open(http, path, *key).await.is_err(), "{path}");
    }
    // Until the budget refuses (429).
    for _ in 0..40 {
        let _ = open(
            http,
            &format!("/ws/c1/a1?token={}&x-api-key={SOCKET_KEY}", enc(&tokens[2])),
            None,
        )
        .await;
    }
    client.close().await;
    admin.close().await;
    tokens
}

#[tokio::test]
async fn no_secret_or_token_reaches_the_logs_at_any_level() {
    let coordinator = Coord::start().await;
    // Every level of our crates and of the HTTP, TLS and gRPC stacks.
    let mut edge = ServiceProcess::spawn(
        BIN,
        &env(&coordinator.url, "trace"),
        "edge listening",
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let tokens = exercise(&edge).await;
    edge.signal(Signal::SIGTERM).unwrap();
    let exited = edge
        .wait(Duration::from_secs(15))
        .await
        .expect("edge stops");
    let output = exited.output;
    // The filter took: thousands of lines, from socket tasks and the gRPC stack alike.
    assert!(
        output.lines().count() > 1_000
            && output.contains(r#""level":"TRACE""#)
            && output.contains("daisi_edge::ws::connection"),
        "the run logged too little to prove anything:\n{output}"
    );
    let mut secrets = vec![
        USER_KEY,
        ADMIN_KEY,
        SOCKET_KEY,
        ADMIN_SOCKET_KEY,
        BACKEND_KEY,
        ADMIN_BACKEND_KEY,
    ];
    secrets.extend(tokens.iter().map(String::as_str));
    let leaked = leaks(&output, &secrets);
    assert!(leaked.is_empty(), "secrets in the logs: {leaked:?}");

    // Refused settings name the variables, never the values.
    let mut bad = env(&coordinator.url, "trace");
    bad.retain(|(k, _)| *k != "DAISI_EDGE_TOKEN_AES_KEY");
    bad.extend([
        ("DAISI_EDGE_TOKEN_AES_KEY", "sekrit-not-hex-aes-key-1c9e"),
        ("DAISI_EDGE_MINT_API_KEY", SOCKET_KEY),
        ("DAISI_EDGE_ADMIN_MINT_API_KEY", "sekrit-short"),
    ]);
    let refused = run_with_args(BIN, &[], &bad, Duration::from_secs(20))
        .await
        .expect("exits");
    assert_eq!(refused.status.code(), Some(64), "{}", refused.output);
    assert!(
        refused.output.contains("DAISI_EDGE_MINT_API_KEY"),
        "{}",
        refused.output
    );
    let leaked = leaks(
        &refused.output,
        &[
            "sekrit-not-hex-aes-key-1c9e",
            SOCKET_KEY,
            "sekrit-short",
            USER_KEY,
        ],
    );
    assert!(leaked.is_empty(), "secrets in the refusal: {leaked:?}");
}
