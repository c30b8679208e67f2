//! How a real nats-server counts settled and unsettled messages in a consumer's ack-pending
//! window (`max_ack_pending`). The router's per-edge cap, and its choice to hold events beyond
//! it rather than hand them back with a nak, rest on these facts (services/router/README.md,
//! "The ack window"); this pins them.

use crate::support::{create_stream, jetstream, payload, publish_all};
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use daisi_testkit::nats::NatsServer;
use futures_util::StreamExt;
use std::time::Duration;

async fn consumer(js: &async_nats::jetstream::Context, window: i64) -> PullConsumer {
    js.get_stream("wa_stream")
        .await
        .unwrap()
        .create_consumer(pull::Config {
            durable_name: Some("window".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: window,
            ..Default::default()
        })
        .await
        .unwrap()
}

/// Fetches what the server hands out now (at most `max`), waiting at most `wait`.
async fn fetch(
    consumer: &PullConsumer,
    max: usize,
    wait: Duration,
) -> Vec<async_nats::jetstream::Message> {
    let mut batch = consumer
        .fetch()
        .max_messages(max)
        .expires(wait)
        .messages()
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(message) = batch.next().await {
        out.push(message.unwrap());
    }
    out
}

async fn ack_pending(consumer: &mut PullConsumer) -> usize {
    consumer.info().await.unwrap().num_ack_pending
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_nak_keeps_its_slot_until_redelivered_an_ack_frees_it() {
    let nats = NatsServer::start().await.unwrap();
    let js = jetstream(&nats.url()).await;
    create_stream(&js, "wa_stream", 0).await;
    publish_all(
        &js,
        (0..20)
            .map(|n| ("websocket.c1.a1.chats".to_owned(), payload(n)))
            .collect(),
    )
    .await;
    let mut consumer = consumer(&js, 5).await;
    let first = fetch(&consumer, 20, Duration::from_millis(500)).await;
    assert_eq!(first.len(), 5, "the window caps what is handed out");
    assert_eq!(ack_pending(&mut consumer).await, 5);

    // Two delayed naks: the messages stay in the window while their delay runs.
    for m in &first[..2] {
        m.ack_with(AckKind::Nak(Some(Duration::from_secs(3))))
            .await
            .unwrap();
    }
    // Three acks: their slots are free at once.
    for m in &first[2..] {
        m.double_ack().await.unwrap();
    }
    let next = fetch(&consumer, 20, Duration::from_millis(500)).await;
    assert_eq!(
        next.len(),
        3,
        "only the acked slots were refilled: delayed naks still count"
    );
    assert_eq!(ack_pending(&mut consumer).await, 5);

    // An immediate nak hands the message back for redelivery right away.
    next[0].ack_with(AckKind::Nak(None)).await.unwrap();
    let again = fetch(&consumer, 20, Duration::from_millis(500)).await;
    assert_eq!(again.len(), 1, "redelivered in its own slot");
    assert_eq!(
        again[0].info().unwrap().stream_sequence,
        next[0].info().unwrap().stream_sequence
    );
    assert_eq!(
        again[0].info().unwrap().delivered,
        2,
        "a nak counts as a delivery"
    );
}
