//! The delivery stream (`DeliverStream`, one per router and edge) against a stub edge served
//! over gRPC: answers pair with their batches in order, an edge older than the stream gets
//! unary calls, and an edge that stops answering on the stream is marked failing within the
//! probe timeout.

use crate::support::stubs::{Coordinator, Edge};
use crate::support::{self, env, metric, payload};
use daisi_domain::subject::{DeliveryTarget, Scope};
use daisi_router::forward::grpc::GrpcEdgeClient;
use daisi_router::forward::{DeliverCall, EdgeClient, EventOutcome, OutEvent};
use daisi_router::source::memory::{MemorySettings, MemoryStream};
use daisi_router::source::{Outgoing, Publisher, TraceHeaders};
use daisi_runtime::internal::ClientAuth;
use std::sync::Arc;
use std::time::Duration;

fn event(sequence: u64, subject: &str) -> Arc<OutEvent> {
    Arc::new(OutEvent {
        stream_sequence: sequence,
        subject: subject.to_owned(),
        target: DeliveryTarget {
            company: "c1".parse().unwrap(),
            agent: "a1".parse().unwrap(),
            scope: Scope::Agent,
        },
        event_type: "chat".to_owned(),
        payload: payload(0).into(),
        request_id: None,
        traceparent: Some(format!(
            "00-0af7651916cd43dd8448eb211c80319c-{sequence:016x}-01"
        )),
        tracestate: None,
        published_at: None,
        stream_epoch: 0,
    })
}

/// Delivers `batch` events per call in `calls` concurrent calls; events with an odd sequence
/// have a subject the edge rejects. Returns each call's events and outcomes.
async fn deliver_concurrently(
    client: &GrpcEdgeClient,
    address: &str,
    calls: u64,
    batch: u64,
) -> Vec<(Vec<Arc<OutEvent>>, Vec<EventOutcome>)> {
    let pod = "edge-a".parse().unwrap();
    let batches: Vec<Vec<Arc<OutEvent>>> = (0..calls)
        .map(|call| {
            (0..batch)
                .map(|i| {
                    let sequence = call * batch + i + 1;
                    let kind = if sequence % 2 == 1 { "odd" } else { "even" };
                    event(sequence, &format!("websocket.c1.a1.{kind}"))
                })
                .collect()
        })
        .collect();
    let answers = futures_util::future::join_all(batches.iter().map(|events| {
        client.deliver(DeliverCall {
            pod: &pod,
            address,
            events,
            router_id: "router-test",
        })
    }))
    .await;
    batches
        .into_iter()
        .zip(answers)
        .map(|(events, answer)| (events, answer.expect("delivered")))
        .collect()
}

