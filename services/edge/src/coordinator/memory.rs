//! An in-process coordinator with the semantics the edge relies on (newcomer wins, fencing
//! tokens, compare-and-delete release, selected chat kept across reconnects, kill commands to
//! the losing pod's stream). For unit tests and single-process development; it has no leases.
//! Tests can also switch it "down" to see how the edge behaves without a coordinator.

use super::{
    AcquireMode, AcquireOutcome, AcquireRequest, CommandStream, Coordinator, CoordinatorError,
    EndReason, HeartbeatOutcome, HeldSession, Holder, Kill, Load, LostSession, PodCommand,
    PodIdentity, Route,
};
use daisi_domain::{ChatId, PodId, SessionKey};
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

#[derive(Debug, Clone)]
struct Stored {
    pod: PodId,
    connection: String,
    fencing: u64,
}

#[derive(Debug, Default)]
struct State {
    pods: HashMap<PodId, String>,
    sessions: HashMap<SessionKey, Stored>,
    fencing: HashMap<SessionKey, u64>,
    selected: HashMap<SessionKey, ChatId>,
    routes: HashSet<(PodId, Route)>,
    watchers: HashMap<PodId, mpsc::UnboundedSender<Result<PodCommand, CoordinatorError>>>,
}

/// The in-memory coordinator.
#[derive(Debug)]
pub struct MemoryCoordinator {
    state: Mutex<State>,
    /// When false every call fails as if the coordinator were unreachable.
    up: AtomicBool,
    /// When true kill commands are lost (a broken stream), leaving renew to notice.
    muted: AtomicBool,
    /// Timing handed out with heartbeats.
    renew_interval: Duration,
}

impl Default for MemoryCoordinator {
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

impl MemoryCoordinator {
    /// A coordinator telling edges to renew every `renew_interval`.
    pub fn new(renew_interval: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            up: AtomicBool::new(true),
            muted: AtomicBool::new(false),
            renew_interval,
        }
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, CoordinatorError> {
        if !self.up.load(Ordering::Relaxed) {
            return Err(CoordinatorError::Unavailable("switched off".to_owned()));
        }
        Ok(self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn registered(&self, pod: &PodId) -> Result<MutexGuard<'_, State>, CoordinatorError> {
        let state = self.state()?;
        if !state.pods.contains_key(pod) {
            return Err(CoordinatorError::UnknownPod);
        }
        Ok(state)
    }

    /// Simulates the coordinator going away (`false`) and coming back (`true`).
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
        if !up {
            // Streams break when the coordinator goes away.
            self.state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .watchers
                .clear();
        }
    }

    /// Loses every kill command from now on (`true`) or delivers them again (`false`).
    pub fn mute_commands(&self, muted: bool) {
        self.muted.store(muted, Ordering::Relaxed);
    }

    /// Sessions currently held by connections of `pod`.
    pub fn sessions_of(&self, pod: &PodId) -> Vec<SessionKey> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .sessions
            .iter()
            .filter(|(_, s)| &s.pod == pod)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Routes registered by `pod`.
    pub fn routes_of(&self, pod: &PodId) -> Vec<Route> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .routes
            .iter()
            .filter(|(p, _)| p == pod)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Whether `pod` is registered.
    pub fn has_pod(&self, pod: &PodId) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.pods.contains_key(pod)
    }

    /// Ends a session as an operator would, sending a kill to its pod.
    pub fn kill(&self, key: &SessionKey) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(stored) = state.sessions.remove(key) else {
            return false;
        };
        send_kill(&mut state, key, &stored, EndReason::KilledByAdmin);
        true
    }

    fn purge(state: &mut State, pod: &PodId) {
        state.sessions.retain(|_, s| &s.pod != pod);
        state.routes.retain(|(p, _)| p != pod);
    }
}

fn send_kill(state: &mut State, key: &SessionKey, stored: &Stored, reason: EndReason) {
    if let Some(watcher) = state.watchers.get(&stored.pod) {
        let _ = watcher.send(Ok(PodCommand::Kill(Kill {
            key: key.clone(),
            connection: stored.connection.clone(),
            fencing: stored.fencing,
            reason,
        })));
    }
}

impl Coordinator for MemoryCoordinator {
    async fn heartbeat(
        &self,
        pod: &PodIdentity,
        _load: Load,
    ) -> Result<HeartbeatOutcome, CoordinatorError> {
        let mut state = self.state()?;
        let registered = state.pods.get(&pod.pod) != Some(&pod.instance);
        if registered {
            Self::purge(&mut state, &pod.pod);
            state.pods.insert(pod.pod.clone(), pod.instance.clone());
        }
        Ok(HeartbeatOutcome {
            registered,
            heartbeat_interval: self.renew_interval,
            renew_interval: self.renew_interval,
        })
    }

