//! What the store contract cannot see of the Redis layout: keys that must not outlive the pods
//! that use them, numbers that must keep increasing when such a key expires, and members of a
//! route set that no script of ours wrote. A private `redis-server` per test.

use daisi_coordinator::store::*;
use daisi_domain::{ConnectionId, PodId, SessionKey};
use daisi_testkit::RedisServer;
use std::time::Duration;

const PREFIX: &str = "keys";

struct Rig {
    _server: RedisServer,
    store: RedisStore,
    raw: ::redis::aio::MultiplexedConnection,
}

impl Rig {
    async fn start() -> Self {
        let server = RedisServer::start().expect("redis-server starts");
        let settings = RedisSettings {
            target: RedisTarget::Single(server.url()),
            key_prefix: PREFIX.to_owned(),
            timeout: Duration::from_secs(1),
            chunk: 64,
            tls: None,
        };
        let store = RedisStore::new(
            &settings,
            StoreSettings {
                pod_lease: Duration::from_secs(30),
                selection_retention: Duration::from_secs(3600),
                tombstone_ttl: Duration::from_secs(60),
            },
        )
        .expect("valid redis settings");
        let raw = ::redis::Client::open(server.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connects");
        Self {
            _server: server,
            store,
            raw,
        }
    }

    async fn cmd<T: ::redis::FromRedisValue>(&mut self, args: &[&str]) -> T {
        let mut cmd = ::redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut self.raw).await.expect("redis answers")
    }

    /// Registers `instance` of `pod`; its registration number.
    async fn register(&self, pod: &PodId, instance: &str) -> u64 {
        match self
            .store
            .heartbeat(&PodHeartbeat {
                pod: pod.clone(),
                instance: instance.to_owned(),
                delivery_address: "http://edge:50061".to_owned(),
                load: None,
            })
            .await
            .expect("heartbeat")
        {
            HeartbeatOutcome::Registered { registration, .. } => registration,
            other => panic!("not a registration: {other:?}"),
        }
    }

    async fn take(&self, key: &SessionKey, pod: &PodId, connection: &str) {
        let outcome = self
            .store
            .acquire(AcquireRequest {
                key: key.clone(),
                pod: pod.clone(),
                connection: connection.parse::<ConnectionId>().unwrap(),
                mode: AcquireMode::Takeover,
                routes: Vec::new(),
            })
            .await
            .expect("acquire");
        assert!(matches!(outcome, AcquireOutcome::Granted(_)), "{outcome:?}");
    }
}

/// Milliseconds left of `key`'s lifetime (-1: none, -2: no such key).
async fn pttl(rig: &mut Rig, key: &str) -> i64 {
    rig.cmd(&["PTTL", key]).await
}

#[tokio::test]
async fn a_pods_registration_numbers_expire_with_disuse_and_never_go_back() {
    let mut rig = Rig::start().await;
    let pod: PodId = "edge-1".parse().unwrap();
    let key = format!("{{{PREFIX}:p:edge-1}}:gen");
    let first = rig.register(&pod, "i1").await;
    let ttl = pttl(&mut rig, &key).await;
    assert!(
        ttl > 0 && ttl <= 86_400_000,
        "a departed pod's sequence must not stay for good: PTTL {ttl}"
    );
    let second = rig.register(&pod, "i2").await;
    assert!(second > first);
    // The sequence expired (a pod id that comes back after a day): numbers still increase.
    let _: i64 = rig.cmd(&["DEL", &key]).await;
    let third = rig.register(&pod, "i3").await;
    assert!(third > second, "{third} after {second}");
    // Even if the clock stood behind the live registration, a new one is above it.
    let _: i64 = rig.cmd(&["DEL", &key]).await;
    let _: i64 = rig
        .cmd(&[
            "HSET",
            &format!("{{{PREFIX}:p:edge-1}}:pod"),
            "gen",
            "9000000000000000",
        ])
        .await;
    let fourth = rig.register(&pod, "i4").await;
    assert_eq!(fourth, 9_000_000_000_000_001);
}

