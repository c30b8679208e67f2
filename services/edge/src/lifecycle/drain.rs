//! The SIGTERM drain, in order: not ready (and no new sockets), every socket told "Service
//! shutting down" and closed with 1001 in waves spread over `drain_spread` (so clients do not
//! reconnect to the surviving pods all in the same instant), a wait for the socket tasks, one
//! release batch for all sessions, and the pod deregistered. Everything within the grace.

use crate::coordinator::Coordinator;
use crate::state::Edge;
use crate::ws::outbox::CloseRequest;
use std::time::Duration;
use tokio::time::Instant;

/// Most waves the closes are split into.
const MAX_WAVES: usize = 100;
/// Kept at the end of the grace for the release batch and deregistration.
const RESERVE: Duration = Duration::from_secs(2);

/// Drains the pod; returns once sessions are released and the pod deregistered (or the grace
/// is spent).
pub async fn drain(edge: &Edge) {
    let started = Instant::now();
    let grace = edge.config.shutdown_grace;
    edge.readiness.start_draining();
    let sockets = edge.registry.all();
    tracing::info!(sockets = sockets.len(), spread = ?edge.config.drain_spread, "draining");
    if !sockets.is_empty() {
        let waves = sockets.len().min(MAX_WAVES);
        let per_wave = sockets.len().div_ceil(waves);
        for (i, wave) in sockets.chunks(per_wave).enumerate() {
            let at = started + edge.config.drain_spread.mul_f64(i as f64 / waves as f64);
            tokio::time::sleep_until(at).await;
            for socket in wave {
                socket.outbox.close(CloseRequest::shutdown());
            }
        }
    }
    // Sockets admitted while the first waves went out.
    for socket in edge.registry.all() {
        socket.outbox.close(CloseRequest::shutdown());
    }
    let deadline = started + grace.saturating_sub(RESERVE.min(grace / 4));
    edge.socket_tasks.close();
    if tokio::time::timeout_at(deadline, edge.socket_tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = edge.registry.len(),
            "sockets still open at the drain deadline; stopping them"
        );
        edge.sockets_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_millis(500), edge.socket_tasks.wait()).await;
    }
    let released = edge.releases.flush(edge).await.sent;
    if let Err(error) = edge.coordinator.deregister(&edge.pod).await {
        tracing::warn!(%error, "deregistration failed; the pod lease will lapse");
    }
    tracing::info!(released, took = ?started.elapsed(), "drained");
}
