//! Session churn under load (issue 16): 1,000 connects and as many disconnects per second for
//! 30 s, from 200 users over two edges, while the users change their selected chats. Users
//! reconnect to the other edge before or after leaving the old socket (takeovers), leave
//! politely or drop their TCP connection. At the end every user has at most one live socket,
//! and the coordinator holds exactly the sessions and routes of the live sockets, compared
//! through its admin API. Prints the connect latency (p50, p99) and the rate reached.
//!
//! Runs alone (`.config/nextest.toml`): it is the load.

use daisi_integration_tests::{AdminClient, Stack, StackOptions, User, scenario};
use daisi_proto::coordinator::v1 as pb;
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Message, protocol::CloseFrame};

const USERS: usize = 200;
const AGENTS: usize = 10;
const CHATS: u64 = 5;
const RATE_PER_SECOND: u64 = 1_000;
const LOAD: Duration = Duration::from_secs(30);
/// Bound of one connect (TCP, upgrade, `ready`).
const CONNECT_WITHIN: Duration = Duration::from_secs(10);
/// After the load: time for releases (200 ms batches), route unregistrations (500 ms batches)
/// and selections to land.
const CONVERGE_WITHIN: Duration = Duration::from_secs(10);

type Socket = WebSocketStream<TcpStream>;

/// A small xorshift: the test needs variety, not quality.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Connect tickets, 1,000 a second, shared by the users.
struct Pacer {
    start: Instant,
    issued: AtomicU64,
}

impl Pacer {
    /// Waits for the next ticket; `None` once the load window is over (by the clock: when the
    /// stack cannot keep the pace, fewer connects are made, and the rate printed says so).
    async fn ticket(&self) -> Option<()> {
        let end = self.start + LOAD;
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let at = self.start + Duration::from_micros(n * 1_000_000 / RATE_PER_SECOND);
        if at >= end || Instant::now() >= end {
            return None;
        }
        tokio::time::sleep_until(at).await;
        Some(())
    }
}

/// Shared tallies.
#[derive(Default)]
struct Tally {
    connects: AtomicU64,
    refused: AtomicU64,
    taken_over: AtomicU64,
    latencies_us: parking_lot::Mutex<Vec<u64>>,
}

/// One user's live socket at the end.
#[derive(Debug, Clone)]
struct Live {
    key: String,
    agent: String,
    pod: String,
    chat: String,
}

