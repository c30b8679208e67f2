//! The client door under attack (issue 11, Done when): connections that send nothing, stop
//! halfway through the TLS handshake or halfway through the request head are all closed
//! within the pre-upgrade deadline, the edge never holds more of them than its cap, and a
//! legitimate client connects and receives an event while the attack goes on.
//!
//! The edge is its own process (the binary, TLS on) so its descriptors are its own; the
//! attacking connections come from this process, spread over 127.0.2.x with ports chosen below
//! the ephemeral range (as in `many_sockets.rs`), so they neither run out of source ports nor
//! take the ports other tests ask the kernel for.

use crate::support::{
    ADMIN_API_KEY, ADMIN_KEY, API_KEY, Coord, USER_KEY, enc, event, metric, user_token,
};
use daisi_proto::edge::v1 as epb;
use daisi_testkit::ServiceProcess;
use futures_util::{SinkExt, StreamExt};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_daisi-edge");
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

/// The pre-upgrade deadline of the edge under attack.
const DEADLINE: Duration = Duration::from_secs(3);
/// What "within the deadline" allows on top, as seen from this process: the deadline starts at
/// the edge's `accept`, this test's clock at `connect` and stops when this process notices the
/// close, and on a loaded two-core machine the kernel's accept queue and this process's own
/// 10,000 tasks run seconds late (measured up to 5.7 s at a load average of 20). The edge's own
/// clock is checked separately, to the second. Without the deadline these connections stay
/// open indefinitely.
const MARGIN: Duration = Duration::from_secs(9);
/// Pending connections the edge may hold: well below what the attack keeps open, so eviction
/// is exercised.
const CAP: usize = 1_500;
const SILENT: usize = 5_000;
/// Half handshakes cost the edge nothing but a buffer; half request heads cost it a whole TLS
/// handshake each (the dominant CPU cost of this test in a debug build).
const HALF_TLS: usize = 3_500;
const HALF_HEAD: usize = 1_500;
const ATTACK: usize = SILENT + HALF_TLS + HALF_HEAD;
/// Attacking connections per source address (127.0.2.x), each on a port the kernel picks.
const PER_SOURCE_ADDRESS: usize = 2_000;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Silent,
    HalfTls,
    HalfHead,
}

fn kind(i: usize) -> Kind {
    match i % 20 {
        0..10 => Kind::Silent,
        10..17 => Kind::HalfTls,
        _ => Kind::HalfHead,
    }
}

fn connector() -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(format!("{DATA}/tls-cert.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

fn server_name() -> ServerName<'static> {
    ServerName::try_from("127.0.0.1").unwrap()
}

async fn attacker_socket(edge: SocketAddr, i: usize) -> std::io::Result<TcpStream> {
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 2, 1 + (i / PER_SOURCE_ADDRESS) as u8));
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(edge).await
}

/// A TLS record that announces a 512-byte ClientHello and delivers 60 bytes of it.
fn half_client_hello() -> Vec<u8> {
    let mut bytes = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    bytes.resize(60, 0x2a);
    bytes
}

/// When one attacking connection opened and when the edge closed it.
struct Lifetime {
    kind: Kind,
    opened: Instant,
    closed: Option<Instant>,
}

/// Opens attacking connection `i`, does its part, and waits for the edge to close it.
async fn attack(
    i: usize,
    edge: SocketAddr,
    tls: TlsConnector,
    permits: Arc<tokio::sync::Semaphore>,
    opened: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
) -> Lifetime {
    let kind = kind(i);
    let permit = permits.acquire_owned().await.unwrap();
    let mut tcp = attacker_socket(edge, i)
        .await
        .unwrap_or_else(|e| panic!("attacking connection {i} could not connect: {e}"));
    let started = Instant::now();
    opened.fetch_add(1, Ordering::Relaxed);
    let wait = DEADLINE + MARGIN + Duration::from_secs(10);
    let mut buf = [0u8; 512];
    let outcome = match kind {
        Kind::Silent => {
            drop(permit);
            tokio::time::timeout(wait, tcp.read(&mut buf)).await
        }
        Kind::HalfTls => {
            // Refused writes mean the edge closed it already (evicted).
            let _ = tcp.write_all(&half_client_hello()).await;
            drop(permit);
            tokio::time::timeout(wait, tcp.read(&mut buf)).await
        }
        Kind::HalfHead => match tls.connect(server_name(), tcp).await {
            Ok(mut stream) => {
                let _ = stream
                    .write_all(b"GET /ws/c1/a1?token=abc HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr")
                    .await;
                drop(permit);
                tokio::time::timeout(wait, stream.read(&mut buf)).await
            }
            // Evicted or cut during the handshake: closed by the edge.
            Err(_) => Ok(Ok(0)),
        },
    };
    // Any answer ends with the edge closing: a read of 0 bytes or a reset.
    let closed_at = match outcome {
        Ok(_) => Some(Instant::now()),
        Err(_) => None,
    };
    closed.fetch_add(1, Ordering::Relaxed);
    Lifetime {
        kind,
        opened: started,
        closed: closed_at,
    }
}

