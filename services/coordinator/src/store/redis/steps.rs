//! The single-slot steps that operations spanning several slots are made of, and the order
//! that keeps every intermediate state safe.
//!
//! A coordinator may die (or a call time out) between any two steps; readers must then still
//! see a correct store. The steps keep these invariants:
//!
//! 1. **A grant is recorded in its pod before it exists.** `"<skey> <conn>"` enters the pod's
//!    session set (`pod_gen.lua`, in the same step that checks the pod is live) before the
//!    session step grants it, so the pod's sweep finds every session that carries its
//!    registration. Only steps about that very connection remove the member (invariant 4).
//!    A grant whose registration was claimed between the two steps carries a dead
//!    registration: it is vacant on access, and dropped by the next call that reads it.
//! 2. **A session is vacant as soon as its registration ends,** whatever the steps after it
//!    did: session steps receive what the caller learnt of the holder's pod (its own live
//!    registration, or the holder's ended one) and drop such a record before anything else.
//!    A holder that changed since it was checked is taken as live (a takeover then kills
//!    nobody alive: the caller checks that holder before raising a kill).
//! 3. **A route set names a registration only after the pod's route set lists the route**
//!    (`pod_grant.lua` before the company slot's `SADD`), so the registration's sweep removes
//!    it. Route set members are `"<pod> <registration>"`: a sweep removes exactly the ended
//!    registration's member, never the pod's next one, and lookups ignore members whose
//!    registration is not the pod's live one.
//! 4. **Memberships are removed after the state they describe** (release: session, then pod
//!    set, then indexes), and members name the connection, so removing a stale member never
//!    removes a newer grant's.
//! 5. **Every step is idempotent**, and an operation interrupted midway fails: the caller
//!    retries it (a retried acquire of the same connection is the same grant), which redoes
//!    the missing steps.
//!
//! Kill commands are published by the session step that raises them (so the kills of a key go
//! out in token order) and kept in the pod's inbox by the next step (`pod_kill.lua`): if the
//! coordinator dies between the two, the kill was still published and the connection is
//! tombstoned, so its next renew reports the takeover.

use super::keys::member;
use super::{RedisStore, decode, millis};
use crate::store::{Route, StoreError, StoreResult};
use daisi_domain::{PodId, SessionKey};
use std::collections::HashMap;

/// A session record as `session.lua` answers it.
#[derive(Debug, Clone)]
pub(super) struct Record {
    pub(super) pod: String,
    pub(super) generation: String,
    pub(super) connection: String,
    pub(super) fence: String,
    pub(super) since: String,
    pub(super) lease_end: String,
    pub(super) chat: String,
}

impl Record {
    /// The 7-string form `decode::sessions` reads.
    pub(super) fn fields(&self, key: &str) -> [String; 7] {
        [
            key.to_owned(),
            self.pod.clone(),
            self.connection.clone(),
            self.fence.clone(),
            self.since.clone(),
            self.lease_end.clone(),
            self.chat.clone(),
        ]
    }
}

/// Which index keys change, and how.
#[derive(Debug, Clone, Copy)]
pub(super) enum Change {
    Add,
    Remove,
}

impl Change {
    fn command(self) -> &'static str {
        match self {
            Self::Add => "SADD",
            Self::Remove => "SREM",
        }
    }
}

impl RedisStore {
    /// The live registration of `pod` (`None`: not live), recording `grant` in its session
    /// set first when given.
    pub(super) async fn pod_gen(
        &self,
        pod: &PodId,
        grant: Option<&str>,
    ) -> StoreResult<Option<String>> {
        Ok(self
            .pod_lease(pod, grant)
            .await?
            .map(|(generation, _)| generation))
    }

    /// The live registration of `pod` and its lease end (ms), as [`RedisStore::pod_gen`].
    async fn pod_lease(
        &self,
        pod: &PodId,
        grant: Option<&str>,
    ) -> StoreResult<Option<(String, String)>> {
        let keys = self.inner.keys.pod(pod);
        let answer: Vec<String> = self
            .script(
                &self.inner.scripts.pod_gen,
                &[&keys.pod, &keys.sessions],
                &[grant.unwrap_or("")],
            )
            .await?;
        match answer.as_slice() {
            [status, generation, lease_end] if status == "live" => {
                Ok(Some((generation.clone(), lease_end.clone())))
            }
            [status] if status == "unknown" => Ok(None),
            _ => Err(StoreError::Corrupt(format!("pod_gen answered {answer:?}"))),
        }
    }

    /// The live registration of `pod`, or [`StoreError::UnknownPod`].
    pub(super) async fn live_pod(&self, pod: &PodId, grant: Option<&str>) -> StoreResult<String> {
        self.pod_gen(pod, grant)
            .await?
            .ok_or_else(|| StoreError::UnknownPod(pod.clone()))
    }

