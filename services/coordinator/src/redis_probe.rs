//! Tells readiness (and through it gRPC health) whether Redis answers, by sending `PING` at a
//! steady pace. The connection manager (shared with the store) reconnects by itself; the probe only
//! observes.

use daisi_runtime::{CancellationToken, Readiness};
use redis::aio::ConnectionManager;
use std::time::Duration;

/// Pause between pings. Short enough that health flips within about a second of Redis dying.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Pings until `shutdown`, recording the outcome as the `redis` dependency.
pub(crate) async fn watch(
    mut redis: ConnectionManager,
    readiness: Readiness,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let ping = redis::cmd("PING");
        let answer = tokio::time::timeout(timeout, ping.query_async::<String>(&mut redis)).await;
        let up = matches!(answer, Ok(Ok(ref pong)) if pong == "PONG");
        readiness.set("redis", up);
        tokio::select! {
            () = tokio::time::sleep(PROBE_EVERY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
