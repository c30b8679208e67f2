//! Tells readiness (and through it gRPC health) whether Redis answers, by reading one key of
//! the deployment's hash slot (`EXISTS`) at a steady pace: on a Redis Cluster that asks the
//! master serving every store call (a `PING` would go to every node, so one dead replica
//! would make the coordinator unready). The connection (shared with the store) reconnects by
//! itself; when it stays silent for several probes in a row, the probe replaces it.

use crate::store::RedisConnection;
use daisi_runtime::{CancellationToken, Readiness};
use std::time::Duration;

/// Pause between pings. Short enough that health flips within about a second of Redis dying.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Failed probes in a row after which the connection is replaced by a fresh one (about 3 s
/// of silence plus the probes' own deadlines): a client connection that never recovers would
/// otherwise keep the coordinator unready after Redis is back.
const RECONNECT_AFTER: u32 = 6;

/// Pings until `shutdown`, recording the outcome as the `redis` dependency.
pub(crate) async fn watch(
    mut redis: RedisConnection,
    key: String,
    readiness: Readiness,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut failed = 0u32;
    loop {
        let probe = redis::cmd("EXISTS").arg(&key).to_owned();
        let answer = tokio::time::timeout(timeout, probe.query_async::<i64>(&mut redis)).await;
        let up = matches!(answer, Ok(Ok(_)));
        readiness.set("redis", up);
        failed = if up { 0 } else { failed + 1 };
        if failed >= RECONNECT_AFTER {
            failed = 0;
            match redis.reconnect() {
                Ok(()) => tracing::warn!(
                    "redis has not answered the readiness probe for a while; reconnecting"
                ),
                Err(e) => tracing::warn!(error = %e, "redis reconnect failed"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(PROBE_EVERY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
