//! Admissions that race the rest of the system, against the real coordinator (memory store)
//! whose acquire replies are held back by the edge's fault injector: the acquire runs on the
//! coordinator, and its answer reaches the edge late.
//!
//! - A takeover on another edge lands while the reply is on its way: the kill reaches the
//!   first edge before its socket is indexed, and that socket is still closed with 4402.
//! - The client drops its TCP connection while the reply is on its way: nothing is left
//!   behind, neither the session nor the route (checked through the coordinator's admin API).
//! - The reply is lost (the edge sees a failure) after the acquire ran, or the acquire reaches
//!   the coordinator only after the edge gave up on it: again nothing is left behind, and a
//!   late acquire takes nothing over.

use crate::support::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How long acquire replies are held back: long enough for a takeover elsewhere to complete.
const HELD: Duration = Duration::from_millis(1_500);

fn user_path(company: &str, agent: &str, user: &str) -> String {
    format!(
        "/ws/{company}/{agent}?token={}",
        enc(&user_token(company, agent, user))
    )
}

/// Delivers one agent-wide `chat` event of c1/a1 through `edge`: how many sockets it reached.
async fn agent_event_reached(edge: &TestEdge) -> u32 {
    edge.deliver(vec![agent_users_event(1, "{}")]).await[0].sockets_reached
}

async fn acquire_held(faults: &daisi_edge::coordinator::faults::Faults) {
    eventually(
        "the acquire reached the coordinator and its reply is held",
        || async { faults.acquires_held() == 1 },
    )
    .await;
}

