//! Sweeps of ended pod registrations. A purge (reaper, new instance, deregistration) first
//! claims the registration in one O(1) pod-slot script (`claim_pod` in `lua/common.lua`), then
//! empties it here in chunks of at most [`SWEEP_CHUNK`] sessions or routes: the pod slot names
//! a chunk (`lua/sweep.lua`), the sessions' slots drop those that still carry the registration
//! (`lua/sweep_drop.lua`), the companies' slots drop the registration from the route sets and
//! indexes, and only then does the pod slot forget the chunk. A sweeper that dies midway
//! leaves the chunk in place for the next one; every step is idempotent.

use super::steps::Change;
use super::{RedisStore, decode, millis};
use crate::store::{Purged, Route, StoreError, StoreResult};
use daisi_domain::{PodId, SessionKey};
use std::time::{Duration, Instant};

/// Most sessions (or routes) one sweep chunk handles, so no script runs long.
pub(super) const SWEEP_CHUNK: usize = 200;

/// How long a sweep stays locked to the replica running it after its latest chunk. A replica
/// that dies midway leaves the rest to a later heartbeat or reaper pass once this has passed;
/// two replicas on one sweep are harmless.
pub(super) const SWEEP_LOCK: Duration = Duration::from_secs(5);

/// What a sweep run did.
#[derive(Debug, Default)]
pub(super) struct Swept {
    /// What this run removed.
    pub(super) purged: Purged,
    /// Whether the sweep is complete.
    pub(super) finished: bool,
}

impl RedisStore {
    /// Runs the sweep of registration `generation` of `pod` chunk by chunk until it is
    /// complete, a chunk fails, or `budget` (when given) has passed.
    pub(super) async fn sweep(
        &self,
        pod: &PodId,
        generation: &str,
        budget: Option<Duration>,
    ) -> Swept {
        let started = Instant::now();
        let mut swept = Swept::default();
        loop {
            match self.sweep_chunk(pod, generation, &mut swept.purged).await {
                Ok(true) => {
                    swept.finished = true;
                    return swept;
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%pod, generation, %error, "pod sweep interrupted; a reaper finishes it");
                    return swept;
                }
            }
            if budget.is_some_and(|budget| started.elapsed() >= budget) {
                return swept;
            }
        }
    }

    /// One chunk; `true` when the sweep is complete.
    async fn sweep_chunk(
        &self,
        pod: &PodId,
        generation: &str,
        purged: &mut Purged,
    ) -> StoreResult<bool> {
        let keys = self.inner.keys.sweep(pod, generation);
        let sweeps = self.inner.keys.pod(pod).sweeps;
        let chunk = self.inner.chunk.min(SWEEP_CHUNK).to_string();
        let lock = millis(SWEEP_LOCK).to_string();
        let answer: Vec<String> = self
            .script(
                &self.inner.scripts.sweep,
                &[&keys.record, &keys.sessions, &keys.routes, &sweeps],
                &[generation, chunk.as_str(), lock.as_str()],
            )
            .await?;
        let Some((status, rest)) = answer.split_first() else {
            return Err(StoreError::Corrupt("empty sweep answer".to_owned()));
        };
        let Some((_, members)) = rest.split_first() else {
            return Err(StoreError::Corrupt(format!("sweep answered {answer:?}")));
        };
        match status.as_str() {
            "done" => Ok(true),
            "sessions" => {
                purged.sessions += self.sweep_sessions(pod, generation, members).await?;
                let mut cmd = redis::cmd("SREM");
                cmd.arg(&keys.sessions).arg(members);
                self.query::<i64>(cmd).await?;
                Ok(false)
            }
            "routes" => {
                let routes = members
                    .iter()
                    .map(|r| decode::parse("route", r))
                    .collect::<StoreResult<Vec<Route>>>()?;
                self.route_sets(Change::Remove, pod, generation, &routes)
                    .await?;
                let mut cmd = redis::cmd("SREM");
                cmd.arg(&keys.routes).arg(members);
                self.query::<i64>(cmd).await?;
                purged.routes += u32::try_from(routes.len()).unwrap_or(u32::MAX);
                Ok(false)
            }
            _ => Err(StoreError::Corrupt(format!("sweep answered {answer:?}"))),
        }
    }

    /// Drops the sessions of `members` ("<skey> <conn>") that still carry the registration,
    /// then their index entries. Answers how many were dropped.
    async fn sweep_sessions(
        &self,
        pod: &PodId,
        generation: &str,
        members: &[String],
    ) -> StoreResult<u32> {
        let grants: Vec<(SessionKey, String)> = members
            .iter()
            .filter_map(|m| m.split_once(' '))
            .map(|(k, c)| Ok((decode::parse("session key", k)?, c.to_owned())))
            .collect::<StoreResult<_>>()?;
        let hashes: Vec<String> = grants
            .iter()
            .map(|(k, _)| self.inner.keys.session_hash(&k.to_string()))
            .collect();
        let batches = self.batches(&hashes);
        let retention = self.retention_ms().to_string();
        let answers = self
            .parallel(
                batches
                    .iter()
                    .map(|batch| {
                        let keys: Vec<String> = batch
                            .iter()
                            .flat_map(|&i| {
                                let skey = grants[i].0.to_string();
                                [
                                    self.inner.keys.session_hash(&skey),
                                    self.inner.keys.selection(&skey),
                                ]
                            })
                            .collect();
                        let mut args =
                            vec![pod.to_string(), generation.to_owned(), retention.clone()];
                        args.extend(batch.iter().map(|&i| grants[i].0.to_string()));
                        async move {
                            self.script::<Vec<String>, _, _>(
                                &self.inner.scripts.sweep_drop,
                                &keys,
                                &args,
                            )
                            .await
                        }
                    })
                    .collect::<Vec<_>>(),
            )
            .await?;
        let mut dropped = Vec::new();
        for (batch, answer) in batches.iter().zip(answers) {
            for index in answer {
                let index: usize = decode::parse("index", &index)?;
                let &i = index
                    .checked_sub(1)
                    .and_then(|i| batch.get(i))
                    .ok_or_else(|| StoreError::Corrupt("sweep index out of range".to_owned()))?;
                dropped.push(i);
            }
        }
        // Index entries after the sessions (steps.rs, invariant 4); a grant that was not
        // dropped may be the same connection granted again by the pod's next registration.
        let entries: Vec<(&SessionKey, &str)> = dropped
            .iter()
            .map(|&i| (&grants[i].0, grants[i].1.as_str()))
            .collect();
        self.indexes(Change::Remove, &entries).await?;
        Ok(u32::try_from(dropped.len()).unwrap_or(u32::MAX))
    }
}
