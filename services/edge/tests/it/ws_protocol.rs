//! compat.md "WebSocket protocol": ready, echo, error frames, binary frames, select_chat and
//! its restoration on reconnect, admin sockets, heartbeat, limits; and a property test of the
//! client-message path over a real socket.

use crate::support::*;
use daisi_proto::edge::v1::DeliveryScope;
use proptest::prelude::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn client_frames_get_exactly_the_contract_answers() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-proto", |_| {}).await;
    let mut c = user(edge.http, "c1", "a1", "u1").await;

    // ready is echoed verbatim, whitespace and all.
    c.send_text(r#"{ "type" : "ready" }"#).await;
    assert_eq!(c.next_text().await, r#"{ "type" : "ready" }"#);

    c.send_text("not json").await;
    assert_eq!(
        c.next_json().await,
        json!({"type":"error","payload":{"code":"BadRequest","message":"Invalid message format"}})
    );
    c.send_text(r#"{"type":"subscribe"}"#).await;
    assert_eq!(
        c.next_json().await,
        json!({"type":"error","payload":{"code":"BadRequest","message":"Unhandled message type","details":"Type: subscribe"}})
    );
    c.send_text(r#"{"type":"select_chat","payload":{"chat_id":7}}"#)
        .await;
    assert_eq!(
        c.next_json().await,
        json!({"type":"error","payload":{"code":"BadRequest","message":"Invalid select_chat payload"}})
    );
    // Exactly one error frame for a bad select_chat (fixed), and binary frames are ignored.
    c.send_binary(b"\x00\x01").await;
    assert_eq!(c.maybe_text(Duration::from_millis(200)).await, None);
    // Still alive.
    c.send_text(r#"{"type":"ready"}"#).await;
    assert_eq!(c.next_text().await, r#"{"type":"ready"}"#);
}

fn chat_event(seq: u64, chat: &str) -> daisi_proto::edge::v1::Event {
    event(
        seq,
        "c1",
        "a1",
        DeliveryScope::ChatUsers,
        chat,
        "message",
        &format!(r#"{{"chat_id":"{chat}","n":{seq}}}"#),
    )
}

#[tokio::test]
async fn select_chat_moves_the_subscription_and_survives_reconnect() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-select", |_| {}).await;
    let mut c = user(edge.http, "c1", "a1", "u1").await;
    c.send_text(r#"{"type":"select_chat","payload":{"chat_id":"X"}}"#)
        .await;
    // select_chat has no reply; poll until the route is in place.
    eventually("chat X delivered", || async {
        edge.deliver(vec![chat_event(0, "X")]).await[0].sockets_reached == 1
    })
    .await;
    while c.maybe_text(Duration::from_millis(100)).await.is_some() {}

    c.send_text(r#"{"type":"select_chat","payload":{"chat_id":"Y"}}"#)
        .await;
    eventually("chat Y delivered", || async {
        edge.deliver(vec![chat_event(0, "Y")]).await[0].sockets_reached == 1
    })
    .await;
    let results = edge
        .deliver(vec![chat_event(10, "X"), chat_event(11, "Y")])
        .await;
    assert_eq!(results[0].sockets_reached, 0, "no longer X");
    assert_eq!(results[1].sockets_reached, 1);
    let mut last = String::new();
    while let Some(t) = c.maybe_text(Duration::from_millis(200)).await {
        last = t;
    }
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&last).unwrap(),
        json!({"type":"event","payload":{"chat_id":"Y","n":11,"event_type":"message"}})
    );
    // Selecting the same chat again is a no-op (no error frame).
    c.send_text(r#"{"type":"select_chat","payload":{"chat_id":"Y"}}"#)
        .await;
    assert_eq!(c.maybe_text(Duration::from_millis(200)).await, None);

    // Reconnect: the selection is restored from the coordinator.
    c.close().await;
    let mut again = user(edge.http, "c1", "a1", "u1").await;
    let results = edge.deliver(vec![chat_event(12, "Y")]).await;
    assert_eq!(results[0].sockets_reached, 1, "selection restored");
    assert!(again.next_text().await.contains(r#""n":12"#));
}

#[tokio::test]
async fn admin_sockets_ignore_client_messages() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-admin-msgs", |_| {}).await;
    let mut a = admin(edge.http, &admin_token("ad1", None, None, None)).await;
    a.send_text("garbage").await;
    a.send_text(r#"{"type":"ready"}"#).await;
    assert_eq!(a.maybe_text(Duration::from_millis(300)).await, None);
}

#[tokio::test]
async fn heartbeat_keeps_answering_clients_and_closes_silent_ones() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-heartbeat", |c| {
        c.ping_interval = Duration::from_millis(100);
        c.pong_wait = Duration::from_millis(400);
    })
    .await;
    // A client that reads (and so answers pings) but sends no data stays connected.
    let mut alive = user(edge.http, "c1", "a1", "alive").await;
    assert_eq!(alive.maybe_text(Duration::from_millis(1200)).await, None);
    alive.send_text(r#"{"type":"ready"}"#).await;
    assert_eq!(alive.next_text().await, r#"{"type":"ready"}"#);

    // A client that does not answer is closed with 1011 "Pong timeout".
    let mut silent = user(edge.http, "c1", "a1", "silent").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let closed = silent.closed().await;
    assert_eq!(closed.code, Some(1011));
    assert_eq!(closed.reason, "Pong timeout");
}

#[tokio::test]
async fn rate_limit_errors_then_closes_4429() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-rate", |c| {
        c.limits.rate_per_second = 1;
        c.limits.rate_burst = 2;
        c.limits.rate_close_after = 3;
    })
    .await;
    let mut c = user(edge.http, "c1", "a1", "u1").await;
    for _ in 0..5 {
        c.send_text(r#"{"type":"ready"}"#).await;
    }
    let closed = c.closed().await;
    assert_eq!(closed.code, Some(4429));
    let errors: Vec<_> = closed
        .frames
        .iter()
        .filter(|f| f.contains("RateLimitExceeded"))
        .collect();
    assert_eq!(
        closed
            .frames
            .iter()
            .filter(|f| f.as_str() == r#"{"type":"ready"}"#)
            .count(),
        2
    );
    assert_eq!(errors.len(), 3, "{:?}", closed.frames);
}

#[tokio::test]
async fn oversized_messages_close_with_1009_and_others_stay() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-size", |c| {
        c.limits.max_message_size = 1024
    })
    .await;
    let mut other = user(edge.http, "c1", "a1", "bystander").await;
    let mut big = user(edge.http, "c1", "a1", "big").await;
    big.send_text(&"x".repeat(4096)).await;
    let closed = big.closed().await;
    assert_eq!(closed.code, Some(1009));
    other.send_text(r#"{"type":"ready"}"#).await;
    assert_eq!(other.next_text().await, r#"{"type":"ready"}"#);
}

#[tokio::test]
async fn max_connections_answers_503() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-cap", |c| c.limits.max_connections = 1).await;
    let _first = user(edge.http, "c1", "a1", "u1").await;
    let token = user_token("c1", "a1", "u2");
    let r = open(
        edge.http,
        &format!("/ws/c1/a1?token={}", enc(&token)),
        Some(API_KEY),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(r.status, 503);
    assert!(r.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn handshake_timeout_drops_silent_connections() {
    use tokio::io::AsyncReadExt;
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-handshake", |c| {
        c.limits.handshake_timeout = Duration::from_millis(300);
    })
    .await;
    let mut tcp = tokio::net::TcpStream::connect(edge.http).await.unwrap();
    // Half a request line, then nothing.
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET /ws/c1")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "connection closed by the server: {read:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3, ..ProptestConfig::default() })]
    /// Arbitrary client frames never kill the socket: each gets at most one error frame, and
    /// the socket still answers afterwards.
    #[test]
    fn arbitrary_client_frames_never_break_the_socket(frames in proptest::collection::vec(
        prop_oneof![
            any::<String>(),
            "\\{\"type\":\"[a-z_]{0,12}\"(,\"payload\":.{0,20})?\\}",
            "\\{\"type\":\"select_chat\",\"payload\":\\{\"chat_id\":.{0,12}\\}\\}",
        ],
        20..30,
    )) {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let coord = Coord::start().await;
            let edge = TestEdge::start(&coord.url, "edge-fuzz", |c| {
                c.limits.rate_per_second = 10_000;
                c.limits.rate_burst = 10_000;
            })
            .await;
            let mut c = user(edge.http, "c1", "a1", "u1").await;
            for frame in &frames {
                c.send_text(frame).await;
                let reply = c.maybe_text(Duration::from_millis(100)).await;
                if let Some(reply) = reply {
                    let value: serde_json::Value = serde_json::from_str(&reply).expect("json reply");
                    assert!(value["type"] == "error" || value["type"] == "ready" || reply == *frame, "{frame:?} -> {reply}");
                }
            }
            c.send_text(r#"{"type":"ready"}"#).await;
            let mut last = c.next_text().await;
            while last != r#"{"type":"ready"}"# {
                last = c.next_text().await;
            }
        });
    }
}

#[tokio::test]
async fn a_client_offering_permessage_deflate_connects_uncompressed() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-deflate", |_| {}).await;
    let token = user_token("c1", "a1", "u1");
    let mut request = format!("ws://{}/ws/c1/a1?token={}", edge.http, enc(&token))
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("sec-websocket-protocol", "json.v1".parse().unwrap());
    headers.insert("x-api-key", API_KEY.parse().unwrap());
    // What browsers send.
    headers.insert(
        "sec-websocket-extensions",
        "permessage-deflate; client_max_window_bits"
            .parse()
            .unwrap(),
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    // The extension is declined (RFC 7692 §5: the server simply does not list it), so the
    // client sends and receives plain frames; tungstenite would reject a compressed (RSV1)
    // frame as a protocol error.
    assert_eq!(response.headers().get("sec-websocket-extensions"), None);
    let ready = ws.next().await.unwrap().unwrap();
    assert_eq!(ready.into_text().unwrap().as_str(), r#"{"type":"ready"}"#);
}