/// A json.v1 socket over TLS.
type Wss = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

async fn legitimate_client(edge: SocketAddr, tls: &TlsConnector) -> Result<Wss, String> {
    let token = user_token("c1", "a1", "legit");
    let tcp = TcpStream::connect(edge).await.map_err(|e| e.to_string())?;
    let stream = tls
        .connect(server_name(), tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let request = crate::support::v1_request(&format!(
        "wss://127.0.0.1:{}/ws/c1/a1?token={}",
        edge.port(),
        enc(&token)
    ));
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) if text.as_str() == r#"{"type":"ready"}"# => Ok(ws),
        other => Err(format!("expected ready, got {other:?}")),
    }
}

async fn next_event(ws: &mut Wss) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an event within 10 s")
        {
            Some(Ok(Message::Text(text))) => return text.to_string(),
            Some(Ok(_)) => {}
            other => panic!("socket ended: {other:?}"),
        }
    }
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

async fn start_edge(coordinator: &Coord, extra: &[(&str, &str)]) -> ServiceProcess {
    let cert = format!("{DATA}/tls-cert.pem");
    let key = format!("{DATA}/tls-key.pem");
    let mut env = vec![
        ("DAISI_EDGE_HTTP_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_GRPC_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_POD_ID", "edge-door"),
        ("DAISI_EDGE_COORDINATOR_URL", coordinator.url.as_str()),
        ("DAISI_EDGE_TOKEN_AES_KEY", USER_KEY),
        ("DAISI_EDGE_ADMIN_TOKEN_AES_KEY", ADMIN_KEY),
        ("DAISI_EDGE_SECRET_TOKEN", API_KEY),
        ("DAISI_EDGE_ADMIN_SECRET_TOKEN", ADMIN_API_KEY),
        ("DAISI_EDGE_SHUTDOWN_GRACE", "1s"),
        ("RUST_LOG", "warn,daisi_edge=info"),
    ];
    env.extend_from_slice(extra);
    let tls = [
        ("DAISI_EDGE_TLS_CERT_PATH", cert.as_str()),
        ("DAISI_EDGE_TLS_KEY_PATH", key.as_str()),
    ];
    env.extend_from_slice(&tls);
    ServiceProcess::spawn(BIN, &env, "edge listening", Duration::from_secs(20))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_sent_connections_are_closed_within_the_deadline_while_a_client_gets_events()
 {
    let limit = daisi_runtime::fd_limit::raise().unwrap();
    assert!(
        limit.now >= ATTACK as u64 + 1_000,
        "this test holds {ATTACK} client sockets: raise the open-file hard limit (ulimit -Hn is {})",
        limit.hard
    );
    let coordinator = Coord::start().await;
    let deadline = format!("{}ms", DEADLINE.as_millis());
    let cap = CAP.to_string();
    let edge = start_edge(
        &coordinator,
        &[
            ("DAISI_EDGE_HANDSHAKE_TIMEOUT", deadline.as_str()),
            ("DAISI_EDGE_MAX_PENDING_CONNECTIONS", cap.as_str()),
        ],
    )
    .await;
    let http = edge.addr("http").unwrap();
    let grpc = edge.addr("grpc").unwrap();
    let pid = edge.pid().unwrap();
    let tls = connector();

    // Ready: a client gets a socket before the attack.
    let ready_by = Instant::now() + Duration::from_secs(20);
    loop {
        match legitimate_client(http, &tls).await {
            Ok(ws) => {
                drop(ws);
                break;
            }
            Err(e) => assert!(
                Instant::now() < ready_by,
                "edge never admitted: {e}\n{}",
                edge.logs()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let opened = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let permits = Arc::new(tokio::sync::Semaphore::new(500));
    let attack_started = Instant::now();
    let attackers: Vec<_> = (0..ATTACK)
        .map(|i| {
            tokio::spawn(attack(
                i,
                http,
                tls.clone(),
                permits.clone(),
                opened.clone(),
                closed.clone(),
            ))
        })
        .collect();

    // The edge's descriptors, sampled through the attack.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while sampling.load(Ordering::Relaxed) {
                peak = peak.max(open_descriptors(pid));
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            peak
        })
    };

    // Half the attack in place: the door is full and evicting.
    while opened.load(Ordering::Relaxed) < ATTACK / 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let legit_started = Instant::now();
    let mut attempts = 0;
    let mut refusals = Vec::new();
    let mut ws = loop {
        attempts += 1;
        match legitimate_client(http, &tls).await {
            Ok(ws) => break ws,
            Err(e) => {
                refusals.push(e);
                assert!(
                    attempts < 3,
                    "legitimate client refused {attempts} times: {refusals:?}"
                );
            }
        }
    };
    let connected_in = legit_started.elapsed();
    let mut delivery =
        epb::edge_delivery_client::EdgeDeliveryClient::connect(format!("http://{grpc}"))
            .await
            .unwrap();
    let sent = Instant::now();
    let results = delivery
        .deliver(epb::DeliverRequest {
            pod_id: "edge-door".into(),
            events: vec![event(
                1,
                "c1",
                "a1",
                epb::DeliveryScope::AgentUsers,
                "",
                "chats",
                r#"{"event_id":"1:chats:1","row_data":{"during":"attack"}}"#,
            )],
            router_id: "test".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results[0].sockets_reached, 1, "{results:?}");
    let frame = next_event(&mut ws).await;
    let event_in = sent.elapsed();
    let open_attackers = opened.load(Ordering::Relaxed) - closed.load(Ordering::Relaxed);
    assert!(frame.contains("during"), "{frame}");
    assert!(
        open_attackers >= 1_000,
        "the attack was over before the client got its event ({open_attackers} attacking connections open)"
    );

    let mut lifetimes = Vec::with_capacity(ATTACK);
    for attacker in attackers {
        lifetimes.push(attacker.await.unwrap());
    }
    sampling.store(false, Ordering::Relaxed);
    let peak_descriptors = sampler.await.unwrap();
    let attack_took = attack_started.elapsed();

    let never_closed: Vec<&Lifetime> = lifetimes.iter().filter(|l| l.closed.is_none()).collect();
    let mut longest = [Duration::ZERO; 3];
    for l in &lifetimes {
        let held = l.closed.unwrap_or(l.opened) - l.opened;
        let slot = &mut longest[l.kind as usize];
        *slot = (*slot).max(held);
    }
    let metrics = https_get(http, &tls, "/metrics").await;
    // The edge's own clock, from accept: every connection it closed at the deadline was closed
    // within a second of it (timer lateness on a loaded machine), whatever the kernel's accept
    // queue added before.
    let at_deadline = metric(
        &metrics,
        "daisi_edge_door_close_seconds_count",
        &["listener=\"public\"", "reason=\"deadline\""],
    );
    let within = metric(
        &metrics,
        "daisi_edge_door_close_seconds_bucket",
        &["listener=\"public\"", "reason=\"deadline\"", "le=\"4\""],
    );
    let counter = |reason: &str| {
        metric(
            &metrics,
            "daisi_edge_door_closes_total",
            &["listener=\"public\"", &format!("reason=\"{reason}\"")],
        )
    };
    println!(
        "edge's clock: {within} of {at_deadline} connections closed at the deadline were closed within 4 s of accept"
    );
    println!(
        "{ATTACK} attacking connections ({SILENT} silent, {HALF_TLS} half TLS handshakes, {HALF_HEAD} half request heads) in {attack_took:?}; longest held: silent {:?}, half TLS {:?}, half head {:?} (deadline {DEADLINE:?}); edge closed {} at the deadline and evicted {} at the cap of {CAP}; edge descriptors peaked at {peak_descriptors}; a legitimate client connected in {connected_in:?} ({attempts} attempt(s), refused: {refusals:?}) and got its event in {event_in:?} with {open_attackers} attacking connections open",
        longest[0],
        longest[1],
        longest[2],
        counter("deadline"),
        counter("evicted"),
    );
    assert!(
        never_closed.is_empty(),
        "{} attacking connections were never closed (first: {:?})",
        never_closed.len(),
        never_closed.first().map(|l| l.kind)
    );
    assert!(at_deadline > 0);
    assert_eq!(
        within, at_deadline,
        "connections the edge held past its deadline by more than a second"
    );
    for (kind, held) in ["silent", "half TLS", "half head"].iter().zip(longest) {
        assert!(
            held <= DEADLINE + MARGIN,
            "{kind} connections held for {held:?}, deadline {DEADLINE:?}"
        );
    }
    // Besides the pending connections: listeners, gRPC, the client's socket, evicted
    // connections not yet closed (the accept loop waits above 64).
    assert!(
        peak_descriptors <= CAP + 250,
        "edge held {peak_descriptors} descriptors with a cap of {CAP} pending connections"
    );
    assert!(
        counter("deadline") > 0 && counter("evicted") > 0,
        "{metrics}"
    );
    // The door is empty again (but for the connection that asked), and the client's socket
    // survived the attack.
    let pending = metric(
        &metrics,
        "daisi_edge_pending_connections",
        &["listener=\"public\""],
    );
    assert!(pending <= 1, "{pending} connections still pending");
    ws.send(Message::text(r#"{"type":"ready"}"#)).await.unwrap();
    assert_eq!(next_event(&mut ws).await, r#"{"type":"ready"}"#);
    edge.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
}

/// GET over TLS (the edge under test terminates TLS), the body as text.
async fn https_get(addr: SocketAddr, tls: &TlsConnector, path: &str) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut stream = tls.connect(server_name(), tcp).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    response
}
