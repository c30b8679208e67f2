//! Subcommands that need no running stack: keygen and local token minting, checked by
//! decoding what they print with the same keys; `tail` against an edge that answers 503 and
//! one that restarts; `bench` against an edge that refuses every socket.

use daisi_domain::token::TokenKeyring;
use daisi_testkit::run_with_args;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_daisi");
const KEY: &str = "3a7bd3e2360a3d29eea436e864a1b8d5f2f5d5e4dba8ac39d465fc3488db3915";

async fn daisi(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let exited = run_with_args(BIN, args, env, Duration::from_secs(20))
        .await
        .unwrap();
    (exited.status.code().unwrap_or(-1), exited.output)
}

#[tokio::test]
async fn keygen_prints_valid_keys_in_env_format() {
    let (code, out) = daisi(&["keygen"], &[]).await;
    assert_eq!(code, 0, "{out}");
    let keys: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(_, v)| v))
        .collect();
    assert_eq!(keys.len(), 7, "{out}");
    for key in keys {
        TokenKeyring::from_hex(&[key]).unwrap();
    }
    let (code, json) = daisi(&["keygen", "--json"], &[]).await;
    assert_eq!(code, 0);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        value["DAISI_EDGE_TOKEN_AES_KEY"].as_str().map(str::len),
        Some(64)
    );
}

#[tokio::test]
async fn token_user_mints_a_token_the_edge_keys_accept() {
    let (code, out) = daisi(
        &[
            "token",
            "user",
            "--company",
            "c1",
            "--agent",
            "a1",
            "--user",
            "u1",
            "--expires-in",
            "1h",
        ],
        &[("DAISI_EDGE_TOKEN_AES_KEY", KEY)],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let ring = TokenKeyring::from_hex(&[KEY]).unwrap();
    let claims = ring
        .decode_user(out.trim(), jiff::Timestamp::now())
        .unwrap();
    assert_eq!(
        (claims.company_id.as_str(), claims.user_id.as_str()),
        ("c1", "u1")
    );
    let left = claims
        .expires_at
        .duration_since(jiff::Timestamp::now())
        .as_secs();
    assert!((3500..=3600).contains(&left), "{left}");
}

#[tokio::test]
async fn token_admin_carries_its_filters() {
    let (code, out) = daisi(
        &[
            "token",
            "admin",
            "--admin",
            "ad1",
            "--subscribed-company",
            "c1",
            "--json",
        ],
        &[("DAISI_EDGE_ADMIN_TOKEN_AES_KEY", KEY)],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let token: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ring = TokenKeyring::from_hex(&[KEY]).unwrap();
    let claims = ring
        .decode_admin(token["token"].as_str().unwrap(), jiff::Timestamp::now())
        .unwrap();
    assert_eq!(
        claims
            .subscribed_company_id
            .map(|c| c.to_string())
            .as_deref(),
        Some("c1")
    );
    assert!(claims.subscribed_agent_id.is_none());
}

#[tokio::test]
async fn bad_input_is_refused_with_a_reason() {
    let (code, out) = daisi(
        &[
            "token",
            "user",
            "--company",
            "c.1",
            "--agent",
            "a",
            "--user",
            "u",
        ],
        &[("DAISI_EDGE_TOKEN_AES_KEY", KEY)],
    )
    .await;
    assert_ne!(code, 0);
    assert!(out.contains("company_id must not contain '.'"), "{out}");
    let (code, out) = daisi(
        &[
            "token",
            "user",
            "--company",
            "c",
            "--agent",
            "a",
            "--user",
            "u",
        ],
        &[],
    )
    .await;
    assert_ne!(code, 0);
    assert!(out.contains("DAISI_EDGE_TOKEN_AES_KEY"), "{out}");
    let (code, out) = daisi(&["publish", "websocket.c1", "{}"], &[]).await;
    assert_ne!(code, 0);
    assert!(out.contains("not a daisi subject"), "{out}");
}

/// An "edge" that answers every upgrade with 503 and `Retry-After: 1`, counting the attempts.
async fn always_unavailable() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    always_answering(
        "503 Service Unavailable\r\nRetry-After: 1",
        "ServiceUnavailable",
    )
    .await
}

/// An "edge" that answers every upgrade with `status` (and any headers after it), counting
/// the attempts.
async fn always_answering(
    status: &'static str,
    code: &'static str,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = attempts.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut request = [0u8; 4096];
            let _ = tcp.read(&mut request).await;
            let body = format!(r#"{{"success":false,"error":{{"code":"{code}"}}}}"#);
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tcp.write_all(answer.as_bytes()).await;
        }
    });
    (addr, attempts)
}

