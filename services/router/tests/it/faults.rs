//! Faults and bad input: malformed messages do not block the ones behind them, a NATS restart
//! loses nothing, a frozen server turns readiness off, a dying edge holds its events until the
//! coordinator reports it gone, an unreachable coordinator stops acknowledgements once the
//! cached routes are stale, and trace context reaches the edge.

use crate::support::stubs::{Coordinator, Edge, Served};
use crate::support::{self, create_stream, env, jetstream, metric, payload, publish_all};
use async_nats::HeaderMap;
use daisi_router::source::memory::{MemorySettings, MemoryStream};
use daisi_router::source::{Outgoing, Publisher, TraceHeaders};
use daisi_testkit::nats::NatsServer;
use futures_util::StreamExt;
use nix::sys::signal::Signal;
use std::time::Duration;

/// One coordinator and one edge subscribed to agent a1 and chat ch1 of company c1.
async fn one_edge(pod: &str) -> (Coordinator, Served, Edge, Served) {
    let coordinator = Coordinator::default();
    let coordinator_server = coordinator.serve().await;
    let edge = Edge::new(pod);
    let edge_server = edge.serve().await;
    coordinator.add_pod(pod, &edge_server.url());
    coordinator.subscribe_agent(pod, "c1", "a1");
    coordinator.subscribe_chat(pod, "c1", "a1", "ch1");
    (coordinator, coordinator_server, edge, edge_server)
}

