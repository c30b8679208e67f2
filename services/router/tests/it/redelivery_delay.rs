//! A message an edge had no room for comes back after the router's short redelivery delay,
//! against a real nats-server whose consumer has a backoff: a delayed nak there is measured
//! against the backoff entry of the delivery count (2 s + backoff[1] - backoff[0] on a second
//! delivery), so the router keeps the message for the delay and then sends a plain nak.

use daisi_router::metrics::RouterMetrics;
use daisi_router::pipeline::ledger::{EdgeOutcome, Ledger, SettlerSettings, run_settler};
use daisi_router::source::jetstream::{JetStreamSettings, JetStreamSource};
use daisi_router::source::{Delivery, EventSource, Outgoing, Publisher, TraceHeaders};
use daisi_router::start_position::StartPosition;
use daisi_runtime::CancellationToken;
use daisi_testkit::nats::NatsServer;
use std::time::Duration;
use tokio::time::Instant;

/// With max deliver 3 the consumer's backoff is [2 s, 4 s].
const ACK_WAIT: Duration = Duration::from_secs(2);

async fn next(source: &mut JetStreamSource, within: Duration) -> Delivery {
    tokio::time::timeout(within, source.next())
        .await
        .expect("delivered in time")
        .expect("source open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_message_comes_back_after_the_routers_delay_not_the_backoff() {
    let nats = NatsServer::start().await.unwrap();
    let mut source = JetStreamSource::connect(JetStreamSettings {
        auth: Default::default(),
        url: nats.url(),
        stream: "S_delay".into(),
        subjects: "delay.>".into(),
        create_stream: true,
        stream_replicas: 1,
        consumer: "delay".into(),
        ack_wait: ACK_WAIT,
        max_ack_pending: 100,
        max_deliver: 3,
        heartbeat: Duration::from_millis(500),
        pull_batch: 10,
        client_name: "delay".into(),
        partition: None,
        prefix: "delay".into(),
        start_position: StartPosition::All,
    })
    .await
    .unwrap();
    let registry = daisi_telemetry::Metrics::new("router").unwrap();
    let (ledger, verdicts) = Ledger::new(RouterMetrics::register(&registry).unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(run_settler(
        ledger.clone(),
        verdicts,
        source.publisher(),
        SettlerSettings {
            ack_wait: ACK_WAIT,
            hold_limit: ACK_WAIT * 10,
            dead_letter_subject: None,
            max_deliver: 3,
        },
        stop.clone(),
    ));
    // Bind first (the stream is created on the first `next`), then publish.
    let bound = tokio::time::timeout(Duration::from_millis(300), source.next()).await;
    assert!(bound.is_err(), "nothing yet");
    source
        .publisher()
        .publish(Outgoing {
            subject: "delay.c1.a1.chats".into(),
            payload: "{}".into(),
            trace: TraceHeaders::default(),
        })
        .await
        .unwrap();
    // Each delivery: one edge had no room (1 s delay after the first, 2 s after the second).
    let mut delivery = next(&mut source, Duration::from_secs(5)).await;
    for (attempt, delay) in [(1, 1), (2, 2)] {
        assert_eq!(delivery.delivered, attempt);
        let deferred = Instant::now();
        let id = ledger.hold(delivery);
        ledger.tracker(id, 1).settle(EdgeOutcome::Deferred);
        delivery = next(&mut source, Duration::from_secs(20)).await;
        let waited = deferred.elapsed();
        let delay = Duration::from_secs(delay);
        assert!(
            waited >= delay.mul_f32(0.9) && waited < delay + Duration::from_millis(900),
            "delivery {} came {waited:?} after the deferral, the router's delay is {delay:?}",
            attempt + 1
        );
    }
    assert_eq!(delivery.delivered, 3);
    delivery.acker.ack().await.unwrap();
    stop.cancel();
}