#[tokio::test]
async fn a_kill_that_overtakes_the_acquire_reply_still_closes_the_socket() {
    let coord = Coord::start().await;
    let (coordinator, faults) = coord.faulty();
    let slow = TestEdge::start_with(coordinator, "edge-slow", |_| {}).await;
    let other = TestEdge::start(&coord.url, "edge-other", |_| {}).await;
    faults.delay_acquire_replies(HELD);

    let http = slow.http;
    let first =
        tokio::spawn(async move { open(http, &user_path("c1", "a1", "u1"), Some(API_KEY)).await });
    acquire_held(&faults).await;
    // The newcomer on the other edge takes the session; its kill for the first connection
    // reaches edge-slow while that socket is not indexed yet.
    let mut second = user(other.http, "c1", "a1", "u1").await;
    assert_eq!(
        coord.holder("c1", "a1", "u1").await.expect("held").0,
        "edge-other"
    );

    let mut first = match first.await.expect("join") {
        Ok(client) => client,
        Err(refused) => panic!("refused instead of closed: {refused:?}"),
    };
    let closed = first.closed_within(HELD + WAIT).await;
    assert_eq!(closed.code, Some(4402), "{closed:?}");
    // Before `ready`, or right after it: never an event.
    assert!(
        closed
            .frames
            .iter()
            .all(|f| f == r#"{"type":"ready"}"# || f.contains("SessionConflict")),
        "{closed:?}"
    );
    assert!(
        metric(
            &slow.metrics().await,
            "daisi_edge_kill_commands_total",
            &["applied_at_admission"]
        ) >= 1
    );
    // The newcomer is the one that streams.
    assert_eq!(agent_event_reached(&other).await, 1);
    assert!(second.next_text().await.contains(r#""event_type":"chat""#));
    eventually("edge-slow holds no socket", || async {
        metric(&slow.metrics().await, "daisi_edge_sockets", &["user"]) == 0
    })
    .await;
    assert_eq!(
        coord.holder("c1", "a1", "u1").await.expect("still held").0,
        "edge-other"
    );
}

#[tokio::test]
async fn a_client_gone_during_its_acquire_leaves_no_session_and_no_route() {
    let coord = Coord::start().await;
    let (coordinator, faults) = coord.faulty();
    let edge = TestEdge::start_with(coordinator, "edge-gone", |_| {}).await;
    faults.delay_acquire_replies(HELD);

    let mut tcp = tokio::net::TcpStream::connect(edge.http).await.unwrap();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: json.v1\r\nX-API-Key: {API_KEY}\r\n\r\n",
        user_path("c1", "a1", "u1"),
        edge.http
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    acquire_held(&faults).await;
    assert_eq!(
        coord.holder("c1", "a1", "u1").await.expect("granted").0,
        "edge-gone"
    );
    assert_eq!(coord.routes_of("edge-gone").await.len(), 1);
    // The client goes away while the grant is on its way back.
    drop(tcp);

    // The reply arrives after HELD; the release batch (200 ms) and the route batch (500 ms)
    // follow.
    let deadline = HELD + WAIT;
    let started = tokio::time::Instant::now();
    while coord.holder("c1", "a1", "u1").await.is_some()
        || !coord.routes_of("edge-gone").await.is_empty()
    {
        assert!(
            started.elapsed() < deadline,
            "left behind: session {:?}, routes {:?}",
            coord.holder("c1", "a1", "u1").await,
            coord.routes_of("edge-gone").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = edge.metrics().await;
    assert_eq!(metric(&metrics, "daisi_edge_sockets", &["user"]), 0);
    assert_eq!(
        metric(
            &metrics,
            "daisi_edge_upgrades_rejected_total",
            &["client_gone"]
        ),
        1
    );
}

/// Waits until the coordinator holds neither a session of `u1` nor a route of `pod`.
async fn nothing_left(coord: &Coord, pod: &str, within: Duration) {
    let started = tokio::time::Instant::now();
    while coord.holder("c1", "a1", "u1").await.is_some() || !coord.routes_of(pod).await.is_empty() {
        assert!(
            started.elapsed() < within,
            "left behind: session {:?}, routes {:?}",
            coord.holder("c1", "a1", "u1").await,
            coord.routes_of(pod).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// u1 selects a chat and leaves: the selection is kept by the coordinator, so the next acquire
/// of u1 restores it and registers its chat route along with the agent route.
async fn leave_a_selection(coord: &Coord, edge: &TestEdge, pod: &str) {
    let mut client = user(edge.http, "c1", "a1", "u1").await;
    client
        .send_text(r#"{"type":"select_chat","payload":{"chat_id":"ch1"}}"#)
        .await;
    eventually("the chat route is registered", || async {
        coord.routes_of(pod).await.len() == 2
    })
    .await;
    client.close().await;
    nothing_left(coord, pod, WAIT).await;
}

#[tokio::test]
async fn an_acquire_whose_answer_is_lost_leaves_no_session_and_no_route() {
    let coord = Coord::start().await;
    let (coordinator, faults) = coord.faulty();
    let edge = TestEdge::start_with(coordinator, "edge-lost", |_| {}).await;
    leave_a_selection(&coord, &edge, "edge-lost").await;

    // The acquire is applied (session, agent route, restored chat route); its answer is lost.
    faults.lose_acquire_answers(true);
    let refused = open(edge.http, &user_path("c1", "a1", "u1"), Some(API_KEY))
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, 503, "{refused:?}");
    faults.lose_acquire_answers(false);

    // The abandon goes with the next release batch (200 ms); the route batch (500 ms) and the
    // reconciliation it asks for (500 ms) follow.
    nothing_left(&coord, "edge-lost", WAIT).await;
    // The user connects again normally, with the selection restored.
    let _client = user(edge.http, "c1", "a1", "u1").await;
    assert_eq!(coord.routes_of("edge-lost").await.len(), 2);
}

#[tokio::test]
async fn an_acquire_applied_after_the_edge_gave_up_is_refused() {
    let coord = Coord::start().await;
    let (coordinator, faults) = coord.faulty();
    let stuck = TestEdge::start_with(coordinator, "edge-stuck", |_| {}).await;
    let other = TestEdge::start(&coord.url, "edge-other", |_| {}).await;

    // The acquire is stuck on its way; the edge refuses the client and abandons it.
    faults.apply_acquires_late(Duration::from_millis(1_500));
    let refused = open(stuck.http, &user_path("c1", "a1", "u1"), Some(API_KEY))
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, 503, "{refused:?}");
    faults.apply_acquires_late(Duration::ZERO);
    // Meanwhile the user connects elsewhere.
    let mut client = user(other.http, "c1", "a1", "u1").await;
    eventually("the stuck acquire reached the coordinator", || async {
        faults.late_acquires_pending() == 0
    })
    .await;

    // It was refused: it took nothing over and registered nothing.
    assert_eq!(
        coord.holder("c1", "a1", "u1").await.expect("held").0,
        "edge-other"
    );
    assert!(coord.routes_of("edge-stuck").await.is_empty());
    assert_eq!(client.maybe_text(Duration::from_millis(300)).await, None);
    assert_eq!(agent_event_reached(&other).await, 1);
}

#[tokio::test]
async fn an_acquire_refused_for_a_killed_connection_closes_with_4402() {
    let coord = Coord::start().await;
    let (coordinator, faults) = coord.faulty();
    let edge = TestEdge::start_with(coordinator, "edge-retry", |_| {}).await;
    // The first answer is lost; the acquire is sent again 1.5 s later.
    faults.retry_acquires_after(HELD);
    let http = edge.http;
    let client =
        tokio::spawn(async move { open(http, &user_path("c1", "a1", "u1"), Some(API_KEY)).await });
    acquire_held(&faults).await;
    // An operator kills the session meanwhile: the connection is tombstoned, and the retried
    // acquire is refused with reason KILLED_BY_ADMIN.
    let key = daisi_proto::coordinator::v1::SessionKey {
        kind: Some(daisi_proto::coordinator::v1::session_key::Kind::User(
            daisi_proto::coordinator::v1::UserSessionKey {
                company_id: "c1".into(),
                agent_id: "a1".into(),
                user_id: "u1".into(),
            },
        )),
    };
    let killed = coord
        .admin()
        .await
        .kill_session(daisi_proto::coordinator::v1::KillSessionRequest {
            key: Some(key),
            reason: "test".into(),
            connection_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(killed.killed);

    let mut client = match client.await.expect("join") {
        Ok(client) => client,
        Err(refused) => panic!("answered {refused:?} instead of closing with 4402"),
    };
    let closed = client.closed_within(HELD + WAIT).await;
    assert_eq!(closed.code, Some(4402), "{closed:?}");
    assert_eq!(
        closed.reason,
        "SessionConflict: Session taken over by another connection"
    );
    assert_eq!(closed.frames.len(), 1, "no ready, no event: {closed:?}");
    assert!(closed.frames[0].contains("SessionConflict"), "{closed:?}");
    faults.retry_acquires_after(Duration::ZERO);
    // The route the first attempt registered is unregistered (route batch, 500 ms).
    nothing_left(&coord, "edge-retry", WAIT).await;
    assert_eq!(
        metric(&edge.metrics().await, "daisi_edge_sockets", &["user"]),
        0
    );
}

#[tokio::test]
async fn admissions_in_flight_count_against_max_connections() {
    let coord = Coord::start().await;
    let (coordinator, faults) = coord.faulty();
    let edge = TestEdge::start_with(coordinator, "edge-cap", |c| {
        c.limits.max_connections = 1;
    })
    .await;
    faults.delay_acquire_replies(Duration::from_millis(500));
    // The first admission is at the coordinator when the second arrives: the one free place
    // is taken, even though no socket is indexed yet.
    let http = edge.http;
    let first =
        tokio::spawn(async move { open(http, &user_path("c1", "a1", "u1"), Some(API_KEY)).await });
    acquire_held(&faults).await;
    let second = open(edge.http, &user_path("c1", "a1", "u2"), Some(API_KEY))
        .await
        .err()
        .expect("the second admission is refused");
    assert_eq!(second.status, 503);
    let mut first = first.await.expect("join").expect("the first is admitted");
    assert_eq!(first.next_text().await, r#"{"type":"ready"}"#);
}
