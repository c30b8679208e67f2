//! The coordinator on a real Redis Cluster (3 masters, 3 replicas on loopback): 10,000
//! sessions acquired through two coordinator replicas land on all three masters (keys per
//! master printed), then the master serving one edge's pod slot (and a third of the sessions)
//! is SIGKILLed while edges go on taking sessions over.
//! After the failover every session an edge believes it holds is the one the store holds, no
//! user is held by two edges, and the few acknowledged writes the failover lost are counted.

use crate::support::*;
use daisi_coordinator::config::RedisUrl;
use daisi_coordinator::store::{
    PageRequest, RedisSettings, RedisStore, RedisTarget, SessionFilter, SessionStore, StoreSettings,
};
use daisi_coordinator::{Config, StoreKind};
use daisi_proto::coordinator::v1 as pb;
use daisi_testkit::{ClusterOptions, RedisCluster};
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const USERS: usize = 10_000;
const COMPANIES: usize = 10;
const PREFIX: &str = "it";
/// How long the whole failover may take, from SIGKILL to every edge renewed again.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(60);

fn company(i: usize) -> String {
    format!("c{}", i % COMPANIES)
}

fn user_key_of(i: usize) -> pb::SessionKey {
    pb::SessionKey {
        kind: Some(pb::session_key::Kind::User(pb::UserSessionKey {
            company_id: company(i),
            agent_id: "a1".to_owned(),
            user_id: format!("u{i}"),
        })),
    }
}

fn cluster_config(cluster: &RedisCluster) -> Config {
    let mut config = Config::for_tests();
    config.store = StoreKind::Redis;
    config.redis_cluster_urls = cluster
        .urls()
        .iter()
        .map(|u| RedisUrl(u.parse().unwrap()))
        .collect();
    config.key_prefix = PREFIX.to_owned();
    config.redis_timeout = Duration::from_secs(2);
    // Leases far above the failover window: nothing lapses while the test runs, so every
    // loss the test sees comes from the failover itself.
    config.pod_lease = Duration::from_secs(120);
    config
}

/// `used_memory` summed over the masters.
fn used_memory(cluster: &RedisCluster) -> u64 {
    cluster
        .topology()
        .unwrap()
        .iter()
        .filter(|n| n.master && !n.failed)
        .map(|n| {
            let info = cluster.command(n.port, &["INFO", "memory"]).unwrap();
            info.lines()
                .find_map(|l| l.trim().strip_prefix("used_memory:"))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap()
        })
        .sum()
}

/// What one edge believes it holds: user index -> (connection, fencing token).
type Held = HashMap<usize, (String, u64)>;

