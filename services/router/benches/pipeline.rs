//! The router's per-event path with a stub edge: an event taken from the in-memory stream,
//! parsed, its route resolved (cached after the first), queued on its edge lane and delivered
//! to a stub edge over gRPC on loopback.
//!
//! - `router_event/single`: one event at a time on an idle router, stream to edge: the floor
//!   every event pays (lane hand-offs, one `Deliver` round trip; no batch delay by default).
//! - `router_event/single_delay_2ms`: the same with `DAISI_ROUTER_BATCH_DELAY=2ms`, the fixed
//!   lane delay natural batching replaced (the "before" of that lever, in the same run).
//! - `router_event/burst`: a burst of events published at once; the time per event while
//!   the pipeline is full (batching at work).
//!
//! `cargo bench -p daisi-router --bench pipeline` (`make benchmark-router`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/it/support/stubs.rs"]
mod stubs;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use daisi_config::Env;
use daisi_router::source::memory::{MemorySettings, MemoryStream};
use daisi_router::source::{Outgoing, Publisher, TraceHeaders};
use daisi_router::{Config, Listeners};
use daisi_runtime::CancellationToken;
use std::time::{Duration, Instant};
use stubs::{Coordinator, Edge};

const KEYS: usize = 100;
const BURST: u64 = 1_000;

fn event(i: u64) -> Outgoing {
    Outgoing {
        subject: format!("websocket.c1.a{}.chats", i as usize % KEYS),
        payload: Bytes::from(format!(
            r#"{{"event_id":"{i}:chats:{i}","company_id":"c1","row_data":{{"id":{i},"name":"chat {i}"}}}}"#
        )),
        trace: TraceHeaders::default(),
    }
}

struct Bench {
    stream: MemoryStream,
    edge: Edge,
    published: u64,
    _servers: (stubs::Served, stubs::Served),
    stop: CancellationToken,
}

impl Bench {
    async fn start(batch_delay: &str) -> Self {
        let coordinator = Coordinator::default();
        let coordinator_server = coordinator.serve().await;
        let edge = Edge::counting("edge-bench");
        let edge_server = edge.serve().await;
        coordinator.add_pod("edge-bench", &edge_server.url());
        for k in 0..KEYS {
            coordinator.subscribe_agent("edge-bench", "c1", &format!("a{k}"));
        }
        let env = Env::from_pairs([
            ("DAISI_ROUTER_HTTP_ADDR", "127.0.0.1:0"),
            ("DAISI_ROUTER_SOURCE", "memory"),
            (
                "DAISI_ROUTER_COORDINATOR_URL",
                coordinator_server.url().as_str(),
            ),
            ("DAISI_ROUTER_MAX_ACK_PENDING", "20000"),
            ("DAISI_ROUTER_BATCH_DELAY", batch_delay),
        ]);
        let config = Config::from_env(&env).unwrap().value;
        let stream = MemoryStream::new(MemorySettings {
            max_ack_pending: 20_000,
            ..MemorySettings::default()
        });
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(daisi_router::run_with(
            config,
            Listeners { http },
            stop.clone(),
            stream.consumer(),
        ));
        let mut bench = Self {
            stream,
            edge,
            published: 0,
            _servers: (coordinator_server, edge_server),
            stop,
        };
        // Warm routes, channels and lanes.
        bench.run(2 * KEYS as u64).await;
        bench
    }

    /// Publishes `n` events at once; returns the time until the edge had them all.
    async fn run(&mut self, n: u64) -> Duration {
        let started = Instant::now();
        for _ in 0..n {
            self.stream.publish(event(self.published)).await.unwrap();
            self.published += 1;
        }
        let want = usize::try_from(self.published).unwrap();
        let got = self.edge.wait_distinct(want, Duration::from_secs(30)).await;
        assert_eq!(got, want, "the stub edge did not get every event");
        started.elapsed()
    }
}

fn per_event(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut bench = runtime.block_on(Bench::start("0s"));
    let mut delayed = runtime.block_on(Bench::start("2ms"));
    let mut group = c.benchmark_group("router_event");
    for (name, bench) in [("single", &mut bench), ("single_delay_2ms", &mut delayed)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += bench.run(1).await;
                    }
                    total
                })
            });
        });
    }
    delayed.stop.cancel();
    group.throughput(Throughput::Elements(BURST));
    group.bench_function("burst", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += bench.run(BURST).await;
                }
                total
            })
        });
    });
    group.finish();
    bench.stop.cancel();
}

criterion_group! {
    name = benches;
    // Each `single` sample waits for a gRPC round trip and a batch delay: fewer samples.
    config = Criterion::default().sample_size(30);
    targets = per_event
}
criterion_main!(benches);
