//! Pod-level route bookkeeping: the coordinator keeps routes as sets without reference counts,
//! so the edge counts its local sockets per route, lets acquire/select register a route with
//! the first socket, and unregisters a route some time after its last socket left.
//!
//! # Invariant, and how it holds without a lock across a coordinator call
//!
//! *Once a socket is indexed with a route counted (and once a selection is applied), that
//! route is registered with the coordinator, and stays registered while its count is above
//! zero.*
//!
//! Registrations ride on acquire and select calls, unregistrations go in batches; the two may
//! be in flight at once, and an unregister of a route may reach the coordinator after a
//! registration of the same route that was sent later. Instead of a pod-wide gate that orders
//! them, batches are numbered (generations) and registrations check against them:
//!
//! 1. A batch takes only routes whose count is zero, under the state mutex, and records each
//!    with its generation in `taken` before its call is sent.
//! 2. A call that registers routes takes a [`Ticket`] before it is sent: the generation of the
//!    batch in flight, or of the next one. A batch older than the ticket had returned before
//!    the registration was sent, so it cannot undo it.
//! 3. When the call returns, [`RouteBook::count_in`] counts the routes (from then on no batch
//!    takes them) and answers those a batch of the ticket's generation or newer took: their
//!    unregister may have landed after the registration. [`RouteBook::register_again`] waits
//!    until that batch's call has returned and registers them again, before the caller indexes
//!    the socket or applies the selection.
//!
//! Only a socket whose route raced an unregister of that very route ever waits, and only for
//! that batch; other connects and selections never wait for the unregister call.

use crate::coordinator::{Coordinator, CoordinatorError, Route};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Longest wait for a raced unregister batch to return.
const BATCH_WAIT: Duration = Duration::from_secs(10);

/// Counts of local sockets per route and the routes waiting to be unregistered.
#[derive(Debug)]
pub struct RouteBook {
    state: Mutex<State>,
    /// Wakes the syncer when a route lost its last socket.
    idle: Notify,
    /// The newest generation whose unregister call has returned.
    finished: watch::Sender<u64>,
    /// Asks the syncer for a reconciliation soon (an acquire's outcome was unknown).
    reconcile: Notify,
}

impl Default for RouteBook {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                next_generation: 1,
                ..State::default()
            }),
            idle: Notify::new(),
            finished: watch::Sender::new(0),
            reconcile: Notify::new(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    counts: HashMap<Route, usize>,
    unused: HashSet<Route>,
    /// Generation the next unregister batch gets.
    next_generation: u64,
    /// Generation of the batch whose call is in flight.
    in_flight: Option<u64>,
    /// Routes taken by recent batches, with the newest generation that took each. Entries
    /// older than every outstanding ticket are forgotten.
    taken: HashMap<Route, u64>,
    /// Outstanding tickets: generation → how many.
    tickets: BTreeMap<u64, usize>,
}

/// Taken before a call that registers routes; see the module docs. Dropping it without
/// [`RouteBook::count_in`] is fine (the call failed).
#[derive(Debug)]
pub struct Ticket<'a> {
    book: &'a RouteBook,
    generation: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut state = self.book.state.lock();
        if let Some(n) = state.tickets.get_mut(&self.generation) {
            *n -= 1;
            if *n == 0 {
                state.tickets.remove(&self.generation);
            }
        }
    }
}

/// Routes to register again once the batch of `after` has returned.
#[derive(Debug, Default)]
#[must_use = "routes that raced an unregister must be registered again"]
pub struct Reassert {
    routes: Vec<Route>,
    after: u64,
}

impl Reassert {
    /// Nothing to register again.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

impl RouteBook {
    /// Take before a call that registers routes.
    pub fn ticket(&self) -> Ticket<'_> {
        let mut state = self.state.lock();
        let generation = state.in_flight.unwrap_or(state.next_generation);
        *state.tickets.entry(generation).or_insert(0) += 1;
        Ticket {
            book: self,
            generation,
        }
    }

