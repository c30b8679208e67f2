//! Unregisters routes whose last local socket left, in batches: it waits a moment after the
//! first idle route so a burst of disconnects (or a quick reconnect) costs one call or none.

use crate::state::Edge;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Delay that gathers idle routes into one batch.
const GATHER: Duration = Duration::from_millis(500);

/// Runs until `stop`.
pub async fn run(edge: Edge, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = edge.registry.routes.idle() => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(GATHER) => {}
        }
        edge.registry
            .routes
            .unregister_unused(&edge.coordinator, &edge.pod.pod)
            .await;
    }
}
