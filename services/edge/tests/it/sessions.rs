//! Exclusive sessions against the real coordinator (memory store): takeover on the same pod
//! and across two edges (4402 to the old socket, the new one keeps receiving), an operator's
//! kill through the pod command stream, the heartbeat inbox and the session audit closing
//! sessions whose kill command was lost (the fault injector drops the edge's kill commands),
//! sessions living with the pod's heartbeat, and failed releases retried.

use crate::support::*;
use daisi_proto::coordinator::v1 as cpb;
use daisi_proto::edge::v1::DeliveryScope;
use std::time::Duration;

const CONFLICT_FRAME: &str = r#"{"type":"error","payload":{"code":"SessionConflict","message":"Session conflict","details":"Session taken over by another connection"}}"#;

fn assert_taken_over(closed: &Closed) {
    assert_eq!(
        closed.frames.last().map(String::as_str),
        Some(CONFLICT_FRAME),
        "{closed:?}"
    );
    assert_eq!(closed.code, Some(4402));
    assert_eq!(
        closed.reason,
        "SessionConflict: Session taken over by another connection"
    );
}

async fn chats_reach(edge: &TestEdge, seq: u64) -> u32 {
    edge.deliver(vec![agent_users_event(seq, r#"{"n":1}"#)])
        .await[0]
        .sockets_reached
}

#[tokio::test]
async fn takeover_on_the_same_pod() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-same", |_| {}).await;
    let mut old = user(edge.http, "c1", "a1", "u1").await;
    let mut new = user(edge.http, "c1", "a1", "u1").await;
    assert_taken_over(&old.closed().await);
    eventually("only the new socket is left", || async {
        chats_reach(&edge, 0).await == 1
    })
    .await;
    assert_eq!(chats_reach(&edge, 1).await, 1);
    assert!(new.next_text().await.contains(r#""event_type":"chat""#));
    let (pod, _) = coord.holder("c1", "a1", "u1").await.expect("held");
    assert_eq!(pod, "edge-same");
}

#[tokio::test]
async fn takeover_across_two_edges() {
    let coord = Coord::start().await;
    let edge_a = TestEdge::start(&coord.url, "edge-a", |_| {}).await;
    let edge_b = TestEdge::start(&coord.url, "edge-b", |_| {}).await;
    let mut old = user(edge_a.http, "c1", "a1", "u1").await;
    let mut new = user(edge_b.http, "c1", "a1", "u1").await;
    assert_taken_over(&old.closed().await);
    eventually("edge-a has no socket left", || async {
        chats_reach(&edge_a, 0).await == 0
    })
    .await;
    assert_eq!(chats_reach(&edge_b, 5).await, 1);
    assert!(new.next_text().await.contains(r#""event_type":"chat""#));
    assert_eq!(
        coord.holder("c1", "a1", "u1").await.expect("held").0,
        "edge-b"
    );
    // The old edge released nothing of the new holder's (compare-and-delete).
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        coord.holder("c1", "a1", "u1").await.expect("still held").0,
        "edge-b"
    );
}

#[tokio::test]
async fn operator_kill_arrives_through_the_command_stream() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-kill", |_| {}).await;
    let mut c = user(edge.http, "c1", "a1", "u1").await;
    let mut bystander = user(edge.http, "c1", "a1", "u2").await;
    let key = cpb::SessionKey {
        kind: Some(cpb::session_key::Kind::User(cpb::UserSessionKey {
            company_id: "c1".into(),
            agent_id: "a1".into(),
            user_id: "u1".into(),
        })),
    };
    let killed = coord
        .admin()
        .await
        .kill_session(cpb::KillSessionRequest {
            key: Some(key),
            reason: "test".into(),
            connection_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(killed.killed);
    assert_taken_over(&c.closed().await);
    bystander.send_text(r#"{"type":"ready"}"#).await;
    assert_eq!(bystander.next_text().await, r#"{"type":"ready"}"#);
}

#[tokio::test]
async fn the_audit_closes_sessions_whose_kill_and_inbox_were_lost() {
    // Heartbeats every 10 s (pod lease 30 s) and their inbox is lost too: only the session
    // audit (every second here) can tell the edge in time.
    let coord = Coord::start().await;
    let (coordinator, faults) = coord.faulty();
    let edge = TestEdge::start_with(coordinator, "edge-audit", |c| {
        c.session_audit_interval = Duration::from_secs(1);
    })
    .await;
    let thief = TestEdge::start(&coord.url, "edge-thief", |_| {}).await;
    let mut c = user(edge.http, "c1", "a1", "u1").await;
    let mut bystander = user(edge.http, "c1", "a1", "u2").await;
    faults.drop_kills(true);
    faults.drop_inbox(true);
    let _new = user(thief.http, "c1", "a1", "u1").await;
    assert_taken_over(&c.closed_within(Duration::from_secs(3)).await);
    bystander.send_text(r#"{"type":"ready"}"#).await;
    assert_eq!(bystander.next_text().await, r#"{"type":"ready"}"#);
}

#[tokio::test]
async fn the_heartbeat_inbox_closes_sessions_whose_kill_was_lost() {
    // The audit is far apart (the default minute): only the pod heartbeat (every 300 ms) can
    // tell the edge in time.
    let coord = Coord::start_with(|c| {
        c.pod_lease = Duration::from_millis(900);
    })
    .await;
    let (coordinator, faults) = coord.faulty();
    let edge = TestEdge::start_with(coordinator, "edge-inbox", |_| {}).await;
    let thief = TestEdge::start(&coord.url, "edge-thief", |_| {}).await;
    let mut c = user(edge.http, "c1", "a1", "u1").await;
    let mut bystander = user(edge.http, "c1", "a1", "u2").await;
    faults.drop_kills(true);
    let _new = user(thief.http, "c1", "a1", "u1").await;
    assert_taken_over(&c.closed_within(Duration::from_secs(3)).await);
    bystander.send_text(r#"{"type":"ready"}"#).await;
    assert_eq!(bystander.next_text().await, r#"{"type":"ready"}"#);
}

/// Sessions live with the pod's heartbeat: with audits a minute apart and a pod lease of
/// 900 ms, a session is still held by the same connection after more than four pod leases.
#[tokio::test]
async fn sessions_live_with_the_pod_heartbeat_without_audits() {
    let coord = Coord::start_with(|c| {
        c.pod_lease = Duration::from_millis(900);
    })
    .await;
    let edge = TestEdge::start(&coord.url, "edge-alive", |_| {}).await;
    let mut c = user(edge.http, "c1", "a1", "u1").await;
    let (_, first) = coord.holder("c1", "a1", "u1").await.expect("held");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (pod, now) = coord.holder("c1", "a1", "u1").await.expect("still held");
    assert_eq!(pod, "edge-alive");
    assert_eq!(now, first, "the same connection holds it");
    c.send_text(r#"{"type":"ready"}"#).await;
    assert_eq!(c.next_text().await, r#"{"type":"ready"}"#);
}

/// A release the coordinator did not take is sent again (after a backoff) and counted; the
/// user's session is free afterwards.
#[tokio::test]
async fn a_failed_release_is_retried_and_counted() {
    let coord = Coord::start().await;
    let (coordinator, faults) = coord.faulty();
    let edge = TestEdge::start_with(coordinator, "edge-release", |_| {}).await;
    let c = user(edge.http, "c1", "a1", "u1").await;
    assert!(coord.holder("c1", "a1", "u1").await.is_some());
    faults.fail_releases(3);
    c.close().await;
    eventually("the release goes through after three failures", || async {
        coord.holder("c1", "a1", "u1").await.is_none()
    })
    .await;
    let metrics = edge.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "daisi_edge_session_release_failures_total",
            &["retried"]
        ),
        3
    );
    assert_eq!(
        metric(
            &metrics,
            "daisi_edge_session_release_failures_total",
            &["given_up"]
        ),
        0
    );
}

/// How many chat routes `pod` holds.
async fn chats_of(coord: &Coord, pod: &str) -> usize {
    coord
        .routes_of(pod)
        .await
        .iter()
        .filter(|r| r.contains("Chat("))
        .count()
}

#[tokio::test]
async fn a_select_whose_answers_are_lost_is_made_again_before_failing() {
    let coord = Coord::start().await;
    let (coordinator, faults) = coord.faulty();
    let edge = TestEdge::start_with(coordinator, "edge-select", |_| {}).await;
    let mut c = user(edge.http, "c1", "a1", "u1").await;

    // Two answers lost in a row: the third call is answered, and the client never hears of it.
    faults.lose_select_answers(2);
    c.send_text(r#"{"type":"select_chat","payload":{"chat_id":"A"}}"#)
        .await;
    eventually("the chat route is registered", || async {
        chats_of(&coord, "edge-select").await == 1
    })
    .await;
    // A fresh sequence each time: the edge drops a repeat of a delivered one.
    let seq = std::sync::atomic::AtomicU64::new(1);
    eventually("the selection is applied", || async {
        let n = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let event = event(
            n,
            "c1",
            "a1",
            DeliveryScope::ChatUsers,
            "A",
            "message",
            "{}",
        );
        edge.deliver(vec![event]).await[0].sockets_reached == 1
    })
    .await;
    let text = c.next_text().await;
    assert!(text.contains(r#""event_type":"message""#), "{text}");
    assert!(
        metric(
            &edge.metrics().await,
            "daisi_edge_chat_selections_total",
            &["retried"]
        ) == 2
    );

    // Every answer lost: after its repeats the client is told, once.
    faults.lose_select_answers(10);
    c.send_text(r#"{"type":"select_chat","payload":{"chat_id":"B"}}"#)
        .await;
    let text = c.next_text().await;
    assert!(text.contains("SubscriptionFailure"), "{text}");
    assert_eq!(c.maybe_text(Duration::from_millis(300)).await, None);
}

#[tokio::test]
async fn an_edge_is_not_ready_before_its_kill_command_stream_is_subscribed() {
    // Sockets admitted before the stream is up would miss the kills of their takeovers (a
    // reconnect storm right after start left several open): the edge stays out of its load
    // balancer until the first stream is subscribed.
    let coord = Coord::start().await;
    let (coordinator, faults) = coord.faulty();
    faults.refuse_watch(true);
    let edge = TestEdge::spawn(
        "http://127.0.0.1:1",
        "edge-unwatched",
        |_| {},
        Some(coordinator),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let answer = daisi_testkit::get_json(edge.http, "/ready").await;
        if let Ok((503, body)) = &answer
            && body["dependencies"]["coordinator"] == "UP"
        {
            break body.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never registered: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["dependencies"]["kill_commands"], "DOWN", "{body}");
    // Still not ready a while later: registered, but no stream.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = daisi_testkit::get_json(edge.http, "/ready")
        .await
        .expect("ready");
    assert_eq!(status, 503, "{body}");
    faults.refuse_watch(false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = daisi_testkit::get_json(edge.http, "/ready")
            .await
            .expect("ready");
        if status == 200 {
            assert_eq!(body["dependencies"]["kill_commands"], "UP", "{body}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A coordinator whose pod lease (3 s) is longer than the edge's retry after a failed heartbeat
/// (1 s), so that a retry finds a new registration still live; an edge `pod` behind the fault
/// injector with one socket of c1/a1/u1, whose heartbeats then fail until the pod's lease
/// lapses and its state is purged. The kill stream stays away: its resubscription would start
/// an audit, which repairs the pod's state by another way; these tests are about the heartbeat
/// and the restore it starts. Heartbeats still fail on return.
struct LapsedPod {
    coord: Coord,
    edge: TestEdge,
    faults: std::sync::Arc<daisi_edge::coordinator::faults::Faults>,
    client: Client,
    connection: String,
}

async fn lapsed_pod(pod: &str) -> LapsedPod {
    let coord = Coord::start_with(|c| c.pod_lease = Duration::from_secs(3)).await;
    let (coordinator, faults) = coord.faulty();
    let edge = TestEdge::start_with(coordinator, pod, |_| {}).await;
    let client = user(edge.http, "c1", "a1", "u1").await;
    let (_, connection) = coord.holder("c1", "a1", "u1").await.expect("held");
    faults.refuse_watch(true);
    faults.fail_heartbeats(true);
    eventually("the pod's lease lapses and its state is purged", || async {
        coord.holder("c1", "a1", "u1").await.is_none()
    })
    .await;
    LapsedPod {
        coord,
        edge,
        faults,
        client,
        connection,
    }
}

/// The pod's lease lapses and the heartbeat that registers it anew loses its answer; the retry
/// is answered RENEWED. The new registration number in that answer still tells the edge to
/// restore: the socket's session and route are held by the pod again.
#[tokio::test]
async fn a_lost_registered_answer_still_restores_sessions_and_routes() {
    let LapsedPod {
        coord,
        edge: _edge,
        faults,
        client: mut c,
        connection,
    } = lapsed_pod("edge-lost-registered").await;
    faults.lose_registered_answers(1);
    faults.fail_heartbeats(false);
    eventually("the socket's session is restored", || async {
        coord.holder("c1", "a1", "u1").await
            == Some(("edge-lost-registered".to_owned(), connection.clone()))
    })
    .await;
    assert!(
        !coord.routes_of("edge-lost-registered").await.is_empty(),
        "routes restored too"
    );
    c.send_text(r#"{"type":"ready"}"#).await;
    assert_eq!(
        c.next_text().await,
        r#"{"type":"ready"}"#,
        "the socket lives"
    );
}

/// A socket closes while its session's restore is in flight: the grant the restore made after
/// the close is released too (the close's release carried the old token, which no longer
/// matched), instead of staying held by no socket until the pod's registration ends.
#[tokio::test]
async fn a_restore_granted_to_a_socket_that_just_closed_is_released() {
    let LapsedPod {
        coord,
        edge: _edge,
        faults,
        client: c,
        connection,
    } = lapsed_pod("edge-restore-closed").await;
    // The restore's acquire is applied at once; its answer reaches the edge 2 s later.
    faults.delay_acquire_replies(Duration::from_secs(2));
    faults.fail_heartbeats(false);
    eventually("the restore's grant is applied", || async {
        coord.holder("c1", "a1", "u1").await
            == Some(("edge-restore-closed".to_owned(), connection.clone()))
    })
    .await;
    c.close().await;
    eventually("the grant is released once its answer arrives", || async {
        coord.holder("c1", "a1", "u1").await.is_none()
    })
    .await;
}
