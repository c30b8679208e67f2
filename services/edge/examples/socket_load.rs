//! Many idle sockets on one edge, and the edge's resident memory per socket.
//!
//! ```sh
//! ulimit -n 20000   # the machine's hard cap per process
//! cargo run -p daisi-edge --example socket_load -- 10000
//! ```
//!
//! The edge runs in this process (with the real coordinator service over its in-memory store,
//! also in process; it holds one session per socket, a few hundred bytes); the clients run in a child process
//! (a second copy of this program) because one process cannot hold both ends of 10,000
//! sockets under the 20,000 descriptor cap. Clients spread their source addresses over
//! 127.0.0.2.. so loopback ports do not run out. Prints RSS before and after, per socket, and
//! the time to fan one event out to every socket.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use daisi_config::Env;
use daisi_domain::token::{TokenKeyring, UserClaims};
use daisi_edge::coordinator::AnyCoordinator;
use daisi_edge::coordinator::grpc::GrpcCoordinator;
use daisi_edge::{Config, Listeners};
use daisi_proto::edge::v1 as epb;
use futures_util::StreamExt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const KEY: &str = "3a7bd3e2360a3d29eea436e864a1b8d5f2f5d5e4dba8ac39d465fc3488db3915";
const API_KEY: &str = "load-api-key";
const PER_SOURCE: usize = 2_000;

fn rss_kib() -> u64 {
    daisi_testkit::rss_kib(std::process::id()).unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if args.get(1).map(String::as_str) == Some("clients") {
        let addr: SocketAddr = args[2].parse().unwrap();
        let n: usize = args[3].parse().unwrap();
        runtime.block_on(clients(addr, n));
    } else {
        let n = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
        runtime.block_on(edge(n));
    }
}

async fn edge(n: usize) {
    let mut env = Env::from_pairs([
        ("DAISI_EDGE_HTTP_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_GRPC_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_POD_ID", "edge-load"),
        ("DAISI_EDGE_TOKEN_AES_KEY", KEY),
        ("DAISI_EDGE_ADMIN_TOKEN_AES_KEY", KEY),
        ("DAISI_EDGE_SECRET_TOKEN", API_KEY),
        ("DAISI_EDGE_ADMIN_SECRET_TOKEN", API_KEY),
        ("DAISI_EDGE_MAX_CONNECTIONS", "100000"),
        // Thousands of upgrades from one address: a capacity benchmark, not a flood.
        ("DAISI_EDGE_ADDRESS_RATE_PER_SECOND", "0"),
    ]);
    // Buffer sizes can be tried from the environment, e.g. DAISI_EDGE_WS_READ_BUFFER=131072.
    for var in ["DAISI_EDGE_WS_READ_BUFFER", "DAISI_EDGE_WS_WRITE_BUFFER"] {
        if let Ok(value) = std::env::var(var) {
            env.set(var, value);
        }
    }
    let config: Config = Config::from_env(&env).unwrap().value;
    let listeners = Listeners::bind(&config).await.unwrap();
    let http = listeners.http.local_addr().unwrap();
    let grpc = listeners.grpc.local_addr().unwrap();
    let stop = daisi_runtime::CancellationToken::new();
    let coordinator_config = daisi_coordinator::Config::for_tests();
    let coordinator_listeners = daisi_coordinator::Listeners::bind(&coordinator_config)
        .await
        .unwrap();
    let coordinator_url = format!(
        "http://{}",
        coordinator_listeners.grpc.local_addr().unwrap()
    );
    tokio::spawn(daisi_coordinator::run(
        coordinator_config,
        coordinator_listeners,
        stop.clone(),
    ));
    let coordinator = AnyCoordinator::Grpc(
        GrpcCoordinator::new(&[coordinator_url.parse().unwrap()], Duration::from_secs(2)).unwrap(),
    );
    let server = tokio::spawn(daisi_edge::run_with(
        config,
        listeners,
        coordinator,
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib();
    println!("edge rss before: {before} KiB");

    let started = Instant::now();
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["clients", &http.to_string(), &n.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        println!("clients: {line}");
        if line.starts_with("connected") {
            break;
        }
    }
    println!("{n} sockets up in {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib();
    println!("edge rss with {n} sockets: {after} KiB");
    println!(
        "rss per socket: {:.1} KiB",
        (after.saturating_sub(before)) as f64 / n as f64
    );

    // One event to every socket (one agent), rendered once.
    let mut delivery =
        epb::edge_delivery_client::EdgeDeliveryClient::connect(format!("http://{grpc}"))
            .await
            .unwrap();
    let t = Instant::now();
    let result = delivery
        .deliver(epb::DeliverRequest {
            pod_id: "edge-load".into(),
            events: vec![epb::Event {
                stream_sequence: 1,
                target: Some(epb::Target {
                    company_id: "c1".into(),
                    agent_id: "a1".into(),
                    scope: epb::DeliveryScope::AgentUsers as i32,
                    chat_id: String::new(),
                }),
                event_type: "chat".into(),
                payload: br#"{"event_id":"1:chats:1","row_data":{"id":1}}"#.to_vec(),
                ..Default::default()
            }],
            router_id: "load".into(),
        })
        .await
        .unwrap()
        .into_inner();
    println!(
        "fan-out to {} sockets queued in {:?}",
        result.results[0].sockets_reached,
        t.elapsed()
    );
    while let Ok(Some(line)) = lines.next_line().await {
        println!("clients: {line}");
        if line.starts_with("received") {
            break;
        }
    }
    println!(
        "all {n} clients received the event {:?} after the call",
        t.elapsed()
    );
    drop(child.stdin.take());
    let _ = child.wait().await;
    stop.cancel();
    let _ = server.await;
}

async fn clients(addr: SocketAddr, n: usize) {
    let keyring = TokenKeyring::from_hex(&[KEY]).unwrap();
    let mut sockets = Vec::with_capacity(n);
    let mut connecting = futures_util::stream::iter(0..n)
        .map(|i| {
            let claims = UserClaims::expiring_in(
                "c1".parse().unwrap(),
                "a1".parse().unwrap(),
                format!("u{i}").parse().unwrap(),
                jiff::Timestamp::now(),
                3600,
            )
            .unwrap();
            let token = keyring.encode_user(&claims).unwrap();
            async move {
                let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i / PER_SOURCE) as u8));
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::new(source, 0)).unwrap();
                let tcp = socket.connect(addr).await.unwrap();
                let token: String = token
                    .bytes()
                    .map(|b| match b {
                        b'=' => "%3D".to_owned(),
                        _ => (b as char).to_string(),
                    })
                    .collect();
                let mut request = format!("ws://{addr}/ws/c1/a1?token={token}")
                    .into_client_request()
                    .unwrap();
                request
                    .headers_mut()
                    .insert("x-api-key", API_KEY.parse().unwrap());
                request
                    .headers_mut()
                    .insert("sec-websocket-protocol", "json.v1".parse().unwrap());
                let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
                // `ready`
                let _ = ws.next().await;
                ws
            }
        })
        .buffer_unordered(256);
    while let Some(ws) = connecting.next().await {
        sockets.push(ws);
    }
    println!("connected {}", sockets.len());
    let t = Instant::now();
    let received = futures_util::future::join_all(sockets.iter_mut().map(|ws| ws.next())).await;
    let ok = received.iter().filter(|r| matches!(r, Some(Ok(_)))).count();
    println!("received {ok} events in {:?}", t.elapsed());
    // Hold the sockets until the parent closes our stdin.
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await;
}
