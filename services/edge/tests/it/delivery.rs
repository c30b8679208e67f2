//! `EdgeDelivery` fan-out through the local index, per compat.md "Delivery": chats/contacts to
//! every user socket of the agent, messages to the sockets that selected the chat, agents to
//! users and matching admins; one rendered frame per event; duplicates, rejects, wrong pod.

use crate::support::*;
use daisi_proto::edge::v1::{DeliveryScope, EventOutcome};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn events_reach_exactly_the_interested_sockets() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-fanout", |_| {}).await;
    let mut u1 = user(edge.http, "c1", "a1", "u1").await;
    let mut u2 = user(edge.http, "c1", "a1", "u2").await;
    let mut other_agent = user(edge.http, "c1", "a2", "u3").await;
    let mut any_admin = admin(edge.http, &admin_token("ad-any", None, None, None)).await;
    let mut c1_admin = admin(edge.http, &admin_token("ad-c1", Some("c1"), None, None)).await;
    let mut a2_admin = admin(
        edge.http,
        &admin_token("ad-a2", None, Some("c1"), Some("a2")),
    )
    .await;
    let mut c9_admin = admin(edge.http, &admin_token("ad-c9", Some("c9"), None, None)).await;

    let payload =
        r#"{"event_id":"1:chats:9","company_id":"c1","row_data":{"x":[1, 2]},"extra":true}"#;
    let results = edge
        .deliver(vec![
            agent_users_event(1, payload),
            event(
                2,
                "c1",
                "a1",
                DeliveryScope::AgentUsersAndAdmins,
                "",
                "agent",
                r#"{"k":1}"#,
            ),
        ])
        .await;
    assert_eq!(results[0].outcome, EventOutcome::Delivered as i32);
    assert_eq!(results[0].sockets_reached, 2);
    assert_eq!(results[1].sockets_reached, 4, "2 users + any + c1 admins");
    for c in [&mut u1, &mut u2] {
        assert_eq!(
            c.next_text().await,
            r#"{"type":"event","payload":{"event_id":"1:chats:9","company_id":"c1","row_data":{"x":[1, 2]},"extra":true,"event_type":"chat"}}"#
        );
        assert_eq!(
            c.next_json().await,
            json!({"type":"event","payload":{"k":1,"event_type":"agent"}})
        );
    }
    for c in [&mut any_admin, &mut c1_admin] {
        assert_eq!(c.next_json().await["payload"]["event_type"], "agent");
    }
    for c in [&mut other_agent, &mut a2_admin, &mut c9_admin] {
        assert_eq!(c.maybe_text(Duration::from_millis(200)).await, None);
    }

    // The same sequence again is a duplicate and reaches nobody.
    let again = edge.deliver(vec![agent_users_event(1, payload)]).await;
    assert_eq!(again[0].outcome, EventOutcome::Duplicate as i32);
    assert_eq!(u1.maybe_text(Duration::from_millis(200)).await, None);

    // Malformed events are rejected one by one; the batch goes on.
    let mixed = edge
        .deliver(vec![
            agent_users_event(3, "[1]"),
            event(4, "c.1", "a1", DeliveryScope::AgentUsers, "", "chat", "{}"),
            event(5, "c1", "a1", DeliveryScope::Unspecified, "", "chat", "{}"),
            event(6, "c1", "a1", DeliveryScope::ChatUsers, "", "message", "{}"),
            event(
                7,
                "c1",
                "a1",
                DeliveryScope::AgentUsers,
                "",
                "contact",
                "{}",
            ),
        ])
        .await;
    let outcomes: Vec<i32> = mixed.iter().map(|r| r.outcome).collect();
    let rejected = EventOutcome::Rejected as i32;
    assert_eq!(
        outcomes,
        vec![
            rejected,
            rejected,
            rejected,
            rejected,
            EventOutcome::Delivered as i32
        ]
    );
    assert!(!mixed[0].reject_reason.is_empty());
    assert_eq!(u1.next_json().await["payload"]["event_type"], "contact");

    let metrics = edge.metrics().await;
    assert!(
        metrics.contains("daisi_edge_events_delivered_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn wrong_pod_and_oversized_batches_are_call_errors() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-calls", |_| {}).await;
    let mut client = edge.delivery().await;
    let status = client
        .deliver(daisi_proto::edge::v1::DeliverRequest {
            pod_id: "someone-else".into(),
            events: vec![],
            router_id: "r".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let events = (0..1001)
        .map(|i| {
            event(
                i + 1,
                "c1",
                "a1",
                DeliveryScope::AgentUsers,
                "",
                "chat",
                "{}",
            )
        })
        .collect();
    let status = client
        .deliver(daisi_proto::edge::v1::DeliverRequest {
            pod_id: edge.pod.clone(),
            events,
            router_id: "r".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn a_slow_consumer_does_not_hold_back_the_others() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-slow", |c| c.sockets.send_queue = 4).await;
    let mut fast = user(edge.http, "c1", "a1", "fast").await;
    let _slow = user(edge.http, "c1", "a1", "slow").await; // never reads
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(64 * 1024));
    for seq in 1..=200u64 {
        let results = edge.deliver(vec![agent_users_event(seq, &big)]).await;
        assert_eq!(results[0].outcome, EventOutcome::Delivered as i32);
        // The fast reader keeps up.
        assert!(fast.next_text().await.len() > 64 * 1024);
    }
    let metrics = edge.metrics().await;
    let drops = metrics
        .lines()
        .find(|l| l.starts_with("daisi_edge_send_queue_drops_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(drops > 0, "the slow socket dropped frames: {metrics}");
}

#[tokio::test]
async fn the_close_policy_closes_a_slow_consumer_with_4008_and_spares_the_others() {
    use daisi_edge::config::SlowConsumerPolicy;
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-slow-close", |c| {
        c.sockets.send_queue = 4;
        c.sockets.slow_consumer = SlowConsumerPolicy::Close;
    })
    .await;
    let mut fast = user(edge.http, "c1", "a1", "fast").await;
    let mut slow = user(edge.http, "c1", "a1", "slow").await; // does not read until the end
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(64 * 1024));
    for seq in 1..=200u64 {
        let results = edge.deliver(vec![agent_users_event(seq, &big)]).await;
        assert_eq!(results[0].outcome, EventOutcome::Delivered as i32);
        assert!(
            fast.next_text().await.len() > 64 * 1024,
            "the fast reader keeps up"
        );
    }
    // Once it reads again, the slow socket finds what was in flight, then the close.
    let closed = slow.closed_within(Duration::from_secs(30)).await;
    assert_eq!(closed.code, Some(4008), "{:?}", closed.reason);
    assert!(
        closed.frames.len() < 200,
        "it was not sent everything: {}",
        closed.frames.len()
    );
    let metrics = edge.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("daisi_edge_slow_consumer_closes_total") && l.ends_with(" 1")),
        "{metrics}"
    );
    // The fast socket is still served.
    edge.deliver(vec![agent_users_event(201, "{}")]).await;
    assert!(fast.next_text().await.contains("event"));
}

