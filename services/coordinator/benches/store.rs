//! Store hot paths, in-memory, against a private `redis-server` (started here, on a unix
//! socket) and against a private Redis Cluster (3 masters, 3 replicas on loopback TCP): one
//! acquire, a renew of 1,000 sessions (one edge pod's renew call), and a lookup of 1,000 route
//! queries (a router's batch).
//!
//! `store_throughput`: 64 acquires, or 64 single-query lookups, in flight at once (what many
//! edges and routers send together), on one Redis over TCP and on the cluster, so the two are
//! compared over the same transport. Keys are sharded by user, company and pod, so on the
//! cluster the load spreads over the three masters (Redis' own script time is printed per
//! master).
//!
//! `cargo bench -p daisi-coordinator --bench store -- --quick`

#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use daisi_coordinator::store::{
    AcquireMode, AcquireOutcome, AcquireRequest, HeldSession, MemoryStore, PodHeartbeat,
    RedisSettings, RedisStore, RedisTarget, Route, RouteQuery, SessionStore, StoreSettings,
};
use daisi_domain::{PodId, SessionKey};
use daisi_testkit::{RedisCluster, RedisServer};
use futures_util::future::join_all;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::runtime::Runtime;

const BATCH: usize = 1_000;
/// Calls in flight at once in the throughput group.
const IN_FLIGHT: usize = 64;

fn settings() -> StoreSettings {
    StoreSettings {
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

/// `IN_FLIGHT` acquires (takeovers over 10,000 users) and `IN_FLIGHT` one-query lookups at once.
fn bench_throughput<S: SessionStore>(c: &mut Criterion, rt: &Runtime, name: &str, store: &S) {
    let pod: PodId = "bench-edge".parse().unwrap();
    rt.block_on(register(store, &pod));
    let routes: Vec<Route> = (0..BATCH)
        .map(|i| format!("agent:c{i}:a{i}").parse().unwrap())
        .collect();
    rt.block_on(store.register_routes(&pod, &routes)).unwrap();
    let mut group = c.benchmark_group("store_throughput");
    group.throughput(Throughput::Elements(IN_FLIGHT as u64));
    let counter = AtomicU64::new(0);
    group.bench_function(BenchmarkId::new("acquire_x64", name), |b| {
        b.iter(|| {
            rt.block_on(join_all((0..IN_FLIGHT).map(|_| {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                acquire(store, &pod, (n % 10_000) as usize, n)
            })))
        });
    });
    let queries: Vec<Vec<RouteQuery>> = (0..BATCH)
        .map(|i| {
            vec![RouteQuery::Agent {
                company: format!("c{i}").parse().unwrap(),
                agent: format!("a{i}").parse().unwrap(),
            }]
        })
        .collect();
    let next = AtomicU64::new(0);
    group.bench_function(BenchmarkId::new("lookup_x64", name), |b| {
        b.iter(|| {
            rt.block_on(join_all((0..IN_FLIGHT).map(|_| {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize % BATCH;
                let query = &queries[i];
                async move {
                    let lookup = store.lookup_routes(query).await.unwrap();
                    assert_eq!(lookup.results.len(), 1);
                }
            })))
        });
    });
    group.finish();
}

fn open(rt: &Runtime, target: RedisTarget) -> RedisStore {
    rt.block_on(async {
        RedisStore::new(
            &RedisSettings {
                target,
                key_prefix: "bench".to_owned(),
                timeout: Duration::from_secs(5),
                chunk: 1_000,
                tls: None,
            },
            settings(),
        )
    })
    .unwrap()
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
    let redis = open(&rt, RedisTarget::Single(server.url()));
    bench_store(c, &rt, "redis", &redis);
    drop(redis);
    drop(server);

    let server = RedisServer::start_tcp().unwrap();
    let port = server
        .tcp_url()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let redis = open(&rt, RedisTarget::Single(server.tcp_url().unwrap()));
    server_stats(&port, "CONFIG", &["RESETSTAT"]);
    bench_throughput(c, &rt, "redis_tcp", &redis);
    print_script_cost("redis_tcp", &port);
    drop(redis);
    drop(server);

    let cluster = RedisCluster::start().unwrap();
    let redis = open(&rt, RedisTarget::Cluster(cluster.urls()));
    bench_store(c, &rt, "redis_cluster", &redis);
    let masters: Vec<String> = cluster
        .topology()
        .unwrap()
        .iter()
        .filter(|n| n.master && !n.failed)
        .map(|n| n.port.to_string())
        .collect();
    for port in &masters {
        server_stats(port, "CONFIG", &["RESETSTAT"]);
    }
    bench_throughput(c, &rt, "redis_cluster", &redis);
    for port in &masters {
        print_script_cost(&format!("redis_cluster (master 127.0.0.1:{port})"), port);
    }
    for port in cluster.ports() {
        let keys = cluster.dbsize(port).unwrap_or_default();
        eprintln!("redis_cluster: node 127.0.0.1:{port} holds {keys} keys");
    }
    drop(redis);
    drop(cluster);
}

/// `redis-cli -p PORT command args...` (benchmark bookkeeping; failures print nothing).
fn server_stats(port: &str, command: &str, args: &[&str]) -> String {
    std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", port, command])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Redis' own time per script call over the throughput group (`INFO commandstats`): the cost
/// that bounds one master's throughput, independent of this client's build profile.
fn print_script_cost(name: &str, port: &str) {
    let stats = server_stats(port, "INFO", &["commandstats"]);
    for line in stats.lines().filter(|l| l.starts_with("cmdstat_evalsha")) {
        eprintln!("{name}: {}", line.trim());
    }
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