#[tokio::test]
async fn a_pods_inbox_sequence_expires_with_disuse_and_acknowledged_numbers_stay_behind() {
    let mut rig = Rig::start().await;
    let (p1, p2): (PodId, PodId) = ("edge-1".parse().unwrap(), "edge-2".parse().unwrap());
    rig.register(&p1, "i1").await;
    rig.register(&p2, "i1").await;
    let seq_key = format!("{{{PREFIX}:p:edge-1}}:ibseq");
    let user: SessionKey = "u:c1:a1:u1".parse().unwrap();
    // Each takeover leaves a kill for edge-1 in its inbox.
    rig.take(&user, &p1, "c1").await;
    rig.take(&user, &p2, "c2").await;
    let first = rig.store.pod_inbox(&p1, 0).await.unwrap();
    assert_eq!(first.len(), 1);
    let ttl = pttl(&mut rig, &seq_key).await;
    assert!(
        ttl > 0 && ttl <= 86_400_000,
        "a departed pod's inbox sequence must not stay for good: PTTL {ttl}"
    );
    // The sequence expired while edge-1 kept its acknowledged number: the next kill is still
    // after it, so edge-1 reads it.
    let _: i64 = rig.cmd(&["DEL", &seq_key]).await;
    rig.take(&user, &p1, "c3").await;
    rig.take(&user, &p2, "c4").await;
    let later = rig.store.pod_inbox(&p1, first[0].sequence).await.unwrap();
    assert_eq!(later.len(), 1, "{later:?}");
    assert!(later[0].sequence > first[0].sequence);
    assert_eq!(later[0].command.connection, "c3".parse().unwrap());
}

#[tokio::test]
async fn a_route_member_that_names_no_pod_is_skipped_not_fatal() {
    let mut rig = Rig::start().await;
    let pod: PodId = "edge-1".parse().unwrap();
    rig.register(&pod, "i1").await;
    let route = Route::Agent {
        company: "c1".parse().unwrap(),
        agent: "a1".parse().unwrap(),
    };
    rig.store
        .register_routes(&pod, std::slice::from_ref(&route))
        .await
        .unwrap();
    let set = format!("{{{PREFIX}:c:c1}}:r:{route}");
    let added: i64 = rig.cmd(&["SADD", &set, "not/a:pod 1", "junk"]).await;
    assert_eq!(added, 2);
    let lookup = rig
        .store
        .lookup_routes(&[RouteQuery::Agent {
            company: "c1".parse().unwrap(),
            agent: "a1".parse().unwrap(),
        }])
        .await
        .expect("the well-formed members are still answered");
    assert_eq!(lookup.results, vec![vec![pod]]);
}

/// A key of the wrong type (a foreign or corrupted write) is data no retry repairs: `Corrupt`,
/// not `Unavailable`.
#[tokio::test]
async fn a_key_of_the_wrong_type_is_corrupt_not_unavailable() {
    let mut rig = Rig::start().await;
    let pod: PodId = "edge-1".parse().unwrap();
    let _: () = rig
        .cmd(&["SET", &format!("{{{PREFIX}:p:edge-1}}:pod"), "not a hash"])
        .await;
    let error = rig
        .store
        .heartbeat(&PodHeartbeat {
            pod,
            instance: "i1".to_owned(),
            delivery_address: "http://edge:50061".to_owned(),
            load: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
}

/// An inbox entry the coordinator cannot read is skipped: the pod still gets the others.
#[tokio::test]
async fn an_unreadable_inbox_entry_is_skipped_not_fatal() {
    let mut rig = Rig::start().await;
    let (p1, p2): (PodId, PodId) = ("edge-1".parse().unwrap(), "edge-2".parse().unwrap());
    rig.register(&p1, "i1").await;
    rig.register(&p2, "i1").await;
    let inbox = format!("{{{PREFIX}:p:edge-1}}:ib");
    let added: i64 = rig
        .cmd(&[
            "ZADD",
            &inbox,
            "1",
            "1\n99999999999999\nv9\nfrom a newer coordinator",
        ])
        .await;
    assert_eq!(added, 1);
    let user: SessionKey = "u:c1:a1:u1".parse().unwrap();
    rig.take(&user, &p1, "c1").await;
    rig.take(&user, &p2, "c2").await;
    let entries = rig
        .store
        .pod_inbox(&p1, 0)
        .await
        .expect("the readable entries are still answered");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].command.connection, "c1".parse().unwrap());
}
