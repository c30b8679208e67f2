//! The session operations of [`RedisStore`]: each a short sequence of single-slot steps
//! (`steps`), bounded by the store timeout as a whole.

use super::keys::member;
use super::steps::{Change, Record};
use super::{RedisStore, decode};
use crate::store::chat_route;
use crate::store::types::*;
use crate::store::{Route, RouteQuery};
use crate::store::{StoreError, StoreResult};
use daisi_domain::{ChatId, ConnectionId, PodId, SessionKey};
use daisi_runtime::ratelog::RateLimit;
use std::sync::LazyLock;

/// How often an operation reads again a record that changed under it before giving up.
const ATTEMPTS: usize = 5;

pub(super) fn status_of(answer: &[String]) -> &str {
    answer.first().map_or("", String::as_str)
}

/// One (skey, connection, fence) triple per session, as the batch scripts read them.
fn triples(sessions: &[&HeldSession]) -> Vec<String> {
    sessions
        .iter()
        .flat_map(|s| {
            [
                s.key.to_string(),
                s.connection.to_string(),
                s.fencing.0.to_string(),
            ]
        })
        .collect()
}

impl RedisStore {
    pub(super) async fn acquire_steps(
        &self,
        request: AcquireRequest,
    ) -> StoreResult<AcquireOutcome> {
        let skey = request.key.to_string();
        let grant = member(&skey, request.connection.as_str());
        // The pod is live and records the grant first (steps.rs, invariant 1); the current
        // holder is read meanwhile.
        let (generation, holder) = futures_util::try_join!(
            self.live_pod(&request.pod, Some(&grant)),
            self.read_session(&skey)
        )?;
        // A holder on another pod: is its registration alive? (Same pod: the session step
        // compares with our own registration.)
        let mut checked_live = None;
        let mut dead = (String::new(), String::new());
        if let Some(holder) = holder.filter(|h| h.pod != request.pod.as_str()) {
            if self
                .registration_lives(&holder.pod, &holder.generation)
                .await?
            {
                checked_live = Some((holder.pod, holder.generation));
            } else {
                dead = (holder.pod, holder.generation);
            }
        }
        let answer = self
            .acquire_session_step(&request, &generation, &dead)
            .await?;
        match (status_of(&answer), answer.as_slice()) {
            ("refused", [_, pod, conn, fence]) => {
                self.forget_grants(&request.pod, &[grant]).await?;
                Ok(AcquireOutcome::Refused(
                    decode::holder(pod, conn, fence)?.ok_or_else(|| {
                        StoreError::Corrupt("refused without a holder".to_owned())
                    })?,
                ))
            }
            ("ended", [_, reason, pod, conn, fence]) => {
                self.forget_grants(&request.pod, &[grant]).await?;
                Ok(AcquireOutcome::Ended {
                    reason: decode::reason(reason)?,
                    current: decode::holder(pod, conn, fence)?,
                })
            }
            (
                "granted",
                [
                    _,
                    fence,
                    prev_pod,
                    prev_conn,
                    prev_fence,
                    prev_gen,
                    chat,
                    line,
                ],
            ) => {
                let selected_chat: Option<ChatId> = decode::optional("chat_id", chat)?;
                let mut routes = request.routes.clone();
                if let Some(route) = selected_chat
                    .as_ref()
                    .and_then(|c| chat_route(&request.key, c))
                {
                    routes.push(route);
                }
                // The previous holder is killed unless its registration ended (checked now
                // when it took the key after our read).
                let previous_live = if prev_pod.is_empty() {
                    false
                } else if prev_pod == request.pod.as_str() {
                    prev_gen == &generation
                } else if checked_live.as_ref() == Some(&(prev_pod.clone(), prev_gen.clone())) {
                    true
                } else {
                    self.registration_lives(prev_pod, prev_gen).await?
                };
                let kill = async {
                    if previous_live {
                        self.keep_kill(prev_pod, line, &skey, prev_conn).await?;
                    }
                    Ok(())
                };
                // Routes enter the pod's set before the route sets (steps.rs, invariant 3).
                let record = async {
                    if !routes.is_empty() {
                        self.pod_grant(&request.pod, &generation, None, &routes)
                            .await?;
                    }
                    Ok(())
                };
                futures_util::try_join!(kill, record)?;
                let listed = [(&request.key, request.connection.as_str())];
                futures_util::try_join!(
                    self.route_sets(Change::Add, &request.pod, &generation, &routes),
                    self.indexes(Change::Add, &listed)
                )?;
                Ok(AcquireOutcome::Granted(Grant {
                    fencing: decode::fencing(fence)?,
                    previous: if previous_live {
                        decode::holder(prev_pod, prev_conn, prev_fence)?
                    } else {
                        None
                    },
                    selected_chat,
                }))
            }
            _ => Err(StoreError::Corrupt(format!("acquire answered {answer:?}"))),
        }
    }

