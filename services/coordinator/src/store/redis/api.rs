//! [`SessionStore`] for [`RedisStore`]: each operation is its sequence of steps (`ops`,
//! `pods`, `sweep`), bounded by the store timeout as a whole.

use super::{RedisStore, decode};
use crate::store::fanout::CommandStream;
use crate::store::types::*;
use crate::store::{Route, RouteQuery};
use crate::store::{SessionStore, StoreError, StoreResult};
use daisi_domain::{ChatId, ConnectionId, PodId, SessionKey};
use daisi_runtime::ratelog::RateLimit;
use std::sync::LazyLock;

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

impl SessionStore for RedisStore {
    fn settings(&self) -> &StoreSettings {
        &self.inner.settings
    }

    async fn acquire(&self, request: AcquireRequest) -> StoreResult<AcquireOutcome> {
        self.within(self.acquire_steps(request)).await
    }

    async fn renew(&self, pod: &PodId, sessions: &[HeldSession]) -> StoreResult<Vec<LostSession>> {
        self.within(self.renew_steps(pod, sessions)).await
    }

    async fn release(&self, pod: &PodId, sessions: &[HeldSession]) -> StoreResult<Released> {
        self.within(self.release_steps(pod, sessions)).await
    }

    async fn select_chat(
        &self,
        pod: &PodId,
        session: &HeldSession,
        chat: &ChatId,
    ) -> StoreResult<bool> {
        self.within(self.select_steps(pod, session, chat)).await
    }

    async fn get_session(&self, key: &SessionKey) -> StoreResult<Option<SessionInfo>> {
        self.within(self.get_session_steps(key)).await
    }

    async fn list_sessions(
        &self,
        filter: &SessionFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<SessionInfo>> {
        let cursor = page_cursor(page)?;
        let (next, items) = self
            .within(self.list_sessions_steps(filter, &cursor, page.size))
            .await?;
        Ok(Page {
            items,
            next: next_token(&next),
        })
    }

    async fn kill_session(
        &self,
        key: &SessionKey,
        connection: Option<&ConnectionId>,
        message: &str,
    ) -> StoreResult<Option<SessionInfo>> {
        self.within(self.kill_steps(key, connection, message)).await
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
        let inbox = self.inner.keys.pod(pod).inbox;
        let answer: Vec<String> = self
            .within(self.script(&self.inner.scripts.inbox, &[&inbox], &[acked.to_string()]))
            .await?;
        if !answer.len().is_multiple_of(2) {
            return Err(StoreError::Corrupt("truncated inbox answer".to_owned()));
        }
        // Entry by entry: one the coordinator cannot read (a foreign write, a newer format)
        // must not keep the others from the pod on every heartbeat of its lifetime.
        let mut entries = Vec::with_capacity(answer.len() / 2);
        for entry in answer.chunks_exact(2) {
            let [sequence, line] = entry else { continue };
            let decoded = decode::parse("inbox sequence", sequence).and_then(|sequence| {
                Ok(InboxEntry {
                    sequence,
                    command: decode::kill_command(line)?,
                })
            });
            match decoded {
                Ok(entry) => entries.push(entry),
                Err(error) => skip_bad_inbox_entry(pod, &error),
            }
        }
        Ok(entries)
    }

    async fn register_routes(&self, pod: &PodId, routes: &[Route]) -> StoreResult<()> {
        self.within(self.register_routes_steps(pod, routes)).await
    }

    async fn unregister_routes(&self, pod: &PodId, routes: &[Route]) -> StoreResult<()> {
        self.within(self.unregister_routes_steps(pod, routes)).await
    }

    async fn lookup_routes(&self, queries: &[RouteQuery]) -> StoreResult<Lookup> {
        self.within(self.lookup_steps(queries)).await
    }

    async fn list_routes(
        &self,
        selector: &RouteSelector,
        page: &PageRequest,
    ) -> StoreResult<Page<RouteEntry>> {
        let cursor = page_cursor(page)?;
        let key = match selector {
            RouteSelector::Route(route) => self.inner.keys.route(route),
            RouteSelector::Pod(pod) => self.inner.keys.pod(pod).routes,
        };
        let mut cmd = redis::cmd("SSCAN");
        cmd.arg(&key)
            .arg(&cursor)
            .arg("COUNT")
            .arg(page.size.max(1));
        let (cursor, members): (String, Vec<String>) = self.within(self.query(cmd)).await?;
        let mut items: Vec<RouteEntry> = Vec::with_capacity(members.len());
        for member in &members {
            let entry = match selector {
                // Members of a route set are "<pod> <registration>".
                RouteSelector::Route(route) => RouteEntry {
                    route: route.clone(),
                    pod: decode::parse("pod_id", member.split(' ').next().unwrap_or(""))?,
                },
                RouteSelector::Pod(pod) => RouteEntry {
                    route: decode::parse("route", member)?,
                    pod: pod.clone(),
                },
            };
            if !items.contains(&entry) {
                items.push(entry);
            }
        }
        Ok(Page {
            items,
            next: next_token(&cursor),
        })
    }

    async fn heartbeat(&self, heartbeat: &PodHeartbeat) -> StoreResult<HeartbeatOutcome> {
        self.within(self.heartbeat_steps(heartbeat)).await
    }

    async fn deregister(&self, pod: &PodId, instance: &str) -> StoreResult<Purged> {
        self.within(self.deregister_steps(pod, instance)).await
    }

    async fn resolve_pods(&self, pods: &[PodId]) -> StoreResult<Resolved> {
        self.within(self.resolve_steps(pods)).await
    }

    async fn list_pods(&self, page: &PageRequest) -> StoreResult<Page<PodRecord>> {
        let cursor = page_cursor(page)?;
        let (next, items) = self
            .within(self.list_pods_steps(&cursor, page.size))
            .await?;
        Ok(Page {
            items,
            next: next_token(&next),
        })
    }

    async fn reap_expired_pods(&self) -> StoreResult<Vec<(PodId, Purged)>> {
        // Not bounded by one timeout: sweeps of large pods run in many short chunks.
        self.reap_steps().await
    }
}

/// Logs an inbox entry that cannot be read, at most once a minute: every heartbeat of the pod
/// reads it again until it lapses (the tombstone lifetime) or the pod acknowledges a later one.
fn skip_bad_inbox_entry(pod: &PodId, error: &StoreError) {
    static LOG: LazyLock<RateLimit> =
        LazyLock::new(|| RateLimit::new(std::time::Duration::from_secs(60)));
    if let Some(repeats) = LOG.check("inbox entry") {
        tracing::error!(%pod, %error, repeats, "unreadable pod inbox entry skipped");
    }
}
