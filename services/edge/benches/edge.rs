//! Hot paths inside the edge, without the network: one event fanned out to 1, 100 and 10,000
//! local sockets (render once, queue to each; `json.v1` sockets, and `json.v2` sockets whose
//! frames carry the event's position), token validation with and without the cache,
//! and socket registration (the local index alone, and the whole admission against the real
//! coordinator service over its in-memory store, in process, one gRPC round trip per acquire).
//!
//! `cargo bench -p daisi-edge --bench edge` (`make benchmark-edge`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use daisi_config::Env;
use daisi_domain::event::render_event_frame;
use daisi_domain::protocol::Subprotocol;
use daisi_domain::token::{TokenKeyring, UserClaims};
use daisi_domain::{AgentId, CompanyId, ConnectionId, SessionKey};
use daisi_edge::coordinator::AnyCoordinator;
use daisi_edge::coordinator::grpc::GrpcCoordinator;
use daisi_edge::delivery::fanout::{Audience, EventFrames, fan_out};
use daisi_edge::state::Edge;
use daisi_edge::ws::handle::{SocketHandle, SocketKind};
use daisi_edge::ws::outbox::Outbox;
use std::hint::black_box;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

const KEY: &str = "3a7bd3e2360a3d29eea436e864a1b8d5f2f5d5e4dba8ac39d465fc3488db3915";
const PAYLOAD: &[u8] = include_bytes!("../../../libs/domain/tests/data/cdc-payload.json");

/// The runtime the coordinator client (and, for admissions, the coordinator) runs on.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
});

/// The real coordinator (memory store) on loopback; its gRPC URL.
fn coordinator_in_process() -> String {
    RUNTIME.block_on(async {
        let config = daisi_coordinator::Config::for_tests();
        let listeners = daisi_coordinator::Listeners::bind(&config).await.unwrap();
        let url = format!("http://{}", listeners.grpc.local_addr().unwrap());
        // Runs for the rest of the process.
        tokio::spawn(daisi_coordinator::run(
            config,
            listeners,
            daisi_runtime::CancellationToken::new(),
        ));
        url
    })
}

fn edge(token_cache: &str) -> Edge {
    // Nothing listens there: fan-out and token benches never call the coordinator.
    edge_with(token_cache, "http://127.0.0.1:9")
}

fn edge_with(token_cache: &str, coordinator_url: &str) -> Edge {
    let env = Env::from_pairs([
        ("DAISI_EDGE_HTTP_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_GRPC_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_POD_ID", "edge-bench"),
        ("DAISI_EDGE_TOKEN_AES_KEY", KEY),
        ("DAISI_EDGE_ADMIN_TOKEN_AES_KEY", KEY),
        ("DAISI_EDGE_SECRET_TOKEN", "bench-api-key"),
        ("DAISI_EDGE_ADMIN_SECRET_TOKEN", "bench-admin-key"),
        ("DAISI_EDGE_MAX_CONNECTIONS", "1000000"),
        ("DAISI_EDGE_TOKEN_CACHE_SIZE", token_cache),
    ]);
    let config = daisi_edge::Config::from_env(&env).unwrap().value;
    let _runtime = RUNTIME.enter();
    let client =
        GrpcCoordinator::new(&[coordinator_url.parse().unwrap()], Duration::from_secs(2)).unwrap();
    let coordinator = AnyCoordinator::Grpc(client);
    daisi_edge::state(config, coordinator, "127.0.0.1:50061".parse().unwrap())
        .unwrap()
        .0
}

fn ids() -> (CompanyId, AgentId) {
    ("comp-9".parse().unwrap(), "agent_7".parse().unwrap())
}

/// A socket of (company, agent) in the local index, as admission leaves it.
fn socket(edge: &Edge, n: u64) -> Arc<SocketHandle> {
    socket_speaking(edge, n, Subprotocol::V1)
}

fn socket_speaking(edge: &Edge, n: u64, protocol: Subprotocol) -> Arc<SocketHandle> {
    let (company, agent) = ids();
    let user = format!("user-{n}").parse().unwrap();
    let key = SessionKey::user(company.clone(), agent.clone(), user);
    let sockets = &edge.config.sockets;
    let mut outbox = Outbox::new(sockets.send_queue, sockets.slow_consumer);
    if protocol == Subprotocol::V2 {
        outbox = outbox.announcing_gaps();
    }
    Arc::new(
        SocketHandle::new(
            edge.registry.next_id(),
            ConnectionId::generate(),
            SocketKind::User { company, agent },
            key,
            1,
            outbox,
        )
        .with_protocol(protocol),
    )
}

