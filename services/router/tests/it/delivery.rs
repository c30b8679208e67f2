//! Delivery through a real JetStream stream to stub edges: exactly the subscribed edges get
//! each event, once, in per-chat (and per-agent) order, also when a burst for a slow edge
//! exceeds its backlog cap, and a router killed with SIGKILL loses nothing.

use crate::support::stubs::{Coordinator, Edge, Received, Served};
use crate::support::{self, create_stream, env, jetstream, payload, publish_all};
use daisi_testkit::ServiceProcess;
use daisi_testkit::nats::NatsServer;
use nix::sys::signal::Signal;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

const EVENTS: usize = 10_000;
const CHATS: usize = 50;
const AGENTS: usize = 10;

/// Two edges with overlapping chat subscriptions and one agent subscription each.
struct World {
    _coordinator: Coordinator,
    coordinator_server: Served,
    edges: Vec<(Edge, Served)>,
    /// Edge index -> chats it subscribed.
    chats: Vec<BTreeSet<usize>>,
    /// Edge index -> agents it subscribed (agent-wide `chats` events).
    agents: Vec<BTreeSet<usize>>,
}

impl World {
    async fn new() -> Self {
        let coordinator = Coordinator::default();
        let coordinator_server = coordinator.serve().await;
        let chats = vec![(0..30).collect::<BTreeSet<_>>(), (20..50).collect()];
        let agents = vec![BTreeSet::from([0, 1]), BTreeSet::from([1, 2])];
        let mut edges = Vec::new();
        for (i, name) in ["edge-a", "edge-b"].into_iter().enumerate() {
            let edge = Edge::new(name);
            let served = edge.serve().await;
            coordinator.add_pod(name, &served.url());
            for chat in &chats[i] {
                coordinator.subscribe_chat(
                    name,
                    "c1",
                    &format!("a{}", chat % AGENTS),
                    &format!("ch{chat}"),
                );
            }
            for agent in &agents[i] {
                coordinator.subscribe_agent(name, "c1", &format!("a{agent}"));
            }
            edges.push((edge, served));
        }
        Self {
            _coordinator: coordinator,
            coordinator_server,
            edges,
            chats,
            agents,
        }
    }

    fn coordinator_url(&self) -> String {
        self.coordinator_server.url()
    }

    /// Event `i`: mostly chat messages, every 20th an agent-wide `chats` event.
    fn subject(i: usize) -> String {
        let chat = i % CHATS;
        let agent = chat % AGENTS;
        if i.is_multiple_of(20) {
            format!("websocket.c1.a{agent}.chats")
        } else {
            format!("websocket.c1.a{agent}.messages.ch{chat}")
        }
    }

    /// Which edges must get event `i`.
    fn targets(&self, i: usize) -> Vec<usize> {
        let chat = i % CHATS;
        let agent = chat % AGENTS;
        (0..self.edges.len())
            .filter(|e| {
                if i.is_multiple_of(20) {
                    self.agents[*e].contains(&agent)
                } else {
                    self.chats[*e].contains(&chat)
                }
            })
            .collect()
    }

    /// Expected sequences per edge.
    fn expected(&self, sequences: &[u64]) -> Vec<BTreeSet<u64>> {
        let mut expected = vec![BTreeSet::new(); self.edges.len()];
        for (i, seq) in sequences.iter().enumerate() {
            for e in self.targets(i) {
                expected[e].insert(*seq);
            }
        }
        expected
    }

    async fn wait_all(&self, expected: &[BTreeSet<u64>], timeout: Duration) {
        for (e, (edge, _)) in self.edges.iter().enumerate() {
            let got = edge.wait_distinct(expected[e].len(), timeout).await;
            assert_eq!(
                got,
                expected[e].len(),
                "{} received {got} of {}",
                edge.pod,
                expected[e].len()
            );
        }
    }
}

fn messages() -> Vec<(String, Vec<u8>)> {
    (0..EVENTS)
        .map(|i| (World::subject(i), payload(i)))
        .collect()
}

