//! Registration in the pod registry and the heartbeat that keeps it. The first successful
//! heartbeat makes the edge ready; a failing one makes it not ready (new sockets would fail to
//! acquire sessions anyway). Each answer carries the pod's inbox, the kill commands raised for
//! it that it has not acknowledged: they are applied like the command stream's (which they
//! repeat) and acknowledged with the next heartbeat, so a kill the stream lost closes its
//! socket within one heartbeat interval. When the coordinator answers REGISTERED while sockets are open,
//! the pod was purged: its routes are registered again and each socket's session re-acquired
//! with IF_VACANT, closing the sockets whose user has connected elsewhere meanwhile or that were
//! killed (the coordinator refuses a tombstoned connection in any mode).

use super::close_lost;
use crate::coordinator::{
    AcquireMode, AcquireOutcome, AcquireRequest, Coordinator, HeartbeatOutcome, Load,
};
use crate::state::{COORDINATOR, Edge};
use crate::ws::handle::SocketHandle;
use crate::ws::outbox::CloseCause;
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Retry period while the coordinator is unreachable.
const RETRY: Duration = Duration::from_secs(1);
/// Re-acquisitions in flight during a restore.
const RESTORE_CONCURRENCY: usize = 64;

/// The heartbeat in flight, shared by every caller that asks while it runs (a burst of
/// connects to a forgotten pod makes one call, not one each), and the restore it may start.
/// Nothing is locked across the call: callers clone the shared future under a short mutex
/// and await it outside; the restore runs in a task of its own, so connects wait for the
/// registration only, never for thousands of re-acquisitions.
#[derive(Default)]
pub struct Heartbeats {
    /// The highest inbox sequence applied, acknowledged with every heartbeat.
    inbox_acked: AtomicU64,
    /// The pod's registration number as last reported (0: none yet).
    registration: AtomicU64,
    /// Set before the pod deregisters: no heartbeat is sent from then on.
    stopped: AtomicBool,
    flight: Mutex<Option<(u64, Flight)>>,
    flights: AtomicU64,
    restoring: AtomicBool,
    restore_again: AtomicBool,
}

type Flight = Shared<BoxFuture<'static, Option<HeartbeatOutcome>>>;

impl std::fmt::Debug for Heartbeats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeats")
            .field("in_flight", &self.flight.lock().is_some())
            .field("restoring", &self.restoring.load(Ordering::Relaxed))
            .finish()
    }
}

/// One heartbeat (joining the one in flight, if any); `None` when it failed. A REGISTERED
/// answer while sockets are open starts the restore in the background.
pub async fn heartbeat_once(edge: &Edge) -> Option<HeartbeatOutcome> {
    if edge.heartbeats.stopped.load(Ordering::SeqCst) {
        return None;
    }
    let (id, flight) = {
        let mut slot = edge.heartbeats.flight.lock();
        match slot.as_ref() {
            Some((id, flight)) => (*id, flight.clone()),
            None => {
                let id = edge.heartbeats.flights.fetch_add(1, Ordering::Relaxed);
                let flight = heartbeat_call(edge.clone()).boxed().shared();
                *slot = Some((id, flight.clone()));
                (id, flight)
            }
        }
    };
    let outcome = flight.await;
    let mut slot = edge.heartbeats.flight.lock();
    if slot.as_ref().is_some_and(|(current, _)| *current == id) {
        *slot = None;
    }
    outcome
}

/// Stops heartbeating before the pod deregisters: no new heartbeat starts, and the one in
/// flight (if any) is waited for (within the coordinator's call deadline), so none lands
/// after the deregistration.
pub async fn stop_heartbeats(edge: &Edge) {
    edge.heartbeats.stopped.store(true, Ordering::SeqCst);
    let flight = edge
        .heartbeats
        .flight
        .lock()
        .as_ref()
        .map(|(_, flight)| flight.clone());
    if let Some(flight) = flight {
        let _ = tokio::time::timeout(edge.config.coordinator_timeout, flight).await;
    }
}

async fn heartbeat_call(edge: Edge) -> Option<HeartbeatOutcome> {
    let (users, admins) = edge.registry.counts();
    let load = Load {
        user_sockets: u32::try_from(users).unwrap_or(u32::MAX),
        admin_sockets: u32::try_from(admins).unwrap_or(u32::MAX),
    };
    let acked = edge.heartbeats.inbox_acked.load(Ordering::Relaxed);
    match edge.coordinator.heartbeat(&edge.pod, load, acked).await {
        Ok(outcome) => {
            // Kills the command stream missed (a lost pub/sub message, a broken stream):
            // applying one the stream delivered already is a no-op.
            for kill in &outcome.commands {
                edge.metrics.inbox_kills.inc();
                super::kill_watch::apply_kill(&edge, kill);
            }
            edge.heartbeats
                .inbox_acked
                .fetch_max(outcome.commands_through, Ordering::Relaxed);
            // A registration number other than the last one seen: the pod was registered
            // anew, though this answer may say RENEWED (the one that said REGISTERED was lost,
            // or went to another replica, and this is the retry).
            let previous = match outcome.registration {
                0 => 0,
                now => edge.heartbeats.registration.swap(now, Ordering::Relaxed),
            };
            let missed = !outcome.registered && previous != 0 && previous != outcome.registration;
            if outcome.registered || missed {
                if missed {
                    tracing::warn!(pod_id = %edge.pod.pod, sockets = users + admins, "the pod was registered anew in a heartbeat whose answer was lost; restoring");
                } else {
                    tracing::info!(pod_id = %edge.pod.pod, sockets = users + admins, "registered with the coordinator");
                }
                if !edge.registry.is_empty() {
                    start_restore(&edge);
                }
            }
            edge.readiness.set(COORDINATOR, true);
            Some(outcome)
        }
        Err(error) => {
            tracing::warn!(%error, "heartbeat failed");
            edge.readiness.set(COORDINATOR, false);
            None
        }
    }
}