    /// The session step of an acquire (`acquire.lua`): `generation` is the pod's live
    /// registration, `dead` the holder's ended one ('' when none was found).
    pub(super) async fn acquire_session_step(
        &self,
        request: &AcquireRequest,
        generation: &str,
        dead: &(String, String),
    ) -> StoreResult<Vec<String>> {
        let skey = request.key.to_string();
        let keys = self.inner.keys.session(&request.key);
        let mode = match request.mode {
            AcquireMode::Takeover => "takeover",
            AcquireMode::IfVacant => "if_vacant",
        };
        let args = [
            request.pod.as_str(),
            generation,
            request.connection.as_str(),
            mode,
            &self.retention_ms().to_string(),
            &self.tombstone_ms().to_string(),
            &dead.0,
            &dead.1,
            &self.inner.keys.commands_channel(),
            &skey,
        ];
        self.script(
            &self.inner.scripts.acquire,
            &[
                &keys.session,
                &keys.tombstones,
                &keys.selection,
                &keys.fence,
            ],
            &args,
        )
        .await
    }

    /// Runs a batch script (renew, release) over `sessions`, split by slot: 3 keys per
    /// session (session, tombstones, selection), `head` then the triples as ARGV. Answers
    /// each call's batch (indexes into `sessions`) with its answer.
    async fn session_batches(
        &self,
        script: &redis::Script,
        head: &[String],
        sessions: &[HeldSession],
    ) -> StoreResult<Vec<(Vec<usize>, Vec<String>)>> {
        let hashes: Vec<String> = sessions
            .iter()
            .map(|s| self.inner.keys.session(&s.key).session)
            .collect();
        let batches = self.batches(&hashes);
        let answers = self
            .parallel(
                batches
                    .iter()
                    .map(|batch| {
                        let held: Vec<&HeldSession> = batch.iter().map(|&i| &sessions[i]).collect();
                        let keys: Vec<String> = held
                            .iter()
                            .flat_map(|s| {
                                let k = self.inner.keys.session(&s.key);
                                [k.session, k.tombstones, k.selection]
                            })
                            .collect();
                        let mut args = head.to_vec();
                        args.extend(triples(&held));
                        async move { self.script::<Vec<String>, _, _>(script, &keys, &args).await }
                    })
                    .collect::<Vec<_>>(),
            )
            .await?;
        Ok(batches.into_iter().zip(answers).collect())
    }

    pub(super) async fn renew_steps(
        &self,
        pod: &PodId,
        sessions: &[HeldSession],
    ) -> StoreResult<Vec<LostSession>> {
        let generation = self.live_pod(pod, None).await?;
        let head = [pod.to_string(), generation];
        let answers = self
            .session_batches(&self.inner.scripts.renew, &head, sessions)
            .await?;
        let mut lost = Vec::new();
        for (batch, answer) in &answers {
            for entry in answer.chunks(5) {
                let [index, reason, holder_pod, conn, fence] = entry else {
                    return Err(StoreError::Corrupt("truncated renew answer".to_owned()));
                };
                let index: usize = decode::parse("index", index)?;
                let &i = index
                    .checked_sub(1)
                    .and_then(|i| batch.get(i))
                    .ok_or_else(|| StoreError::Corrupt("renew index out of range".to_owned()))?;
                lost.push((
                    i,
                    LostSession {
                        session: sessions[i].clone(),
                        reason: decode::reason(reason)?,
                        current: decode::holder(holder_pod, conn, fence)?,
                    },
                ));
            }
        }
        // Batches follow slots; answer in the caller's order.
        lost.sort_unstable_by_key(|(i, _)| *i);
        let lost: Vec<LostSession> = lost.into_iter().map(|(_, l)| l).collect();
        // Memberships go after the state they describe (steps.rs, invariant 4). Only those of
        // connections that can never hold the key again (taken over, killed: tombstoned): a
        // session found vacant may be granted to the same connection again right now (a
        // restore's re-acquire), and removing its membership then would hide it from the
        // sweep at the pod's end. A membership left behind is harmless: the sweep drops only a
        // session that pod, registration and connection still hold.
        let gone: Vec<String> = lost
            .iter()
            .filter(|l| matches!(l.reason, EndReason::TakenOver | EndReason::KilledByAdmin))
            .map(|l| member(&l.session.key.to_string(), l.session.connection.as_str()))
            .collect();
        self.forget_grants(pod, &gone).await?;
        Ok(lost)
    }

