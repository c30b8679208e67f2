//! Pod-level route bookkeeping: the coordinator keeps routes as sets without reference counts,
//! so the edge counts its local sockets per route, lets acquire/select register a route with
//! the first socket, and unregisters a route some time after its last socket left.
//!
//! A route must never be missing while a local socket needs it. Registrations ride on acquire
//! and select calls made under a shared [`RouteGate`] guard, and the counts are taken before
//! the guard is dropped; the unregister batch runs under the exclusive guard and only removes
//! routes whose count is still zero. So an unregister can never overtake a concurrent
//! registration of the same route.

use crate::coordinator::{Coordinator, Route};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use tokio::sync::{Notify, RwLock, RwLockReadGuard};

/// Counts of local sockets per route and the routes waiting to be unregistered.
#[derive(Debug, Default)]
pub struct RouteBook {
    state: Mutex<State>,
    /// Shared by calls that register routes, exclusive for the unregister batch.
    gate: RwLock<()>,
    /// Wakes the syncer when a route lost its last socket.
    idle: Notify,
}

#[derive(Debug, Default)]
struct State {
    counts: HashMap<Route, usize>,
    unused: HashSet<Route>,
}

/// Held while a coordinator call registers routes and the counts are updated.
pub type RouteGate<'a> = RwLockReadGuard<'a, ()>;

impl RouteBook {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take before a call that registers routes; count them before dropping it.
    pub async fn gate(&self) -> RouteGate<'_> {
        self.gate.read().await
    }

    /// One more local socket needs `route`.
    pub fn retain(&self, route: Route) {
        let mut state = self.state();
        state.unused.remove(&route);
        *state.counts.entry(route).or_insert(0) += 1;
    }

    /// One local socket less needs `route`.
    pub fn release(&self, route: &Route) {
        let mut state = self.state();
        let Some(count) = state.counts.get_mut(route) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            state.counts.remove(route);
            state.unused.insert(route.clone());
            drop(state);
            self.idle.notify_one();
        }
    }

    /// Every route with local sockets (to re-register after a pod purge).
    pub fn all(&self) -> Vec<Route> {
        self.state().counts.keys().cloned().collect()
    }

    /// Number of routes in use.
    pub fn len(&self) -> usize {
        self.state().counts.len()
    }

    /// Whether no route is in use.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until some route became unused.
    pub async fn idle(&self) {
        self.idle.notified().await;
    }

    /// Unregisters the routes that are still unused, in one batch. On failure they are kept
    /// for the next round (a stale route only costs deliveries that reach nobody).
    pub async fn unregister_unused<C: Coordinator>(
        &self,
        coordinator: &C,
        pod: &daisi_domain::PodId,
    ) {
        let _exclusive = self.gate.write().await;
        let unused: Vec<Route> = self.state().unused.drain().collect();
        if unused.is_empty() {
            return;
        }
        if let Err(error) = coordinator.unregister_routes(pod, unused.clone()).await {
            tracing::warn!(%error, routes = unused.len(), "route unregister failed; will retry");
            let mut state = self.state();
            for route in unused {
                if !state.counts.contains_key(&route) {
                    state.unused.insert(route);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::memory::MemoryCoordinator;
    use crate::coordinator::{Load, PodIdentity};

    fn agent(a: &str) -> Route {
        Route::Agent {
            company: "c".parse().expect("id"),
            agent: a.parse().expect("id"),
        }
    }

    #[tokio::test]
    async fn unregisters_only_routes_without_sockets() {
        let coordinator = MemoryCoordinator::default();
        let pod = PodIdentity {
            pod: "p".parse().expect("id"),
            instance: "i".into(),
            delivery_address: "http://x".into(),
        };
        coordinator
            .heartbeat(&pod, Load::default())
            .await
            .expect("hb");
        coordinator
            .register_routes(&pod.pod, vec![agent("a"), agent("b")])
            .await
            .expect("register");
        let book = RouteBook::default();
        book.retain(agent("a"));
        book.retain(agent("a"));
        book.retain(agent("b"));
        book.release(&agent("a"));
        book.release(&agent("b"));
        // `b` comes back before the batch runs: it must stay registered.
        book.retain(agent("b"));
        book.unregister_unused(&coordinator, &pod.pod).await;
        let mut left = coordinator.routes_of(&pod.pod);
        left.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(left, vec![agent("a"), agent("b")]);
        book.release(&agent("a"));
        book.unregister_unused(&coordinator, &pod.pod).await;
        assert_eq!(coordinator.routes_of(&pod.pod), vec![agent("b")]);
    }
}
