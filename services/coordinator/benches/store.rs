//! Store hot paths, in-memory and against a private `redis-server` (started here, on a unix
//! socket): one acquire, a renew of 1,000 sessions (one edge pod's renew call), and a lookup of
//! 1,000 route queries (a router's batch).
//!
//! `cargo bench -p daisi-coordinator --bench store -- --quick`

#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use daisi_coordinator::store::{
    AcquireMode, AcquireOutcome, AcquireRequest, HeldSession, MemoryStore, PodHeartbeat,
    RedisSettings, RedisStore, RedisTarget, Route, RouteQuery, SessionStore, StoreSettings,
};
use daisi_domain::{PodId, SessionKey};
use daisi_testkit::RedisServer;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::runtime::Runtime;

const BATCH: usize = 1_000;

fn settings() -> StoreSettings {
    StoreSettings {
        session_lease: Duration::from_secs(300),
        pod_lease: Duration::from_secs(300),
        selection_retention: Duration::from_secs(3600),
        tombstone_ttl: Duration::from_secs(60),
    }
}

fn key(i: usize) -> SessionKey {
    format!("u:c{}:a{}:u{i}", i % 10, i % 100).parse().unwrap()
}

async fn register<S: SessionStore>(store: &S, pod: &PodId) {
    store
        .heartbeat(&PodHeartbeat {
            pod: pod.clone(),
            instance: "bench".to_owned(),
            delivery_address: "http://10.0.0.1:50061".to_owned(),
            load: None,
        })
        .await
        .unwrap();
}

async fn acquire<S: SessionStore>(store: &S, pod: &PodId, i: usize, conn: u64) -> HeldSession {
    let connection = format!("conn{conn}").parse().unwrap();
    let request = AcquireRequest {
        key: key(i),
        pod: pod.clone(),
        connection,
        mode: AcquireMode::Takeover,
        routes: Vec::new(),
    };
    let connection = request.connection.clone();
    match store.acquire(request).await.unwrap() {
        AcquireOutcome::Granted(grant) => HeldSession {
            key: key(i),
            connection,
            fencing: grant.fencing,
        },
        AcquireOutcome::Refused(_) | AcquireOutcome::Ended { .. } => unreachable!("fresh takeover"),
    }
}

fn bench_store<S: SessionStore>(c: &mut Criterion, rt: &Runtime, name: &str, store: &S) {
    let pod: PodId = "bench-edge".parse().unwrap();
    rt.block_on(register(store, &pod));
    let mut group = c.benchmark_group("store");

    // Acquire over 10,000 users: after the first round every acquire is a takeover with a
    // kill command, the expensive case.
    let counter = AtomicU64::new(0);
    group.bench_function(BenchmarkId::new("acquire", name), |b| {
        b.iter(|| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            rt.block_on(acquire(store, &pod, (n % 10_000) as usize, n))
        });
    });

    // One pod renewing 1,000 sessions it holds.
    let held: Vec<HeldSession> = rt.block_on(async {
        let mut held = Vec::new();
        for i in 0..BATCH {
            held.push(acquire(store, &pod, 100_000 + i, 1_000_000 + i as u64).await);
        }
        held
    });
    group.bench_function(BenchmarkId::new("renew_1000", name), |b| {
        b.iter(|| {
            let lost = rt.block_on(store.renew(&pod, &held)).unwrap();
            assert!(lost.is_empty());
        });
    });

    // A router's lookup of 1,000 queries; half of them have a route on one of two pods.
    let other: PodId = "bench-edge-2".parse().unwrap();
    rt.block_on(register(store, &other));
    let routes: Vec<Route> = (0..BATCH / 2)
        .map(|i| format!("agent:c{i}:a{i}").parse().unwrap())
        .collect();
    rt.block_on(store.register_routes(&pod, &routes)).unwrap();
    rt.block_on(store.register_routes(&other, &routes[..BATCH / 4]))
        .unwrap();
    let queries: Vec<RouteQuery> = (0..BATCH)
        .map(|i| RouteQuery::Agent {
            company: format!("c{i}").parse().unwrap(),
            agent: format!("a{i}").parse().unwrap(),
        })
        .collect();
    group.bench_function(BenchmarkId::new("lookup_1000", name), |b| {
        b.iter(|| {
            let lookup = rt.block_on(store.lookup_routes(&queries)).unwrap();
            assert_eq!(lookup.results.len(), BATCH);
        });
    });
    group.finish();
}

fn stores(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let memory = MemoryStore::new(settings());
    bench_store(c, &rt, "memory", &memory);

    let server = RedisServer::start().unwrap();
    let redis = rt
        .block_on(async {
            RedisStore::new(
                &RedisSettings {
                    target: RedisTarget::Single(server.url()),
                    key_prefix: "bench".to_owned(),
                    timeout: Duration::from_secs(5),
                    chunk: 1_000,
                    tls: None,
                },
                settings(),
            )
        })
        .unwrap();
    bench_store(c, &rt, "redis", &redis);
    drop(redis);
    drop(server);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = stores
}
criterion_main!(benches);
