//! Ten thousand sockets on one edge: all admitted, every one reached by a single event, and
//! the edge's resident memory per socket printed (and bounded, so a buffer-size regression —
//! tungstenite's 128 KiB defaults cost ~140 KiB per socket — fails here).
//!
//! The edge runs as its own process (the binary), so its RSS is its own and the two ends of
//! 10,000 sockets do not share one descriptor table.
//!
//! Client ports are chosen here, below the kernel's ephemeral range: 10,000 sockets on
//! ephemeral ports (and their TIME_WAIT minute) would collide with every other test that asks
//! the kernel or Docker for a free port. Sources spread over 127.0.0.2.. so 2,000 ports each
//! suffice.

use crate::support::{ADMIN_API_KEY, ADMIN_KEY, API_KEY, Coord, USER_KEY, event, user_token};
use daisi_proto::edge::v1 as epb;
use daisi_testkit::{ServiceProcess, get_json};
use futures_util::StreamExt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_daisi-edge");
const SOCKETS: usize = 10_000;
/// Measured 15–16 KiB per socket (debug and release); the bound leaves room for allocator
/// noise and still fails on tungstenite's default buffers.
const MAX_KIB_PER_SOCKET: f64 = 48.0;

fn rss_kib(pid: u32) -> u64 {
    daisi_testkit::rss_kib(pid).unwrap_or_else(|| panic!("no VmRSS for pid {pid}"))
}

async fn connect(http: SocketAddr, i: usize, token: String) -> Client {
    crate::support::connect_numbered(http, 2, i, &token).await
}

type Client = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_sockets_on_one_edge_all_get_the_event() {
    let limit = daisi_runtime::fd_limit::raise().unwrap();
    assert!(
        limit.now >= SOCKETS as u64 + 1_000,
        "this test holds {SOCKETS} client sockets: raise the open-file hard limit (ulimit -Hn is {})",
        limit.hard
    );
    let coordinator = Coord::start().await;
    let env = [
        ("DAISI_EDGE_HTTP_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_GRPC_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_POD_ID", "edge-10k"),
        ("DAISI_EDGE_COORDINATOR_URL", coordinator.url.as_str()),
        ("DAISI_EDGE_TOKEN_AES_KEY", USER_KEY),
        ("DAISI_EDGE_ADMIN_TOKEN_AES_KEY", ADMIN_KEY),
        ("DAISI_EDGE_SECRET_TOKEN", API_KEY),
        ("DAISI_EDGE_ADMIN_SECRET_TOKEN", ADMIN_API_KEY),
        ("DAISI_EDGE_SHUTDOWN_GRACE", "2s"),
        // 2,000 upgrades per source address in a few seconds: a capacity test, not a flood.
        ("DAISI_EDGE_ADDRESS_RATE_PER_SECOND", "0"),
        ("RUST_LOG", "warn,daisi_edge=info"),
    ];
    let edge = ServiceProcess::spawn(BIN, &env, "edge listening", Duration::from_secs(20))
        .await
        .unwrap();
    let http = edge.addr("http").unwrap();
    let grpc = edge.addr("grpc").unwrap();
    let pid = edge.pid().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(get_json(http, "/ready").await, Ok((200, _))) {
        assert!(
            Instant::now() < deadline,
            "edge never ready:\n{}",
            edge.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid);

    let started = Instant::now();
    let tokens: Vec<String> = (0..SOCKETS)
        .map(|i| user_token("c1", "a1", &format!("u{i}")))
        .collect();
    let mut sockets: Vec<Client> = futures_util::stream::iter(tokens.into_iter().enumerate())
        .map(|(i, token)| connect(http, i, token))
        .buffer_unordered(256)
        .collect()
        .await;
    let connected_in = started.elapsed();
    // Let the edge settle (registrations, first renew) before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid);
    let per_socket = after.saturating_sub(before) as f64 / SOCKETS as f64;
    println!(
        "{SOCKETS} sockets up in {connected_in:?}; edge RSS {before} KiB -> {after} KiB = {per_socket:.1} KiB per socket"
    );

    let mut delivery =
        epb::edge_delivery_client::EdgeDeliveryClient::connect(format!("http://{grpc}"))
            .await
            .unwrap();
    let results = delivery
        .deliver(epb::DeliverRequest {
            pod_id: "edge-10k".into(),
            events: vec![event(
                1,
                "c1",
                "a1",
                epb::DeliveryScope::AgentUsers,
                "",
                "chats",
                r#"{"event_id":"1:chats:1","row_data":{"id":1}}"#,
            )],
            router_id: "test".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 1);
    assert_eq!(
        results[0].sockets_reached as usize, SOCKETS,
        "{:?}",
        results[0]
    );

    let received = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(sockets.iter_mut().map(|ws| async move {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) => return text.as_str().contains("\"event\""),
                    Some(Ok(_)) => {}
                    _ => return false,
                }
            }
        })),
    )
    .await
    .expect("every socket hears from the edge within 60 s");
    let got = received.iter().filter(|&&ok| ok).count();
    assert_eq!(got, SOCKETS, "sockets that received the event");
    assert!(
        per_socket < MAX_KIB_PER_SOCKET,
        "{per_socket:.1} KiB per socket (bound {MAX_KIB_PER_SOCKET})"
    );
    drop(sockets);
    edge.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
}
