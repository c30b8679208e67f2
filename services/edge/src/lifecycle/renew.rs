//! One batched renew per interval for every session of the pod. Sessions reported taken over
//! or killed are closed with 4402. Sessions that merely lapsed (lease expired, pod purged) are
//! re-acquired with IF_VACANT, and closed when that is refused.
//!
//! This is what makes a lost kill command harmless: the coordinator keeps a tombstone for every
//! connection it took over or killed (for its tombstone lifetime, by default the session lease
//! plus three renew intervals), reports such a connection with its true reason rather than
//! `expired`, and refuses its re-acquire in any mode. So a killed socket whose kill never arrived
//! (stream down, coordinator replica killed between the kill and its delivery) is closed by the
//! first renew that reaches the coordinator, and is never handed a fresh grant.

use super::{close_lost, pod};
use crate::coordinator::{Coordinator, CoordinatorError, EndReason, LostSession};
use crate::state::Edge;
use crate::ws::outbox::CloseCause;
use tokio_util::sync::CancellationToken;

async fn handle_lost(edge: &Edge, lost: LostSession) {
    let Some(socket) = edge
        .registry
        .by_connection(lost.session.connection.as_str())
    else {
        return;
    };
    if socket.fencing() != lost.session.fencing {
        // Re-acquired since this renew was sent.
        return;
    }
    match lost.reason {
        EndReason::Expired | EndReason::PodPurged => pod::reacquire(edge, socket).await,
        EndReason::TakenOver | EndReason::KilledByAdmin | EndReason::Other => {
            close_lost(&socket, CloseCause::SessionLost);
        }
    }
}

/// Renews once; returns how many sessions were lost.
pub async fn renew_once(edge: &Edge) -> usize {
    let held = edge.registry.held_sessions();
    if held.is_empty() {
        return 0;
    }
    match edge.coordinator.renew(&edge.pod.pod, held).await {
        Ok(lost) => {
            let n = lost.len();
            // Sessions that lapsed mean the coordinator may have purged this pod, routes
            // included: put the routes back before taking the sessions back.
            if lost
                .iter()
                .any(|l| matches!(l.reason, EndReason::Expired | EndReason::PodPurged))
            {
                tracing::info!(lost = n, "sessions lapsed; restoring routes and sessions");
                pod::restore_routes(edge).await;
            }
            for lost in lost {
                handle_lost(edge, lost).await;
            }
            n
        }
        Err(CoordinatorError::UnknownPod) => {
            edge.heartbeat_now.notify_one();
            0
        }
        Err(error) => {
            tracing::warn!(%error, "session renew failed");
            0
        }
    }
}

/// Renews until `stop`.
pub async fn run(edge: Edge, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(edge.renew_every()) => {}
            () = edge.renew_now.notified() => {}
        }
        renew_once(&edge).await;
    }
}