fn assert_paired(answers: &[(Vec<Arc<OutEvent>>, Vec<EventOutcome>)]) {
    for (events, outcomes) in answers {
        assert_eq!(events.len(), outcomes.len());
        for (event, outcome) in events.iter().zip(outcomes) {
            let rejected = matches!(outcome, EventOutcome::Rejected(_));
            assert_eq!(
                rejected,
                event.stream_sequence % 2 == 1,
                "event {} got the outcome of another: {outcome:?}",
                event.stream_sequence
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_on_the_stream_pair_with_their_batches_in_order() {
    let edge = Edge::new("edge-a");
    edge.reject_subjects_containing("odd");
    let server = edge.serve().await;
    let client = GrpcEdgeClient::new(2, Duration::from_secs(5), ClientAuth::none());
    let answers = deliver_concurrently(&client, &server.url(), 64, 3).await;
    assert_paired(&answers);
    assert_eq!(edge.streams(), 1, "one stream for every batch");
    assert_eq!(edge.unary_calls(), 0);
    assert_eq!(edge.calls(), 64, "one request per batch on the stream");
    // Each event keeps its own trace context on the stream.
    let received = edge.received();
    assert!(
        received
            .iter()
            .all(|r| r.traceparent.ends_with(&format!("{:016x}-01", r.sequence))),
        "per-event trace context"
    );
    // The same stream carries later batches too.
    let again = deliver_concurrently(&client, &server.url(), 4, 2).await;
    assert_paired(&again);
    assert_eq!(edge.streams(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_without_the_stream_gets_unary_calls() {
    let edge = Edge::new("edge-a");
    edge.reject_subjects_containing("odd");
    edge.set_unary_only(true);
    let server = edge.serve().await;
    let client = GrpcEdgeClient::new(2, Duration::from_secs(5), ClientAuth::none());
    let first = deliver_concurrently(&client, &server.url(), 1, 3).await;
    assert_paired(&first);
    let later = deliver_concurrently(&client, &server.url(), 8, 2).await;
    assert_paired(&later);
    assert_eq!(
        edge.streams(),
        1,
        "asked once, not again after UNIMPLEMENTED"
    );
    assert_eq!(edge.unary_calls(), 9);
    assert_eq!(
        edge.distinct(),
        8,
        "the even sequences 2 to 16 (odd ones are rejected)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_stops_answering_on_the_stream_is_marked_failing_within_the_probe_timeout() {
    let coordinator = Coordinator::default();
    let coordinator_server = coordinator.serve().await;
    let edge = Edge::new("edge-a");
    let edge_server = edge.serve().await;
    coordinator.add_pod("edge-a", &edge_server.url());
    coordinator.subscribe_agent("edge-a", "c1", "a1");
    let stream = MemoryStream::new(MemorySettings {
        ack_wait: Duration::from_secs(30),
        ..MemorySettings::default()
    });
    let router = support::start_with(
        &env(&[
            ("DAISI_ROUTER_SOURCE", "memory"),
            ("DAISI_ROUTER_COORDINATOR_URL", &coordinator_server.url()),
            // The batch's own deadline is far away: only the probe can find the edge silent.
            ("DAISI_ROUTER_DELIVER_TIMEOUT", "20s"),
            ("DAISI_ROUTER_EDGE_PROBE_TIMEOUT", "300ms"),
            ("DAISI_ROUTER_EDGE_UNREACHABLE_GRACE", "20s"),
        ]),
        stream.consumer(),
    )
    .await;
    let publish = |n: usize| Outgoing {
        subject: "websocket.c1.a1.chats".into(),
        payload: payload(n).into(),
        trace: TraceHeaders::default(),
    };
    stream.publish(publish(0)).await.unwrap();
    assert_eq!(edge.wait_distinct(1, Duration::from_secs(10)).await, 1);
    assert_eq!(edge.streams(), 1, "delivered on the stream");
    let state = r#"daisi_router_edge_state{edge="edge-a""#;
    let text = router.metrics().await;
    assert!(text.contains(state), "{text}");
    assert_eq!(metric(&text, state), 0.0, "healthy");

    edge.set_frozen(true);
    let frozen_at = tokio::time::Instant::now();
    stream.publish(publish(1)).await.unwrap();
    let deadline = frozen_at + Duration::from_secs(5);
    while metric(&router.metrics().await, state) != 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still not failing after {:?}",
            frozen_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failing_after = frozen_at.elapsed();
    // Probe timeout after the batch was sent, plus the probe's own timeout.
    assert!(
        failing_after < Duration::from_millis(1500),
        "failing after {failing_after:?}, the probe timeout is 300 ms"
    );

    // Back again: the held event goes out on a fresh stream.
    edge.set_frozen(false);
    assert_eq!(edge.wait_distinct(2, Duration::from_secs(10)).await, 2);
    assert!(edge.streams() >= 2, "the silent stream was replaced");
    router.stop().await;
}

/// A stream closed because its batches got no answer in time (a slow edge) hands the edge
/// none of the batches still queued behind the transport: their waiters were told the stream
/// ended and the lanes send them again on a fresh stream, so a copy still going out on the old
/// one would run on the edge beside the retry (events reordered for some sockets, or settled
/// as duplicates before any socket has them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stream_sends_none_of_its_queued_batches() {
    const BATCHES: u64 = 24;
    const DELAY: Duration = Duration::from_millis(100);
    let edge = Edge::new("edge-a");
    edge.set_delay(Some(DELAY));
    let server = edge.serve().await;
    let client = GrpcEdgeClient::new(1, Duration::from_millis(50), ClientAuth::none());
    let pod = "edge-a".parse().unwrap();
    let address = server.url();
    // 256 KiB per batch: the edge's flow-control window (1 MiB) takes a few, the rest wait on
    // the router's side of the stream.
    let batches: Vec<Vec<Arc<OutEvent>>> = (1..=BATCHES)
        .map(|sequence| {
            let mut big = (*event(sequence, "websocket.c1.a1.chats")).clone();
            big.payload = vec![b'x'; 256 * 1024].into();
            vec![Arc::new(big)]
        })
        .collect();
    let answers = futures_util::future::join_all(batches.iter().map(|events| {
        client.deliver(DeliverCall {
            pod: &pod,
            address: &address,
            events,
            router_id: "router-test",
        })
    }))
    .await;
    assert!(
        answers.iter().all(Result::is_err),
        "no batch answered within 50 ms"
    );
    // Long enough for the edge to work through every batch, had they all been sent.
    tokio::time::sleep(DELAY * BATCHES as u32 + Duration::from_secs(1)).await;
    let handled = edge.calls();
    assert!(
        handled <= 6,
        "the edge handled {handled} of {BATCHES} batches after their stream was closed"
    );
}