    /// Counts `routes` in after the call that registered them returned; answers the ones an
    /// unregister batch may have undone.
    pub fn count_in(&self, ticket: &Ticket<'_>, routes: &[Route]) -> Reassert {
        let mut state = self.state.lock();
        let mut again = Reassert::default();
        for route in routes {
            state.unused.remove(route);
            *state.counts.entry(route.clone()).or_insert(0) += 1;
            if let Some(&generation) = state.taken.get(route)
                && generation >= ticket.generation
            {
                again.routes.push(route.clone());
                again.after = again.after.max(generation);
            }
        }
        again
    }

    /// Registers `again` once the unregister batch it raced has returned. The routes are
    /// counted already, so no later batch takes them.
    pub async fn register_again<C: Coordinator>(
        &self,
        coordinator: &C,
        pod: &daisi_domain::PodId,
        again: Reassert,
    ) -> Result<(), CoordinatorError> {
        if again.routes.is_empty() {
            return Ok(());
        }
        let mut finished = self.finished.subscribe();
        // The batch's call is bounded by the coordinator timeout and its end published; the
        // bound here only covers a syncer stopped mid-call at shutdown.
        let _ =
            tokio::time::timeout(BATCH_WAIT, finished.wait_for(|&done| done >= again.after)).await;
        coordinator.register_routes(pod, again.routes).await
    }

    /// After a restore registered `routes`: those whose last socket left meanwhile, and that an
    /// unregister batch may have removed before the restore's registration landed, go back to
    /// the syncer (else they would stay registered with no socket).
    pub fn restored(&self, ticket: &Ticket<'_>, routes: &[Route]) {
        let mut state = self.state.lock();
        let mut stale = false;
        for route in routes {
            let taken = state
                .taken
                .get(route)
                .is_some_and(|&generation| generation >= ticket.generation);
            if taken && !state.counts.contains_key(route) {
                state.unused.insert(route.clone());
                stale = true;
            }
        }
        drop(state);
        if stale {
            self.idle.notify_one();
        }
    }

    /// One more local socket needs `route` (its registration is known to hold, e.g. restored).
    pub fn retain(&self, route: Route) {
        let mut state = self.state.lock();
        state.unused.remove(&route);
        *state.counts.entry(route).or_insert(0) += 1;
    }

    /// One local socket less needs `route`.
    pub fn release(&self, route: &Route) {
        let mut state = self.state.lock();
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
        self.state.lock().counts.keys().cloned().collect()
    }

    /// Number of routes in use.
    pub fn len(&self) -> usize {
        self.state.lock().counts.len()
    }

    /// Whether no route is in use.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until some route became unused.
    pub async fn idle(&self) {
        self.idle.notified().await;
    }

    /// Asks for a [`RouteBook::strays`] pass soon: routes may have been registered that no
    /// local socket counts (an acquire whose answer was lost).
    pub fn request_reconcile(&self) {
        self.reconcile.notify_one();
    }

    /// Waits until a reconciliation was asked for.
    pub async fn reconcile_requested(&self) {
        self.reconcile.notified().await;
    }

    /// Reconciliation: of the routes the coordinator lists for this pod, those no local socket
    /// counts go to the syncer like any route whose last socket left; answers how many. A
    /// registration in flight is safe: its route is either counted by now or, taken by the
    /// batch, registered again by its caller (generations, see the module docs).
    pub fn strays(&self, registered: impl IntoIterator<Item = Route>) -> usize {
        let mut state = self.state.lock();
        let mut strays = 0;
        for route in registered {
            if !state.counts.contains_key(&route) && state.unused.insert(route) {
                strays += 1;
            }
        }
        drop(state);
        if strays > 0 {
            self.idle.notify_one();
        }
        strays
    }

    /// Reconciliation, the other way: the routes local sockets count that the coordinator
    /// does not list (`listed`). The invariant says there are none; an unregister batch that
    /// landed later than [`RouteBook::register_again`] waited for it (a batch of many chunks,
    /// a slow coordinator, a call that timed out here but was applied there) breaks it, and
    /// the sockets of such a route would get no events. The caller registers them again
    /// (idempotent; one whose last socket leaves meanwhile is a stray the next pass removes).
    pub fn missing(&self, listed: &[Route]) -> Vec<Route> {
        let listed: HashSet<&Route> = listed.iter().collect();
        let state = self.state.lock();
        state
            .counts
            .keys()
            .filter(|route| !listed.contains(route))
            .cloned()
            .collect()
    }

