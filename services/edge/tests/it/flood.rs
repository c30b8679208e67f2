//! An upgrade flood from one address (issue 11, Done when): the flood gets 429
//! `RateLimitExceeded` with `Retry-After`, and clients on other addresses keep receiving their
//! events on time. Event latency is measured before and during the flood and printed; the
//! flood may add at most 200 ms to the 99th percentile.
//!
//! The edge is its own process; the flood runs on its own thread and runtime from 127.0.0.2,
//! so it competes with the edge for the CPU as a real flood would, not with the measuring
//! clients for this runtime's workers.

use crate::support::{ADMIN_API_KEY, ADMIN_KEY, API_KEY, Coord, USER_KEY, enc, event, user_token};
use daisi_proto::edge::v1 as epb;
use daisi_testkit::{ServiceProcess, get_json};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_daisi-edge");
const CLIENTS: usize = 20;
const EVERY: Duration = Duration::from_millis(20);
const PHASE: Duration = Duration::from_secs(3);
const FLOOD_CONNECTIONS: usize = 64;
/// What the flood may add to the 99th percentile of event latency.
const MAX_ADDED: Duration = Duration::from_millis(200);

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn client(http: SocketAddr, user: &str) -> Client {
    let token = user_token("c1", "a1", user);
    let request =
        crate::support::v1_request(&format!("ws://{http}/ws/c1/a1?token={}", enc(&token)));
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Text(t))) if t.as_str().contains("ready") => ws,
        other => panic!("expected ready, got {other:?}"),
    }
}

/// Sequence numbers of `events`, and when each was handed to the edge.
type Sent = Arc<parking_lot::Mutex<HashMap<u64, Instant>>>;

/// Reads events until `stop`; the latency of each, by sequence.
async fn receive(mut ws: Client, sent: Sent, stop: Arc<AtomicBool>) -> Vec<(u64, Duration)> {
    let mut seen = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let next = match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
            Err(_) => continue,
            Ok(next) => next,
        };
        let Some(Ok(Message::Text(text))) = next else {
            match next {
                Some(Ok(_)) => continue,
                other => panic!("client socket ended: {other:?}"),
            }
        };
        let at = Instant::now();
        let frame: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
        let seq = frame["payload"]["row_data"]["seq"].as_u64().unwrap();
        let sent_at = sent
            .lock()
            .get(&seq)
            .copied()
            .expect("sent before received");
        seen.push((seq, at - sent_at));
    }
    seen
}

/// Delivers one event every [`EVERY`] for [`PHASE`]; returns the sequences delivered.
async fn deliver_for(
    delivery: &mut epb::edge_delivery_client::EdgeDeliveryClient<tonic::transport::Channel>,
    next_seq: &mut u64,
    sent: &Sent,
) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut tick = tokio::time::interval(EVERY);
    let until = Instant::now() + PHASE;
    while Instant::now() < until {
        tick.tick().await;
        *next_seq += 1;
        let seq = *next_seq;
        let payload = format!(r#"{{"event_id":"{seq}:chats:1","row_data":{{"seq":{seq}}}}}"#);
        sent.lock().insert(seq, Instant::now());
        delivery
            .deliver(epb::DeliverRequest {
                pod_id: "edge-flood".into(),
                events: vec![event(
                    seq,
                    "c1",
                    "a1",
                    epb::DeliveryScope::AgentUsers,
                    "",
                    "chats",
                    &payload,
                )],
                router_id: "test".into(),
            })
            .await
            .unwrap();
        seqs.push(seq);
    }
    seqs
}