    async fn deregister(&self, pod: &PodIdentity) -> Result<(), CoordinatorError> {
        let mut state = self.state()?;
        if state.pods.get(&pod.pod) == Some(&pod.instance) {
            state.pods.remove(&pod.pod);
            Self::purge(&mut state, &pod.pod);
            state.watchers.remove(&pod.pod);
        }
        Ok(())
    }

    async fn acquire(
        &self,
        pod: &PodId,
        request: AcquireRequest,
    ) -> Result<AcquireOutcome, CoordinatorError> {
        let mut state = self.registered(pod)?;
        let connection = request.connection.to_string();
        let previous = state.sessions.get(&request.key).cloned();
        if let Some(previous) = &previous
            && request.mode == AcquireMode::IfVacant
            && previous.connection != connection
        {
            return Ok(AcquireOutcome::Refused);
        }
        let fencing = state.fencing.entry(request.key.clone()).or_insert(0);
        *fencing += 1;
        let fencing = *fencing;
        let previous = previous.filter(|p| p.connection != connection);
        if let Some(previous) = &previous
            && !self.muted.load(Ordering::Relaxed)
        {
            send_kill(&mut state, &request.key, previous, EndReason::TakenOver);
        }
        state.sessions.insert(
            request.key.clone(),
            Stored {
                pod: pod.clone(),
                connection,
                fencing,
            },
        );
        for route in request.routes {
            state.routes.insert((pod.clone(), route));
        }
        let selected_chat = match &request.key {
            SessionKey::User { company, agent, .. } => {
                state.selected.get(&request.key).cloned().inspect(|chat| {
                    let route = Route::Chat {
                        company: company.clone(),
                        agent: agent.clone(),
                        chat: chat.clone(),
                    };
                    state.routes.insert((pod.clone(), route));
                })
            }
            SessionKey::Admin { .. } => None,
        };
        Ok(AcquireOutcome::Granted {
            fencing,
            previous: previous.map(|p| Holder {
                pod: p.pod.to_string(),
                connection: p.connection,
                fencing: p.fencing,
            }),
            selected_chat,
        })
    }

    async fn renew(
        &self,
        pod: &PodId,
        sessions: Vec<HeldSession>,
    ) -> Result<Vec<LostSession>, CoordinatorError> {
        let state = self.registered(pod)?;
        Ok(sessions
            .into_iter()
            .filter_map(|held| {
                let reason = match state.sessions.get(&held.key) {
                    Some(s)
                        if &s.pod == pod
                            && s.connection == held.connection.as_str()
                            && s.fencing == held.fencing =>
                    {
                        return None;
                    }
                    Some(_) => EndReason::TakenOver,
                    None => EndReason::Expired,
                };
                Some(LostSession {
                    session: held,
                    reason,
                })
            })
            .collect())
    }

    async fn release(
        &self,
        pod: &PodId,
        sessions: Vec<HeldSession>,
    ) -> Result<(), CoordinatorError> {
        let mut state = self.state()?;
        for held in sessions {
            let matches = state.sessions.get(&held.key).is_some_and(|s| {
                &s.pod == pod
                    && s.connection == held.connection.as_str()
                    && s.fencing == held.fencing
            });
            if matches {
                state.sessions.remove(&held.key);
            }
        }
        Ok(())
    }

    async fn select_chat(
        &self,
        pod: &PodId,
        session: &HeldSession,
        chat: &ChatId,
    ) -> Result<bool, CoordinatorError> {
        let mut state = self.registered(pod)?;
        let held = state.sessions.get(&session.key).is_some_and(|s| {
            &s.pod == pod
                && s.connection == session.connection.as_str()
                && s.fencing == session.fencing
        });
        let SessionKey::User { company, agent, .. } = &session.key else {
            return Err(CoordinatorError::Rejected(
                "admins select no chat".to_owned(),
            ));
        };
        if held {
            state.selected.insert(session.key.clone(), chat.clone());
            let route = Route::Chat {
                company: company.clone(),
                agent: agent.clone(),
                chat: chat.clone(),
            };
            state.routes.insert((pod.clone(), route));
        }
        Ok(held)
    }

    async fn register_routes(
        &self,
        pod: &PodId,
        routes: Vec<Route>,
    ) -> Result<(), CoordinatorError> {
        let mut state = self.registered(pod)?;
        for route in routes {
            state.routes.insert((pod.clone(), route));
        }
        Ok(())
    }

    async fn unregister_routes(
        &self,
        pod: &PodId,
        routes: Vec<Route>,
    ) -> Result<(), CoordinatorError> {
        let mut state = self.state()?;
        for route in routes {
            state.routes.remove(&(pod.clone(), route));
        }
        Ok(())
    }

    async fn watch(&self, pod: &PodIdentity) -> Result<CommandStream, CoordinatorError> {
        let mut state = self.registered(&pod.pod)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(Ok(PodCommand::Subscribed {
            // No pings from memory: the stream cannot silently die.
            ping_interval: Duration::from_secs(3600),
        }));
        state.watchers.insert(pod.pod.clone(), tx);
        Ok(UnboundedReceiverStream::new(rx).boxed())
    }
}
