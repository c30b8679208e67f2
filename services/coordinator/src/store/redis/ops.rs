//! The [`SessionStore`] operations of [`RedisStore`]: each one script call (renew and release
//! one per chunk), its answer decoded into store types.

use super::sweep::{SWEEP_LOCK, Swept};
use super::{RedisStore, decode, millis};
use crate::store::fanout::CommandStream;
use crate::store::types::*;
use crate::store::{Route, RouteQuery};
use crate::store::{SessionStore, StoreError, StoreResult};
use daisi_domain::{ChatId, ConnectionId, PodId, SessionKey};
use std::collections::HashSet;

/// Pods (and orphaned sweeps) claimed per reaper call.
const REAP_LIMIT: usize = 64;

fn status_of(answer: &[String]) -> &str {
    answer.first().map_or("", String::as_str)
}

fn check_pod(answer: &[String], pod: &PodId) -> StoreResult<()> {
    if status_of(answer) == "unknown_pod" {
        Err(StoreError::UnknownPod(pod.clone()))
    } else {
        Ok(())
    }
}

fn page_cursor(page: &PageRequest) -> StoreResult<String> {
    match page.token.as_deref() {
        None | Some("") => Ok("0".to_owned()),
        Some(token) => token
            .parse::<u64>()
            .map(|c| c.to_string())
            .map_err(|_| StoreError::BadPageToken),
    }
}

fn next_token(cursor: &str) -> Option<String> {
    (cursor != "0").then(|| cursor.to_owned())
}

fn count(value: &str) -> StoreResult<u32> {
    decode::parse("count", value)
}

impl SessionStore for RedisStore {
    fn settings(&self) -> &StoreSettings {
        &self.inner.settings
    }

    async fn acquire(&self, request: AcquireRequest) -> StoreResult<AcquireOutcome> {
        let skey = request.key.to_string();
        let retention = self.retention_ms().to_string();
        let tombstone = self.tombstone_ms().to_string();
        let mode = match request.mode {
            AcquireMode::Takeover => "takeover",
            AcquireMode::IfVacant => "if_vacant",
        };
        let routes: Vec<String> = request.routes.iter().map(ToString::to_string).collect();
        let mut args = vec![
            skey.as_str(),
            request.pod.as_str(),
            request.connection.as_str(),
            mode,
            retention.as_str(),
            tombstone.as_str(),
        ];
        args.extend(routes.iter().map(String::as_str));
        let key = self.inner.keys.session(&request.key);
        let tombstones = self.inner.keys.tombstones(&request.key);
        let answer: Vec<String> = self
            .bounded(self.script_keys(&self.inner.scripts.acquire, &[&key, &tombstones], &args))
            .await?;
        check_pod(&answer, &request.pod)?;
        match (status_of(&answer), answer.as_slice()) {
            ("refused", [_, pod, conn, fence]) => Ok(AcquireOutcome::Refused(
                decode::holder(pod, conn, fence)?
                    .ok_or_else(|| StoreError::Corrupt("refused without a holder".to_owned()))?,
            )),
            ("ended", [_, reason, pod, conn, fence]) => Ok(AcquireOutcome::Ended {
                reason: decode::reason(reason)?,
                current: decode::holder(pod, conn, fence)?,
            }),
            ("granted", [_, fence, pod, conn, prev_fence, chat]) => {
                Ok(AcquireOutcome::Granted(Grant {
                    fencing: decode::fencing(fence)?,
                    previous: decode::holder(pod, conn, prev_fence)?,
                    selected_chat: decode::optional("chat_id", chat)?,
                }))
            }
            _ => Err(StoreError::Corrupt(format!("acquire answered {answer:?}"))),
        }
    }

    async fn renew(&self, pod: &PodId, sessions: &[HeldSession]) -> StoreResult<Vec<LostSession>> {
        let head = [pod.as_str()];
        let answers = self
            .bounded(self.batched(&self.inner.scripts.renew, pod, &head, sessions))
            .await?;
        let mut lost = Vec::new();
        for (chunk, answer) in sessions.chunks(self.inner.chunk).zip(&answers) {
            check_pod(answer, pod)?;
            for entry in answer.get(1..).unwrap_or_default().chunks(5) {
                let [index, reason, holder_pod, conn, fence] = entry else {
                    return Err(StoreError::Corrupt("truncated renew answer".to_owned()));
                };
                let index: usize = decode::parse("index", index)?;
                let session = index
                    .checked_sub(1)
                    .and_then(|i| chunk.get(i))
                    .ok_or_else(|| StoreError::Corrupt("renew index out of range".to_owned()))?;
                lost.push(LostSession {
                    session: session.clone(),
                    reason: decode::reason(reason)?,
                    current: decode::holder(holder_pod, conn, fence)?,
                });
            }
        }
        Ok(lost)
    }

