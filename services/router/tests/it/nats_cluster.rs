//! Two routers on a real 3-node NATS cluster (JetStream, stream replicas 3): the node leading
//! the stream is SIGKILLed while events stream through; the routers go on consuming from the
//! other nodes, every published event reaches the edge (counted) and duplicates are counted.

use crate::support::stubs::{Coordinator, Edge};
use crate::support::{self, env, payload};
use async_nats::jetstream::message::PublishMessage;
use daisi_testkit::NatsCluster;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

const STREAM: &str = "cluster_stream";
const EVENTS: usize = 4_000;

/// Publishes events `range` with a message id each (the stream drops a re-sent one inside its
/// duplicate window), retrying each until the stream acknowledges it: a publish whose ack was
/// lost in the node's death is sent again, never counted twice. Answers the retries.
async fn publish_range(
    js: &async_nats::jetstream::Context,
    range: std::ops::Range<usize>,
    deadline: Instant,
) -> u64 {
    let mut retries = 0;
    let all: Vec<usize> = range.collect();
    for window in all.chunks(100) {
        let mut pending: Vec<usize> = window.to_vec();
        while !pending.is_empty() {
            assert!(
                Instant::now() < deadline,
                "publishing did not finish in time"
            );
            let mut acks = Vec::new();
            for &n in &pending {
                let message = PublishMessage::build()
                    .payload(payload(n).into())
                    .message_id(format!("event-{n}"));
                acks.push((n, js.send_publish("websocket.c1.a1.chats", message).await));
            }
            let mut failed = Vec::new();
            for (n, ack) in acks {
                let acked = match ack {
                    Ok(future) => future.await.is_ok(),
                    Err(_) => false,
                };
                if !acked {
                    failed.push(n);
                }
            }
            if !failed.is_empty() {
                retries += failed.len() as u64;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            pending = failed;
        }
    }
    retries
}

/// The event number a delivered payload carries (`"event_id":"{n}:..."`).
fn event_of(payload: &[u8]) -> usize {
    let text = std::str::from_utf8(payload).unwrap();
    let start = text.find("\"event_id\":\"").unwrap() + "\"event_id\":\"".len();
    text[start..].split(':').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routers_keep_consuming_when_the_stream_leader_dies() {
    let mut cluster = NatsCluster::start(3)
        .await
        .expect("the nats cluster starts");
    let seeds = cluster.urls().join(",");

    let coordinator = Coordinator::default();
    let coordinator_server = coordinator.serve().await;
    let edge = Edge::new("edge-a");
    let edge_server = edge.serve().await;
    coordinator.add_pod("edge-a", &edge_server.url());
    coordinator.subscribe_agent("edge-a", "c1", "a1");

    let router_env = env(&[
        ("DAISI_ROUTER_NATS_URL", &seeds),
        ("DAISI_ROUTER_STREAM", STREAM),
        ("DAISI_ROUTER_STREAM_REPLICAS", "3"),
        ("DAISI_ROUTER_COORDINATOR_URL", &coordinator_server.url()),
        ("DAISI_ROUTER_ACK_WAIT", "2s"),
        ("DAISI_ROUTER_BATCH_MAX_EVENTS", "50"),
    ]);
    let routers = [
        support::start(&router_env).await,
        support::start(&router_env).await,
    ];
    for router in &routers {
        router.wait_ready_status(200, Duration::from_secs(30)).await;
    }

    // The stream the routers created has three replicas; find the node leading it.
    let client = async_nats::connect(cluster.urls()).await.expect("connects");
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(STREAM).await.expect("the routers created it");
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3, "stream replicas");
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("the stream has a leader");
    let leader_index: usize = leader.trim_start_matches('n').parse().unwrap();

    // A slow edge keeps events in flight while the leader dies.
    edge.set_delay(Some(Duration::from_millis(20)));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut retries = publish_range(&js, 0..EVENTS / 2, deadline).await;
    edge.wait_distinct(EVENTS / 8, Duration::from_secs(30))
        .await;
    let delivered_before = edge.distinct();
    let killed_at = Instant::now();
    cluster.kill(leader_index).await;
    eprintln!(
        "SIGKILLed stream leader {leader} after {delivered_before} of {} published events reached the edge",
        EVENTS / 2
    );
    assert!(delivered_before < EVENTS / 2, "killed mid-stream");

    // Publishing goes on through the surviving nodes.
    retries += publish_range(&js, EVENTS / 2..EVENTS, deadline).await;
    edge.set_delay(None);
    let distinct = edge.wait_distinct(EVENTS, Duration::from_secs(90)).await;
    let recovered = killed_at.elapsed();
    let received = edge.received();
    let events: BTreeSet<usize> = received.iter().map(|r| event_of(&r.payload)).collect();
    let mut per_event: HashMap<usize, usize> = HashMap::new();
    for r in &received {
        *per_event.entry(event_of(&r.payload)).or_default() += 1;
    }
    let duplicates: usize = per_event.values().map(|n| n - 1).sum();
    let missing: Vec<usize> = (0..EVENTS).filter(|n| !events.contains(n)).collect();
    eprintln!(
        "{EVENTS} events published ({retries} publish retries), {} distinct delivered, {} missing, \
         {duplicates} duplicate deliveries ({} answered DUPLICATE by the edge), all in {recovered:?} after the kill",
        events.len(),
        missing.len(),
        received.iter().filter(|r| r.duplicate).count()
    );
    assert!(
        missing.is_empty(),
        "events lost: {} (first {:?}); distinct sequences {distinct}; nats logs:\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        cluster.logs()
    );
    assert_eq!(
        distinct, EVENTS,
        "one stream message per event (message ids dedupe the publish retries)"
    );

    // Both routers consume again (readiness follows the consumer).
    for router in &routers {
        router.wait_ready_status(200, Duration::from_secs(30)).await;
    }
    for router in routers {
        router.stop().await;
    }
}
