//! [`MemoryStore`]: the store's semantics in one process, under one mutex. For the dev stack,
//! the edge's and router's tests, and as the reference the Redis store is tested against. Share
//! one instance (it is a cheap clone) between in-process replicas to make them see each other.

mod state;

use super::chat_route;
use crate::store::fanout::{CommandStream, Fanout};
use crate::store::types::*;
use crate::store::{Route, RouteQuery};
use crate::store::{SessionStore, StoreResult};
use daisi_domain::coordination::FencingToken;
use daisi_domain::{ChatId, ConnectionId, PodId, SessionKey};
use jiff::Timestamp;
use parking_lot::{Mutex, MutexGuard};
use state::{Session, State, after, matches, page_of, parse_token};
use std::collections::BTreeSet;
use std::sync::Arc;

/// The in-process store.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: StoreSettings,
    state: Mutex<State>,
    fanout: Arc<Fanout>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(settings: StoreSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                state: Mutex::new(State::new(settings.selection_retention)),
                fanout: Arc::new(Fanout::default()),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every mutation completes under the lock without awaiting.
        self.inner.state.lock()
    }

    fn retention(&self, now: Timestamp) -> Timestamp {
        after(now, self.inner.settings.selection_retention)
    }

    fn tombstone_until(&self, now: Timestamp) -> Timestamp {
        after(now, self.inner.settings.tombstone_ttl)
    }

    /// Sends a kill command to the holder's pod: through the fan-out, and into its inbox.
    fn kill(&self, key: &SessionKey, holder: &Holder, reason: EndReason, message: &str) {
        let now = Timestamp::now();
        let command = KillCommand {
            pod: holder.pod.clone(),
            key: key.clone(),
            connection: holder.connection.clone(),
            fencing: holder.fencing,
            reason,
            message: message.to_owned(),
            issued_at: now,
        };
        self.inner.fanout.dispatch(&command);
        let until = self.tombstone_until(now);
        self.state().push_inbox(command, until);
    }
}

impl SessionStore for MemoryStore {
    fn settings(&self) -> &StoreSettings {
        &self.inner.settings
    }

    async fn acquire(&self, request: AcquireRequest) -> StoreResult<AcquireOutcome> {
        let now = Timestamp::now();
        let retain = self.retention(now);
        let buried_until = self.tombstone_until(now);
        let mut state = self.state();
        state.require_pod(&request.pod, now)?;
        let current = state.live(&request.key, now).map(|s| s.clone());
        // A connection that was taken over or killed never gets the session back.
        if let Some(tombstone) = state.tombstone(&request.key, &request.connection, now) {
            return Ok(AcquireOutcome::Ended {
                reason: tombstone.reason,
                current: current.map(|s| s.holder),
            });
        }
        let (fencing, previous, chat) = match current {
            Some(s) if s.holder.connection == request.connection && s.holder.pod == request.pod => {
                (s.holder.fencing, None, s.chat)
            }
            Some(s) if request.mode == AcquireMode::IfVacant => {
                return Ok(AcquireOutcome::Refused(s.holder));
            }
            current => {
                let chat = match &current {
                    Some(s) => s.chat.clone(),
                    None => state.selection(&request.key, now),
                };
                if let Some(previous) = &current {
                    state.bury(
                        &request.key,
                        &previous.holder.connection,
                        EndReason::TakenOver,
                        now,
                        buried_until,
                    );
                }
                state.sequence += 1;
                let fencing = FencingToken(state.sequence);
                let registration = state
                    .registrations
                    .get(&request.pod)
                    .copied()
                    .unwrap_or_default();
                state.sessions.insert(
                    request.key.clone(),
                    Session {
                        holder: Holder {
                            pod: request.pod.clone(),
                            connection: request.connection.clone(),
                            fencing,
                        },
                        since: now,
                        chat: chat.clone(),
                        registration,
                    },
                );
                (fencing, current.map(|s| s.holder), chat)
            }
        };
        for route in &request.routes {
            state.add_route(&request.pod, route.clone());
        }
        if let Some(chat) = &chat {
            if let Some(route) = chat_route(&request.key, chat) {
                state.add_route(&request.pod, route);
            }
            state
                .selections
                .insert(request.key.clone(), (chat.clone(), retain));
        }
        drop(state);
        if let Some(previous) = &previous {
            self.kill(
                &request.key,
                previous,
                EndReason::TakenOver,
                "taken over by another connection",
            );
        }
        Ok(AcquireOutcome::Granted(Grant {
            fencing,
            previous,
            selected_chat: chat,
        }))
    }

