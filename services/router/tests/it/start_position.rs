//! Where a new durable consumer starts (`DAISI_ROUTER_START_POSITION`), against a real
//! nats-server: with the default (`new`) a router started against a stream holding 1,000 old
//! events delivers none of them, with `all` it delivers every one, `by_start_sequence` starts
//! where it says, and an existing consumer whose start position differs stops the router with a
//! message naming the setting.

use crate::support::stubs::{Coordinator, Edge};
use crate::support::{self, create_stream, env, jetstream, payload, publish_all};
use daisi_testkit::nats::NatsServer;
use std::collections::BTreeSet;
use std::time::Duration;

const OLD_EVENTS: usize = 1_000;
const SUBJECT: &str = "websocket.c1.a0.chats";

fn events(range: std::ops::Range<usize>) -> Vec<(String, Vec<u8>)> {
    range.map(|i| (SUBJECT.to_owned(), payload(i))).collect()
}

/// The stream sequences an edge received, duplicates removed.
fn sequences(edge: &Edge) -> BTreeSet<u64> {
    edge.received().iter().map(|r| r.sequence).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_consumers_skip_history_by_default_and_replay_it_with_all() {
    let nats = NatsServer::start().await.unwrap();
    let js = jetstream(&nats.url()).await;
    create_stream(&js, "wa_stream", 0).await;
    let coordinator = Coordinator::default();
    let coordinator_server = coordinator.serve().await;
    let edge = Edge::new("edge-a");
    let edge_server = edge.serve().await;
    coordinator.add_pod("edge-a", &edge_server.url());
    coordinator.subscribe_agent("edge-a", "c1", "a0");
    let old = publish_all(&js, events(0..OLD_EVENTS)).await;
    assert_eq!(old.len(), OLD_EVENTS);
    let router_env = |consumer: &str, position: &str| {
        env(&[
            ("DAISI_ROUTER_NATS_URL", &nats.url()),
            ("DAISI_ROUTER_COORDINATOR_URL", &coordinator_server.url()),
            ("DAISI_ROUTER_CREATE_STREAM", "false"),
            ("DAISI_ROUTER_CONSUMER", consumer),
            // Empty means the binary's default.
            ("DAISI_ROUTER_START_POSITION", position),
        ])
    };

    // Default: the consumer is created at the end of the stream. Readiness means it is bound;
    // one event published afterwards arrives, and it alone.
    let router = support::start(&router_env("cutover", "")).await;
    router.wait_ready_status(200, Duration::from_secs(20)).await;
    let fresh = publish_all(&js, events(OLD_EVENTS..OLD_EVENTS + 1)).await;
    assert_eq!(edge.wait_distinct(1, Duration::from_secs(20)).await, 1);
    // Time for any replayed history to show up before judging.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sequences(&edge),
        fresh.iter().copied().collect(),
        "the default start position delivered old events"
    );
    let metrics = router.metrics().await;
    assert_eq!(
        support::metric(&metrics, "daisi_router_consumed_total"),
        1.0
    );
    router.stop().await;

    // `all`: a new consumer replays every retained event.
    let router = support::start(&router_env("replay", "all")).await;
    let everything = OLD_EVENTS + 1;
    assert_eq!(
        edge.wait_distinct(everything, Duration::from_secs(60))
            .await,
        everything,
        "`all` must deliver every retained event"
    );
    let expected: BTreeSet<u64> = old.iter().chain(&fresh).copied().collect();
    assert_eq!(sequences(&edge), expected);
    router.stop().await;

    // `by_start_sequence`: from that sequence on (counted by the router, the edge has them all).
    let from = old[900];
    let router = support::start(&{
        let mut e = router_env("from-901", "by_start_sequence");
        e.set("DAISI_ROUTER_START_SEQUENCE", from.to_string());
        e
    })
    .await;
    let want = (everything - 900) as f64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let consumed = support::metric(&router.metrics().await, "daisi_router_consumed_total");
        if consumed >= want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumed {consumed} of {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let consumed = support::metric(&router.metrics().await, "daisi_router_consumed_total");
    assert_eq!(consumed, want, "by_start_sequence {from}");
    router.stop().await;

    // The consumer `replay` exists with `all`: a router configured with the default refuses
    // to run on it, naming the setting, instead of silently replaying or skipping.
    let router = support::start(&router_env("replay", "")).await;
    let error = router
        .exited(Duration::from_secs(30))
        .await
        .expect_err("a conflicting start position stops the router");
    let text = error.to_string();
    for part in [
        "DAISI_ROUTER_START_POSITION",
        "`replay`",
        "start position all",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
    // The same settings as the consumer's are accepted.
    let router = support::start(&router_env("replay", "all")).await;
    router.wait_ready_status(200, Duration::from_secs(20)).await;
    router.stop().await;
}
