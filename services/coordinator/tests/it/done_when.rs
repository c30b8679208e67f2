//! The "Done when" lines, each against real `redis-server`s and coordinator replicas
//! started in-process, spoken to with the generated gRPC clients.

use crate::support::*;
use daisi_proto::coordinator::v1 as pb;
use daisi_testkit::RedisServer;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tonic::Code;

/// 200 concurrent acquires of one user through two replicas: exactly one holder, every other
/// connection killed exactly once, fencing tokens strictly increasing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_acquires_through_two_replicas_leave_one_holder() {
    let redis = RedisServer::start().unwrap();
    let a = Replica::start_ready(redis_config(&redis)).await;
    let b = Replica::start_ready(redis_config(&redis)).await;
    heartbeat(&a, "edge-a").await.unwrap();
    heartbeat(&b, "edge-b").await.unwrap();
    // Each pod's stream is on the other replica: every kill has to cross replicas.
    let mut streams = [
        ("edge-a", watch(&b, "edge-a").await),
        ("edge-b", watch(&a, "edge-b").await),
    ];

    let clients = [a.sessions(), b.sessions()];
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let mut client = clients[(i / 2) % 2].clone();
            let pod = if i % 2 == 0 { "edge-a" } else { "edge-b" };
            let connection = format!("conn-{i}");
            tokio::spawn(async move {
                let answer = client
                    .acquire(acquire_request("u1", pod, &connection))
                    .await
                    .unwrap()
                    .into_inner();
                let Some(pb::acquire_response::Outcome::Granted(granted)) = answer.outcome else {
                    panic!("takeover refused");
                };
                (connection, pod, granted)
            })
        })
        .collect();
    let mut grants = HashMap::new();
    for task in tasks {
        let (connection, pod, granted) = task.await.unwrap();
        if let Some(previous) = &granted.previous {
            assert!(
                previous.fencing_token < granted.fencing_token,
                "a takeover raises the token"
            );
        }
        grants.insert(connection, (pod, granted.fencing_token));
    }
    let mut tokens: Vec<u64> = grants.values().map(|(_, t)| *t).collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 200, "every grant has its own token");

    let session = a
        .admin()
        .get_session(pb::GetSessionRequest {
            key: Some(user_key("u1")),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    let holder = session.holder.unwrap();
    assert_eq!(
        Some(&holder.fencing_token),
        tokens.last(),
        "the newest grant holds"
    );
    assert_eq!(grants[&holder.connection_id].1, holder.fencing_token);

    let mut kills: HashMap<String, u32> = HashMap::new();
    for (pod, stream) in &mut streams {
        // Every grant on this pod except the holder's was superseded exactly once.
        let expected = grants.values().filter(|(p, _)| p == pod).count()
            - usize::from(grants[&holder.connection_id].0 == *pod);
        let mut last_token = 0;
        for _ in 0..expected {
            let kill = next_kill(stream, Duration::from_secs(5))
                .await
                .expect("every superseded connection gets its kill");
            let (granted_pod, token) = grants[&kill.connection_id];
            assert_eq!(&granted_pod, pod, "kills go to the holder's pod");
            assert_eq!(kill.fencing_token, token, "kills name the killed grant");
            assert_eq!(kill.reason, pb::SessionEndReason::TakenOver as i32);
            assert!(
                kill.fencing_token > last_token,
                "kills arrive in token order"
            );
            last_token = kill.fencing_token;
            *kills.entry(kill.connection_id).or_default() += 1;
        }
        let extra = next_kill(stream, Duration::from_millis(300)).await;
        assert!(
            extra.is_none(),
            "no kill beyond one per connection: {extra:?}"
        );
    }
    assert!(
        !kills.contains_key(&holder.connection_id),
        "the holder is never killed"
    );
    assert_eq!(kills.len(), 199, "every other connection was killed");
    assert!(kills.values().all(|n| *n == 1), "exactly once each");
}

/// An operator's kill raised on replica A reaches the pod's stream on replica B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_raised_on_one_replica_reaches_a_watcher_on_another() {
    let redis = RedisServer::start().unwrap();
    let a = Replica::start_ready(redis_config(&redis)).await;
    let b = Replica::start_ready(redis_config(&redis)).await;
    heartbeat(&a, "edge-1").await.unwrap();
    let mut on_b = watch(&b, "edge-1").await;
    let granted = acquire(&a, "u1", "edge-1", "conn-1").await.unwrap();

    let answer = a
        .admin()
        .kill_session(pb::KillSessionRequest {
            key: Some(user_key("u1")),
            reason: "ticket 42".to_owned(),
            connection_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(answer.killed);
    let kill = next_kill(&mut on_b, Duration::from_secs(3)).await.unwrap();
    assert_eq!(kill.connection_id, "conn-1");
    assert_eq!(kill.fencing_token, granted.fencing_token);
    assert_eq!(kill.reason, pb::SessionEndReason::KilledByAdmin as i32);
    assert_eq!(kill.message, "ticket 42");
    assert_eq!(kill.key, Some(user_key("u1")));
}

/// A pod that stops heartbeating loses its sessions and routes within one lease; a pod that
/// keeps heartbeating keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_pod_loses_its_sessions_and_routes_within_one_lease() {
    const LEASE: Duration = Duration::from_secs(1);
    let redis = RedisServer::start().unwrap();
    let mut config = redis_config(&redis);
    config.pod_lease = LEASE;
    let a = Replica::start_ready(config.clone()).await;
    let b = Replica::start_ready(config).await;

    heartbeat(&a, "edge-live").await.unwrap();
    let keeper = tokio::spawn({
        let pods = a.pods();
        async move {
            loop {
                let mut pods = pods.clone();
                let _ = pods
                    .heartbeat(pb::HeartbeatRequest {
                        pod_id: "edge-live".to_owned(),
                        instance_id: instance("edge-live"),
                        delivery_address: "http://10.0.0.2:50061".to_owned(),
                        load: None,
                        commands_acked: 0,
                    })
                    .await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    });
    acquire(&a, "u-live", "edge-live", "conn-live")
        .await
        .unwrap();

    heartbeat(&a, "edge-dead").await.unwrap();
    let last_heartbeat = Instant::now();
    let granted = acquire(&a, "u-dead", "edge-dead", "conn-dead")
        .await
        .unwrap();
    let selected = a
        .sessions()
        .select_chat(pb::SelectChatRequest {
            key: Some(user_key("u-dead")),
            pod_id: "edge-dead".to_owned(),
            connection_id: "conn-dead".to_owned(),
            fencing_token: granted.fencing_token,
            chat_id: "chat-1".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(selected.session_held);

    // Purged at once by a reaper (on either replica) shortly after the lease lapses.
    let mut admin = b.admin();
    eventually(Duration::from_secs(3), || {
        let mut admin = admin.clone();
        async move {
            let routes = admin
                .get_routes(pb::GetRoutesRequest {
                    selector: Some(pb::get_routes_request::Selector::PodId(
                        "edge-dead".to_owned(),
                    )),
                    page_size: 0,
                    page_token: String::new(),
                })
                .await
                .unwrap()
                .into_inner();
            let session = admin
                .get_session(pb::GetSessionRequest {
                    key: Some(user_key("u-dead")),
                })
                .await;
            routes.entries.is_empty() && session.is_err_and(|s| s.code() == Code::NotFound)
        }
    })
    .await;
    let purged_after = last_heartbeat.elapsed();
    assert!(
        purged_after >= LEASE,
        "purged only after the lease: {purged_after:?}"
    );
    assert!(
        purged_after <= LEASE + Duration::from_millis(600),
        "purged within the lease plus one reaper pass: {purged_after:?}"
    );

    // Routers see only the live pod; the dead one is unknown.
    let lookup = b
        .routes()
        .lookup_routes(pb::LookupRoutesRequest {
            queries: vec![agent_query()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lookup.results[0].pod_ids, ["edge-live"]);
    assert_eq!(lookup.pods.len(), 1);
    let resolved = b
        .pods()
        .resolve_pods(pb::ResolvePodsRequest {
            pod_ids: vec!["edge-dead".to_owned(), "edge-live".to_owned()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resolved.unknown_pod_ids, ["edge-dead"]);
    let listed = admin
        .list_pods(pb::ListPodsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = listed.pods.iter().map(|p| p.pod_id.as_str()).collect();
    assert_eq!(names, ["edge-live"]);
    admin
        .get_session(pb::GetSessionRequest {
            key: Some(user_key("u-live")),
        })
        .await
        .expect("the live pod keeps its session");

    // The dead pod's renew is refused until it heartbeats again, and then it starts empty.
    let renew = a
        .sessions()
        .renew(pb::RenewRequest {
            pod_id: "edge-dead".to_owned(),
            sessions: vec![held("u-dead", "conn-dead", granted.fencing_token)],
        })
        .await
        .unwrap_err();
    assert_eq!(renew.code(), Code::FailedPrecondition, "{renew:?}");
    let again = heartbeat(&a, "edge-dead").await.unwrap();
    assert_eq!(again.status, pb::PodLeaseStatus::Registered as i32);
    // Its user reconnects: the selection made before the crash is restored.
    let restored = acquire(&a, "u-dead", "edge-dead", "conn-new")
        .await
        .unwrap();
    assert_eq!(restored.selected_chat_id, "chat-1");
    keeper.abort();
}

/// Renew after a takeover reports the session lost (with the new holder); release after a
/// takeover leaves the new holder in place. Across two replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_and_release_after_takeover() {
    let redis = RedisServer::start().unwrap();
    let a = Replica::start_ready(redis_config(&redis)).await;
    let b = Replica::start_ready(redis_config(&redis)).await;
    heartbeat(&a, "edge-1").await.unwrap();
    heartbeat(&b, "edge-2").await.unwrap();
    let old = acquire(&a, "u1", "edge-1", "conn-old").await.unwrap();
    let new = acquire(&b, "u1", "edge-2", "conn-new").await.unwrap();
    assert_eq!(new.previous.as_ref().unwrap().connection_id, "conn-old");

    let renewed = a
        .sessions()
        .renew(pb::RenewRequest {
            pod_id: "edge-1".to_owned(),
            sessions: vec![held("u1", "conn-old", old.fencing_token)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renewed.lost.len(), 1);
    let lost = &renewed.lost[0];
    assert_eq!(lost.reason, pb::SessionEndReason::TakenOver as i32);
    // Another pod's grant is named by its pod only: its connection and token are not edge-1's.
    let current = lost.current_holder.as_ref().unwrap();
    assert_eq!(
        (
            current.pod_id.as_str(),
            current.connection_id.as_str(),
            current.fencing_token
        ),
        ("edge-2", "", 0)
    );

    let released = a
        .sessions()
        .release(pb::ReleaseRequest {
            pod_id: "edge-1".to_owned(),
            sessions: vec![held("u1", "conn-old", old.fencing_token)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.released_count, 0);
    assert_eq!(released.not_held.len(), 1);
    let session = b
        .admin()
        .get_session(pb::GetSessionRequest {
            key: Some(user_key("u1")),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(session.holder.unwrap().connection_id, "conn-new");

    // The new holder renews fine and can release.
    let renewed = b
        .sessions()
        .renew(pb::RenewRequest {
            pod_id: "edge-2".to_owned(),
            sessions: vec![held("u1", "conn-new", new.fencing_token)],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(renewed.lost.is_empty());
}

/// Redis stopped and restarted mid-test: calls fail fast with UNAVAILABLE, health and /ready
/// flip, command streams end; after the restart everything works again without restarting
/// the coordinators (including kills across replicas, i.e. the resubscription).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_fails_fast_then_recovers() {
    let mut redis = RedisServer::start().unwrap();
    let a = Replica::start_ready(redis_config(&redis)).await;
    let b = Replica::start_ready(redis_config(&redis)).await;
    heartbeat(&a, "edge-1").await.unwrap();
    let mut stream = watch(&b, "edge-1").await;
    acquire(&a, "u1", "edge-1", "conn-1").await.unwrap();
    assert_eq!(a.serving().await, Some(true));

    redis.stop();
    for attempt in 0..3 {
        let started = Instant::now();
        let error = acquire(&a, "u1", "edge-1", &format!("conn-x{attempt}"))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::Unavailable, "{error:?}");
        // Redis's own error text (addresses, errno) stays in the coordinator's log.
        assert_eq!(
            error.message(),
            "the coordinator store is unavailable; retry later"
        );
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "fails fast: {:?}",
            started.elapsed()
        );
    }
    let error = b
        .routes()
        .lookup_routes(pb::LookupRoutesRequest {
            queries: vec![agent_query()],
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
    // The command stream ends so the edge reconnects (and is refused while Redis is down).
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status.code()),
            }
        }
    })
    .await
    .expect("the stream ends while redis is down");
    assert_eq!(ended, Some(Code::Unavailable));
    eventually(Duration::from_secs(5), || async {
        a.serving().await == Some(false)
    })
    .await;
    let (status, body) = daisi_testkit::get_json(a.http, "/ready").await.unwrap();
    assert_eq!(
        (status, &body["dependencies"]["redis"]),
        (503, &"DOWN".into())
    );

    redis.restart().unwrap();
    // The restarted Redis is empty: the edge's heartbeat re-registers the pod.
    eventually(Duration::from_secs(10), || async {
        heartbeat(&a, "edge-1").await.is_ok()
    })
    .await;
    eventually(Duration::from_secs(5), || async {
        a.serving().await == Some(true) && b.serving().await == Some(true)
    })
    .await;
    let mut stream = {
        let mut opened = None;
        for _ in 0..100 {
            let attempt = b
                .sessions()
                .watch_pod_commands(pb::WatchPodCommandsRequest {
                    pod_id: "edge-1".to_owned(),
                    instance_id: instance("edge-1"),
                })
                .await;
            if attempt.is_ok() {
                opened = Some(watch(&b, "edge-1").await);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        opened.expect("the command stream reopens")
    };
    let first = acquire(&a, "u1", "edge-1", "conn-2").await.unwrap();
    acquire(&a, "u1", "edge-1", "conn-3").await.unwrap();
    let kill = next_kill(&mut stream, Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(
        (kill.connection_id.as_str(), kill.fencing_token),
        ("conn-2", first.fencing_token)
    );
}

/// A frozen Redis (SIGSTOP: sockets open, no answers) also fails calls within the timeout, and
/// service resumes when it thaws.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_redis_fails_calls_within_the_timeout() {
    let redis = RedisServer::start().unwrap();
    let a = Replica::start_ready(redis_config(&redis)).await;
    heartbeat(&a, "edge-1").await.unwrap();
    redis.pause().unwrap();
    let started = Instant::now();
    let error = acquire(&a, "u1", "edge-1", "conn-1").await.unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    redis.resume().unwrap();
    eventually(Duration::from_secs(5), || async {
        acquire(&a, "u1", "edge-1", "conn-1").await.is_ok()
    })
    .await;
}
