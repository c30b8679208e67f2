//! Tells readiness (and through it gRPC health) whether Redis answers, by sending `PING` at a
//! steady pace. The connection manager reconnects by itself; the probe only observes.

use crate::Config;
use daisi_runtime::{CancellationToken, Readiness};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// Pause between pings. Short enough that health flips within about a second of Redis dying.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// A lazily connecting Redis client: the coordinator starts (and reports NOT_SERVING) while
/// Redis is down, and connects when it appears.
pub(crate) fn client(config: &Config) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(config.redis_url.0.as_str())?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.redis_timeout))
        .set_response_timeout(Some(config.redis_timeout))
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_lazy_with_config(client, manager_config)
}

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
