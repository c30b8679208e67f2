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
