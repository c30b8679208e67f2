//! Tells readiness (and through it gRPC health) whether Redis answers, by reading one key of
//! the deployment's hash slot (`EXISTS`) at a steady pace: on a Redis Cluster that asks the
//! master serving every store call (a `PING` would go to every node, so one dead replica
//! would make the coordinator unready). The connection (shared with the store) reconnects by
//! itself; the probe only observes.

use crate::store::RedisConnection;
use daisi_runtime::{CancellationToken, Readiness};
use std::time::Duration;

/// Pause between pings. Short enough that health flips within about a second of Redis dying.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Pings until `shutdown`, recording the outcome as the `redis` dependency.
pub(crate) async fn watch(
    mut redis: RedisConnection,
    key: String,
    readiness: Readiness,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let probe = redis::cmd("EXISTS").arg(&key).to_owned();
        let answer = tokio::time::timeout(timeout, probe.query_async::<i64>(&mut redis)).await;
        let up = matches!(answer, Ok(Ok(_)));
        readiness.set("redis", up);
        tokio::select! {
            () = tokio::time::sleep(PROBE_EVERY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
