//! Steady-state Redis work of idle sockets: 10,000 idle sockets on two edges (5,000 each, the
//! edge binary as two processes), one coordinator (in this process) on a real `redis-server`,
//! and Redis' own `INFO commandstats` read twice, a window apart. Prints, per command, the
//! calls and the calls per second in the window (commands run by scripts are counted by Redis
//! too, so a per-session `PEXPIRE` inside a script shows up as such). Nothing is asserted: it
//! is a measurement, compared before and after sessions lost their own leases (issue 17).
//!
//! ```sh
//! cargo build -p daisi-edge --bins
//! cargo nextest run -p daisi-edge --run-ignored only -E 'test(/idle_sockets_redis_commands/)' \
//!     --no-capture
//! # The window (default 60 s) can be changed: DAISI_LOAD_WINDOW_SECS=30
//! # The same by hand on a running stack: redis-cli -s <socket> info commandstats
//! ```
//!
//! Both edges and the coordinator run with their defaults (pod lease 30 s, so one heartbeat
//! per edge every 10 s), after a settling time of one pod lease so the first heartbeat and
//! renew/audit rounds are out of the window.

use crate::support::{ADMIN_API_KEY, ADMIN_KEY, API_KEY, Coord, USER_KEY, user_token};
use daisi_proto::coordinator::v1 as cpb;
use daisi_testkit::{RedisServer, ServiceProcess, get_json};
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_daisi-edge");
const SOCKETS_PER_EDGE: usize = 5_000;
/// Client sources 127.0.0.20.. (many_sockets uses ..2-6).
const FIRST_SOURCE: u8 = 20;

type Client = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(http: SocketAddr, i: usize, token: String) -> Client {
    crate::support::connect_numbered(http, FIRST_SOURCE, i, &token).await
}

/// `cmdstat_<name>` -> calls, from `INFO commandstats` of the server at `socket`.
fn command_calls(socket: &std::path::Path) -> BTreeMap<String, u64> {
    let out = std::process::Command::new("redis-cli")
        .arg("-s")
        .arg(socket)
        .args(["info", "commandstats"])
        .output()
        .expect("redis-cli runs");
    assert!(out.status.success(), "redis-cli: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let (name, stats) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

async fn start_edge(coordinator: &str, pod: &str) -> ServiceProcess {
    let env = [
        ("DAISI_EDGE_HTTP_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_GRPC_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_POD_ID", pod),
        ("DAISI_EDGE_COORDINATOR_URL", coordinator),
        ("DAISI_EDGE_TOKEN_AES_KEY", USER_KEY),
        ("DAISI_EDGE_ADMIN_TOKEN_AES_KEY", ADMIN_KEY),
        ("DAISI_EDGE_SECRET_TOKEN", API_KEY),
        ("DAISI_EDGE_ADMIN_SECRET_TOKEN", ADMIN_API_KEY),
        ("DAISI_EDGE_SHUTDOWN_GRACE", "2s"),
        ("DAISI_EDGE_ADDRESS_RATE_PER_SECOND", "0"),
        // A measurement of steady state, not of connect latency: a loaded machine's slow
        // acquire must not turn into a refused socket.
        ("DAISI_EDGE_COORDINATOR_TIMEOUT", "10s"),
        // The clients here never read, so they never answer pings: without this the edges
        // close them (pong timeout) mid-window and the releases are what gets measured.
        ("DAISI_EDGE_PING_INTERVAL", "1h"),
        ("DAISI_EDGE_PONG_WAIT", "2h"),
        ("RUST_LOG", "warn,daisi_edge=info"),
    ];
    let edge = ServiceProcess::spawn(BIN, &env, "edge listening", Duration::from_secs(20))
        .await
        .unwrap();
    let http = edge.addr("http").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(get_json(http, "/ready").await, Ok((200, _))) {
        assert!(
            Instant::now() < deadline,
            "{pod} never ready:\n{}",
            edge.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    edge
}

/// Sessions of company `c1` the coordinator lists (all of this test's), so a window in which
/// sockets were closed does not pass for idle.
async fn coordinator_sessions(coordinator: &Coord) -> usize {
    let mut admin = coordinator.admin().await;
    let mut token = String::new();
    let mut n = 0;
    loop {
        let page = admin
            .list_sessions(cpb::ListSessionsRequest {
                filter: Some(cpb::list_sessions_request::Filter::CompanyId("c1".into())),
                page_size: 1000,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        n += page.sessions.len();
        if page.next_page_token.is_empty() {
            return n;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement of about two minutes; run it by name (see the module doc)"]
async fn idle_sockets_redis_commands_per_second() {
    let total = SOCKETS_PER_EDGE * 2;
    let limit = daisi_runtime::fd_limit::raise().unwrap();
    assert!(
        limit.now >= total as u64 + 1_000,
        "this test holds {total} client sockets: raise the open-file hard limit (ulimit -Hn is {})",
        limit.hard
    );
    let window = Duration::from_secs(
        std::env::var("DAISI_LOAD_WINDOW_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let redis = RedisServer::start().unwrap();
    let redis_url = url::Url::parse(&redis.url()).unwrap();
    let coordinator = Coord::start_with(|c| {
        c.store = daisi_coordinator::StoreKind::Redis;
        c.redis_url = daisi_coordinator::config::RedisUrl(redis_url);
    })
    .await;
    let edges = [
        start_edge(&coordinator.url, "edge-a").await,
        start_edge(&coordinator.url, "edge-b").await,
    ];
    let started = Instant::now();
    let mut clients = Vec::with_capacity(total);
    for (e, edge) in edges.iter().enumerate() {
        let http = edge.addr("http").unwrap();
        let first = e * SOCKETS_PER_EDGE;
        let tokens: Vec<(usize, String)> = (first..first + SOCKETS_PER_EDGE)
            .map(|i| (i, user_token("c1", "a1", &format!("u{i}"))))
            .collect();
        let batch: Vec<Client> = futures_util::stream::iter(tokens)
            .map(|(i, token)| connect(http, i, token))
            .buffer_unordered(256)
            .collect()
            .await;
        clients.extend(batch);
    }
    println!("{total} sockets up on two edges in {:?}", started.elapsed());
    // One pod lease: first heartbeats, route registrations and renew/audit rounds settle.
    tokio::time::sleep(Duration::from_secs(30)).await;

    let before = command_calls(redis.socket());
    let window_started = Instant::now();
    tokio::time::sleep(window).await;
    let after = command_calls(redis.socket());
    let secs = window_started.elapsed().as_secs_f64();

    println!(
        "Redis commands in {secs:.1} s with {total} idle sockets on two edges (INFO commandstats \
         delta; the reads' own `info` call included):"
    );
    let mut sum = 0;
    for (name, calls) in &after {
        let delta = calls - before.get(name).copied().unwrap_or(0);
        if delta > 0 {
            sum += delta;
            println!(
                "  {name:<12} {delta:>9} calls  {:>10.1}/s",
                delta as f64 / secs
            );
        }
    }
    println!(
        "  {:<12} {sum:>9} calls  {:>10.1}/s",
        "total",
        sum as f64 / secs
    );
    let held = coordinator_sessions(&coordinator).await;
    println!(
        "{} clients open, {held} sessions listed by the coordinator after the window",
        clients.len()
    );
    drop(clients);
}