    /// Unregisters the routes that are still unused, in one batch. On failure they are kept
    /// for the next round (a stale route only costs deliveries that reach nobody). Called by
    /// one task at a time (the route syncer).
    pub async fn unregister_unused<C: Coordinator>(
        &self,
        coordinator: &C,
        pod: &daisi_domain::PodId,
    ) {
        let (generation, unused) = {
            let mut state = self.state.lock();
            let unused: Vec<Route> = state.unused.drain().collect();
            if unused.is_empty() {
                return;
            }
            let generation = state.next_generation;
            state.next_generation += 1;
            state.in_flight = Some(generation);
            // Entries older than every outstanding ticket can no longer matter.
            let oldest = state.tickets.keys().next().copied().unwrap_or(generation);
            state.taken.retain(|_, g| *g >= oldest);
            for route in &unused {
                state.taken.insert(route.clone(), generation);
            }
            (generation, unused)
        };
        let result = coordinator.unregister_routes(pod, unused.clone()).await;
        {
            let mut state = self.state.lock();
            state.in_flight = None;
            if let Err(error) = &result {
                tracing::warn!(%error, routes = unused.len(), "route unregister failed; will retry");
                for route in unused {
                    if !state.counts.contains_key(&route) {
                        state.unused.insert(route);
                    }
                }
            }
        }
        self.finished.send_replace(generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::faults::{FaultInjector, Faults};
    use crate::coordinator::grpc::GrpcCoordinator;
    use crate::coordinator::{Load, PodIdentity};
    use daisi_proto::coordinator::v1 as pb;
    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;

    fn agent(a: &str) -> Route {
        Route::Agent {
            company: "c".parse().expect("id"),
            agent: a.parse().expect("id"),
        }
    }

    /// The real coordinator (memory store) in process, a client of it behind the fault
    /// injector, and this test's pod registered.
    struct Setup {
        url: String,
        coordinator: FaultInjector,
        faults: Arc<Faults>,
        pod: PodIdentity,
        _stop: tokio_util::sync::DropGuard,
    }

    async fn setup() -> Setup {
        let config = daisi_coordinator::Config::for_tests();
        let listeners = daisi_coordinator::Listeners::bind(&config)
            .await
            .expect("bind");
        let url = format!("http://{}", listeners.grpc.local_addr().expect("addr"));
        let stop = CancellationToken::new();
        tokio::spawn(daisi_coordinator::run(config, listeners, stop.clone()));
        let grpc = GrpcCoordinator::new(&[url.parse().expect("url")], Duration::from_secs(2))
            .expect("client");
        let (coordinator, faults) = FaultInjector::new(grpc);
        let pod = PodIdentity {
            pod: "p".parse().expect("id"),
            instance: "i".into(),
            delivery_address: "http://127.0.0.1:9".into(),
        };
        coordinator
            .heartbeat(&pod, Load::default(), 0)
            .await
            .expect("heartbeat");
        Setup {
            url,
            coordinator,
            faults,
            pod,
            _stop: stop.drop_guard(),
        }
    }

    /// The routes the coordinator holds for pod `p`, as their agent ids.
    async fn registered(url: &str) -> Vec<String> {
        let mut admin =
            pb::coordinator_admin_client::CoordinatorAdminClient::connect(url.to_owned())
                .await
                .expect("admin");
        let entries = admin
            .get_routes(pb::GetRoutesRequest {
                selector: Some(pb::get_routes_request::Selector::PodId("p".into())),
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .expect("routes")
            .into_inner()
            .entries;
        let mut agents: Vec<String> = entries
            .into_iter()
            .filter_map(|e| match e.route?.kind? {
                pb::route::Kind::Agent(a) => Some(a.agent_id),
                _ => None,
            })
            .collect();
        agents.sort();
        agents
    }

    #[tokio::test]
    async fn unregisters_only_routes_without_sockets() {
        let s = setup().await;
        s.coordinator
            .register_routes(&s.pod.pod, vec![agent("a"), agent("b")])
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
        book.unregister_unused(&s.coordinator, &s.pod.pod).await;
        assert_eq!(registered(&s.url).await, ["a", "b"]);
        book.release(&agent("a"));
        book.unregister_unused(&s.coordinator, &s.pod.pod).await;
        assert_eq!(registered(&s.url).await, ["b"]);
    }

    #[tokio::test]
    async fn a_registration_overtaken_by_an_unregister_is_made_again() {
        let s = setup().await;
        let book = Arc::new(RouteBook::default());
        book.retain(agent("a"));
        book.release(&agent("a"));
        // The batch taking `a` is slow: its unregister lands after the registration below.
        s.faults.delay_unregisters(Duration::from_millis(300));
        let batch = {
            let (book, coordinator, pod) = (book.clone(), s.coordinator.clone(), s.pod.pod.clone());
            tokio::spawn(async move { book.unregister_unused(&coordinator, &pod).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A connect needing `a` again, while the batch is in flight.
        let ticket = book.ticket();
        s.coordinator
            .register_routes(&s.pod.pod, vec![agent("a")])
            .await
            .expect("register");
        let again = book.count_in(&ticket, &[agent("a")]);
        drop(ticket);
        assert!(!again.is_empty(), "the race must be detected");
        book.register_again(&s.coordinator, &s.pod.pod, again)
            .await
            .expect("register again");
        batch.await.expect("batch");
        assert_eq!(registered(&s.url).await, ["a"]);
        // A later registration, after the batch returned, has nothing to repeat.
        let ticket = book.ticket();
        assert!(book.count_in(&ticket, &[agent("a")]).is_empty());
    }

    #[tokio::test]
    async fn a_restored_route_whose_socket_left_goes_back_to_the_syncer() {
        let s = setup().await;
        let book = Arc::new(RouteBook::default());
        book.retain(agent("a"));
        let ticket = book.ticket();
        let snapshot = book.all();
        // The last socket leaves and a batch unregisters `a` before the restore lands.
        book.release(&agent("a"));
        book.unregister_unused(&s.coordinator, &s.pod.pod).await;
        s.coordinator
            .register_routes(&s.pod.pod, snapshot.clone())
            .await
            .expect("restore");
        book.restored(&ticket, &snapshot);
        drop(ticket);
        assert_eq!(registered(&s.url).await, ["a"]);
        book.unregister_unused(&s.coordinator, &s.pod.pod).await;
        assert!(registered(&s.url).await.is_empty());
    }

    #[tokio::test]
    async fn reconciliation_unregisters_only_routes_no_socket_counts() {
        let s = setup().await;
        // `a` has a socket; `b` was registered by an acquire whose answer was lost.
        s.coordinator
            .register_routes(&s.pod.pod, vec![agent("a"), agent("b")])
            .await
            .expect("register");
        let book = RouteBook::default();
        book.retain(agent("a"));
        let listed = s.coordinator.list_routes(&s.pod.pod).await.expect("list");
        assert!(book.missing(&listed).is_empty());
        assert_eq!(book.strays(listed), 1);
        book.unregister_unused(&s.coordinator, &s.pod.pod).await;
        assert_eq!(registered(&s.url).await, ["a"]);
    }

    #[tokio::test]
    async fn reconciliation_finds_a_counted_route_an_unregister_removed_anyway() {
        let s = setup().await;
        let book = RouteBook::default();
        book.retain(agent("a"));
        s.coordinator
            .register_routes(&s.pod.pod, vec![agent("a")])
            .await
            .expect("register");
        // An unregister batch that landed after every wait for it: `a` is gone at the
        // coordinator although a socket counts it.
        s.coordinator
            .unregister_routes(&s.pod.pod, vec![agent("a")])
            .await
            .expect("late unregister");
        let listed = s.coordinator.list_routes(&s.pod.pod).await.expect("list");
        let missing = book.missing(&listed);
        assert_eq!(missing, [agent("a")]);
        assert_eq!(book.strays(listed), 0);
        s.coordinator
            .register_routes(&s.pod.pod, missing)
            .await
            .expect("register again");
        assert_eq!(registered(&s.url).await, ["a"]);
    }
}