/// Sequences in receipt order must increase within each group of `key`.
fn assert_ordered(received: &[Received], what: &str, key: impl Fn(&Received) -> String) {
    let mut last: HashMap<String, u64> = HashMap::new();
    for r in received.iter().filter(|r| !r.duplicate) {
        let k = key(r);
        if let Some(prev) = last.insert(k.clone(), r.sequence) {
            assert!(prev < r.sequence, "{what} {k}: {} after {prev}", r.sequence);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_deliver_10k_events_to_exactly_the_subscribed_edges_in_order() {
    let nats = NatsServer::start().await.unwrap();
    let world = World::new().await;
    let js = jetstream(&nats.url()).await;
    create_stream(&js, "wa_stream", 2).await;
    let coordinator_url = world.coordinator_url();
    let mut routers = Vec::new();
    for partition in ["0", "1"] {
        routers.push(
            support::start(&env(&[
                ("DAISI_ROUTER_NATS_URL", &nats.url()),
                ("DAISI_ROUTER_COORDINATOR_URL", &coordinator_url),
                ("DAISI_ROUTER_PARTITIONS", "2"),
                ("DAISI_ROUTER_PARTITION", partition),
                ("DAISI_ROUTER_ACK_WAIT", "30s"),
                // The default cap, below each edge's share of the burst (about 3,000 per
                // router): what the edge has not taken yet beyond it waits in the edge's hold
                // and still arrives in order (`a_burst_beyond_the_cap_...` below forces it).
                ("DAISI_ROUTER_EDGE_MAX_PENDING", "1000"),
                ("DAISI_ROUTER_MAX_ACK_PENDING", "40000"),
            ]))
            .await,
        );
    }
    let sequences = publish_all(&js, messages()).await;
    let expected = world.expected(&sequences);
    world.wait_all(&expected, Duration::from_secs(60)).await;
    // Let anything extra (a duplicate, a stray target) arrive before judging.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let by_sequence: HashMap<u64, usize> =
        sequences.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    for (e, (edge, _)) in world.edges.iter().enumerate() {
        let received = edge.received();
        assert!(
            received.iter().all(|r| !r.duplicate),
            "{}: duplicates in a clean run",
            edge.pod
        );
        let got: BTreeSet<u64> = received.iter().map(|r| r.sequence).collect();
        assert_eq!(got.len(), received.len(), "{}: an event twice", edge.pod);
        assert_eq!(
            got, expected[e],
            "{}: exactly the subscribed events",
            edge.pod
        );
        for r in &received {
            let i = by_sequence[&r.sequence];
            assert_eq!(r.subject, World::subject(i));
            assert_eq!(r.payload, payload(i), "payload passed through untouched");
            let expected_type = if i.is_multiple_of(20) {
                "chat"
            } else {
                "message"
            };
            assert_eq!(r.event_type, expected_type);
        }
        assert_ordered(&received, "chat", |r| r.subject.clone());
        assert_ordered(&received, "agent", |r| format!("{}/{}", r.company, r.agent));
    }
    let mut consumed = 0.0;
    for router in &routers {
        let text = router.metrics().await;
        consumed += support::metric(&text, "daisi_router_consumed_total");
        assert_nothing_redelivered_or_given_up(&text);
        eprintln!(
            "events that waited in an edge's hold: {}",
            support::metric(&text, "daisi_router_edge_held_total")
        );
    }
    assert_eq!(
        consumed as usize, EVENTS,
        "each event consumed once across both partitions"
    );
    for router in routers {
        router.stop().await;
    }
}

/// A slow edge (20 ms a call) gets a burst of three keys beyond its backlog cap, then more
/// events of the same keys once it has made room: the events beyond the cap wait in its hold
/// and everything arrives once, in per-key order, with no redelivery. (Handed back with a nak,
/// as before the hold, the first burst's tail came back a second later, behind the second.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_cap_for_a_slow_edge_arrives_complete_and_in_order() {
    const CAP: usize = 50;
    // Cap + hold (2 × CAP) is never exceeded: at most FIRST - room + SECOND are outstanding.
    const FIRST: usize = 80;
    const ROOM: usize = 40;
    const SECOND: usize = 40;
    let nats = NatsServer::start().await.unwrap();
    let coordinator = Coordinator::default();
    let coordinator_server = coordinator.serve().await;
    let edge = Edge::new("edge-slow");
    let edge_server = edge.serve().await;
    coordinator.add_pod("edge-slow", &edge_server.url());
    for agent in 0..3 {
        coordinator.subscribe_agent("edge-slow", "c1", &format!("a{agent}"));
    }
    edge.set_delay(Some(Duration::from_millis(20)));
    let js = jetstream(&nats.url()).await;
    create_stream(&js, "wa_stream", 0).await;
    let burst = |range: std::ops::Range<usize>| -> Vec<(String, Vec<u8>)> {
        range
            .map(|i| (format!("websocket.c1.a{}.chats", i % 3), payload(i)))
            .collect()
    };
    // Published before the router starts: it takes the whole first burst at once.
    let mut sequences = publish_all(&js, burst(0..FIRST)).await;
    let cap = CAP.to_string();
    let router = support::start(&env(&[
        ("DAISI_ROUTER_NATS_URL", &nats.url()),
        ("DAISI_ROUTER_COORDINATOR_URL", &coordinator_server.url()),
        ("DAISI_ROUTER_ACK_WAIT", "30s"),
        ("DAISI_ROUTER_EDGE_MAX_PENDING", &cap),
        // Small calls, so the edge is slower than the dispatcher.
        ("DAISI_ROUTER_BATCH_MAX_EVENTS", "2"),
    ]))
    .await;
    assert!(edge.wait_distinct(ROOM, Duration::from_secs(30)).await >= ROOM);
    sequences.extend(publish_all(&js, burst(FIRST..FIRST + SECOND)).await);
    let total = FIRST + SECOND;
    assert_eq!(
        edge.wait_distinct(total, Duration::from_secs(30)).await,
        total
    );
    // Let anything extra (a redelivered copy) arrive before judging.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let received = edge.received();
    let got: BTreeSet<u64> = received.iter().map(|r| r.sequence).collect();
    assert_eq!(got, sequences.iter().copied().collect::<BTreeSet<_>>());
    assert_eq!(received.len(), total, "each event once");
    assert_ordered(&received, "agent", |r| format!("{}/{}", r.company, r.agent));
    let text = router.metrics().await;
    assert_nothing_redelivered_or_given_up(&text);
    let held = support::metric(&text, "daisi_router_edge_held_total");
    assert!(held > 0.0, "the burst went past the cap");
    eprintln!("events that waited in the edge's hold: {held}");
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_killed_with_sigkill_mid_stream_loses_nothing() {
    let nats = NatsServer::start().await.unwrap();
    let world = World::new().await;
    let js = jetstream(&nats.url()).await;
    create_stream(&js, "wa_stream", 0).await;
    let nats_url = nats.url();
    let coordinator_url = world.coordinator_url();
    // Two replicas sharing one durable consumer, as child processes so one can be SIGKILLed.
    let router_env = [
        ("DAISI_ROUTER_HTTP_ADDR", "127.0.0.1:0"),
        ("DAISI_ROUTER_NATS_URL", nats_url.as_str()),
        ("DAISI_ROUTER_COORDINATOR_URL", coordinator_url.as_str()),
        ("DAISI_ROUTER_ACK_WAIT", "2s"),
        ("DAISI_ROUTER_HEARTBEAT", "500ms"),
        ("DAISI_ROUTER_MAX_ACK_PENDING", "2000"),
        ("DAISI_ROUTER_BATCH_DELAY", "1ms"),
        // Events are published as soon as the routers listen, which can be before the consumer
        // exists; `new` (the default) would rightly skip those.
        ("DAISI_ROUTER_START_POSITION", "all"),
    ];
    let bin = env!("CARGO_BIN_EXE_daisi-router");
    let victim = ServiceProcess::spawn(
        bin,
        &router_env,
        "router listening",
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let survivor = ServiceProcess::spawn(
        bin,
        &router_env,
        "router listening",
        Duration::from_secs(20),
    )
    .await
    .unwrap();

    let publishing = {
        let js = js.clone();
        tokio::spawn(async move { publish_all(&js, messages()).await })
    };
    // Kill one replica while events are flowing through both.
    let first_edge = &world.edges[0].0;
    first_edge
        .wait_distinct(1_500, Duration::from_secs(30))
        .await;
    victim.signal(Signal::SIGKILL).unwrap();
    let sequences = publishing.await.unwrap();
    let expected = world.expected(&sequences);
    world.wait_all(&expected, Duration::from_secs(60)).await;

    let mut duplicates = 0;
    for (e, (edge, _)) in world.edges.iter().enumerate() {
        let received = edge.received();
        let got: BTreeSet<u64> = received.iter().map(|r| r.sequence).collect();
        assert_eq!(
            got, expected[e],
            "{}: every subscribed event arrived",
            edge.pod
        );
        duplicates += received.iter().filter(|r| r.duplicate).count();
    }
    let metrics = daisi_testkit::get_json(survivor.addr("http").unwrap(), "/metrics")
        .await
        .unwrap()
        .1;
    let redelivered = support::metric(
        metrics.as_str().unwrap_or(""),
        "daisi_router_redelivered_total",
    );
    eprintln!(
        "sigkill run: {duplicates} duplicate receipts at the edges, {redelivered} redeliveries taken over by the survivor"
    );
    assert!(
        redelivered > 0.0,
        "the survivor took over the victim's unacknowledged messages"
    );
    drop(survivor);
    drop(victim);
}

/// A router's metrics show no redelivery and no event given up.
fn assert_nothing_redelivered_or_given_up(metrics: &str) {
    assert_eq!(
        support::metric(metrics, "daisi_router_redelivered_total"),
        0.0
    );
    assert_eq!(
        support::metric(metrics, "daisi_router_undeliverable_total"),
        0.0
    );
}