async fn connect(
    edge: SocketAddr,
    source: IpAddr,
    user: &User,
    api_key: &str,
) -> anyhow::Result<Option<Socket>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = socket.connect(edge).await?;
    tcp.set_nodelay(true)?;
    let url = format!(
        "ws://{edge}/ws/{}/{}?token={}",
        user.company, user.agent, user.token
    );
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("X-API-Key", HeaderValue::from_str(api_key)?);
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("json.v1"),
    );
    let mut ws = match tokio_tungstenite::client_async(request, tcp).await {
        Ok((ws, _)) => ws,
        Err(tokio_tungstenite::tungstenite::Error::Http(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match ws.next().await {
        Some(Ok(Message::Text(t))) if t.as_str() == r#"{"type":"ready"}"# => Ok(Some(ws)),
        // Taken over before `ready` by a newer connect of the same user.
        Some(Ok(Message::Text(_) | Message::Close(_))) | None | Some(Err(_)) => Ok(None),
        Some(Ok(other)) => anyhow::bail!("unexpected first frame {other:?}"),
    }
}

async fn select(ws: &mut Socket, chat: &str) -> anyhow::Result<()> {
    let frame = json!({"type": "select_chat", "payload": {"chat_id": chat}}).to_string();
    Ok(ws.send(Message::text(frame)).await?)
}

async fn leave(mut ws: Socket, politely: bool) {
    if politely {
        let close = CloseFrame {
            code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "bye".into(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(close))).await;
    }
    drop(ws);
}

/// Drains whatever the socket received without waiting.
fn still_open(ws: &mut Socket) -> bool {
    loop {
        match ws.next().now_or_never() {
            None => return true,
            Some(Some(Ok(Message::Close(_)))) | Some(None) | Some(Some(Err(_))) => return false,
            Some(Some(Ok(_))) => {}
        }
    }
}

async fn user_loop(
    i: usize,
    user: User,
    edges: [(SocketAddr, &'static str); 2],
    api_key: String,
    pacer: Arc<Pacer>,
    tally: Arc<Tally>,
) -> anyhow::Result<Option<(Socket, Live)>> {
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 8) as u8));
    let key = format!("c1/{}/u{i}", user.agent);
    let mut current: Option<(Socket, usize)> = None;
    while pacer.ticket().await.is_some() {
        let edge = dice.roll(2) as usize;
        // Takeover (new socket first, old one left afterwards) or plain reconnect.
        let takeover = dice.roll(2) == 0;
        let politely = dice.roll(3) != 0;
        if !takeover && let Some((old, _)) = current.take() {
            leave(old, politely).await;
        }
        let started = Instant::now();
        let opened = tokio::time::timeout(
            CONNECT_WITHIN,
            connect(edges[edge].0, source, &user, &api_key),
        )
        .await
        .map_err(|_| anyhow::anyhow!("{key}: connect not answered within {CONNECT_WITHIN:?}"))??;
        tally.connects.fetch_add(1, Ordering::Relaxed);
        if let Some((mut old, _)) = current.take() {
            if opened.is_some() && !still_open(&mut old) {
                tally.taken_over.fetch_add(1, Ordering::Relaxed);
            }
            leave(old, politely).await;
        }
        let Some(mut ws) = opened else {
            tally.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        tally.latencies_us.lock().push(took);
        // Selections change on about half the connects.
        if dice.roll(2) == 0 {
            select(&mut ws, &format!("chat-{}", dice.roll(CHATS))).await?;
        }
        current = Some((ws, edge));
    }
    // The end: some users leave, the others keep one socket and make a last selection.
    let Some((mut ws, edge)) = current else {
        return Ok(None);
    };
    if dice.roll(4) == 0 {
        leave(ws, dice.roll(2) == 0).await;
        return Ok(None);
    }
    if !still_open(&mut ws) {
        anyhow::bail!("{key}: its newest socket was closed");
    }
    let chat = format!("chat-{}", dice.roll(CHATS));
    select(&mut ws, &chat).await?;
    let live = Live {
        key,
        agent: user.agent.clone(),
        pod: edges[edge].1.to_owned(),
        chat,
    };
    Ok(Some((ws, live)))
}

/// (session key, holder pod, selected chat) of every session of company c1.
async fn coordinator_sessions(
    client: &mut AdminClient,
) -> anyhow::Result<BTreeSet<(String, String, String)>> {
    let mut out = BTreeSet::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_sessions(pb::ListSessionsRequest {
                filter: Some(pb::list_sessions_request::Filter::CompanyId("c1".into())),
                page_size: 1000,
                page_token,
            })
            .await?
            .into_inner();
        for s in page.sessions {
            let Some(pb::session_key::Kind::User(u)) = s.key.and_then(|k| k.kind) else {
                continue;
            };
            out.insert((
                format!("{}/{}/{}", u.company_id, u.agent_id, u.user_id),
                s.holder.map(|h| h.pod_id).unwrap_or_default(),
                s.selected_chat_id,
            ));
        }
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = page.next_page_token;
    }
}

/// The routes of `pod`, as text.
async fn coordinator_routes(
    client: &mut AdminClient,
    pod: &str,
) -> anyhow::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .get_routes(pb::GetRoutesRequest {
                selector: Some(pb::get_routes_request::Selector::PodId(pod.into())),
                page_size: 1000,
                page_token,
            })
            .await?
            .into_inner();
        for entry in page.entries {
            out.insert(match entry.route.and_then(|r| r.kind) {
                Some(pb::route::Kind::Agent(a)) => format!("agent {}/{}", a.company_id, a.agent_id),
                Some(pb::route::Kind::Chat(c)) => {
                    format!("chat {}/{}/{}", c.company_id, c.agent_id, c.chat_id)
                }
                other => format!("{other:?}"),
            });
        }
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = page.next_page_token;
    }
}