    async fn release(&self, pod: &PodId, sessions: &[HeldSession]) -> StoreResult<Released> {
        let retention = self.retention_ms().to_string();
        let tombstone = self.tombstone_ms().to_string();
        let head = [pod.as_str(), retention.as_str(), tombstone.as_str()];
        let answers = self
            .bounded(self.batched(&self.inner.scripts.release, pod, &head, sessions))
            .await?;
        let mut released = Released::default();
        for (chunk, answer) in sessions.chunks(self.inner.chunk).zip(&answers) {
            check_pod(answer, pod)?;
            let [_, n, not_held @ ..] = answer.as_slice() else {
                return Err(StoreError::Corrupt("truncated release answer".to_owned()));
            };
            released.count += count(n)?;
            for index in not_held {
                let index: usize = decode::parse("index", index)?;
                let session = index
                    .checked_sub(1)
                    .and_then(|i| chunk.get(i))
                    .ok_or_else(|| StoreError::Corrupt("release index out of range".to_owned()))?;
                released.not_held.push(session.clone());
            }
        }
        Ok(released)
    }

    async fn select_chat(
        &self,
        pod: &PodId,
        session: &HeldSession,
        chat: &ChatId,
    ) -> StoreResult<bool> {
        let skey = session.key.to_string();
        let fence = session.fencing.0.to_string();
        let retention = self.retention_ms().to_string();
        let args = [
            skey.as_str(),
            pod.as_str(),
            session.connection.as_str(),
            fence.as_str(),
            chat.as_str(),
            retention.as_str(),
        ];
        let key = self.inner.keys.session(&session.key);
        let answer: Vec<String> = self
            .bounded(self.script(&self.inner.scripts.select, &key, &args))
            .await?;
        check_pod(&answer, pod)?;
        Ok(status_of(&answer) == "held")
    }

    async fn get_session(&self, key: &SessionKey) -> StoreResult<Option<SessionInfo>> {
        let skey = key.to_string();
        let answer: Vec<String> = self
            .bounded(self.script(
                &self.inner.scripts.sessions,
                &self.inner.keys.sequence(),
                &[skey.as_str()],
            ))
            .await?;
        Ok(decode::sessions(&answer)?.pop())
    }