fn outgoing(subject: &str, n: usize) -> Outgoing {
    Outgoing {
        subject: subject.into(),
        payload: payload(n).into(),
        trace: TraceHeaders::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_subject_and_payload_are_acked_dead_lettered_and_do_not_block() {
    let nats = NatsServer::start().await.unwrap();
    let (_c, coordinator, edge, _e) = one_edge("edge-a").await;
    let js = jetstream(&nats.url()).await;
    create_stream(&js, "wa_stream", 0).await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut dead_letters = client.subscribe("dlq.router").await.unwrap();
    client.flush().await.unwrap();
    let router = support::start(&env(&[
        ("DAISI_ROUTER_NATS_URL", &nats.url()),
        ("DAISI_ROUTER_COORDINATOR_URL", &coordinator.url()),
        ("DAISI_ROUTER_DEAD_LETTER_SUBJECT", "dlq.router"),
    ]))
    .await;
    let good = |n: usize| ("websocket.c1.a1.messages.ch1".to_owned(), payload(n));
    let sequences = publish_all(
        &js,
        vec![
            good(0),
            ("websocket.c1.a1".into(), payload(1)),
            ("websocket.c1.a1.messages.ch1".into(), b"not json".to_vec()),
            ("websocket.c1.a1.chats".into(), b"[1,2]".to_vec()),
            good(4),
            good(5),
        ],
    )
    .await;
    assert_eq!(edge.wait_distinct(3, Duration::from_secs(20)).await, 3);
    let got: Vec<u64> = edge.received().iter().map(|r| r.sequence).collect();
    assert_eq!(got, [sequences[0], sequences[4], sequences[5]]);

    let mut reasons = Vec::new();
    for _ in 0..3 {
        let letter = tokio::time::timeout(Duration::from_secs(10), dead_letters.next())
            .await
            .expect("dead letter in time")
            .unwrap();
        let headers = letter.headers.unwrap_or_default();
        let reason = headers
            .get("Daisi-Dead-Letter-Reason")
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        assert!(headers.get("Daisi-Original-Subject").is_some());
        reasons.push(reason);
    }
    reasons.sort();
    assert!(reasons[0].starts_with("malformed_payload"), "{reasons:?}");
    assert!(reasons[1].starts_with("malformed_payload"), "{reasons:?}");
    assert!(reasons[2].starts_with("malformed_subject"), "{reasons:?}");

    // Everything was acknowledged: nothing will be redelivered.
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream("wa_stream")
        .await
        .unwrap()
        .get_consumer("daisi-router")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = consumer.info().await.unwrap();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still pending: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = router.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"daisi_router_undeliverable_total{reason="malformed_subject""#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"daisi_router_undeliverable_total{reason="malformed_payload""#
        ),
        2.0
    );
    assert_eq!(metric(&text, "daisi_router_dead_lettered_total"), 3.0);
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_mid_stream_resumes_without_loss() {
    let mut nats = NatsServer::start().await.unwrap();
    let (_c, coordinator, edge, _e) = one_edge("edge-a").await;
    // A unary call carries the context in its metadata; on the delivery stream only each
    // event does (`stream.rs` checks that).
    edge.set_unary_only(true);
    let router = support::start(&env(&[
        ("DAISI_ROUTER_NATS_URL", &nats.url()),
        ("DAISI_ROUTER_COORDINATOR_URL", &coordinator.url()),
        ("DAISI_ROUTER_ACK_WAIT", "2s"),
        ("DAISI_ROUTER_BATCH_MAX_EVENTS", "20"),
    ]))
    .await;
    router.wait_ready_status(200, Duration::from_secs(20)).await;
    let js = jetstream(&nats.url()).await;
    let batch = |from: usize| {
        (from..from + 500)
            .map(|n| ("websocket.c1.a1.chats".to_owned(), payload(n)))
            .collect::<Vec<_>>()
    };
    // A slow edge keeps messages in flight while the server goes away.
    edge.set_delay(Some(Duration::from_millis(100)));
    let mut sequences = publish_all(&js, batch(0)).await;
    edge.wait_distinct(100, Duration::from_secs(20)).await;

    nats.restart().await.unwrap();
    assert!(edge.distinct() < 500, "restarted mid-stream");
    let js = jetstream(&nats.url()).await;
    sequences.extend(publish_all(&js, batch(500)).await);
    assert_eq!(
        edge.wait_distinct(1_000, Duration::from_secs(40)).await,
        1_000,
        "every event delivered across the restart; server logs:\n{}",
        nats.logs()
    );
    let got: std::collections::BTreeSet<u64> = edge.received().iter().map(|r| r.sequence).collect();
    assert_eq!(got, sequences.into_iter().collect());
    router.wait_ready_status(200, Duration::from_secs(20)).await;
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_turns_readiness_off_although_tcp_stays_up() {
    let nats = NatsServer::start().await.unwrap();
    let (_c, coordinator, edge, _e) = one_edge("edge-a").await;
    // A unary call carries the context in its metadata; on the delivery stream only each
    // event does (`stream.rs` checks that).
    edge.set_unary_only(true);
    let router = support::start(&env(&[
        ("DAISI_ROUTER_NATS_URL", &nats.url()),
        ("DAISI_ROUTER_COORDINATOR_URL", &coordinator.url()),
        ("DAISI_ROUTER_HEARTBEAT", "300ms"),
    ]))
    .await;
    router.wait_ready_status(200, Duration::from_secs(20)).await;
    // SIGSTOP: the process and its sockets stay, but no heartbeat or message comes.
    nats.signal(Signal::SIGSTOP).unwrap();
    router.wait_ready_status(503, Duration::from_secs(10)).await;
    let (_, body) = router.ready().await;
    assert_eq!(body["dependencies"]["nats"], "DOWN", "{body}");
    nats.signal(Signal::SIGCONT).unwrap();
    router.wait_ready_status(200, Duration::from_secs(20)).await;
    let js = jetstream(&nats.url()).await;
    publish_all(&js, vec![("websocket.c1.a1.chats".into(), payload(0))]).await;
    assert_eq!(edge.wait_distinct(1, Duration::from_secs(20)).await, 1);
    router.stop().await;
}

fn memory() -> MemoryStream {
    MemoryStream::new(MemorySettings {
        ack_wait: Duration::from_secs(5),
        ..MemorySettings::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_dies_holds_its_events_until_its_pod_is_gone() {
    let (coordinator, coordinator_server, alive, _alive_server) = one_edge("edge-a").await;
    let dying = Edge::new("edge-b");
    let dying_server = dying.serve().await;
    coordinator.add_pod("edge-b", &dying_server.url());
    coordinator.subscribe_chat("edge-b", "c1", "a1", "ch2");
    coordinator.subscribe_chat("edge-b", "c1", "a1", "ch1");
    let stream = memory();
    let router = support::start_with(
        &env(&[
            ("DAISI_ROUTER_SOURCE", "memory"),
            ("DAISI_ROUTER_COORDINATOR_URL", &coordinator_server.url()),
            ("DAISI_ROUTER_ACK_WAIT", "2s"),
        ]),
        stream.consumer(),
    )
    .await;
    let publisher = stream.clone();
    publisher
        .publish(outgoing("websocket.c1.a1.messages.ch2", 0))
        .await
        .unwrap();
    assert_eq!(dying.wait_distinct(1, Duration::from_secs(10)).await, 1);
    assert!(
        stream.is_empty() || {
            tokio::time::sleep(Duration::from_millis(200)).await;
            stream.is_empty()
        }
    );

    dying_server.kill();
    dying.set_unavailable(true);
    for n in 1..=5 {
        // ch2 only goes to the dead edge; ch1 to both.
        publisher
            .publish(outgoing("websocket.c1.a1.messages.ch2", n))
            .await
            .unwrap();
        publisher
            .publish(outgoing("websocket.c1.a1.messages.ch1", n))
            .await
            .unwrap();
    }
    // The live edge is not held up by the dead one.
    assert_eq!(alive.wait_distinct(5, Duration::from_secs(10)).await, 5);
    // Nothing for the dead edge is acknowledged while the coordinator still lists the pod,
    // even past the ack wait (in-progress acks keep the messages with this router).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stream.len(), 10, "held, not acknowledged");
    let text = router.metrics().await;
    assert_eq!(metric(&text, "daisi_router_acks_pending"), 10.0);
    assert_eq!(metric(&text, "daisi_router_redelivered_total"), 0.0);
    assert!(metric(&text, r#"daisi_router_edge_state{edge="edge-b""#) >= 1.0);

    coordinator.remove_pod("edge-b");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !stream.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} still held",
            stream.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = router.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"daisi_router_undeliverable_total{reason="pod_gone""#
        ),
        5.0,
        "ch2 events had no other target"
    );
    assert_eq!(
        metric(&text, r#"daisi_router_acked_total{verdict="delivered""#),
        6.0
    );
    assert!(
        stream.dead_letters().is_empty(),
        "a gone pod is not dead-lettered"
    );
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_coordinator_stops_acks_once_routes_are_stale() {
    let (coordinator, coordinator_server, edge, _e) = one_edge("edge-a").await;
    let stream = memory();
    let router = support::start_with(
        &env(&[
            ("DAISI_ROUTER_SOURCE", "memory"),
            ("DAISI_ROUTER_COORDINATOR_URL", &coordinator_server.url()),
            ("DAISI_ROUTER_ROUTE_CACHE_TTL", "1500ms"),
            // Hold, not serve stale: this test is about events waiting in the stream.
            ("DAISI_ROUTER_ROUTE_STALE_IF_ERROR", "0s"),
        ]),
        stream.consumer(),
    )
    .await;
    router.wait_ready_status(200, Duration::from_secs(10)).await;
    stream
        .publish(outgoing("websocket.c1.a1.chats", 0))
        .await
        .unwrap();
    assert_eq!(edge.wait_distinct(1, Duration::from_secs(10)).await, 1);
    coordinator.set_down(true);
    // Cached and fresh: still delivered.
    stream
        .publish(outgoing("websocket.c1.a1.chats", 1))
        .await
        .unwrap();
    assert_eq!(edge.wait_distinct(2, Duration::from_secs(10)).await, 2);
    // Stale: held, not acknowledged, not dropped; readiness says why.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    stream
        .publish(outgoing("websocket.c1.a1.chats", 2))
        .await
        .unwrap();
    router.wait_ready_status(503, Duration::from_secs(10)).await;
    let (_, body) = router.ready().await;
    assert_eq!(body["dependencies"]["coordinator"], "DOWN", "{body}");
    assert_eq!(edge.distinct(), 2);
    assert_eq!(stream.len(), 1, "held in the stream");
    coordinator.set_down(false);
    assert_eq!(edge.wait_distinct(3, Duration::from_secs(10)).await, 3);
    router.wait_ready_status(200, Duration::from_secs(10)).await;
    let _ = coordinator.lookups();
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_and_request_id_reach_the_edge() {
    const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let nats = NatsServer::start().await.unwrap();
    let (_c, coordinator, edge, _e) = one_edge("edge-a").await;
    // A unary call carries the context in its metadata; on the delivery stream only each
    // event does (`stream.rs` checks that).
    edge.set_unary_only(true);
    let router = support::start(&env(&[
        ("DAISI_ROUTER_NATS_URL", &nats.url()),
        ("DAISI_ROUTER_COORDINATOR_URL", &coordinator.url()),
    ]))
    .await;
    router.wait_ready_status(200, Duration::from_secs(20)).await;
    let js = jetstream(&nats.url()).await;
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", TRACEPARENT);
    headers.insert("X-Request-ID", "req-42");
    js.publish_with_headers("websocket.c1.a1.agents", headers, payload(0).into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(edge.wait_distinct(1, Duration::from_secs(20)).await, 1);
    let r = &edge.received()[0];
    assert_eq!(r.request_id, "req-42");
    assert_eq!(r.event_type, "agent");
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    assert!(r.traceparent.contains(trace_id), "event: {}", r.traceparent);
    assert!(
        r.call_traceparent.contains(trace_id),
        "call: {}",
        r.call_traceparent
    );
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_answers_probes_but_never_deliveries_fails_fast_after_the_grace() {
    let (coordinator, coordinator_server, alive, _alive_server) = one_edge("edge-a").await;
    let stuck = Edge::new("edge-b");
    let stuck_server = stuck.serve().await;
    coordinator.add_pod("edge-b", &stuck_server.url());
    coordinator.subscribe_chat("edge-b", "c1", "a1", "ch2");
    let stream = memory();
    let router = support::start_with(
        &env(&[
            ("DAISI_ROUTER_SOURCE", "memory"),
            ("DAISI_ROUTER_COORDINATOR_URL", &coordinator_server.url()),
            ("DAISI_ROUTER_DEAD_LETTER_SUBJECT", "dlq.router"),
            ("DAISI_ROUTER_DELIVER_TIMEOUT", "500ms"),
            ("DAISI_ROUTER_EDGE_PROBE_TIMEOUT", "200ms"),
            ("DAISI_ROUTER_EDGE_UNREACHABLE_GRACE", "2s"),
        ]),
        stream.consumer(),
    )
    .await;
    // The stuck edge takes every call and answers none within the deadline, yet its server
    // answers health probes: "slow, not gone" each time, but the failing clock keeps running.
    stuck.set_delay(Some(Duration::from_secs(60)));
    let started = tokio::time::Instant::now();
    for n in 0..5 {
        stream
            .publish(outgoing("websocket.c1.a1.messages.ch2", n))
            .await
            .unwrap();
        stream
            .publish(outgoing("websocket.c1.a1.messages.ch1", n))
            .await
            .unwrap();
    }
    assert_eq!(alive.wait_distinct(5, Duration::from_secs(5)).await, 5);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the live edge waited for the stuck one: {:?}",
        started.elapsed()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stream.dead_letters().len() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} dead letters",
            stream.dead_letters().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let given_up = started.elapsed();
    assert!(
        given_up >= Duration::from_secs(2) && given_up < Duration::from_secs(6),
        "after the grace, not before and not much later: {given_up:?}"
    );
    for (subject, letter) in stream.dead_letters() {
        assert_eq!(subject, "dlq.router");
        assert!(
            letter
                .reason
                .starts_with("edge_unreachable: edge edge-b unreachable"),
            "{}",
            letter.reason
        );
    }
    assert!(stream.is_empty(), "every message acknowledged");
    let text = router.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"daisi_router_undeliverable_total{reason="edge_unreachable""#
        ),
        5.0
    );
    assert_eq!(
        metric(&text, r#"daisi_router_acked_total{verdict="delivered""#),
        5.0,
        "the live edge's events"
    );
    router.stop().await;
}
