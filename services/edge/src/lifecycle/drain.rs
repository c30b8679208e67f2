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
/// The close waves end within this share of the time before the drain deadline.
const WAVES_WITHIN: f64 = 0.8;

/// Drains the pod; returns once sessions are released and the pod deregistered (or the grace
/// is spent).
pub async fn drain(edge: &Edge) {
    let started = Instant::now();
    let grace = edge.config.shutdown_grace;
    edge.readiness.start_draining();
    let sockets = edge.registry.all();
    let deadline = started + grace.saturating_sub(RESERVE.min(grace / 4));
    // The waves end well before the deadline, so the last sockets have time to close and the
    // releases and deregistration their reserve, whatever the spread setting.
    let spread = edge
        .config
        .drain_spread
        .min((deadline - started).mul_f64(WAVES_WITHIN));
    tracing::info!(sockets = sockets.len(), ?spread, "draining");
    if !sockets.is_empty() {
        let waves = sockets.len().min(MAX_WAVES);
        let per_wave = sockets.len().div_ceil(waves);
        for (i, wave) in sockets.chunks(per_wave).enumerate() {
            let at = started + spread.mul_f64(i as f64 / waves as f64);
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
    // No heartbeat may reach the coordinator after the deregistration: it would register the
    // pod anew for a lease (and restore the routes of sockets still indexed).
    crate::lifecycle::pod::stop_heartbeats(edge).await;
    if let Err(error) = edge.coordinator.deregister(&edge.pod).await {
        tracing::warn!(%error, "deregistration failed; the pod lease will lapse");
    }
    tracing::info!(released, took = ?started.elapsed(), "drained");
}
