//! The replica's subscription to the kill-command channel, on a connection of its own: a
//! subscribed connection only waits, and the 500 ms–1 s response timeout of the command
//! connection would cut it. Liveness is checked with a `PING` every [`PING_EVERY`] instead (a
//! frozen Redis keeps the socket open but stops answering).
//!
//! On a Redis Cluster a classic `PUBLISH` (a script's included) reaches every node over the
//! cluster bus, so one subscription on any node hears every kill command; the task subscribes
//! to the seeds in turn, moving to the next one when a node fails.
//!
//! When the subscription breaks, every command stream on this replica is ended (their edges
//! reconnect and get a fresh `subscribed`), and the task resubscribes with backoff until Redis
//! is back. `up` tells [`super::RedisStore::watch_commands`] whether a stream opened now would
//! really receive commands.

use super::decode;
use crate::store::fanout::Fanout;
use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the subscription proves Redis still answers.
const PING_EVERY: Duration = Duration::from_secs(1);
/// First and longest pause between resubscription attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Runs the subscription until the task is aborted (when the store is dropped). `clients`:
/// the one Redis, or a cluster's seeds (tried in turn; never empty).
pub(crate) async fn run(
    clients: Vec<redis::Client>,
    channel: String,
    fanout: Arc<Fanout>,
    timeout: Duration,
    up: watch::Sender<bool>,
) {
    let mut backoff = MIN_BACKOFF;
    for client in clients.iter().cycle() {
        match tokio::time::timeout(timeout, subscribe(client, &channel)).await {
            Ok(Ok((mut sink, mut stream))) => {
                backoff = MIN_BACKOFF;
                up.send_replace(true);
                tracing::info!(channel, "subscribed to kill commands");
                let reason = pump(&mut sink, &mut stream, &fanout, timeout).await;
                up.send_replace(false);
                fanout.disconnect_all();
                tracing::warn!(reason, "kill command subscription lost; resubscribing");
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "cannot subscribe to kill commands");
            }
            Err(_) => tracing::debug!("subscribing to kill commands timed out"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> redis::RedisResult<(PubSubSink, PubSubStream)> {
    let (mut sink, stream) = client.get_async_pubsub().await?.split();
    sink.subscribe(channel).await?;
    Ok((sink, stream))
}

/// Forwards messages until the connection fails; answers why.
async fn pump(
    sink: &mut PubSubSink,
    stream: &mut PubSubStream,
    fanout: &Fanout,
    timeout: Duration,
) -> &'static str {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else { return "connection closed" };
                let Ok(payload) = message.get_payload::<String>() else {
                    tracing::warn!("ignoring a kill command that is not text");
                    continue;
                };
                match decode::kill_command(&payload) {
                    Ok(command) => fanout.dispatch(&command),
                    Err(error) => tracing::warn!(%error, "ignoring a malformed kill command"),
                }
            }
            _ = ping.tick() => {
                let answer = tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await;
                if !matches!(answer, Ok(Ok(_))) {
                    return "ping failed";
                }
            }
        }
    }
}