    /// Whether registration `generation` of `pod` is its live one ('' = a record older than
    /// registration numbers: the pod alone decides).
    pub(super) async fn registration_lives(
        &self,
        pod: &str,
        generation: &str,
    ) -> StoreResult<bool> {
        let pod: PodId = decode::parse("pod_id", pod)?;
        Ok(self
            .pod_gen(&pod, None)
            .await?
            .is_some_and(|live| generation.is_empty() || live == generation))
    }

    /// Records a grant and routes in the pod before the route sets name it (invariant 3).
    /// Fails with [`StoreError::UnknownPod`] unless registration `generation` ('' = any) is
    /// live.
    pub(super) async fn pod_grant(
        &self,
        pod: &PodId,
        generation: &str,
        grant: Option<&str>,
        routes: &[Route],
    ) -> StoreResult<String> {
        let keys = self.inner.keys.pod(pod);
        let mut args = vec![generation.to_owned(), grant.unwrap_or("").to_owned()];
        args.extend(routes.iter().map(ToString::to_string));
        let answer: Vec<String> = self
            .script(
                &self.inner.scripts.pod_grant,
                &[&keys.pod, &keys.sessions, &keys.routes],
                &args,
            )
            .await?;
        match answer.as_slice() {
            [status, generation] if status == "ok" => Ok(generation.clone()),
            [status] if status == "unknown" => Err(StoreError::UnknownPod(pod.clone())),
            _ => Err(StoreError::Corrupt(format!(
                "pod_grant answered {answer:?}"
            ))),
        }
    }

    /// Adds or removes registration `generation` of `pod` in the sets of `routes` (their
    /// companies' slots), in parallel.
    pub(super) async fn route_sets(
        &self,
        change: Change,
        pod: &PodId,
        generation: &str,
        routes: &[Route],
    ) -> StoreResult<()> {
        let entry = member(pod.as_str(), generation);
        self.parallel(
            routes
                .iter()
                .map(|route| {
                    let mut cmd = redis::cmd(change.command());
                    cmd.arg(self.inner.keys.route(route)).arg(&entry);
                    self.query::<i64>(cmd)
                })
                .collect::<Vec<_>>(),
        )
        .await?;
        Ok(())
    }

    /// Adds or removes `"<key> <connection>"` in the session indexes of each key: one
    /// command per index (a sweep's chunk of 200 sessions of a few companies is a few
    /// commands, not 400).
    pub(super) async fn indexes(
        &self,
        change: Change,
        grants: &[(&SessionKey, &str)],
    ) -> StoreResult<()> {
        let mut by_index: HashMap<String, Vec<String>> = HashMap::new();
        for (key, connection) in grants {
            let entry = member(&key.to_string(), connection);
            for index in self.inner.keys.indexes_of(key) {
                by_index.entry(index).or_default().push(entry.clone());
            }
        }
        self.parallel(
            by_index
                .into_iter()
                .map(|(index, members)| {
                    let mut cmd = redis::cmd(change.command());
                    cmd.arg(index).arg(members);
                    self.query::<i64>(cmd)
                })
                .collect::<Vec<_>>(),
        )
        .await?;
        Ok(())
    }

    /// Removes grant members from the session set of `pod`.
    pub(super) async fn forget_grants(&self, pod: &PodId, grants: &[String]) -> StoreResult<()> {
        if grants.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("SREM");
        cmd.arg(self.inner.keys.pod(pod).sessions).arg(grants);
        self.query::<i64>(cmd).await?;
        Ok(())
    }

    /// Keeps a kill command the session step published (`line`) in the inbox of `pod`, and
    /// forgets the killed grant in the pod's session set.
    pub(super) async fn keep_kill(
        &self,
        pod: &str,
        line: &str,
        key: &str,
        connection: &str,
    ) -> StoreResult<()> {
        let pod_id: PodId = decode::parse("pod_id", pod)?;
        let keys = self.inner.keys.pod(&pod_id);
        let keep = millis(self.inner.settings.tombstone_ttl).to_string();
        let grant = member(key, connection);
        let _: Vec<String> = self
            .script(
                &self.inner.scripts.pod_kill,
                &[&keys.inbox, &keys.inbox_seq, &keys.sessions],
                &[line, keep.as_str(), grant.as_str()],
            )
            .await?;
        Ok(())
    }

