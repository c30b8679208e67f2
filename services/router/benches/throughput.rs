//! Load benchmark of the router alone: events per second from the stream to a stub edge,
//! and events per CPU-second of this process (router + edge stub; nats-server excluded).
//!
//! `cargo bench -p daisi-router --bench throughput --profile dev` (needs `nats-server` on PATH
//! for the JetStream run). Each run publishes the events first, then starts a router and
//! times until the edge has them all; five runs per source, the median is reported.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "../tests/it/support/stubs.rs"]
mod stubs;

use bytes::Bytes;
use daisi_config::Env;
use daisi_router::source::memory::{MemorySettings, MemoryStream};
use daisi_router::source::{Outgoing, Publisher, TraceHeaders};
use daisi_router::{Config, Listeners};
use daisi_runtime::CancellationToken;
use daisi_testkit::nats::NatsServer;
use std::time::{Duration, Instant};
use stubs::{Coordinator, Edge};

const EVENTS: usize = 50_000;
const KEYS: usize = 100;
const RUNS: usize = 5;

fn subject(i: usize) -> String {
    format!("websocket.c1.a{}.chats", i % KEYS)
}

fn payload(i: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"event_id":"{i}:chats:{i}","event_time":"2026-01-01T00:00:00Z","company_id":"c1","row_data":{{"id":{i},"name":"chat {i}","unread":3}}}}"#
    ))
}

/// CPU time (user + system) of this process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

struct Sample {
    per_second: f64,
    per_cpu_second: f64,
}

async fn measure(env: Env, source: Option<MemoryStream>, edge: &Edge, baseline: usize) -> Sample {
    let config = Config::from_env(&env).unwrap().value;
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let cpu = cpu_time();
    let started = Instant::now();
    let task = match source {
        Some(stream) => tokio::spawn(daisi_router::run_with(
            config,
            Listeners { http },
            shutdown.clone(),
            stream.consumer(),
        )),
        None => tokio::spawn(daisi_router::run(
            config,
            Listeners { http },
            shutdown.clone(),
        )),
    };
    while edge.count() < baseline + EVENTS {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let wall = started.elapsed();
    let cpu = cpu_time().saturating_sub(cpu);
    shutdown.cancel();
    task.await.unwrap().unwrap();
    Sample {
        per_second: EVENTS as f64 / wall.as_secs_f64(),
        per_cpu_second: EVENTS as f64 / cpu.as_secs_f64().max(0.01),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn report(name: &str, samples: Vec<Sample>) {
    let wall: Vec<f64> = samples.iter().map(|s| s.per_second).collect();
    let cpu: Vec<f64> = samples.iter().map(|s| s.per_cpu_second).collect();
    println!(
        "{name}: median {:.0} events/s wall, {:.0} events per CPU-second (runs: {:?})",
        median(wall.clone()),
        median(cpu),
        wall.iter().map(|w| w.round()).collect::<Vec<_>>()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let coordinator = Coordinator::default();
        let coordinator_server = coordinator.serve().await;
        let edge = Edge::counting("edge-bench");
        let edge_server = edge.serve().await;
        coordinator.add_pod("edge-bench", &edge_server.url());
        for k in 0..KEYS {
            coordinator.subscribe_agent("edge-bench", "c1", &format!("a{k}"));
        }
        let base = |extra: &[(&str, &str)]| {
            let mut env = Env::from_pairs([
                ("DAISI_ROUTER_HTTP_ADDR", "127.0.0.1:0"),
                (
                    "DAISI_ROUTER_COORDINATOR_URL",
                    coordinator_server.url().as_str(),
                ),
                ("DAISI_ROUTER_MAX_ACK_PENDING", "20000"),
            ]);
            for (k, v) in extra {
                env.set(*k, *v);
            }
            env
        };

        let mut samples = Vec::new();
        for _ in 0..RUNS {
            let stream = MemoryStream::new(MemorySettings {
                max_ack_pending: 20_000,
                ..MemorySettings::default()
            });
            for i in 0..EVENTS {
                stream
                    .publish(Outgoing {
                        subject: subject(i),
                        payload: payload(i),
                        trace: TraceHeaders::default(),
                    })
                    .await
                    .unwrap();
            }
            let baseline = edge.count();
            samples.push(
                measure(
                    base(&[("DAISI_ROUTER_SOURCE", "memory")]),
                    Some(stream),
                    &edge,
                    baseline,
                )
                .await,
            );
        }
        report("memory stream -> router -> edge stub", samples);

        let mut samples = Vec::new();
        for run in 0..RUNS {
            let nats = NatsServer::start().await.expect("nats-server on PATH");
            let client = async_nats::connect(nats.url()).await.unwrap();
            let js = async_nats::jetstream::new(client);
            js.get_or_create_stream(async_nats::jetstream::stream::Config {
                name: "wa_stream".into(),
                subjects: vec!["websocket.>".into()],
                ..Default::default()
            })
            .await
            .unwrap();
            for window in (0..EVENTS).collect::<Vec<_>>().chunks(1000) {
                let mut acks = Vec::new();
                for i in window {
                    acks.push(js.publish(subject(*i), payload(*i)).await.unwrap());
                }
                for ack in acks {
                    ack.await.unwrap();
                }
            }
            let baseline = edge.count();
            let consumer = format!("bench-{run}");
            samples.push(
                measure(
                    base(&[
                        ("DAISI_ROUTER_NATS_URL", nats.url().as_str()),
                        ("DAISI_ROUTER_CONSUMER", consumer.as_str()),
                        // The events were published before the consumer exists.
                        ("DAISI_ROUTER_START_POSITION", "all"),
                    ]),
                    None,
                    &edge,
                    baseline,
                )
                .await,
            );
        }
        report("jetstream -> router -> edge stub", samples);
        println!(
            "edge calls: {}, mean batch {:.0} events",
            edge.calls(),
            (RUNS * 2 * EVENTS) as f64 / edge.calls().max(1) as f64
        );
    });
}
