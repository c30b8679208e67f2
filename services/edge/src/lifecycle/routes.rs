//! Unregisters routes whose last local socket left, in batches: it waits a moment after the
//! first idle route so a burst of disconnects (or a quick reconnect) costs one call or none.
//!
//! It also reconciles: now and then, and soon after an acquire whose answer was lost, it lists
//! the routes the coordinator holds for this pod and unregisters those no local socket needs
//! (a lost acquire may have registered its agent route and the chat route of a restored
//! selection). A stray route only costs deliveries that reach nobody, but it would otherwise
//! stay for the life of the pod. The other way round, it registers again the routes local
//! sockets count that the coordinator does not list (an unregister that landed after every
//! wait for it), which would otherwise cost those sockets every event.

use crate::coordinator::Coordinator;
use crate::state::Edge;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Delay that gathers idle routes into one batch.
const GATHER: Duration = Duration::from_millis(500);

/// Reconciliation period when nothing asks for one.
const RECONCILE_EVERY: Duration = Duration::from_secs(60);

/// Runs until `stop`.
pub async fn run(edge: Edge, stop: CancellationToken) {
    let routes = &edge.registry.routes;
    let mut every = tokio::time::interval_at(Instant::now() + RECONCILE_EVERY, RECONCILE_EVERY);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let reconcile = tokio::select! {
            () = stop.cancelled() => return,
            () = routes.idle() => false,
            () = routes.reconcile_requested() => true,
            _ = every.tick() => true,
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(GATHER) => {}
        }
        if reconcile {
            match edge.coordinator.list_routes(&edge.pod.pod).await {
                Ok(registered) => {
                    let missing = routes.missing(&registered);
                    let strays = routes.strays(registered);
                    if strays > 0 {
                        tracing::info!(strays, "unregistering routes no socket needs");
                    }
                    if !missing.is_empty() {
                        tracing::warn!(
                            missing = missing.len(),
                            "registering again routes local sockets need that the coordinator lost"
                        );
                        if let Err(error) = edge
                            .coordinator
                            .register_routes(&edge.pod.pod, missing)
                            .await
                        {
                            tracing::warn!(%error, "route re-registration failed; retried at the next reconciliation");
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "route reconciliation failed; retried at the next")
                }
            }
        }
        routes
            .unregister_unused(&edge.coordinator, &edge.pod.pod)
            .await;
    }
}