    pub(super) async fn release_steps(
        &self,
        pod: &PodId,
        sessions: &[HeldSession],
    ) -> StoreResult<Released> {
        let generation = self.live_pod(pod, None).await?;
        let head = [
            pod.to_string(),
            generation,
            self.retention_ms().to_string(),
            self.tombstone_ms().to_string(),
        ];
        let answers = self
            .session_batches(&self.inner.scripts.release, &head, sessions)
            .await?;
        let mut released = Released::default();
        let mut not_held = Vec::new();
        let mut gone = Vec::new();
        for (batch, answer) in &answers {
            if answer.len() != batch.len() {
                return Err(StoreError::Corrupt(format!("release answered {answer:?}")));
            }
            for (&i, status) in batch.iter().zip(answer) {
                if status == "r" {
                    released.count += 1;
                } else {
                    not_held.push(i);
                }
                if status != "h" {
                    gone.push(&sessions[i]);
                }
            }
        }
        // Batches follow slots; answer in the caller's order.
        not_held.sort_unstable();
        released.not_held = not_held.iter().map(|&i| sessions[i].clone()).collect();
        let members: Vec<String> = gone
            .iter()
            .map(|s| member(&s.key.to_string(), s.connection.as_str()))
            .collect();
        self.forget_grants(pod, &members).await?;
        let grants: Vec<(&SessionKey, &str)> = gone
            .iter()
            .map(|s| (&s.key, s.connection.as_str()))
            .collect();
        self.indexes(Change::Remove, &grants).await?;
        Ok(released)
    }

    pub(super) async fn select_steps(
        &self,
        pod: &PodId,
        session: &HeldSession,
        chat: &ChatId,
    ) -> StoreResult<bool> {
        let generation = self.live_pod(pod, None).await?;
        let Some(route) = chat_route(&session.key, chat) else {
            return Ok(false);
        };
        let keys = self.inner.keys.session(&session.key);
        let answer: Vec<String> = self
            .script(
                &self.inner.scripts.select,
                &[&keys.session, &keys.selection],
                &[
                    pod.as_str(),
                    generation.as_str(),
                    session.connection.as_str(),
                    &session.fencing.0.to_string(),
                    chat.as_str(),
                    &self.retention_ms().to_string(),
                ],
            )
            .await?;
        if status_of(&answer) != "held" {
            return Ok(false);
        }
        // The route is (re)asserted on every call, not only when the chat changes: a retry
        // after a timed-out select must never answer 'held' without the route in place.
        let routes = [route];
        self.pod_grant(pod, &generation, None, &routes).await?;
        self.route_sets(Change::Add, pod, &generation, &routes)
            .await?;
        Ok(true)
    }

    pub(super) async fn kill_steps(
        &self,
        key: &SessionKey,
        connection: Option<&ConnectionId>,
        message: &str,
    ) -> StoreResult<Option<SessionInfo>> {
        let skey = key.to_string();
        let keys = self.inner.keys.session(key);
        for _ in 0..ATTEMPTS {
            let mut record = self.read_session(&skey).await?;
            let alive = match &mut record {
                Some(r) => self.holder_lives(r).await?,
                None => false,
            };
            let seen = record.clone().unwrap_or(Record {
                pod: String::new(),
                generation: String::new(),
                connection: String::new(),
                fence: String::new(),
                since: String::new(),
                lease_end: String::new(),
                chat: String::new(),
            });
            let answer: Vec<String> = self
                .script(
                    &self.inner.scripts.kill,
                    &[&keys.session, &keys.tombstones, &keys.selection],
                    &[
                        connection.map_or("", ConnectionId::as_str),
                        &self.retention_ms().to_string(),
                        &self.tombstone_ms().to_string(),
                        &seen.pod,
                        &seen.generation,
                        &seen.connection,
                        &seen.fence,
                        if alive { "1" } else { "0" },
                        &self.inner.keys.commands_channel(),
                        &skey,
                        message,
                    ],
                )
                .await?;
            match answer.as_slice() {
                [status] if status == "changed" => continue,
                [status, line] if status == "killed" => {
                    self.keep_kill(&seen.pod, line, &skey, &seen.connection)
                        .await?;
                    self.indexes(Change::Remove, &[(key, seen.connection.as_str())])
                        .await?;
                    return Ok(decode::sessions(&seen.fields(&skey))?.pop());
                }
                _ => return Ok(None),
            }
        }
        Err(StoreError::Unavailable(format!(
            "the session of {skey} changed {ATTEMPTS} times during a kill"
        )))
    }

