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
        let keys = self.inner.keys.pod(pod);
        let answer: Vec<String> = self
            .script(
                &self.inner.scripts.pod_gen,
                &[&keys.pod, &keys.sessions],
                &[grant.unwrap_or("")],
            )
            .await?;
        match answer.as_slice() {
            [status, generation] if status == "live" => Ok(Some(generation.clone())),
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

    /// The record of `key` if its holder's registration lives.
    pub(super) async fn live_session(&self, key: &str) -> StoreResult<Option<Record>> {
        match self.read_session(key).await? {
            Some(record)
                if self
                    .registration_lives(&record.pod, &record.generation)
                    .await? =>
            {
                Ok(Some(record))
            }
            _ => Ok(None),
        }
    }
}