/// Acquires `user` for `pod` as `connection` (takeover), retrying the same call until it is
/// answered: a retried acquire of the same connection is idempotent, so the grant finally
/// returned is the one the store recorded, even if an earlier attempt was applied and its
/// answer lost. Answers the grant and how many attempts failed.
async fn acquire_until_granted(
    replicas: &[pb::session_service_client::SessionServiceClient<tonic::transport::Channel>],
    user: usize,
    pod: &str,
    connection: &str,
    deadline: Instant,
) -> (pb::AcquireGranted, u64) {
    let mut failures = 0;
    loop {
        let mut client = replicas[(user + failures as usize) % replicas.len()].clone();
        let request = pb::AcquireRequest {
            key: Some(user_key_of(user)),
            pod_id: pod.to_owned(),
            connection_id: connection.to_owned(),
            mode: pb::AcquireMode::Takeover as i32,
            routes: Vec::new(),
        };
        match client
            .acquire(request)
            .await
            .map(tonic::Response::into_inner)
        {
            Ok(pb::AcquireResponse {
                outcome: Some(pb::acquire_response::Outcome::Granted(granted)),
            }) => return (granted, failures),
            Ok(other) => panic!("takeover of u{user} not granted: {other:?}"),
            Err(status) => {
                assert!(
                    Instant::now() < deadline,
                    "u{user} not granted before the deadline; last error: {status}"
                );
                failures += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Renews everything `held` for `pod`, in chunks, retrying a chunk until it is answered;
/// removes what the store says the pod lost. Answers how many were lost.
async fn renew_all(replica: &Replica, pod: &str, held: &mut Held, deadline: Instant) -> usize {
    let entries: Vec<(usize, (String, u64))> = held.iter().map(|(u, h)| (*u, h.clone())).collect();
    let mut lost = 0;
    for chunk in entries.chunks(1_000) {
        let request = pb::RenewRequest {
            pod_id: pod.to_owned(),
            sessions: chunk
                .iter()
                .map(|(user, (conn, fence))| pb::HeldSession {
                    key: Some(user_key_of(*user)),
                    connection_id: conn.clone(),
                    fencing_token: *fence,
                })
                .collect(),
        };
        let answer = loop {
            match replica.sessions().renew(request.clone()).await {
                Ok(answer) => break answer.into_inner(),
                Err(status) => {
                    assert!(Instant::now() < deadline, "renew failed: {status}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        for gone in answer.lost {
            let session = gone.session.unwrap();
            let Some(pb::session_key::Kind::User(user)) = session.key.unwrap().kind else {
                panic!("a user session");
            };
            let index: usize = user.user_id[1..].parse().unwrap();
            held.remove(&index);
            lost += 1;
        }
    }
    lost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_survive_a_master_failover_with_one_holder_each() {
    let mut cluster = tokio::task::spawn_blocking(|| {
        RedisCluster::start_with(ClusterOptions {
            node_timeout: Duration::from_millis(1_000),
            ..ClusterOptions::default()
        })
    })
    .await
    .unwrap()
    .expect("the redis cluster starts");
    let a = Replica::start_ready(cluster_config(&cluster)).await;
    let b = Replica::start_ready(cluster_config(&cluster)).await;
    let pods = ["edge-a", "edge-b"];
    heartbeat(&a, pods[0]).await.unwrap();
    heartbeat(&b, pods[1]).await.unwrap();
    let clients = vec![a.sessions(), b.sessions()];

    let memory_before = used_memory(&cluster);
    // 10,000 users, half on each edge, calls spread over both coordinators.
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    let grants: Vec<(usize, String, pb::AcquireGranted)> = futures_util::stream::iter(0..USERS)
        .map(|user| {
            let clients = clients.clone();
            async move {
                let connection = format!("conn-{user}-0");
                let (granted, _) =
                    acquire_until_granted(&clients, user, pods[user % 2], &connection, deadline)
                        .await;
                (user, connection, granted)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let took = started.elapsed();
    let mut held: [Held; 2] = [HashMap::new(), HashMap::new()];
    for (user, connection, granted) in grants {
        held[user % 2].insert(user, (connection, granted.fencing_token));
    }
    eprintln!(
        "acquired {USERS} sessions through two coordinators in {took:?} ({:.0}/s, 64 in flight)",
        USERS as f64 / took.as_secs_f64()
    );

    // Where the keys are: sessions are keyed by user, so they spread over every master.
    let topology = cluster.topology().unwrap();
    let masters: Vec<u16> = topology
        .iter()
        .filter(|n| n.master && !n.failed)
        .map(|n| n.port)
        .collect();
    assert_eq!(masters.len(), 3);
    let per_master: Vec<u64> = masters
        .iter()
        .map(|port| cluster.dbsize(*port).unwrap())
        .collect();
    let total: u64 = per_master.iter().sum();
    for (port, keys) in masters.iter().zip(&per_master) {
        eprintln!("keys on master 127.0.0.1:{port}: {keys} of {total}");
    }
    for (port, keys) in masters.iter().zip(&per_master) {
        // Each master serves a third of the slots: with 10,000 users, far more than a tenth.
        assert!(
            *keys * 10 > total,
            "master 127.0.0.1:{port} holds {keys} of {total} keys: sessions are not spread"
        );
    }
    // The master to kill serves edge-a's pod slot (and a third of the sessions).
    let serving = cluster.master_of("{it:p:edge-a}:pod").unwrap();
    let grown = used_memory(&cluster).saturating_sub(memory_before);
    eprintln!(
        "redis memory of the sessions: {grown} bytes on the masters = {} bytes per session \
         (hash + last fencing token + pod set + 2 index sets)",
        grown / USERS as u64
    );

    // Edges go on taking sessions over (users reconnecting to the other edge) while the
    // master dies; each takeover is retried until answered.
    cluster
        .sync_replicas(serving, Duration::from_secs(10))
        .expect("replicas caught up before the kill");
    let stop = Arc::new(AtomicBool::new(false));
    let attempts_failed = Arc::new(AtomicU64::new(0));
    let churn = tokio::spawn({
        let clients = clients.clone();
        let stop = stop.clone();
        let attempts_failed = attempts_failed.clone();
        async move {
            // Users 0, 1, 2, ... move to the other edge, one at a time per worker.
            let mut moved = Vec::new();
            let mut round = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<_> = (0..8).map(|w| round * 8 + w).collect();
                round += 1;
                let results = futures_util::future::join_all(batch.iter().map(|&user| {
                    let clients = clients.clone();
                    async move {
                        let pod = pods[(user + 1) % 2];
                        let connection = format!("conn-{user}-1");
                        let deadline = Instant::now() + FAILOVER_DEADLINE;
                        let (granted, failed) =
                            acquire_until_granted(&clients, user, pod, &connection, deadline).await;
                        (user, connection, granted, failed)
                    }
                }))
                .await;
                for (user, connection, granted, failed) in results {
                    attempts_failed.fetch_add(failed, Ordering::Relaxed);
                    moved.push((user, connection, granted.fencing_token));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            moved
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_at = Instant::now();
    cluster.kill(serving).unwrap();
    let promoted =
        tokio::task::block_in_place(|| cluster.wait_failover(serving, FAILOVER_DEADLINE))
            .expect("a replica takes over");
    let failover = killed_at.elapsed();
    eprintln!(
        "SIGKILLed master 127.0.0.1:{serving}; replica 127.0.0.1:{promoted} serves its slots after {failover:?}"
    );
    // Let the churn run on the new master for a while, then stop it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let moved = churn.await.unwrap();
    for (user, connection, fence) in &moved {
        held[(user + 1) % 2].insert(*user, (connection.clone(), *fence));
    }
    eprintln!(
        "{} users moved to the other edge around the kill; {} acquire attempts failed and were retried",
        moved.len(),
        attempts_failed.load(Ordering::Relaxed)
    );
    assert!(!moved.is_empty(), "the churn ran");

    // Each edge renews what it holds, as it does every renew interval; the store answers
    // what it lost (taken over, or a write the failover dropped).
    let deadline = Instant::now() + FAILOVER_DEADLINE;
    let lost_a = renew_all(&a, pods[0], &mut held[0], deadline).await;
    let lost_b = renew_all(&b, pods[1], &mut held[1], deadline).await;
    eprintln!("renew after the failover: edge-a lost {lost_a}, edge-b lost {lost_b}");

    // No user on both edges.
    let on_a: HashSet<usize> = held[0].keys().copied().collect();
    let both: Vec<_> = held[1].keys().filter(|u| on_a.contains(u)).collect();
    assert!(both.is_empty(), "users held by both edges: {both:?}");

    // Users neither edge holds any more are re-acquired by the edge their socket is on.
    let orphans: Vec<usize> = (0..USERS)
        .filter(|u| !held[0].contains_key(u) && !held[1].contains_key(u))
        .collect();
    for &user in &orphans {
        let edge = user % 2;
        let connection = format!("conn-{user}-2");
        let (granted, _) =
            acquire_until_granted(&clients, user, pods[edge], &connection, deadline).await;
        held[edge].insert(user, (connection, granted.fencing_token));
    }
    eprintln!(
        "{} users held by neither edge after the renew were re-acquired",
        orphans.len()
    );

    // The store agrees with the edges, user by user.
    let store = RedisStore::new(
        &RedisSettings {
            target: RedisTarget::Cluster(cluster.urls()),
            key_prefix: PREFIX.to_owned(),
            timeout: Duration::from_secs(2),
            chunk: 1_000,
            tls: None,
        },
        StoreSettings {
            pod_lease: Duration::from_secs(120),
            selection_retention: Duration::from_secs(3600),
            tombstone_ttl: Duration::from_secs(60),
        },
    )
    .unwrap();
    let mut stored: HashMap<usize, (String, String, u64)> = HashMap::new();
    for c in 0..COMPANIES {
        let filter = SessionFilter::Company(company(c).parse().unwrap());
        let mut token = None;
        loop {
            let page = store
                .list_sessions(&filter, &PageRequest { size: 1_000, token })
                .await
                .unwrap();
            for info in page.items {
                let daisi_domain::SessionKey::User { user, .. } = &info.key else {
                    panic!("user sessions only");
                };
                let index: usize = user.as_str()[1..].parse().unwrap();
                stored.insert(
                    index,
                    (
                        info.holder.pod.to_string(),
                        info.holder.connection.to_string(),
                        info.holder.fencing.0,
                    ),
                );
            }
            token = page.next;
            if token.is_none() {
                break;
            }
        }
    }
    let mut mismatched = Vec::new();
    for (edge, map) in held.iter().enumerate() {
        for (user, (connection, fence)) in map {
            let expected = (pods[edge].to_owned(), connection.clone(), *fence);
            if stored.get(user) != Some(&expected) {
                mismatched.push((*user, expected, stored.get(user).cloned()));
            }
        }
    }
    assert!(
        mismatched.is_empty(),
        "{} sessions differ between edges and store, e.g. {:?}",
        mismatched.len(),
        &mismatched[..mismatched.len().min(5)]
    );
    assert_eq!(
        held[0].len() + held[1].len(),
        USERS,
        "every user has one socket"
    );
    assert_eq!(stored.len(), USERS, "the store holds every user once");
}
