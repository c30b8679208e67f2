//! One contract, two backends: the in-memory stream behaves like a JetStream durable pull
//! consumer in everything the router relies on (order, sequences, headers, ack wait and
//! redelivery, negative acks with delay, in-progress acks, max deliver, work sharing).

use bytes::Bytes;
use daisi_router::source::jetstream::{JetStreamSettings, JetStreamSource};
use daisi_router::source::memory::{MemorySettings, MemoryStream};
use daisi_router::source::{Delivery, EventSource, Outgoing, Publisher, TraceHeaders};
use daisi_router::start_position::StartPosition;
use daisi_testkit::nats::NatsServer;
use std::collections::HashSet;
use std::time::Duration;

const ACK_WAIT: Duration = Duration::from_secs(1);

async fn next<S: EventSource>(source: &mut S, within: Duration) -> Option<Delivery> {
    tokio::time::timeout(within, source.next())
        .await
        .ok()
        .flatten()
}

fn message(prefix: &str, n: usize, trace: TraceHeaders) -> Outgoing {
    Outgoing {
        subject: format!("{prefix}.c1.a1.messages.ch{n}"),
        payload: Bytes::from(format!(r#"{{"n":{n}}}"#)),
        trace,
    }
}

async fn in_order_with_sequences_and_headers<S: EventSource>(mut a: S, prefix: &str) {
    let publisher = a.publisher();
    let trace = TraceHeaders {
        request_id: Some("req-1".into()),
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        tracestate: Some("k=v".into()),
    };
    let mut sequences = Vec::new();
    for n in 0..5 {
        let t = if n == 2 {
            trace.clone()
        } else {
            TraceHeaders::default()
        };
        sequences.push(publisher.publish(message(prefix, n, t)).await.unwrap());
    }
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    for (n, sequence) in sequences.iter().enumerate() {
        let d = next(&mut a, Duration::from_secs(5))
            .await
            .expect("delivery");
        assert_eq!(d.stream_sequence, *sequence);
        assert_eq!(d.subject, format!("{prefix}.c1.a1.messages.ch{n}"));
        assert_eq!(d.payload, Bytes::from(format!(r#"{{"n":{n}}}"#)));
        assert_eq!(d.delivered, 1);
        assert!(d.published_at.is_some());
        if n == 2 {
            assert_eq!(d.trace, trace);
        } else {
            assert_eq!(d.trace, TraceHeaders::default());
        }
        d.acker.ack().await.unwrap();
    }
    assert!(
        next(&mut a, ACK_WAIT * 2).await.is_none(),
        "acked messages never come back"
    );
}

async fn redelivery_nak_and_progress<S: EventSource>(mut a: S, prefix: &str) {
    let publisher = a.publisher();
    for n in 0..3 {
        publisher
            .publish(message(prefix, n, TraceHeaders::default()))
            .await
            .unwrap();
    }
    let left = next(&mut a, Duration::from_secs(5)).await.unwrap();
    let nakked = next(&mut a, Duration::from_secs(5)).await.unwrap();
    let kept = next(&mut a, Duration::from_secs(5)).await.unwrap();
    let started = tokio::time::Instant::now();
    nakked.acker.nak(Duration::from_millis(200)).await.unwrap();
    let again = next(&mut a, Duration::from_millis(900))
        .await
        .expect("nak redelivers");
    assert_eq!(again.stream_sequence, nakked.stream_sequence);
    assert_eq!(again.delivered, 2);
    again.acker.ack().await.unwrap();
    // `kept` gets in-progress acks; `left` gets nothing and must come back after the ack wait.
    let mut redelivered = None;
    while started.elapsed() < ACK_WAIT * 3 {
        kept.acker.progress().await.unwrap();
        if let Some(d) = next(&mut a, Duration::from_millis(300)).await {
            assert_eq!(
                d.stream_sequence, left.stream_sequence,
                "only the unacked one comes back"
            );
            assert_eq!(d.delivered, 2);
            assert!(
                started.elapsed() >= ACK_WAIT.mul_f32(0.8),
                "not before the ack wait"
            );
            d.acker.ack().await.unwrap();
            redelivered = Some(d.stream_sequence);
        }
    }
    assert!(
        redelivered.is_some(),
        "unacked message redelivered after the ack wait"
    );
    kept.acker.ack().await.unwrap();
    left.acker.ack().await.unwrap();
    assert!(next(&mut a, ACK_WAIT * 2).await.is_none());
}

async fn max_deliver_ends_redelivery<S: EventSource>(mut a: S, prefix: &str) {
    // The consumer of this scenario has max deliver 2.
    a.publisher()
        .publish(message(prefix, 0, TraceHeaders::default()))
        .await
        .unwrap();
    let first = next(&mut a, Duration::from_secs(5)).await.unwrap();
    first.acker.nak(Duration::ZERO).await.unwrap();
    let second = next(&mut a, Duration::from_secs(5)).await.unwrap();
    assert_eq!(second.delivered, 2);
    second.acker.nak(Duration::ZERO).await.unwrap();
    assert!(
        next(&mut a, ACK_WAIT * 3).await.is_none(),
        "no third delivery"
    );
}

async fn consumers_share_work<S: EventSource>(a: S, b: S, prefix: &str) {
    let publisher = a.publisher();
    let mut published = HashSet::new();
    for n in 0..40 {
        published.insert(
            publisher
                .publish(message(prefix, n, TraceHeaders::default()))
                .await
                .unwrap(),
        );
    }
    let take = |mut s: S| async move {
        let mut got = Vec::new();
        while let Some(d) = next(&mut s, Duration::from_millis(1500)).await {
            got.push(d.stream_sequence);
            d.acker.ack().await.unwrap();
            // Slow consumers leave room for the other one.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        got
    };
    let (ga, gb) = tokio::join!(take(a), take(b));
    let sa: HashSet<u64> = ga.iter().copied().collect();
    let sb: HashSet<u64> = gb.iter().copied().collect();
    assert!(sa.is_disjoint(&sb), "a message went to both consumers");
    assert_eq!(&sa | &sb, published, "every message consumed once");
    assert_eq!(ga.len() + gb.len(), 40);
}

// ------------------------------------------------------------------------------------------

fn memory(max_deliver: i64) -> MemoryStream {
    MemoryStream::new(MemorySettings {
        ack_wait: ACK_WAIT,
        max_deliver,
        ..MemorySettings::default()
    })
}

#[tokio::test]
async fn memory_source_keeps_the_contract() {
    in_order_with_sequences_and_headers(memory(5).consumer(), "t").await;
    redelivery_nak_and_progress(memory(5).consumer(), "t").await;
    max_deliver_ends_redelivery(memory(2).consumer(), "t").await;
    let shared = memory(5);
    consumers_share_work(shared.consumer(), shared.consumer(), "t").await;
}

async fn jetstream(nats: &NatsServer, prefix: &str, max_deliver: i64) -> JetStreamSource {
    JetStreamSource::connect(JetStreamSettings {
        auth: Default::default(),
        url: nats.url(),
        stream: format!("S_{prefix}"),
        subjects: format!("{prefix}.>"),
        create_stream: true,
        stream_replicas: 1,
        consumer: "contract".into(),
        ack_wait: ACK_WAIT,
        max_ack_pending: 100,
        max_deliver,
        heartbeat: Duration::from_millis(500),
        pull_batch: 10,
        client_name: format!("contract-{prefix}"),
        partition: None,
        prefix: prefix.into(),
        start_position: StartPosition::All,
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn jetstream_source_keeps_the_contract() {
    let nats = NatsServer::start().await.unwrap();
    // Bind first (the stream is created on the first `next`), then publish.
    let mut a = jetstream(&nats, "t1", 5).await;
    assert!(next(&mut a, Duration::from_millis(300)).await.is_none());
    in_order_with_sequences_and_headers(a, "t1").await;
    let mut a = jetstream(&nats, "t2", 5).await;
    assert!(next(&mut a, Duration::from_millis(300)).await.is_none());
    redelivery_nak_and_progress(a, "t2").await;
    let mut a = jetstream(&nats, "t3", 2).await;
    assert!(next(&mut a, Duration::from_millis(300)).await.is_none());
    max_deliver_ends_redelivery(a, "t3").await;
    let mut a = jetstream(&nats, "t4", 5).await;
    let mut b = jetstream(&nats, "t4", 5).await;
    assert!(next(&mut a, Duration::from_millis(300)).await.is_none());
    assert!(next(&mut b, Duration::from_millis(300)).await.is_none());
    Box::pin(consumers_share_work(a, b, "t4")).await;
}

/// What a stopping router hands back includes what the pull already brought into the client
/// (up to a pull batch), not only what it took: without that, those messages wait out the ack
/// wait and come back behind later ones.
#[tokio::test]
async fn jetstream_source_gives_up_what_the_pull_already_brought() {
    let nats = NatsServer::start().await.unwrap();
    let mut a = jetstream(&nats, "t5", 5).await;
    assert!(next(&mut a, Duration::from_millis(300)).await.is_none());
    let publisher = a.publisher();
    let mut sequences = Vec::new();
    for n in 0..8 {
        sequences.push(
            publisher
                .publish(message("t5", n, TraceHeaders::default()))
                .await
                .unwrap(),
        );
    }
    let first = next(&mut a, Duration::from_secs(2))
        .await
        .expect("one taken");
    assert_eq!(first.stream_sequence, sequences[0]);
    // The rest of the batch arrives in the client without being asked for by `next`.
    let mut buffered = Vec::new();
    for _ in 0..20 {
        buffered.extend(a.take_buffered());
        if buffered.len() >= 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got: Vec<u64> = buffered.iter().map(|d| d.stream_sequence).collect();
    assert_eq!(got, sequences[1..], "in order, each once");
    assert!(a.take_buffered().is_empty(), "taken means gone");
    for delivery in buffered {
        delivery.acker.nak(Duration::ZERO).await.unwrap();
    }
    first.acker.nak(Duration::ZERO).await.unwrap();
    // Handed back: delivered again at once, to whoever asks.
    let again = next(&mut a, Duration::from_millis(700))
        .await
        .expect("again");
    assert_eq!(again.delivered, 2, "a redelivery");
}