/// Worst latency of each event over all clients, sorted.
fn worst_per_event(received: &[Vec<(u64, Duration)>], seqs: &[u64]) -> Vec<Duration> {
    let mut worst: HashMap<u64, Duration> = HashMap::new();
    for client in received {
        for (seq, latency) in client {
            let w = worst.entry(*seq).or_default();
            *w = (*w).max(*latency);
        }
    }
    let mut out: Vec<Duration> = seqs
        .iter()
        .map(|s| {
            *worst
                .get(s)
                .unwrap_or_else(|| panic!("event {s} never arrived"))
        })
        .collect();
    out.sort();
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[derive(Debug, Default)]
struct FloodCount {
    requests: AtomicU64,
    too_many: AtomicU64,
    retry_after: AtomicU64,
    other: AtomicU64,
}

/// Upgrade requests (well-formed, with a made-up token) from 127.0.0.2 over keep-alive
/// connections, as fast as the edge answers, until `stop`. Raw HTTP/1.1 with the request bytes
/// built once: the attacker's own CPU should not be what slows the edge down.
fn flood(
    http: SocketAddr,
    stop: Arc<AtomicBool>,
    count: Arc<FloodCount>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let request: Arc<[u8]> = format!(
            "GET /ws/c1/a1?token=made-up-token HTTP/1.1\r\nHost: {http}\r\nX-API-Key: {API_KEY}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .into_bytes()
        .into();
        runtime.block_on(async move {
            let workers = (0..FLOOD_CONNECTIONS).map(|_| {
                let (stop, count, request) = (stop.clone(), count.clone(), request.clone());
                async move {
                    while !stop.load(Ordering::Relaxed) {
                        // A closed connection (the door's deadline) is reopened.
                        let Ok(mut tcp) = flood_connection(http).await else {
                            count.other.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        while !stop.load(Ordering::Relaxed) {
                            if tcp.write_all(&request).await.is_err() {
                                break;
                            }
                            let Some(head) = read_response(&mut tcp).await else {
                                break;
                            };
                            count.requests.fetch_add(1, Ordering::Relaxed);
                            if head.starts_with("HTTP/1.1 429") {
                                count.too_many.fetch_add(1, Ordering::Relaxed);
                                if head.to_ascii_lowercase().contains("\r\nretry-after: ") {
                                    count.retry_after.fetch_add(1, Ordering::Relaxed);
                                }
                            } else {
                                count.other.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            });
            futures_util::future::join_all(workers).await;
        });
    })
}

async fn flood_connection(http: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 0))?;
    socket.connect(http).await
}

/// Reads one response (head and `Content-Length` body); its head, or `None` when the
/// connection ended.
async fn read_response(tcp: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let length: usize = head
                .to_ascii_lowercase()
                .split("\r\ncontent-length: ")
                .nth(1)
                .and_then(|rest| rest.split("\r\n").next()?.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = tcp.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(head);
        }
        let n = tcp.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_flood_from_one_address_gets_429s_and_other_clients_events_stay_on_time() {
    let coordinator = Coord::start().await;
    let env = [
        ("DAISI_EDGE_HTTP_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_GRPC_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_POD_ID", "edge-flood"),
        ("DAISI_EDGE_COORDINATOR_URL", coordinator.url.as_str()),
        ("DAISI_EDGE_TOKEN_AES_KEY", USER_KEY),
        ("DAISI_EDGE_ADMIN_TOKEN_AES_KEY", ADMIN_KEY),
        ("DAISI_EDGE_SECRET_TOKEN", API_KEY),
        ("DAISI_EDGE_ADMIN_SECRET_TOKEN", ADMIN_API_KEY),
        ("DAISI_EDGE_SHUTDOWN_GRACE", "1s"),
        // The defaults, spelt out: the test is about them.
        ("DAISI_EDGE_ADDRESS_RATE_PER_SECOND", "20"),
        ("DAISI_EDGE_ADDRESS_RATE_BURST", "100"),
        ("RUST_LOG", "warn,daisi_edge=info"),
    ];
    let edge = ServiceProcess::spawn(BIN, &env, "edge listening", Duration::from_secs(20))
        .await
        .unwrap();
    let http = edge.addr("http").unwrap();
    let grpc = edge.addr("grpc").unwrap();
    let ready_by = Instant::now() + Duration::from_secs(10);
    while !matches!(get_json(http, "/ready").await, Ok((200, _))) {
        assert!(
            Instant::now() < ready_by,
            "edge never ready:\n{}",
            edge.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let sent: Sent = Arc::default();
    let stop_receiving = Arc::new(AtomicBool::new(false));
    let mut receivers = Vec::new();
    for i in 0..CLIENTS {
        let ws = client(http, &format!("u{i}")).await;
        receivers.push(tokio::spawn(receive(
            ws,
            sent.clone(),
            stop_receiving.clone(),
        )));
    }
    let mut delivery =
        epb::edge_delivery_client::EdgeDeliveryClient::connect(format!("http://{grpc}"))
            .await
            .unwrap();
    let mut seq = 0;
    let baseline = deliver_for(&mut delivery, &mut seq, &sent).await;

    let stop_flood = Arc::new(AtomicBool::new(false));
    let count = Arc::new(FloodCount::default());
    let flooder = flood(http, stop_flood.clone(), count.clone());
    // Let the flood use up its budget before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let flood_started = Instant::now();
    let requests_before = count.requests.load(Ordering::Relaxed);
    let flooded = deliver_for(&mut delivery, &mut seq, &sent).await;
    let flood_rate = (count.requests.load(Ordering::Relaxed) - requests_before) as f64
        / flood_started.elapsed().as_secs_f64();
    stop_flood.store(true, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || flooder.join())
        .await
        .unwrap()
        .unwrap();

    // Every event reaches every client; then stop reading.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_receiving.store(true, Ordering::Relaxed);
    let mut received = Vec::new();
    for r in receivers {
        received.push(r.await.unwrap());
    }
    for (i, client) in received.iter().enumerate() {
        assert_eq!(
            client.len(),
            baseline.len() + flooded.len(),
            "client {i} missed events"
        );
    }
    let before = worst_per_event(&received, &baseline);
    let during = worst_per_event(&received, &flooded);
    let requests = count.requests.load(Ordering::Relaxed);
    let too_many = count.too_many.load(Ordering::Relaxed);
    println!(
        "event latency to {CLIENTS} clients, worst client per event, {} events before and {} during a flood of {flood_rate:.0} upgrade requests/s from one address: p50 {:?} -> {:?}, p99 {:?} -> {:?}, max {:?} -> {:?}; the flood got {too_many} x 429 of {requests} requests ({} other answers)",
        before.len(),
        during.len(),
        percentile(&before, 0.5),
        percentile(&during, 0.5),
        percentile(&before, 0.99),
        percentile(&during, 0.99),
        before.last().unwrap(),
        during.last().unwrap(),
        count.other.load(Ordering::Relaxed),
    );
    assert!(
        too_many as f64 >= requests as f64 * 0.9,
        "{too_many} of {requests} flood requests got 429"
    );
    assert_eq!(
        count.retry_after.load(Ordering::Relaxed),
        too_many,
        "every 429 carries Retry-After"
    );
    assert!(
        percentile(&during, 0.99) <= percentile(&before, 0.99) + MAX_ADDED,
        "the flood delayed events by more than {MAX_ADDED:?}"
    );
    edge.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
}