/// Sum and count of the histogram `name` over the series whose labels include `label`.
fn histogram(metrics: &str, name: &str, label: &str) -> (f64, f64) {
    let value = |suffix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}_{suffix}{{")) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    (value("sum"), value("count"))
}

/// Where a connect's time goes: the edges' acquire call (admission) and the coordinators'
/// store call behind it (Redis), as means over the run, in milliseconds.
async fn stages(stack: &Stack) -> anyhow::Result<String> {
    use daisi_integration_tests::Component;
    let mut acquire = (0.0, 0.0);
    let mut store = (0.0, 0.0);
    for i in [1u8, 2] {
        let edge = stack.metrics(Component::Edge(i)).await?;
        let (sum, count) = histogram(&edge, "daisi_edge_session_acquire_seconds", "granted");
        acquire = (acquire.0 + sum, acquire.1 + count);
        let coordinator = stack.metrics(Component::Coordinator(i)).await?;
        let (sum, count) = histogram(
            &coordinator,
            "daisi_coordinator_store_seconds",
            r#"op="acquire""#,
        );
        store = (store.0 + sum, store.1 + count);
    }
    let mean = |(sum, count): (f64, f64)| if count > 0.0 { sum / count * 1e3 } else { 0.0 };
    Ok(format!(
        "mean granted acquire at the edges {:.1} ms ({} calls), of which the store call {:.1} ms",
        mean(acquire),
        acquire.1,
        mean(store)
    ))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn compare(stack: &Stack, live: &[Live]) -> anyhow::Result<()> {
    let mut coordinator = stack.admin_client(1).await?;
    let expected_sessions: BTreeSet<(String, String, String)> = live
        .iter()
        .map(|l| (l.key.clone(), l.pod.clone(), l.chat.clone()))
        .collect();
    let mut expected_routes: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for l in live {
        let routes = expected_routes.entry(l.pod.as_str()).or_default();
        routes.insert(format!("agent c1/{}", l.agent));
        routes.insert(format!("chat c1/{}/{}", l.agent, l.chat));
    }
    let deadline = Instant::now() + CONVERGE_WITHIN;
    loop {
        let sessions = coordinator_sessions(&mut coordinator).await?;
        let mut routes = BTreeMap::new();
        for pod in ["edge-1", "edge-2"] {
            routes.insert(pod, coordinator_routes(&mut coordinator, pod).await?);
        }
        let want_routes: BTreeMap<&str, BTreeSet<String>> = ["edge-1", "edge-2"]
            .into_iter()
            .map(|p| (p, expected_routes.get(p).cloned().unwrap_or_default()))
            .collect();
        if sessions == expected_sessions && routes == want_routes {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let extra: Vec<_> = sessions.difference(&expected_sessions).collect();
            let missing: Vec<_> = expected_sessions.difference(&sessions).collect();
            let route_diff: Vec<String> = ["edge-1", "edge-2"]
                .iter()
                .map(|p| {
                    let have = &routes[p];
                    let want = &want_routes[p];
                    format!(
                        "{p}: extra {:?}, missing {:?}",
                        have.difference(want).collect::<Vec<_>>(),
                        want.difference(have).collect::<Vec<_>>()
                    )
                })
                .collect();
            anyhow::bail!(
                "after {CONVERGE_WITHIN:?} the coordinator still differs from the live sockets: sessions extra {extra:?}, missing {missing:?}; routes {route_diff:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s21_session_churn_of_200_users_over_two_edges_leaves_exactly_the_live_sockets() {
    let options = StackOptions::default().edge("DAISI_EDGE_ADDRESS_RATE_PER_SECOND", "0");
    scenario(options, async |stack: &mut Stack| {
        let edges = [
            (stack.edge(1).addr, "edge-1"),
            (stack.edge(2).addr, "edge-2"),
        ];
        let api_key = stack.secrets().api_key.clone();
        let pacer = Arc::new(Pacer {
            start: Instant::now() + Duration::from_millis(200),
            issued: AtomicU64::new(0),
        });
        let tally = Arc::new(Tally::default());
        let tasks: Vec<_> = (0..USERS)
            .map(|i| {
                let user = stack.user("c1", &format!("a{}", i % AGENTS), &format!("u{i}"));
                tokio::spawn(user_loop(i, user, edges, api_key.clone(), pacer.clone(), tally.clone()))
            })
            .collect();
        let mut live = Vec::new();
        let mut sockets = Vec::new();
        for task in tasks {
            if let Some((ws, l)) = task.await?? {
                sockets.push(ws);
                live.push(l);
            }
        }
        let elapsed = pacer.start.elapsed();
        let mut latencies = std::mem::take(&mut *tally.latencies_us.lock());
        latencies.sort_unstable();
        let connects = tally.connects.load(Ordering::Relaxed);
        eprintln!(
            "churn: {connects} connects in {elapsed:.1?} ({:.0}/s, as many disconnects), {} refused or taken over before ready, {} old sockets closed by a takeover; connect p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} live sockets at the end",
            connects as f64 / elapsed.as_secs_f64(),
            tally.refused.load(Ordering::Relaxed),
            tally.taken_over.load(Ordering::Relaxed),
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
            live.len(),
        );
        eprintln!("churn stages: {}", stages(stack).await?);
        // At most one live socket per user: each user holds at most one here, and the edges
        // hold no other.
        let users: BTreeSet<&str> = live.iter().map(|l| l.key.as_str()).collect();
        anyhow::ensure!(users.len() == live.len());
        compare(stack, &live).await?;
        for (pod, i) in [("edge-1", 1u8), ("edge-2", 2u8)] {
            let want = live.iter().filter(|l| l.pod == pod).count();
            let metrics = stack.metrics(daisi_integration_tests::Component::Edge(i)).await?;
            let open = metrics
                .lines()
                .find(|l| l.starts_with("daisi_edge_sockets{") && l.contains(r#"kind="user""#))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or(-1.0);
            anyhow::ensure!(open == want as f64, "{pod} holds {open} user sockets, {want} live");
        }
        // Still live, every one of them.
        for ws in &mut sockets {
            anyhow::ensure!(still_open(ws), "a live socket was closed");
        }
        drop(sockets);
        Ok(())
    })
    .await;
}