/// Runs [`restore`] in the background: one at a time, and once more if asked again while one
/// runs (the pod may have been purged again meanwhile).
fn start_restore(edge: &Edge) {
    let heartbeats = &edge.heartbeats;
    heartbeats.restore_again.store(true, Ordering::SeqCst);
    if heartbeats.restoring.swap(true, Ordering::SeqCst) {
        return;
    }
    let edge = edge.clone();
    tokio::spawn(async move {
        let heartbeats = &edge.heartbeats;
        loop {
            heartbeats.restore_again.store(false, Ordering::SeqCst);
            restore(&edge).await;
            heartbeats.restoring.store(false, Ordering::SeqCst);
            // Asked again meanwhile, and no newer runner took over: go again.
            if !heartbeats.restore_again.load(Ordering::SeqCst)
                || heartbeats.restoring.swap(true, Ordering::SeqCst)
            {
                return;
            }
        }
    });
}

/// Re-registers every route this pod holds. Registration is idempotent, so this is safe
/// whenever the coordinator may have forgotten the pod (purge, lapsed lease), whichever signal
/// (heartbeat REGISTERED or a renew reporting purged sessions) arrives first. A route whose
/// last socket left while the call was in flight is handed back to the route syncer.
pub async fn restore_routes(edge: &Edge) {
    let book = &edge.registry.routes;
    let ticket = book.ticket();
    let routes = book.all();
    let result = edge
        .coordinator
        .register_routes(&edge.pod.pod, routes.clone())
        .await;
    match result {
        Ok(()) => book.restored(&ticket, &routes),
        Err(error) => {
            tracing::warn!(%error, "route restore failed; retrying with the next heartbeat");
        }
    }
}

/// Re-registers routes and re-acquires sessions after the pod was purged.
async fn restore(edge: &Edge) {
    restore_routes(edge).await;
    let sockets = edge.registry.all();
    futures_util::stream::iter(sockets)
        .for_each_concurrent(RESTORE_CONCURRENCY, |socket| reacquire(edge, socket))
        .await;
}

/// Takes the session of a live socket back if nobody else holds it; closes the socket with
/// 4402 otherwise (the user connected elsewhere, the connection was taken over or killed and
/// its kill command never arrived, or the coordinator cannot confirm it).
pub async fn reacquire(edge: &Edge, socket: Arc<SocketHandle>) {
    if socket.session_lost() || socket.outbox.is_closing() {
        return;
    }
    let request = AcquireRequest {
        key: socket.key.clone(),
        connection: socket.connection.clone(),
        mode: AcquireMode::IfVacant,
        routes: Vec::new(),
    };
    match edge.coordinator.acquire(&edge.pod.pod, request).await {
        Ok(AcquireOutcome::Granted { fencing, .. }) => {
            socket.set_fencing(fencing);
            // The socket closed while the call was in flight: its release went out with the
            // old token, which no longer matches. Release the new grant too (a second release
            // of the same grant, should the close come right now, is a no-op).
            let indexed = edge
                .registry
                .by_connection(socket.connection.as_str())
                .is_some_and(|held| Arc::ptr_eq(&held, &socket));
            if !indexed {
                edge.releases.push(socket.held());
                return;
            }
            // While the pod was forgotten its events were acknowledged as "no route": a
            // json.v2 socket may have missed some.
            crate::ws::gap::announce(edge, &socket, daisi_domain::protocol::GapCause::PodPurge);
        }
        Ok(AcquireOutcome::Refused | AcquireOutcome::Ended { .. }) => {
            close_lost(&socket, CloseCause::SessionConflict);
        }
        Err(error) => {
            tracing::debug!(%error, "session restore failed");
            close_lost(&socket, CloseCause::SessionLost);
        }
    }
}

/// Heartbeats until `stop`; also refreshes the send-queue depth gauge.
pub async fn run(edge: Edge, stop: CancellationToken) {
    loop {
        let wait = match heartbeat_once(&edge).await {
            Some(outcome) => outcome.heartbeat_interval,
            None => RETRY,
        };
        let depth: usize = edge.registry.all().iter().map(|s| s.outbox.depth()).sum();
        edge.metrics
            .queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = edge.heartbeat_now.notified() => {}
        }
    }
}