    /// The record of `key`, whoever holds it (live or not).
    pub(super) async fn read_session(&self, key: &str) -> StoreResult<Option<Record>> {
        let hash = self.inner.keys.session_hash(key);
        let answer: Vec<String> = self
            .script(&self.inner.scripts.session, &[&hash], &[] as &[&str])
            .await?;
        match answer.as_slice() {
            [] => Ok(None),
            [pod, generation, connection, fence, since, lease_end, chat] => Ok(Some(Record {
                pod: pod.clone(),
                generation: generation.clone(),
                connection: connection.clone(),
                fence: fence.clone(),
                since: since.clone(),
                lease_end: lease_end.clone(),
                chat: chat.clone(),
            })),
            _ => Err(StoreError::Corrupt(format!("session answered {answer:?}"))),
        }
    }

    /// The record of `key` if its holder's registration lives, with that registration's lease
    /// end as its own (sessions live as long as their pod).
    pub(super) async fn live_session(&self, key: &str) -> StoreResult<Option<Record>> {
        let Some(mut record) = self.read_session(key).await? else {
            return Ok(None);
        };
        Ok(self.holder_lives(&mut record).await?.then_some(record))
    }

    /// Whether the registration holding `record` lives; if so, its lease end becomes the
    /// record's (sessions live as long as their pod).
    pub(super) async fn holder_lives(&self, record: &mut Record) -> StoreResult<bool> {
        let pod: PodId = decode::parse("pod_id", &record.pod)?;
        match self.pod_lease(&pod, None).await? {
            Some((live, lease_end))
                if record.generation.is_empty() || live == record.generation =>
            {
                record.lease_end = lease_end;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Operations stopped midway (a coordinator that died between two steps): what readers
    //! see must stay correct.
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::{
        PodHeartbeat, RedisSettings, RedisTarget, RouteQuery, SessionStore, StoreSettings,
    };
    use daisi_testkit::RedisServer;
    use std::time::Duration;

    fn open(server: &RedisServer) -> RedisStore {
        let redis = RedisSettings {
            target: RedisTarget::Single(server.url()),
            key_prefix: "steps".to_owned(),
            timeout: Duration::from_secs(2),
            chunk: 100,
            tls: None,
        };
        let settings = StoreSettings {
            pod_lease: Duration::from_secs(30),
            selection_retention: Duration::from_secs(3600),
            tombstone_ttl: Duration::from_secs(60),
        };
        RedisStore::new(&redis, settings).unwrap()
    }

    async fn register(store: &RedisStore, pod: &PodId) {
        store
            .heartbeat(&PodHeartbeat {
                pod: pod.clone(),
                instance: "i1".to_owned(),
                delivery_address: "http://10.0.0.1:50061".to_owned(),
                load: None,
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_acquire_stopped_after_its_session_step_is_still_swept() {
        let server = RedisServer::start().unwrap();
        let store = open(&server);
        let pod: PodId = "edge-1".parse().unwrap();
        register(&store, &pod).await;
        let key: SessionKey = "u:c1:a1:u1".parse().unwrap();
        let skey = key.to_string();
        // The first steps of an acquire with a route; the coordinator dies before the kill,
        // route-set and index steps.
        let generation = store
            .live_pod(&pod, Some(&member(&skey, "c1")))
            .await
            .unwrap();
        let request = crate::store::AcquireRequest {
            key: key.clone(),
            pod: pod.clone(),
            connection: "c1".parse().unwrap(),
            mode: crate::store::AcquireMode::Takeover,
            routes: Vec::new(),
        };
        let none = (String::new(), String::new());
        let answer = store
            .acquire_session_step(&request, &generation, &none)
            .await
            .unwrap();
        assert_eq!(answer.first().map(String::as_str), Some("granted"));
        let route: Route = "agent:c1:a1".parse().unwrap();
        store
            .pod_grant(&pod, &generation, None, std::slice::from_ref(&route))
            .await
            .unwrap();

        // Readers see the grant, and no route the route sets never got.
        assert!(store.get_session(&key).await.unwrap().is_some());
        let query = RouteQuery::Agent {
            company: "c1".parse().unwrap(),
            agent: "a1".parse().unwrap(),
        };
        let lookup = store
            .lookup_routes(std::slice::from_ref(&query))
            .await
            .unwrap();
        assert_eq!(lookup.results, vec![Vec::<PodId>::new()]);

        // The pod ends: its sweep finds the session through the membership recorded before
        // the grant, and the route through the pod's route set.
        let purged = store.deregister(&pod, "i1").await.unwrap();
        assert_eq!((purged.sessions, purged.routes), (1, 1));
        assert!(store.get_session(&key).await.unwrap().is_none());
        let left: Option<String> = store
            .query({
                let mut cmd = redis::cmd("HGET");
                cmd.arg(store.inner.keys.session_hash(&skey)).arg("pod");
                cmd
            })
            .await
            .unwrap();
        assert_eq!(left, None, "the record itself is gone, not only vacant");
    }
}