    pub(super) async fn get_session_steps(
        &self,
        key: &SessionKey,
    ) -> StoreResult<Option<SessionInfo>> {
        let skey = key.to_string();
        match self.live_session(&skey).await? {
            Some(record) => Ok(decode::sessions(&record.fields(&skey))?.pop()),
            None => Ok(None),
        }
    }

    pub(super) async fn list_sessions_steps(
        &self,
        filter: &SessionFilter,
        cursor: &str,
        size: usize,
    ) -> StoreResult<(String, Vec<SessionInfo>)> {
        let index = self.inner.keys.session_index(filter);
        let mut cmd = redis::cmd("SSCAN");
        cmd.arg(&index).arg(cursor).arg("COUNT").arg(size.max(1));
        let (next, members): (String, Vec<String>) = self.query(cmd).await?;
        let entries: Vec<(String, String)> = members
            .iter()
            .filter_map(|m| m.split_once(' '))
            .map(|(k, c)| (k.to_owned(), c.to_owned()))
            .collect();
        let read = self
            .parallel(
                entries
                    .iter()
                    .map(|(key, _)| self.read_session(key))
                    .collect::<Vec<_>>(),
            )
            .await?;
        // Each holder's pod is asked once per page, not once per session.
        let mut pods: Vec<String> = read.iter().flatten().map(|r| r.pod.clone()).collect();
        pods.sort_unstable();
        pods.dedup();
        let ids = pods
            .iter()
            .map(|p| decode::parse("pod_id", p))
            .collect::<StoreResult<Vec<PodId>>>()?;
        let leases = self
            .parallel(
                ids.iter()
                    .map(|pod| self.pod_lease(pod, None))
                    .collect::<Vec<_>>(),
            )
            .await?;
        let live: std::collections::HashMap<String, (String, String)> = pods
            .into_iter()
            .zip(leases)
            .filter_map(|(pod, lease)| lease.map(|lease| (pod, lease)))
            .collect();
        // As `holder_lives`: the holder's registration lives, and its lease end is the
        // session's.
        let records = read.into_iter().map(|record| {
            record.and_then(|mut r| {
                let (generation, lease_end) = live.get(r.pod.as_str())?;
                if !r.generation.is_empty() && *generation != r.generation {
                    return None;
                }
                r.lease_end.clone_from(lease_end);
                Some(r)
            })
        });
        let mut fields = Vec::new();
        let mut stale = Vec::new();
        for ((key, connection), record) in entries.iter().zip(records) {
            match record {
                Some(r) if &r.connection == connection => fields.extend(r.fields(key)),
                // The member names a grant that ended: it never holds again (steps.rs,
                // invariant 4), so it is removed here.
                _ => stale.push(member(key, connection)),
            }
        }
        if !stale.is_empty() {
            let mut cmd = redis::cmd("SREM");
            cmd.arg(&index).arg(&stale);
            self.query::<i64>(cmd).await?;
        }
        Ok((next, decode::sessions(&fields)?))
    }

    pub(super) async fn register_routes_steps(
        &self,
        pod: &PodId,
        routes: &[Route],
    ) -> StoreResult<()> {
        let generation = self.pod_grant(pod, "", None, routes).await?;
        self.route_sets(Change::Add, pod, &generation, routes).await
    }

    pub(super) async fn unregister_routes_steps(
        &self,
        pod: &PodId,
        routes: &[Route],
    ) -> StoreResult<()> {
        if routes.is_empty() {
            return Ok(());
        }
        let keys = self.inner.keys.pod(pod);
        let mut cmd = redis::cmd("HGET");
        cmd.arg(&keys.pod).arg("gen");
        let generation: Option<String> = self.query(cmd).await?;
        // Route sets first, then the pod's own list (steps.rs, invariant 3).
        if let Some(generation) = generation {
            self.route_sets(Change::Remove, pod, &generation, routes)
                .await?;
        }
        let mut cmd = redis::cmd("SREM");
        cmd.arg(&keys.routes)
            .arg(routes.iter().map(ToString::to_string).collect::<Vec<_>>());
        self.query::<i64>(cmd).await?;
        Ok(())
    }