#[tokio::test]
async fn tail_retries_a_503_after_its_retry_after_then_gives_up() {
    let (addr, attempts) = always_unavailable().await;
    let edge = format!("http://{addr}");
    let args = [
        "tail",
        // Tokens and keys are URL-safe base64 or free text: a leading '-' is a value.
        "--token",
        "-Sbase64url-token",
        "--company",
        "c1",
        "--agent",
        "a1",
        "--api-key",
        "-key",
        "--edge",
        &edge,
        "--retries",
        "2",
    ];
    let started = std::time::Instant::now();
    let (code, out) = daisi(&args, &[]).await;
    assert_ne!(code, 0, "{out}");
    assert_eq!(
        attempts.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "{out}"
    );
    assert_eq!(out.matches("retrying in 1 s").count(), 2, "{out}");
    assert!(out.contains("refused the connection: 503"), "{out}");
    // Two waits of the server's Retry-After.
    assert!(started.elapsed() >= Duration::from_secs(2), "{out}");

    // --retries 0: one attempt, no wait.
    let mut args = args.to_vec();
    *args.last_mut().unwrap() = "0";
    let (code, out) = daisi(&args, &[]).await;
    assert_ne!(code, 0, "{out}");
    assert_eq!(
        attempts.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "{out}"
    );
    assert!(!out.contains("retrying"), "{out}");
}

#[tokio::test]
async fn bench_fails_when_no_socket_opens_and_says_why() {
    let (addr, attempts) = always_answering("401 Unauthorized", "Unauthorized").await;
    let edge = format!("http://{addr}");
    let (code, out) = daisi(
        &[
            "bench",
            "idle",
            "--sockets",
            "3",
            "--edge",
            &edge,
            "--api-key",
            "wrong-key",
            "--key",
            KEY,
            "--connect-retries",
            "0",
            "--source-base",
            "127.0.0.1",
            "--settle",
            "1s",
            "--hold",
            "1s",
        ],
        &[],
    )
    .await;
    assert_ne!(code, 0, "{out}");
    assert_eq!(
        attempts.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "{out}"
    );
    assert!(out.contains("no socket opened (3 failed)"), "{out}");
    assert!(out.contains("401"), "the first errors are named: {out}");
    assert!(!out.contains("wrong-key"), "{out}");
}

/// One connection of a fake edge: `ready`, one `chat` event at position `7:seq`, then a normal
/// close (`close`) or a dropped TCP connection. Returns the query string it was asked with.
async fn serve_tail_once(
    listener: tokio::net::TcpListener,
    seq: u64,
    close: bool,
) -> Option<String> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let (tcp, _) = listener.accept().await.unwrap();
    // The port closes with the listener: reconnecting now finds nothing there.
    drop(listener);
    let mut query = None;
    // tungstenite's callback signature, large error type included.
    #[allow(clippy::result_large_err)]
    let answer = |request: &Request, mut response: Response| {
        query = request.uri().query().map(str::to_owned);
        response
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "json.v2".parse().unwrap());
        Ok(response)
    };
    let mut ws = tokio_tungstenite::accept_hdr_async(tcp, answer)
        .await
        .unwrap();
    ws.send(Message::text(r#"{"type":"ready","payload":{}}"#))
        .await
        .unwrap();
    let event = format!(
        r#"{{"type":"event","payload":{{"event_type":"chat"}},"position":{{"epoch":"7","seq":{seq}}}}}"#
    );
    ws.send(Message::text(event)).await.unwrap();
    if close {
        let _ = ws.close(None).await;
        // Wait for the client's side of the close.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            use futures_util::StreamExt;
            while ws.next().await.is_some() {}
        })
        .await;
    }
    query
}

/// A listener on `addr` even while the previous one's connections linger in TIME_WAIT.
fn listen_again(addr: std::net::SocketAddr) -> tokio::net::TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(16).unwrap()
}

#[tokio::test]
async fn tail_reconnect_waits_out_an_edge_restart() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let edge = tokio::spawn(async move {
        // The first connection drops; the edge is gone for 2.5 s, then back.
        serve_tail_once(listener, 1, false).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        serve_tail_once(listen_again(addr), 2, true).await
    });
    let edge_url = format!("http://{addr}");
    let (code, out) = daisi(
        &[
            "tail",
            "--token",
            "t0ken",
            "--company",
            "c1",
            "--agent",
            "a1",
            "--api-key",
            "key",
            "--edge",
            &edge_url,
            "--reconnect",
            "--count",
            "2",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("connection dropped"), "{out}");
    assert!(out.contains("retrying in 1 s (attempt 1 of"), "{out}");
    assert_eq!(out.matches("connected to").count(), 2, "{out}");
    let query = tokio::time::timeout(Duration::from_secs(5), edge)
        .await
        .unwrap()
        .unwrap()
        .unwrap_or_default();
    assert!(
        query.contains("since=7%3A1"),
        "the reconnect asks for what it missed: {query}"
    );
}