    async fn list_sessions(
        &self,
        filter: &SessionFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<SessionInfo>> {
        let cursor = page_cursor(page)?;
        let index = self.inner.keys.session_index(filter);
        let size = page.size.max(1).to_string();
        let answer: Vec<String> = self
            .bounded(self.script(
                &self.inner.scripts.list_sessions,
                &index,
                &[index.as_str(), cursor.as_str(), size.as_str()],
            ))
            .await?;
        let Some((cursor, records)) = answer.split_first() else {
            return Err(StoreError::Corrupt("empty listing answer".to_owned()));
        };
        Ok(Page {
            items: decode::sessions(records)?,
            next: next_token(cursor),
        })
    }

    async fn kill_session(
        &self,
        key: &SessionKey,
        connection: Option<&ConnectionId>,
        message: &str,
    ) -> StoreResult<Option<SessionInfo>> {
        let skey = key.to_string();
        let retention = self.retention_ms().to_string();
        let tombstone = self.tombstone_ms().to_string();
        let args = [
            skey.as_str(),
            connection.map_or("", ConnectionId::as_str),
            message,
            retention.as_str(),
            tombstone.as_str(),
        ];
        let session = self.inner.keys.session(key);
        let tombstones = self.inner.keys.tombstones(key);
        let answer: Vec<String> = self
            .bounded(self.script_keys(&self.inner.scripts.kill, &[&session, &tombstones], &args))
            .await?;
        match answer.split_first() {
            Some((status, record)) if status == "killed" => Ok(decode::sessions(record)?.pop()),
            _ => Ok(None),
        }
    }

    async fn watch_commands(&self, pod: &PodId) -> StoreResult<CommandStream> {
        // Register first, then wait for a live subscription: a stream handed out only after
        // both holds sees every command published from now on, or ends.
        let stream = self.inner.fanout.subscribe(pod);
        let mut subscribed = self.inner.subscribed.clone();
        match tokio::time::timeout(self.inner.timeout, subscribed.wait_for(|up| *up)).await {
            Ok(Ok(_)) => Ok(stream),
            _ => Err(StoreError::Unavailable(
                "not subscribed to the kill-command channel".to_owned(),
            )),
        }
    }

    async fn pod_inbox(&self, pod: &PodId, acked: u64) -> StoreResult<Vec<InboxEntry>> {
        let acked = acked.to_string();
        let answer: Vec<String> = self
            .bounded(self.script(
                &self.inner.scripts.inbox,
                &self.inner.keys.inbox(pod),
                &[acked.as_str()],
            ))
            .await?;
        answer
            .chunks(2)
            .map(|entry| match entry {
                [sequence, line] => Ok(InboxEntry {
                    sequence: decode::parse("inbox sequence", sequence)?,
                    command: decode::kill_command(line)?,
                }),
                _ => Err(StoreError::Corrupt("truncated inbox answer".to_owned())),
            })
            .collect()
    }

    async fn register_routes(&self, pod: &PodId, routes: &[Route]) -> StoreResult<()> {
        self.change_routes("add", pod, routes).await
    }

    async fn unregister_routes(&self, pod: &PodId, routes: &[Route]) -> StoreResult<()> {
        self.change_routes("remove", pod, routes).await
    }

    async fn lookup_routes(&self, queries: &[RouteQuery]) -> StoreResult<Lookup> {
        let groups: Vec<Vec<String>> = queries
            .iter()
            .map(|q| {
                q.matching_routes()
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            })
            .collect();
        let sizes: Vec<String> = groups.iter().map(|g| g.len().to_string()).collect();
        let mut args = Vec::new();
        for (size, group) in sizes.iter().zip(&groups) {
            args.push(size.as_str());
            args.extend(group.iter().map(String::as_str));
        }
        let (results, records): (Vec<Vec<String>>, Vec<String>) = self
            .bounded(self.script(&self.inner.scripts.lookup, &self.inner.keys.pods(), &args))
            .await?;
        if results.len() != queries.len() {
            return Err(StoreError::Corrupt(
                "lookup answered the wrong count".to_owned(),
            ));
        }
        let results = results
            .iter()
            .map(|pods| pods.iter().map(|p| decode::parse("pod_id", p)).collect())
            .collect::<StoreResult<_>>()?;
        Ok(Lookup {
            results,
            pods: decode::pods(&records)?,
        })
    }

    async fn list_routes(
        &self,
        selector: &RouteSelector,
        page: &PageRequest,
    ) -> StoreResult<Page<RouteEntry>> {
        let cursor = page_cursor(page)?;
        let key = match selector {
            RouteSelector::Route(route) => self.inner.keys.route(route),
            RouteSelector::Pod(pod) => self.inner.keys.pod_routes(pod),
        };
        let mut connection = self.inner.connection.clone();
        let (cursor, members): (String, Vec<String>) = self
            .bounded(
                redis::cmd("SSCAN")
                    .arg(&key)
                    .arg(&cursor)
                    .arg("COUNT")
                    .arg(page.size.max(1))
                    .query_async(&mut connection),
            )
            .await?;
        let items = members
            .iter()
            .map(|member| {
                Ok(match selector {
                    RouteSelector::Route(route) => RouteEntry {
                        route: route.clone(),
                        pod: decode::parse("pod_id", member)?,
                    },
                    RouteSelector::Pod(pod) => RouteEntry {
                        route: decode::parse("route", member)?,
                        pod: pod.clone(),
                    },
                })
            })
            .collect::<StoreResult<_>>()?;
        Ok(Page {
            items,
            next: next_token(&cursor),
        })
    }

    async fn heartbeat(&self, heartbeat: &PodHeartbeat) -> StoreResult<HeartbeatOutcome> {
        let lease = millis(self.inner.settings.pod_lease).to_string();
        let lock = millis(SWEEP_LOCK).to_string();
        let (users, admins) = heartbeat.load.map_or((String::new(), String::new()), |l| {
            (l.user_sockets.to_string(), l.admin_sockets.to_string())
        });
        let args = [
            heartbeat.pod.as_str(),
            heartbeat.instance.as_str(),
            heartbeat.delivery_address.as_str(),
            lease.as_str(),
            lock.as_str(),
            users.as_str(),
            admins.as_str(),
        ];
        let answer: Vec<String> = self
            .bounded(self.script(
                &self.inner.scripts.heartbeat,
                &self.inner.keys.pod(&heartbeat.pod),
                &args,
            ))
            .await?;
        match answer.as_slice() {
            [status] if status == "renewed" => Ok(HeartbeatOutcome::Renewed),
            [status, sweep] if status == "registered" => Ok(HeartbeatOutcome::Registered {
                purged: self.sweep_claimed(sweep).await,
            }),
            _ => Err(StoreError::Corrupt(format!(
                "heartbeat answered {answer:?}"
            ))),
        }
    }

    async fn deregister(&self, pod: &PodId, instance: &str) -> StoreResult<Purged> {
        let lock = millis(SWEEP_LOCK).to_string();
        let answer: Vec<String> = self
            .bounded(self.script(
                &self.inner.scripts.deregister,
                &self.inner.keys.pod(pod),
                &[pod.as_str(), instance, lock.as_str()],
            ))
            .await?;
        match answer.as_slice() {
            [status] if status == "none" => Ok(Purged::default()),
            [status, sweep] if status == "claimed" => Ok(self.sweep_claimed(sweep).await),
            _ => Err(StoreError::Corrupt(format!(
                "deregister answered {answer:?}"
            ))),
        }
    }

    async fn resolve_pods(&self, pods: &[PodId]) -> StoreResult<Resolved> {
        let mut args = vec!["ids"];
        args.extend(pods.iter().map(PodId::as_str));
        let answer: Vec<String> = self
            .bounded(self.script(&self.inner.scripts.pods, &self.inner.keys.pods(), &args))
            .await?;
        let records = decode::pods(answer.get(1..).unwrap_or_default())?;
        let found: HashSet<&PodId> = records.iter().map(|r| &r.pod).collect();
        let unknown = pods
            .iter()
            .filter(|p| !found.contains(p))
            .cloned()
            .collect();
        Ok(Resolved {
            pods: records,
            unknown,
        })
    }

    async fn list_pods(&self, page: &PageRequest) -> StoreResult<Page<PodRecord>> {
        let cursor = page_cursor(page)?;
        let size = page.size.max(1).to_string();
        let answer: Vec<String> = self
            .bounded(self.script(
                &self.inner.scripts.pods,
                &self.inner.keys.pods(),
                &["scan", cursor.as_str(), size.as_str()],
            ))
            .await?;
        let Some((cursor, records)) = answer.split_first() else {
            return Err(StoreError::Corrupt("empty listing answer".to_owned()));
        };
        Ok(Page {
            items: decode::pods(records)?,
            next: next_token(cursor),
        })
    }

    async fn reap_expired_pods(&self) -> StoreResult<Vec<(PodId, Purged)>> {
        let limit = REAP_LIMIT.to_string();
        let lock = millis(SWEEP_LOCK).to_string();
        let answer: Vec<String> = self
            .bounded(self.script(
                &self.inner.scripts.reap,
                &self.inner.keys.pods(),
                &[limit.as_str(), lock.as_str()],
            ))
            .await?;
        let mut purged = Vec::new();
        for entry in answer.chunks(2) {
            let [pod, sweep] = entry else {
                return Err(StoreError::Corrupt("truncated reap answer".to_owned()));
            };
            // A claimed pod with nothing left to sweep is purged all the same.
            let claimed: Option<PodId> = if pod.is_empty() {
                None
            } else {
                Some(decode::parse("pod_id", pod)?)
            };
            let swept = if sweep.is_empty() {
                Swept::default()
            } else {
                self.sweep(sweep, None).await
            };
            if let Some(pod) = claimed.or(swept.pod) {
                purged.push((pod, swept.purged));
            }
        }
        Ok(purged)
    }
}

impl RedisStore {
    /// Sweeps what a heartbeat or deregistration claimed ('' = nothing), within one store
    /// timeout so the call stays short; a reaper finishes a larger sweep.
    async fn sweep_claimed(&self, sweep: &str) -> Purged {
        if sweep.is_empty() {
            return Purged::default();
        }
        self.sweep(sweep, Some(self.inner.timeout)).await.purged
    }

    async fn change_routes(&self, op: &str, pod: &PodId, routes: &[Route]) -> StoreResult<()> {
        let encoded: Vec<String> = routes.iter().map(ToString::to_string).collect();
        let mut args = vec![op, pod.as_str()];
        args.extend(encoded.iter().map(String::as_str));
        let answer: Vec<String> = self
            .bounded(self.script(
                &self.inner.scripts.routes,
                &self.inner.keys.pod_routes(pod),
                &args,
            ))
            .await?;
        check_pod(&answer, pod)
    }
}