    /// The live record (with its registration) of each pod, `None` when not live.
    pub(super) async fn pod_records(
        &self,
        pods: &[PodId],
    ) -> StoreResult<Vec<Option<(String, PodRecord)>>> {
        self.parallel(
            pods.iter()
                .map(|pod| async move {
                    let keys = self.inner.keys.pod(pod);
                    let answer: Vec<String> = self
                        .script(
                            &self.inner.scripts.pod_record,
                            &[&keys.pod],
                            &[pod.as_str()],
                        )
                        .await?;
                    match answer.split_first() {
                        None => Ok(None),
                        Some((generation, fields)) => Ok(decode::pods(fields)?
                            .pop()
                            .map(|record| (generation.clone(), record))),
                    }
                })
                .collect::<Vec<_>>(),
        )
        .await
    }

    pub(super) async fn lookup_steps(&self, queries: &[RouteQuery]) -> StoreResult<Lookup> {
        let groups: Vec<Vec<Route>> = queries.iter().map(RouteQuery::matching_routes).collect();
        let mut routes: Vec<&Route> = groups.iter().flatten().collect();
        routes.sort_by_key(|r| r.to_string());
        routes.dedup();
        let members: Vec<Vec<String>> = self
            .parallel(
                routes
                    .iter()
                    .map(|route| {
                        let mut cmd = redis::cmd("SMEMBERS");
                        cmd.arg(self.inner.keys.route(route));
                        self.query::<Vec<String>>(cmd)
                    })
                    .collect::<Vec<_>>(),
            )
            .await?;
        let mut malformed = 0usize;
        let by_route: std::collections::HashMap<String, Vec<(String, String)>> = routes
            .iter()
            .zip(members)
            .map(|(route, members)| {
                let entries = members
                    .iter()
                    .filter_map(|m| {
                        // A member no script of ours wrote (a hand edit, a foreign writer)
                        // names no pod: skipped, so it cannot fail the route's other pods.
                        let entry = m
                            .split_once(' ')
                            .filter(|(p, _)| p.parse::<PodId>().is_ok());
                        malformed += usize::from(entry.is_none());
                        entry
                    })
                    .map(|(p, g)| (p.to_owned(), g.to_owned()))
                    .collect();
                (route.to_string(), entries)
            })
            .collect();
        if malformed > 0 {
            warn_malformed_members(malformed);
        }
        let mut named: Vec<PodId> = Vec::new();
        for entries in by_route.values() {
            for (pod, _) in entries {
                let pod: PodId = decode::parse("pod_id", pod)?;
                if !named.contains(&pod) {
                    named.push(pod);
                }
            }
        }
        let records = self.pod_records(&named).await?;
        let live: std::collections::HashMap<&str, &(String, PodRecord)> = named
            .iter()
            .zip(&records)
            .filter_map(|(pod, r)| r.as_ref().map(|r| (pod.as_str(), r)))
            .collect();
        let mut results = Vec::with_capacity(queries.len());
        let mut answered: Vec<&PodId> = Vec::new();
        for group in &groups {
            let mut pods: Vec<PodId> = Vec::new();
            for route in group {
                for (pod, generation) in by_route.get(&route.to_string()).into_iter().flatten() {
                    let Some((live_gen, record)) = live.get(pod.as_str()) else {
                        continue;
                    };
                    // Only the pod's live registration counts (steps.rs, invariant 3).
                    if live_gen != generation || pods.contains(&record.pod) {
                        continue;
                    }
                    pods.push(record.pod.clone());
                    if !answered.contains(&&record.pod) {
                        answered.push(&record.pod);
                    }
                }
            }
            results.push(pods);
        }
        let pods = answered
            .iter()
            .filter_map(|p| live.get(p.as_str()).map(|(_, r)| r.clone()))
            .collect();
        Ok(Lookup { results, pods })
    }
}

/// Logs malformed route members at most once a minute: lookups of the same routes repeat
/// several times a second, and one line says what an operator needs to know.
fn warn_malformed_members(count: usize) {
    static LOG: LazyLock<RateLimit> =
        LazyLock::new(|| RateLimit::new(std::time::Duration::from_secs(60)));
    if let Some(repeats) = LOG.check("route member") {
        tracing::warn!(
            count,
            repeats,
            "route sets hold members that name no pod (not written by daisi); they are skipped"
        );
    }
}
