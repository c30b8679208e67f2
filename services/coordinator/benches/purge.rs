//! A dead pod's purge under load, on a private single `redis-server` (not a timed test: it
//! prints what it measured). A pod holding `SESSIONS` sessions (with one agent route per 10
//! sessions) stops heartbeating; while its lease runs out and a reaper purges it, probe tasks
//! keep acquiring sessions on a live pod and looking up routes, each call timed. Prints the
//! purge's wall time and counts, the probes' p50 / p99 / max over the purge window, and the
//! longest command of Redis' SLOWLOG (every command over 1 ms is logged) during the purge.
//! Target (issue 17): no other call over 50 ms.
//!
//! `cargo bench -p daisi-coordinator --bench purge` (`DAISI_PURGE_SESSIONS` overrides the
//! 50,000 sessions; `--profile dev` skips the release build, at the cost of slower client-side
//! time in the probe figures).

#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

use daisi_coordinator::store::{
    AcquireMode, AcquireOutcome, AcquireRequest, PodHeartbeat, RedisSettings, RedisStore,
    RedisTarget, Route, RouteQuery, SessionStore, StoreSettings,
};
use daisi_domain::PodId;
use daisi_testkit::RedisServer;
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const POD_LEASE: Duration = Duration::from_secs(3);
const PROBES: usize = 4;
const LOAD_IN_FLIGHT: usize = 64;

fn heartbeat(pod: &PodId) -> PodHeartbeat {
    PodHeartbeat {
        pod: pod.clone(),
        instance: format!("{pod}-i1"),
        delivery_address: "http://10.0.0.1:50061".to_owned(),
        load: None,
    }
}