#[tokio::test]
async fn an_open_delivery_stream_does_not_hold_the_edge_at_shutdown() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-stream-stop", |_| {}).await;
    let mut u1 = user(edge.http, "c1", "a1", "u1").await;
    let (requests, outbound) = tokio::sync::mpsc::channel(4);
    let mut answers = edge
        .delivery()
        .await
        .deliver_stream(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
        .expect("stream opens")
        .into_inner();
    let batch = |sequence: u64| daisi_proto::edge::v1::DeliverRequest {
        pod_id: edge.pod.clone(),
        events: vec![agent_users_event(
            sequence,
            &format!(r#"{{"k":{sequence}}}"#),
        )],
        router_id: "test".into(),
    };
    for sequence in [1, 2] {
        requests.send(batch(sequence)).await.expect("sent");
        let answer = answers
            .message()
            .await
            .expect("answered")
            .expect("not ended");
        assert_eq!(answer.results[0].stream_sequence, sequence);
        assert_eq!(answer.results[0].outcome(), EventOutcome::Delivered);
        assert_eq!(u1.next_json().await["payload"]["k"], sequence);
    }
    // The router keeps its stream open (`requests` is alive): the edge ends it itself.
    edge.shutdown().await;
    let ended = tokio::time::timeout(Duration::from_secs(5), answers.message())
        .await
        .expect("the stream ends with the edge");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    drop(requests);
}
