//! The store contract: one suite of behaviours, run against [`MemoryStore`], against
//! [`RedisStore`] on a private `redis-server`, and against [`RedisStore`] on a private Redis
//! Cluster of three masters and three replicas (one server or cluster per test, so tests never
//! see each other's keys). A `Factory` builds stores with the timing a test needs; `replicas` gives two stores
//! that share state, like two coordinator replicas sharing one Redis.

mod cases;

use daisi_coordinator::store::{
    MemoryStore, RedisSettings, RedisStore, RedisTarget, SessionStore, StoreSettings,
};
use daisi_testkit::{RedisCluster, RedisServer};
use std::time::Duration;

/// Builds stores for one test.
pub(crate) trait Factory {
    type Store: SessionStore + Clone;
    /// Two handles on one shared state (two replicas).
    fn replicas(&self, settings: StoreSettings) -> (Self::Store, Self::Store);
    /// One store.
    fn store(&self, settings: StoreSettings) -> Self::Store {
        self.replicas(settings).0
    }
}

/// Leases long enough that nothing lapses during a test unless the test wants it to.
pub(crate) fn relaxed() -> StoreSettings {
    StoreSettings {
        pod_lease: Duration::from_secs(30),
        selection_retention: Duration::from_secs(3600),
        tombstone_ttl: Duration::from_secs(60),
    }
}

pub(crate) struct Memory;

impl Factory for Memory {
    type Store = MemoryStore;
    fn replicas(&self, settings: StoreSettings) -> (MemoryStore, MemoryStore) {
        let store = MemoryStore::new(settings);
        (store.clone(), store)
    }
}

pub(crate) struct Redis {
    server: RedisServer,
}

impl Redis {
    pub(crate) fn start() -> Self {
        Self {
            server: RedisServer::start().expect("redis-server starts"),
        }
    }

    fn open(&self, settings: StoreSettings) -> RedisStore {
        let redis = RedisSettings {
            target: RedisTarget::Single(self.server.url()),
            key_prefix: "contract".to_owned(),
            timeout: Duration::from_secs(1),
            // Small chunks, so the tests cover batches split over several script calls.
            chunk: 7,
            tls: None,
        };
        RedisStore::new(&redis, settings).expect("valid redis settings")
    }
}

impl Factory for Redis {
    type Store = RedisStore;
    fn replicas(&self, settings: StoreSettings) -> (RedisStore, RedisStore) {
        (self.open(settings), self.open(settings))
    }
}

pub(crate) struct Cluster {
    cluster: RedisCluster,
}

impl Cluster {
    pub(crate) fn start() -> Self {
        Self {
            cluster: RedisCluster::start().expect("the redis cluster starts"),
        }
    }
}

impl Factory for Cluster {
    type Store = RedisStore;
    fn replicas(&self, settings: StoreSettings) -> (RedisStore, RedisStore) {
        let open = || {
            let redis = RedisSettings {
                target: RedisTarget::Cluster(self.cluster.urls()),
                key_prefix: "contract".to_owned(),
                timeout: Duration::from_secs(1),
                chunk: 7,
                tls: None,
            };
            RedisStore::new(&redis, settings).expect("valid redis settings")
        };
        (open(), open())
    }
}

/// Runs every case once per store.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::cases::$case(&super::Memory).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::cases::$case(&super::Redis::start()).await;
                }
            )*
        }
        mod redis_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::cases::$case(&super::Cluster::start()).await;
                }
            )*
        }
    };
}

contract!(
    takeover_kills_the_previous_holder_with_increasing_tokens,
    same_connection_acquires_idempotently,
    if_vacant_refuses_a_held_session,
    calls_naming_an_unknown_pod_are_refused,
    renew_after_takeover_reports_the_session_lost,
    release_after_takeover_leaves_the_new_holder,
    selected_chat_is_restored_on_the_next_acquire,
    admin_sessions_have_their_own_key_space,
    a_session_lives_as_long_as_its_pod_heartbeats_and_no_longer,
    a_selection_outlives_a_session_longer_than_the_retention,
    routes_are_registered_looked_up_and_unregistered,
    a_new_instance_starts_empty,
    deregister_removes_only_the_current_instance,
    expired_pods_are_purged_once_by_concurrent_reapers,
    sessions_are_listed_page_by_page,
    kill_session_deletes_and_notifies_the_holder,
    kills_reach_watchers_of_another_replica,
    concurrent_acquires_end_with_one_holder,
    large_batches_are_handled_in_one_call,
    a_killed_connection_is_told_and_never_reacquires,
    a_takeover_whose_kill_was_lost_is_told_on_the_next_renew,
    select_chat_is_idempotent_and_reasserts_the_route,
    a_kill_racing_an_admission_is_remembered,
    tombstones_lapse_after_their_lifetime,
    an_abandoned_connection_is_released_and_never_granted,
    a_pod_cannot_release_another_pods_session,
    a_sweep_spares_what_a_re_registered_pod_holds,
    a_session_of_a_lapsed_pod_is_vacant_at_once,
    a_kill_reaches_the_holder_through_the_inbox_when_the_stream_lost_it,
);