fn fanout(c: &mut Criterion) {
    fanout_speaking(c, "edge_fanout", Subprotocol::V1);
    fanout_speaking(c, "edge_fanout_v2", Subprotocol::V2);
}

fn fanout_speaking(c: &mut Criterion, name: &str, protocol: Subprotocol) {
    let mut group = c.benchmark_group(name);
    for n in [1u64, 100, 10_000] {
        let edge = edge("0");
        let sockets: Vec<_> = (0..n)
            .map(|i| socket_speaking(&edge, i, protocol))
            .collect();
        for s in &sockets {
            edge.registry.insert(s.clone());
        }
        let (company, agent) = ids();
        let audience = Audience::AgentUsers(company, agent);
        let mut drained = Vec::new();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_batched(
                // Socket tasks empty their queues between events; do it outside the timing.
                || {
                    for s in &sockets {
                        drained.clear();
                        let _ = s.outbox.take(usize::MAX, &mut drained);
                    }
                },
                |()| {
                    let frame = render_event_frame(black_box(PAYLOAD), "message").unwrap();
                    let frames = EventFrames::new(frame.into(), 42, 1_764_441_600_123_456_789);
                    fan_out(&edge, &audience, &frames)
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

fn tokens(c: &mut Criterion) {
    let (company, agent) = ids();
    let ring = TokenKeyring::from_hex(&[KEY]).unwrap();
    let now = jiff::Timestamp::now();
    let claims =
        UserClaims::expiring_in(company, agent, "user-42".parse().unwrap(), now, 3600).unwrap();
    let token = ring.encode_user(&claims).unwrap();
    let mut group = c.benchmark_group("edge_token");
    let cached = edge("100000");
    cached.auth.user_token(Some(&token), now, |_| ()).unwrap();
    group.bench_function("cached", |b| {
        b.iter(|| {
            cached
                .auth
                .user_token(black_box(Some(&token)), now, |claims| claims.expires_at)
                .unwrap()
        });
    });
    let uncached = edge("0");
    group.bench_function("uncached", |b| {
        b.iter(|| {
            uncached
                .auth
                .user_token(black_box(Some(&token)), now, |claims| claims.expires_at)
                .unwrap()
        });
    });
    group.finish();
}

fn registration(c: &mut Criterion) {
    let mut group = c.benchmark_group("edge_register");
    // The local index with 10,000 other sockets of the agent present.
    let edge = edge("0");
    for i in 0..10_000 {
        edge.registry.insert(socket(&edge, i));
    }
    let mut n = 10_000;
    group.bench_function("index_insert_remove", |b| {
        b.iter(|| {
            n += 1;
            let s = socket(&edge, n);
            edge.registry.insert(s.clone());
            assert!(edge.registry.remove(&s));
        });
    });
    // Admission: session and routes acquired from the coordinator (one gRPC round trip to the
    // in-process service), indexed, `ready` queued; dropping the lease unindexes it and queues
    // the release, flushed in batches.
    let runtime = &*RUNTIME;
    let edge = edge_with("0", &coordinator_in_process());
    runtime.block_on(daisi_edge::lifecycle::pod::heartbeat_once(&edge));
    let (company, agent) = ids();
    let mut n = 0u64;
    group.bench_function("admit_release", |b| {
        b.iter(|| {
            n += 1;
            let user = format!("user-{n}").parse().unwrap();
            let key = SessionKey::user(company.clone(), agent.clone(), user);
            let kind = SocketKind::User {
                company: company.clone(),
                agent: agent.clone(),
            };
            let lease = runtime
                .block_on(daisi_edge::ws::admission::admit(&edge, kind, key))
                .unwrap();
            drop(lease);
            // The release loop batches like this in production (every 200 ms).
            if n.is_multiple_of(1000) {
                runtime.block_on(edge.releases.flush(&edge));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, fanout, tokens, registration);
criterion_main!(benches);
