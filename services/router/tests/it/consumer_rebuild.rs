//! A consumer or stream lost while routers run: the source rebuilds the consumer where this
//! router left off (the same stream) or at the start (a recreated stream), not at the
//! configured start position, so nothing stored meanwhile is lost and nothing delivered is
//! replayed; a router started later accepts the rebuilt consumer.

use daisi_router::source::jetstream::{JetStreamSettings, JetStreamSource};
use daisi_router::source::{Delivery, EventSource, Outgoing, Publisher, TraceHeaders};
use daisi_router::start_position::StartPosition;
use daisi_testkit::nats::NatsServer;
use std::time::Duration;

const STREAM: &str = "S_rebuild";
const CONSUMER: &str = "rebuild";

async fn source(nats: &NatsServer, start_position: StartPosition) -> JetStreamSource {
    JetStreamSource::connect(JetStreamSettings {
        auth: Default::default(),
        url: nats.url(),
        stream: STREAM.into(),
        subjects: "rb.>".into(),
        // The test creates and recreates the stream itself.
        create_stream: false,
        stream_replicas: 1,
        consumer: CONSUMER.into(),
        ack_wait: Duration::from_secs(5),
        max_ack_pending: 100,
        max_deliver: 5,
        heartbeat: Duration::from_millis(500),
        pull_batch: 10,
        client_name: "rebuild".into(),
        partition: None,
        prefix: "rb".into(),
        start_position,
    })
    .await
    .unwrap()
}

async fn create_stream(js: &async_nats::jetstream::Context) {
    js.create_stream(async_nats::jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec!["rb.>".into()],
        ..Default::default()
    })
    .await
    .expect("stream created");
}

async fn publish(source: &JetStreamSource, n: usize) -> Vec<u64> {
    let publisher = source.publisher();
    let mut sequences = Vec::new();
    for i in 0..n {
        sequences.push(
            publisher
                .publish(Outgoing {
                    subject: format!("rb.c1.a1.messages.ch{i}"),
                    payload: "{}".into(),
                    trace: TraceHeaders::default(),
                })
                .await
                .unwrap(),
        );
    }
    sequences
}

/// Everything delivered until nothing comes for a while, acknowledged: (epoch, sequence).
async fn drain(source: &mut JetStreamSource, want: usize) -> Vec<(u64, u64)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        // Wait long for what is missing, then a little longer for anything extra.
        let quiet = if got.len() < want {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        } else {
            Duration::from_secs(1)
        };
        let Ok(Some(d)) = tokio::time::timeout(quiet, source.next()).await else {
            return got;
        };
        let Delivery {
            stream_epoch,
            stream_sequence,
            acker,
            ..
        } = d;
        acker.ack().await.unwrap();
        got.push((stream_epoch, stream_sequence));
    }
}

fn sequences(got: &[(u64, u64)]) -> Vec<u64> {
    got.iter().map(|(_, s)| *s).collect()
}

async fn scenario(start_position: StartPosition) {
    let nats = NatsServer::start().await.unwrap();
    let js = crate::support::jetstream(&nats.url()).await;
    create_stream(&js).await;
    let mut a = source(&nats, start_position).await;
    // Bound before anything is published, so `new` and `all` deliver the same.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), a.next())
            .await
            .is_err()
    );
    let first = publish(&a, 5).await;
    let got = drain(&mut a, 5).await;
    assert_eq!(sequences(&got), first, "{start_position:?}");
    let epoch = got[0].0;

    // The consumer is deleted while the router runs; events stored before it rebinds arrive,
    // the ones it delivered do not come again.
    let stream = js.get_stream(STREAM).await.unwrap();
    stream.delete_consumer(CONSUMER).await.unwrap();
    let second = publish(&a, 5).await;
    let got = drain(&mut a, 5).await;
    assert_eq!(
        sequences(&got),
        second,
        "{start_position:?}: after the consumer was deleted"
    );

    // A router started now accepts the consumer rebuilt from sequence 6, whatever its settings.
    drop(a);
    let mut a = source(&nats, start_position).await;
    let third = publish(&a, 2).await;
    let got = drain(&mut a, 2).await;
    assert_eq!(sequences(&got), third, "{start_position:?}: restarted");
    assert!(a.failure().is_none());

    // The stream is deleted and recreated: everything the new stream holds is new.
    js.delete_stream(STREAM).await.unwrap();
    create_stream(&js).await;
    let fourth = publish(&a, 3).await;
    assert_eq!(fourth, [1, 2, 3]);
    let got = drain(&mut a, 3).await;
    assert_eq!(
        sequences(&got),
        fourth,
        "{start_position:?}: after the stream was recreated"
    );
    assert!(got.iter().all(|(e, _)| *e != epoch), "a new epoch");

    // And a router started now accepts the consumer rebuilt with `all`.
    drop(a);
    let mut a = source(&nats, start_position).await;
    let fifth = publish(&a, 1).await;
    let got = drain(&mut a, 1).await;
    assert_eq!(
        sequences(&got),
        fifth,
        "{start_position:?}: restarted again"
    );
    assert!(a.failure().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_consumer_is_rebuilt_where_the_router_left_off_with_new() {
    Box::pin(scenario(StartPosition::New)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_consumer_is_rebuilt_where_the_router_left_off_with_all() {
    Box::pin(scenario(StartPosition::All)).await;
}