async fn acquire(store: &RedisStore, pod: &PodId, key: String, conn: String, route: Option<Route>) {
    let request = AcquireRequest {
        key: key.parse().unwrap(),
        pod: pod.clone(),
        connection: conn.parse().unwrap(),
        mode: AcquireMode::Takeover,
        routes: route.into_iter().collect(),
    };
    match store.acquire(request).await.unwrap() {
        AcquireOutcome::Granted(_) => {}
        other => panic!("not granted: {other:?}"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let sessions: usize = std::env::var("DAISI_PURGE_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = RedisServer::start().unwrap();
    rt.block_on(run(&server, sessions));
}

async fn run(server: &RedisServer, sessions: usize) {
    let store = RedisStore::new(
        &RedisSettings {
            target: RedisTarget::Single(server.url()),
            key_prefix: "purge".to_owned(),
            timeout: Duration::from_secs(5),
            chunk: 5_000,
            tls: None,
        },
        StoreSettings {
            pod_lease: POD_LEASE,
            selection_retention: Duration::from_secs(3600),
            tombstone_ttl: Duration::from_secs(60),
        },
    )
    .unwrap();
    let dead: PodId = "dead-edge".parse().unwrap();
    let live: PodId = "live-edge".parse().unwrap();

    // Both pods heartbeat; the dead one stops once it holds every session.
    let dead_alive = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let beats = {
        let (store, dead, live) = (store.clone(), dead.clone(), live.clone());
        let (dead_alive, stop) = (dead_alive.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                store.heartbeat(&heartbeat(&live)).await.unwrap();
                if dead_alive.load(Ordering::Relaxed) {
                    store.heartbeat(&heartbeat(&dead)).await.unwrap();
                }
                tokio::time::sleep(POD_LEASE / 6).await;
            }
        })
    };
    store.heartbeat(&heartbeat(&dead)).await.unwrap();
    store.heartbeat(&heartbeat(&live)).await.unwrap();

    let loading = Instant::now();
    futures_util::stream::iter(0..sessions)
        .for_each_concurrent(LOAD_IN_FLIGHT, |i| {
            let (store, dead) = (&store, &dead);
            async move {
                let (c, a) = (i % 100, i % 5_000);
                let route: Route = format!("agent:c{c}:a{a}").parse().unwrap();
                acquire(
                    store,
                    dead,
                    format!("u:c{c}:a{a}:u{i}"),
                    format!("d{i}"),
                    Some(route),
                )
                .await;
            }
        })
        .await;
    println!(
        "loaded {sessions} sessions on {dead} in {:.1} s",
        loading.elapsed().as_secs_f64()
    );
    dead_alive.store(false, Ordering::Relaxed);
    let last_beat = Instant::now();

    let mut admin = store.connection();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(1_000)
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-max-len")
        .arg(10_000)
        .query_async(&mut admin)
        .await
        .unwrap();

    // Probes: acquire on the live pod, then a lookup of one agent route, in a loop.
    let probing = Arc::new(AtomicBool::new(true));
    let counter = Arc::new(AtomicU64::new(0));
    let probes: Vec<_> = (0..PROBES)
        .map(|n| {
            let (store, live) = (store.clone(), live.clone());
            let (probing, counter) = (probing.clone(), counter.clone());
            tokio::spawn(async move {
                let mut samples: Vec<(Instant, &'static str, Duration)> = Vec::new();
                while probing.load(Ordering::Relaxed) {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    let started = Instant::now();
                    acquire(
                        &store,
                        &live,
                        format!("u:p{n}:a1:u{}", i % 10_000),
                        format!("p{i}"),
                        None,
                    )
                    .await;
                    samples.push((started, "acquire", started.elapsed()));
                    let query = RouteQuery::Agent {
                        company: format!("c{}", i % 100).parse().unwrap(),
                        agent: format!("a{}", i % 5_000).parse().unwrap(),
                    };
                    let started = Instant::now();
                    store.lookup_routes(&[query]).await.unwrap();
                    samples.push((started, "lookup", started.elapsed()));
                }
                samples
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(&mut admin)
        .await
        .unwrap();
    // The reaper's loop, at its interval for this lease.
    let purge_started;
    let purged;
    loop {
        tokio::time::sleep(POD_LEASE / 4).await;
        let started = Instant::now();
        let reaped = store.reap_expired_pods().await.unwrap();
        if let Some((_, counts)) = reaped.into_iter().find(|(pod, _)| pod == &dead) {
            purge_started = started;
            purged = counts;
            break;
        }
        assert!(
            last_beat.elapsed() < POD_LEASE * 4,
            "the pod was never purged"
        );
    }
    let purge_took = purge_started.elapsed();
    let slowlog: Vec<(u64, u64, u64, Vec<String>)> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(10_000)
        .query_async::<Vec<redis::Value>>(&mut admin)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|entry| {
            let redis::Value::Array(fields) = entry else {
                return None;
            };
            let id: u64 = redis::from_redis_value(fields.first()?.clone()).ok()?;
            let at: u64 = redis::from_redis_value(fields.get(1)?.clone()).ok()?;
            let micros: u64 = redis::from_redis_value(fields.get(2)?.clone()).ok()?;
            let args: Vec<String> = redis::from_redis_value(fields.get(3)?.clone()).ok()?;
            Some((id, at, micros, args))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    probing.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut during: Vec<Duration> = Vec::new();
    let mut all: Vec<Duration> = Vec::new();
    let purge_ended = purge_started + purge_took;
    for probe in probes {
        for (at, _, took) in probe.await.unwrap() {
            all.push(took);
            if at + took >= purge_started && at <= purge_ended {
                during.push(took);
            }
        }
    }
    beats.await.unwrap();
    during.sort();
    all.sort();
    println!(
        "purge of {dead}: {} sessions, {} routes in {:.0} ms (reap call, sweep included)",
        purged.sessions,
        purged.routes,
        purge_took.as_secs_f64() * 1e3
    );
    for (name, samples) in [("during the purge", &during), ("whole probe run", &all)] {
        println!(
            "probe calls {name}: {} calls, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            samples.len(),
            percentile(samples, 0.5).as_secs_f64() * 1e3,
            percentile(samples, 0.99).as_secs_f64() * 1e3,
            samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3
        );
    }
    let longest = slowlog.iter().max_by_key(|entry| entry.2);
    println!(
        "redis SLOWLOG (> 1 ms) during the purge: {} entries, max {:.2} ms ({})",
        slowlog.len(),
        longest.map_or(0.0, |e| e.2 as f64 / 1e3),
        // EVALSHA <sha> <numkeys> <first key>: the key names the script.
        longest.map_or(String::new(), |e| {
            let arg = |i: usize| e.3.get(i).map_or("", String::as_str);
            format!("{} {}", arg(0), arg(3))
        })
    );
}
