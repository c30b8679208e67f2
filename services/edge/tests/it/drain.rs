//! SIGTERM drain: not ready at once, every client gets the shutdown frame and 1001, no new
//! sockets, and afterwards the coordinator holds no session of the pod.

use crate::support::*;
use std::time::Duration;

#[tokio::test]
async fn shutdown_drains_every_socket_and_releases_sessions() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-drain", |c| {
        c.shutdown_grace = Duration::from_secs(3);
        c.drain_spread = Duration::from_millis(600);
    })
    .await;
    let http = edge.http;
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(user(http, "c1", "a1", &format!("u{i}")).await);
    }
    clients.push(admin(http, &admin_token("ad1", None, None, None)).await);
    assert!(coord.holder("c1", "a1", "u0").await.is_some());

    edge.begin_shutdown();
    eventually("not ready while draining", || async {
        matches!(daisi_testkit::get_json(http, "/ready").await, Ok((503, _)))
    })
    .await;
    let started = tokio::time::Instant::now();
    let mut close_times = Vec::new();
    for client in &mut clients {
        let closed = client.closed().await;
        close_times.push(started.elapsed());
        assert_eq!(
            closed.frames.last().map(String::as_str),
            Some(
                r#"{"type":"error","payload":{"code":"InternalServerError","message":"Service shutting down"}}"#
            )
        );
        assert_eq!(closed.code, Some(1001));
    }
    // Closes are spread, not all at once.
    let last = close_times.iter().max().unwrap();
    assert!(
        *last >= Duration::from_millis(300),
        "spread over the drain window: {close_times:?}"
    );
    edge.shutdown().await;
    for i in 0..20 {
        assert_eq!(
            coord.holder("c1", "a1", &format!("u{i}")).await,
            None,
            "u{i} released"
        );
    }
    let pods = coord
        .admin()
        .await
        .list_pods(daisi_proto::coordinator::v1::ListPodsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        pods.pods.iter().all(|p| p.pod_id != "edge-drain"),
        "deregistered"
    );
}

/// A socket whose admission was under way when the drain began (its acquire answered only
/// after the drain's last pass over the sockets) is still closed with 1001 at once, not cut
/// without a close at the drain deadline.
#[tokio::test]
async fn a_socket_admitted_while_the_drain_begins_is_closed_with_1001() {
    let coord = Coord::start().await;
    let (coordinator, faults) = coord.faulty();
    let edge = TestEdge::start_with(coordinator, "edge-drain-late", |c| {
        c.shutdown_grace = Duration::from_secs(8);
        c.drain_spread = Duration::from_millis(100);
    })
    .await;
    faults.delay_acquire_replies(Duration::from_millis(800));
    let http = edge.http;
    let token = user_token("c1", "a1", "late");
    let connecting = tokio::spawn(async move {
        open(
            http,
            &format!("/ws/c1/a1?token={}", enc(&token)),
            Some(API_KEY),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    edge.begin_shutdown();
    let started = tokio::time::Instant::now();
    let mut client = connecting
        .await
        .unwrap()
        .expect("admitted before the drain");
    let closed = client.closed_within(Duration::from_secs(4)).await;
    assert_eq!(closed.code, Some(1001), "{closed:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after {:?}, not at the drain deadline",
        started.elapsed()
    );
}

/// A drain spread nearly as long as the grace (the settings allow 90 %) still closes every
/// socket with 1001 and leaves time to release the sessions and deregister: the waves end
/// well before the drain deadline.
#[tokio::test]
async fn a_spread_close_to_the_grace_still_closes_every_socket_and_releases() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-drain-long-spread", |c| {
        c.shutdown_grace = Duration::from_secs(3);
        c.drain_spread = Duration::from_millis(2700);
    })
    .await;
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(user(edge.http, "c1", "a1", &format!("u{i}")).await);
    }
    edge.begin_shutdown();
    for client in &mut clients {
        let closed = client.closed_within(Duration::from_secs(4)).await;
        assert_eq!(closed.code, Some(1001), "{closed:?}");
    }
    edge.shutdown().await;
    for i in 0..20 {
        assert_eq!(
            coord.holder("c1", "a1", &format!("u{i}")).await,
            None,
            "u{i} released"
        );
    }
}
