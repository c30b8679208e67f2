//! The door's rules one at a time (the attack itself is in `door.rs`): HTTP/1.1 only, the
//! per-address budget (429 + `Retry-After`), client addresses behind trusted proxies, eviction
//! of the oldest idle connection at the cap, and the deadline on plain HTTP connections.

use crate::support::*;
use daisi_edge::config::AddressBudget;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes (or `within` passes); what was read, and whether it closed.
async fn read_until_closed(tcp: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn the_client_port_speaks_http_1_1_only() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-h1", |_| {}).await;
    let mut tcp = TcpStream::connect(edge.http).await.unwrap();
    // HTTP/2 with prior knowledge: the preface and an empty SETTINGS frame.
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut tcp, WAIT).await;
    assert!(closed, "the connection stays open after an HTTP/2 preface");
    // An HTTP/2 server answers with its own SETTINGS frame (type 4 in the fourth byte).
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 "),
        "{answer:?}"
    );
}

fn budget(per_second: u32, burst: u32) -> impl FnOnce(&mut daisi_edge::Config) {
    move |c| {
        c.door.address_budget = Some(AddressBudget { per_second, burst });
    }
}

async fn get_from(source: Ipv4Addr, url: &str, forwarded: Option<&str>) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .local_address(IpAddr::V4(source))
        .build()
        .unwrap();
    let mut request = client.get(url);
    if let Some(forwarded) = forwarded {
        request = request.header("x-forwarded-for", forwarded);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn upgrades_and_token_requests_over_the_budget_get_429_per_address() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-budget", budget(1, 3)).await;
    let here = Ipv4Addr::new(127, 0, 0, 1);
    let socket = format!("http://{}/ws/c1/a1?token=x", edge.http);
    let tokens = format!("http://{}/generate-token", edge.http);
    // Three in the burst: an upgrade without an API key (401), token requests (404 outside
    // the migration window).
    assert_eq!(get_from(here, &socket, None).await.status(), 401);
    assert_eq!(get_from(here, &tokens, None).await.status(), 404);
    assert_eq!(get_from(here, &tokens, None).await.status(), 404);
    let refused = get_from(here, &socket, None).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert!(refused.headers().contains_key("x-request-id"));
    assert_eq!(
        refused.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"code": "RateLimitExceeded", "message": "Rate limit exceeded"})
    );
    // Health, readiness and metrics are not charged; another address has its own budget.
    for path in ["/health", "/ready", "/metrics"] {
        let url = format!("http://{}{path}", edge.http);
        assert_eq!(get_from(here, &url, None).await.status(), 200, "{path}");
    }
    let there = Ipv4Addr::new(127, 0, 0, 3);
    assert_eq!(get_from(there, &tokens, None).await.status(), 404);
    // The budget refills at its rate.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(get_from(here, &tokens, None).await.status(), 404);
    let metrics = edge.metrics().await;
    assert_eq!(
        metric(&metrics, "daisi_edge_address_budget_refusals_total", &[]),
        1,
        "{metrics}"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_charged() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-proxy", |c| {
        budget(1, 1)(c);
        c.door.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let tokens = format!("http://{}/generate-token", edge.http);
    let proxy = Ipv4Addr::new(127, 0, 0, 1);
    assert_eq!(
        get_from(proxy, &tokens, Some("203.0.113.1")).await.status(),
        404
    );
    assert_eq!(
        get_from(proxy, &tokens, Some("203.0.113.1")).await.status(),
        429,
        "the same client behind the proxy"
    );
    assert_eq!(
        get_from(proxy, &tokens, Some("198.51.100.1, 203.0.113.2"))
            .await
            .status(),
        404,
        "another client; the forged left entry is not trusted"
    );
    // A peer that is not a trusted proxy is charged itself, whatever it forwards.
    let other = Ipv4Addr::new(127, 0, 0, 4);
    assert_eq!(
        get_from(other, &tokens, Some("192.0.2.1")).await.status(),
        404
    );
    assert_eq!(
        get_from(other, &tokens, Some("192.0.2.2")).await.status(),
        429
    );
}

#[tokio::test]
async fn at_the_cap_the_oldest_idle_connection_makes_room_and_busy_ones_stay() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-cap-door", |c| {
        c.door.max_pending = 3;
        c.minting.public = true;
    })
    .await;
    // A request in progress: its head is in, its body is not.
    let body = r#"{"company_id":"c1","agent_id":"a1","user_id":"u1","expires_in_seconds":60}"#;
    let mut busy = TcpStream::connect(edge.http).await.unwrap();
    busy.write_all(
        format!(
            "POST /generate-token HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Length: {}\r\n\r\n{}",
            body.len(),
            &body[..10]
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut silent_1 = TcpStream::connect(edge.http).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut silent_2 = TcpStream::connect(edge.http).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The cap is reached: the next connection evicts the oldest idle one (not the busy one).
    let (status, _) = daisi_testkit::get_json(edge.http, "/health").await.unwrap();
    assert_eq!(status, 200);
    let (_, closed) = read_until_closed(&mut silent_1, WAIT).await;
    assert!(closed, "the oldest idle connection was not evicted");
    let (_, closed) = read_until_closed(&mut silent_2, Duration::from_millis(300)).await;
    assert!(!closed, "a younger idle connection was evicted");
    // The busy one finishes its request.
    busy.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut answer = [0u8; 12];
    busy.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    // Once the door has room again, asking for the metrics evicts nobody.
    drop((busy, silent_2));
    eventually("the door empties", || async {
        let metrics = edge.metrics().await;
        metric(
            &metrics,
            "daisi_edge_pending_connections",
            &[r#"listener="public""#],
        ) <= 1
    })
    .await;
    let metrics = edge.metrics().await;
    let evicted = metric(
        &metrics,
        "daisi_edge_door_closes_total",
        &[r#"listener="public""#, r#"reason="evicted""#],
    );
    assert_eq!(evicted, 1, "{metrics}");
}

#[tokio::test]
async fn plain_http_connections_end_at_the_deadline_and_minting_requests_finish() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-deadline", |c| {
        c.door.deadline = Duration::from_millis(600);
    })
    .await;
    // Keep-alive after a request: closed at the deadline all the same.
    let mut tcp = TcpStream::connect(edge.http).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (answer, closed) = read_until_closed(&mut tcp, WAIT).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "keep-alive connection outlived the deadline");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // On the minting listener a request in progress at the deadline still gets its answer.
    let mint = edge.mint.unwrap();
    let mut tcp = TcpStream::connect(mint).await.unwrap();
    let body = r#"{"company_id":"c1","agent_id":"a1","user_id":"u1","expires_in_seconds":60}"#;
    tcp.write_all(
        format!(
            "POST /generate-token HTTP/1.1\r\nHost: x\r\nX-API-Key: {MINT_KEY}\r\nContent-Length: {}\r\n\r\n{}",
            body.len(),
            &body[..10]
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    tcp.write_all(&body.as_bytes()[10..]).await.unwrap();
    let (answer, closed) = read_until_closed(&mut tcp, WAIT).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed);
}

#[tokio::test]
async fn a_silent_connection_to_the_minting_listener_is_closed_too() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-mint-door", |c| {
        c.door.deadline = Duration::from_millis(300);
    })
    .await;
    let mut tcp = TcpStream::connect(edge.mint.unwrap()).await.unwrap();
    let started = std::time::Instant::now();
    let (_, closed) = read_until_closed(&mut tcp, WAIT).await;
    assert!(closed);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