    async fn renew(&self, pod: &PodId, sessions: &[HeldSession]) -> StoreResult<Vec<LostSession>> {
        // An audit: sessions live with their pod's registration, so nothing is extended here.
        let now = Timestamp::now();
        let state = self.state();
        state.require_pod(pod, now)?;
        let mut lost = Vec::new();
        for held in sessions {
            let current = match state.sessions.get(&held.key) {
                Some(s) if !state.holder_live(s, now) => None,
                Some(s) if matches(s, pod, held) => continue,
                Some(s) => Some(s.holder.clone()),
                None => None,
            };
            // The tombstone knows the true reason, even when the kill command was lost and the
            // new holder has released since.
            let reason = match state.tombstone(&held.key, &held.connection, now) {
                Some(tombstone) => tombstone.reason,
                None if current.is_some() => EndReason::TakenOver,
                None => EndReason::Expired,
            };
            lost.push(LostSession {
                session: held.clone(),
                reason,
                current,
            });
        }
        Ok(lost)
    }

    async fn release(&self, pod: &PodId, sessions: &[HeldSession]) -> StoreResult<Released> {
        let now = Timestamp::now();
        let retain = self.retention(now);
        let buried_until = self.tombstone_until(now);
        let mut state = self.state();
        state.require_pod(pod, now)?;
        let mut released = Released::default();
        for held in sessions {
            let abandon = held.fencing == FencingToken::ABANDONED;
            // A pod acts only as itself: a connection that holds the key on another pod is that
            // pod's, neither released nor tombstoned here.
            let (held_now, others) = match state.live(&held.key, now) {
                Some(s) if s.holder.connection == held.connection => (
                    &s.holder.pod == pod && (abandon || s.holder.fencing == held.fencing),
                    &s.holder.pod != pod,
                ),
                _ => (false, false),
            };
            if abandon && !others {
                // An acquire whose outcome the edge does not know: whenever it lands, it is
                // refused from now on.
                let reason = EndReason::Expired;
                state.bury(&held.key, &held.connection, reason, now, buried_until);
            }
            if held_now {
                state.drop_session(&held.key, retain);
                released.count += 1;
            } else {
                released.not_held.push(held.clone());
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
        let now = Timestamp::now();
        let retain = self.retention(now);
        let mut state = self.state();
        state.require_pod(pod, now)?;
        let Some(route) = chat_route(&session.key, chat) else {
            return Ok(false);
        };
        match state.live(&session.key, now) {
            Some(stored) if matches(stored, pod, session) => stored.chat = Some(chat.clone()),
            _ => return Ok(false),
        }
        // Asserted on every call, not only on a change: a retry after a timed-out select, or
        // after the route was unregistered meanwhile, never answers "held" without the route.
        state.add_route(pod, route);
        state
            .selections
            .insert(session.key.clone(), (chat.clone(), retain));
        Ok(true)
    }

    async fn get_session(&self, key: &SessionKey) -> StoreResult<Option<SessionInfo>> {
        let now = Timestamp::now();
        let mut state = self.state();
        let session = state.live(key, now).map(|s| s.clone());
        Ok(session.map(|s| state.info(key, &s)))
    }

    async fn list_sessions(
        &self,
        filter: &SessionFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<SessionInfo>> {
        let now = Timestamp::now();
        let after_key: Option<SessionKey> = parse_token(page)?;
        let state = self.state();
        let wanted = |key: &SessionKey| match (filter, key) {
            (SessionFilter::Company(c), SessionKey::User { company, .. }) => company == c,
            (SessionFilter::Agent(c, a), SessionKey::User { company, agent, .. }) => {
                company == c && agent == a
            }
            (SessionFilter::Admins, SessionKey::Admin { .. }) => true,
            _ => false,
        };
        let items = state
            .sessions
            .iter()
            .filter(|(k, s)| after_key.as_ref().is_none_or(|t| *k > t) && state.holder_live(s, now))
            .filter(|(k, _)| wanted(k))
            .map(|(k, s)| (k.clone(), state.info(k, s)));
        Ok(page_of(items, page.size))
    }

    async fn kill_session(
        &self,
        key: &SessionKey,
        connection: Option<&ConnectionId>,
        message: &str,
    ) -> StoreResult<Option<SessionInfo>> {
        let now = Timestamp::now();
        let retain = self.retention(now);
        let buried_until = self.tombstone_until(now);
        let mut state = self.state();
        let target = match state.live(key, now).map(|s| s.clone()) {
            Some(s) if connection.is_none_or(|c| &s.holder.connection == c) => state.info(key, &s),
            _ => {
                // A named connection that does not hold the key (yet: its acquire may be in
                // flight) is remembered as killed, so that acquire is refused.
                if let Some(connection) = connection {
                    let reason = EndReason::KilledByAdmin;
                    state.bury(key, connection, reason, now, buried_until);
                }
                return Ok(None);
            }
        };
        state.drop_session(key, retain);
        let reason = EndReason::KilledByAdmin;
        state.bury(key, &target.holder.connection, reason, now, buried_until);
        drop(state);
        self.kill(key, &target.holder, EndReason::KilledByAdmin, message);
        Ok(Some(target))
    }

    async fn watch_commands(&self, pod: &PodId) -> StoreResult<CommandStream> {
        Ok(self.inner.fanout.subscribe(pod))
    }

    async fn pod_inbox(&self, pod: &PodId, acked: u64) -> StoreResult<Vec<InboxEntry>> {
        Ok(self.state().inbox(pod, acked, Timestamp::now()))
    }

    async fn register_routes(&self, pod: &PodId, routes: &[Route]) -> StoreResult<()> {
        let now = Timestamp::now();
        let mut state = self.state();
        state.require_pod(pod, now)?;
        for route in routes {
            state.add_route(pod, route.clone());
        }
        Ok(())
    }

    async fn unregister_routes(&self, pod: &PodId, routes: &[Route]) -> StoreResult<()> {
        let mut state = self.state();
        for route in routes {
            state.remove_route(pod, route);
        }
        Ok(())
    }

    async fn lookup_routes(&self, queries: &[RouteQuery]) -> StoreResult<Lookup> {
        let now = Timestamp::now();
        let state = self.state();
        let mut named = BTreeSet::new();
        let results = queries
            .iter()
            .map(|query| {
                let pods: BTreeSet<PodId> = query
                    .matching_routes()
                    .iter()
                    .filter_map(|route| state.routes.get(route))
                    .flatten()
                    .filter(|pod| state.pod_live(pod, now))
                    .cloned()
                    .collect();
                named.extend(pods.iter().cloned());
                pods.into_iter().collect()
            })
            .collect();
        let pods = named
            .iter()
            .filter_map(|p| state.pods.get(p).cloned())
            .collect();
        Ok(Lookup { results, pods })
    }

    async fn list_routes(
        &self,
        selector: &RouteSelector,
        page: &PageRequest,
    ) -> StoreResult<Page<RouteEntry>> {
        let state = self.state();
        match selector {
            RouteSelector::Route(route) => {
                let after_pod: Option<PodId> = parse_token(page)?;
                let items = state
                    .routes
                    .get(route)
                    .into_iter()
                    .flatten()
                    .filter(|p| after_pod.as_ref().is_none_or(|t| *p > t))
                    .map(|pod| {
                        let entry = RouteEntry {
                            route: route.clone(),
                            pod: pod.clone(),
                        };
                        (pod.clone(), entry)
                    });
                Ok(page_of(items, page.size))
            }
            RouteSelector::Pod(pod) => {
                let after_route: Option<Route> = parse_token(page)?;
                let items = state
                    .pod_routes
                    .get(pod)
                    .into_iter()
                    .flatten()
                    .filter(|r| after_route.as_ref().is_none_or(|t| *r > t))
                    .map(|route| {
                        let entry = RouteEntry {
                            route: route.clone(),
                            pod: pod.clone(),
                        };
                        (route.clone(), entry)
                    });
                Ok(page_of(items, page.size))
            }
        }
    }

    async fn heartbeat(&self, heartbeat: &PodHeartbeat) -> StoreResult<HeartbeatOutcome> {
        let now = Timestamp::now();
        let lease_end = after(now, self.inner.settings.pod_lease);
        let retain = self.retention(now);
        let mut state = self.state();
        let current = state.pods.get(&heartbeat.pod).cloned();
        let (outcome, registered_at) = match current {
            Some(pod) if pod.instance == heartbeat.instance && pod.lease_expires_at >= now => {
                let registration = state
                    .registrations
                    .get(&heartbeat.pod)
                    .copied()
                    .unwrap_or_default();
                (
                    HeartbeatOutcome::Renewed { registration },
                    pod.registered_at,
                )
            }
            previous => {
                let purged = match previous {
                    Some(_) => state.purge(&heartbeat.pod, retain),
                    None => Purged::default(),
                };
                let registration = state.register(&heartbeat.pod);
                (
                    HeartbeatOutcome::Registered {
                        purged,
                        registration,
                    },
                    now,
                )
            }
        };
        state.pods.insert(
            heartbeat.pod.clone(),
            PodRecord {
                pod: heartbeat.pod.clone(),
                instance: heartbeat.instance.clone(),
                delivery_address: heartbeat.delivery_address.clone(),
                registered_at,
                last_heartbeat_at: now,
                lease_expires_at: lease_end,
                load: heartbeat.load,
            },
        );
        Ok(outcome)
    }

    async fn deregister(&self, pod: &PodId, instance: &str) -> StoreResult<Purged> {
        let retain = self.retention(Timestamp::now());
        let mut state = self.state();
        if state.pods.get(pod).is_some_and(|p| p.instance == instance) {
            Ok(state.purge(pod, retain))
        } else {
            Ok(Purged::default())
        }
    }

    async fn resolve_pods(&self, pods: &[PodId]) -> StoreResult<Resolved> {
        let now = Timestamp::now();
        let state = self.state();
        let mut resolved = Resolved::default();
        for pod in pods {
            match state.pods.get(pod) {
                Some(record) if record.lease_expires_at >= now => {
                    resolved.pods.push(record.clone());
                }
                _ => resolved.unknown.push(pod.clone()),
            }
        }
        Ok(resolved)
    }

    async fn list_pods(&self, page: &PageRequest) -> StoreResult<Page<PodRecord>> {
        let now = Timestamp::now();
        let after_pod: Option<PodId> = parse_token(page)?;
        let state = self.state();
        let items = state
            .pods
            .iter()
            .filter(|(id, p)| {
                after_pod.as_ref().is_none_or(|t| *id > t) && p.lease_expires_at >= now
            })
            .map(|(id, p)| (id.clone(), p.clone()));
        Ok(page_of(items, page.size))
    }

    async fn reap_expired_pods(&self) -> StoreResult<Vec<(PodId, Purged)>> {
        let now = Timestamp::now();
        let retain = self.retention(now);
        let mut state = self.state();
        let due: Vec<PodId> = state
            .pods
            .values()
            .filter(|p| p.lease_expires_at < now)
            .map(|p| p.pod.clone())
            .collect();
        Ok(due
            .into_iter()
            .map(|pod| {
                let purged = state.purge(&pod, retain);
                (pod, purged)
            })
            .collect())
    }
}
