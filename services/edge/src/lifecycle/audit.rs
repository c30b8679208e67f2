//! The slow session audit: one batched, read-only call every
//! `DAISI_EDGE_SESSION_AUDIT_INTERVAL` (60 s by default) asking the coordinator which of the
//! pod's sessions it no longer holds. Sessions have no lease of their own (they live as long as
//! the pod's registration, which the heartbeat keeps), so nothing here keeps them alive.
//! Sessions reported taken over or killed are closed with 4402. Sessions that merely lapsed
//! (the pod's registration lapsed) are re-acquired with IF_VACANT, and closed when that is
//! refused.
//!
//! Kills reach the pod on its command stream, and again with every heartbeat (the pod's
//! inbox); the audit is the backstop when both were lost. The coordinator keeps a tombstone for
//! every connection it took over or killed (`DAISI_COORDINATOR_TOMBSTONE_TTL`, 150 s by
//! default, longer than the default audit interval plus the pod lease), reports such a
//! connection with its true reason rather than `expired`, and refuses its re-acquire in any
//! mode, so a killed socket whose kill never arrived is closed by the first audit that reaches
//! the coordinator, and is never handed a fresh grant.

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
        // Re-acquired since this audit was sent.
        return;
    }
    match lost.reason {
        EndReason::Expired | EndReason::PodPurged => pod::reacquire(edge, socket).await,
        EndReason::TakenOver | EndReason::KilledByAdmin | EndReason::Other => {
            close_lost(&socket, CloseCause::SessionLost);
        }
    }
}

/// Audits once; returns how many sessions were lost.
pub async fn audit_once(edge: &Edge) -> usize {
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
            tracing::warn!(%error, "session audit failed");
            0
        }
    }
}

/// Audits every `DAISI_EDGE_SESSION_AUDIT_INTERVAL`, and when asked, until `stop`.
pub async fn run(edge: Edge, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(edge.config.session_audit_interval) => {}
            () = edge.audit_now.notified() => {}
        }
        audit_once(&edge).await;
    }
}
