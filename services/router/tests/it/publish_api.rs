//! `POST /api/v1/publish`: the API key, validation, single and batch publishing, into the
//! in-memory stream (dev stack) and into JetStream with acknowledgement.

use crate::support::stubs::{Coordinator, Edge};
use crate::support::{self, env};
use daisi_router::source::memory::{MemorySettings, MemoryStream};
use daisi_testkit::nats::NatsServer;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

const KEY: &str = "test-publish-key-0123456789";

async fn post(addr: SocketAddr, key: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/publish"))
        .header("content-type", "application/json")
        .header("x-request-id", "req-7")
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_api_checks_the_key_and_the_messages_and_feeds_the_memory_stream() {
    let coordinator = Coordinator::default();
    let coordinator_server = coordinator.serve().await;
    let edge = Edge::new("edge-a");
    let edge_server = edge.serve().await;
    coordinator.add_pod("edge-a", &edge_server.url());
    coordinator.subscribe_agent("edge-a", "c1", "a1");
    let stream = MemoryStream::new(MemorySettings::default());
    let router = support::start_with(
        &env(&[
            ("DAISI_ROUTER_SOURCE", "memory"),
            ("DAISI_ROUTER_COORDINATOR_URL", &coordinator_server.url()),
            ("DAISI_ROUTER_PUBLISH_API_KEY", KEY),
            ("DAISI_ROUTER_MAX_PUBLISH_BYTES", "1024"),
        ]),
        stream.consumer(),
    )
    .await;
    let one =
        r#"{"subject":"websocket.c1.a1.chats","payload":{"event_id":"1:chats:1","b":[1, 2.50]}}"#;

    let (status, body) = post(router.http, None, one).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("InvalidAPIKey"))
    );
    let (status, body) = post(router.http, Some("wrong-key-wrong-key"), one).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("Invalid API key"))
    );

    let (status, body) = post(router.http, Some(KEY), one).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subject"], "websocket.c1.a1.chats");
    let first = body["sequence"].as_u64().unwrap();
    assert_eq!(edge.wait_distinct(1, Duration::from_secs(10)).await, 1);
    let received = &edge.received()[0];
    assert_eq!(received.sequence, first);
    assert_eq!(
        received.payload, br#"{"event_id":"1:chats:1","b":[1, 2.50]}"#,
        "stored byte for byte"
    );
    assert_eq!(received.request_id, "req-7");

    let batch = json!([
        {"subject": "websocket.c1.a1.contacts", "payload": {"n": 1}},
        {"subject": "websocket.c1.a1.messages.ch9", "payload": {"n": 2}},
    ]);
    let (status, body) = post(router.http, Some(KEY), &batch.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let published = body["published"].as_array().unwrap();
    assert_eq!(published.len(), 2);
    assert_eq!(published[0]["sequence"].as_u64(), Some(first + 1));
    assert_eq!(published[1]["sequence"].as_u64(), Some(first + 2));
    let wrapped = json!({"messages": [{"subject": "websocket.c1.a1.agents", "payload": {}}]});
    let (status, _) = post(router.http, Some(KEY), &wrapped.to_string()).await;
    assert_eq!(status, 200);

    let bad = [
        (
            r#"{"subject":"websocket.c1.a1","payload":{}}"#,
            400,
            "subject",
        ),
        (
            r#"{"subject":"wa.c1.a1.chats","payload":{}}"#,
            400,
            "subject",
        ),
        (
            r#"{"subject":"websocket.c1.a1.chats","payload":[1]}"#,
            400,
            "payload",
        ),
        (r#"{"subject":"websocket.c1.a1.chats"}"#, 400, "body"),
        (
            r#"[{"subject":"websocket.c1.a1.chats","payload":{}},{"subject":"websocket.c1.*.chats","payload":{}}]"#,
            400,
            "messages[1].subject",
        ),
        ("[]", 400, "batch"),
        ("not json", 400, "body"),
    ];
    for (body, status, mentions) in bad {
        let (got, answer) = post(router.http, Some(KEY), body).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["code"], "BadRequest", "{body}");
        assert!(
            answer["details"].as_str().unwrap_or("").contains(mentions),
            "{body}: {answer}"
        );
    }
    let big = json!({"subject": "websocket.c1.a1.chats", "payload": {"x": "y".repeat(2000)}});
    let (status, answer) = post(router.http, Some(KEY), &big.to_string()).await;
    assert_eq!(status, 413, "{answer}");

    assert_eq!(
        edge.wait_distinct(3, Duration::from_secs(10)).await,
        3,
        "contacts, agents and the first"
    );
    let text = router.metrics().await;
    assert_eq!(
        support::metric(&text, r#"daisi_router_published_total{outcome="ok""#),
        4.0
    );
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_api_is_off_without_a_key_and_acks_through_jetstream_with_one() {
    let nats = NatsServer::start().await.unwrap();
    let off = support::start(&env(&[("DAISI_ROUTER_NATS_URL", &nats.url())])).await;
    let (status, _) = post(off.http, Some(KEY), "{}").await;
    assert_eq!(status, 404, "no key configured: no endpoint");
    off.stop().await;

    let router = support::start(&env(&[
        ("DAISI_ROUTER_NATS_URL", &nats.url()),
        ("DAISI_ROUTER_PUBLISH_API_KEY", KEY),
        ("DAISI_ROUTER_CONSUMER", "other"),
    ]))
    .await;
    router.wait_ready_status(503, Duration::from_secs(1)).await;
    let js = support::jetstream(&nats.url()).await;
    // The router creates the stream when it binds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while js.get_stream("wa_stream").await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "stream created");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let one = r#"{"subject":"websocket.c1.a1.chats","payload":{"n":1}}"#;
    let (status, body) = post(router.http, Some(KEY), one).await;
    assert_eq!(status, 200, "{body}");
    let sequence = body["sequence"].as_u64().unwrap();
    let mut stream = js.get_stream("wa_stream").await.unwrap();
    let stored = stream.get_raw_message(sequence).await.unwrap();
    assert_eq!(stored.subject.as_str(), "websocket.c1.a1.chats");
    assert_eq!(&stored.payload[..], br#"{"n":1}"#);
    let _ = stream.info().await.unwrap();
    router.stop().await;
}
