//! The kill switch: one `WatchPodCommands` stream per pod, reopened with exponential backoff
//! (and jitter) whenever it ends, errs or goes silent for three ping intervals. A kill closes
//! the named socket with the compat SessionConflict frame and 4402, unless the socket holds a
//! newer grant than the one killed. A kill that names a socket not indexed yet is remembered
//! for a few seconds and applied at indexing (`registry::pending_kills`).

use super::close_lost;
use crate::coordinator::{Coordinator, CoordinatorError, Kill, PodCommand};
use crate::registry::KillTarget;
use crate::state::Edge;
use crate::ws::outbox::CloseCause;
use futures_util::StreamExt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Silence tolerated before the first `subscribed` tells the real ping interval.
const FIRST_MESSAGE_WITHIN: Duration = Duration::from_secs(30);

/// Applies one kill command. A kill for a connection not indexed yet (its acquire reply is
/// still on its way) is remembered and applied when the socket is indexed.
pub fn apply_kill(edge: &Edge, kill: &Kill) {
    let result = match edge
        .registry
        .kill_target(&kill.connection, &kill.key, kill.fencing)
    {
        KillTarget::Socket(socket)
            if socket.key == kill.key && socket.fencing() <= kill.fencing =>
        {
            if close_lost(&socket, CloseCause::SessionConflict) {
                "closed"
            } else {
                "already_closing"
            }
        }
        KillTarget::Remembered => "remembered",
        KillTarget::Socket(_) | KillTarget::Invalid => "ignored",
    };
    tracing::debug!(connection = %kill.connection, reason = kill.reason.as_str(), result, "kill command");
    edge.metrics.kills.with_label_values(&[result]).inc();
}

fn jitter(d: Duration) -> Duration {
    // Cheap jitter from the clock: reconnecting edges should not line up.
    let nanos = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.subsec_nanos())
            .unwrap_or(0),
    );
    d + d.mul_f64((nanos % 1000) as f64 / 4000.0)
}

/// Watches until `stop`.
pub async fn run(edge: Edge, stop: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let opened = tokio::select! {
            () = stop.cancelled() => return,
            opened = edge.coordinator.watch(&edge.pod) => opened,
        };
        match opened {
            Ok(mut stream) => {
                let mut silence = FIRST_MESSAGE_WITHIN;
                loop {
                    let next = tokio::select! {
                        () = stop.cancelled() => return,
                        next = tokio::time::timeout(silence, stream.next()) => next,
                    };
                    match next {
                        Ok(Some(Ok(PodCommand::Subscribed { ping_interval }))) => {
                            backoff = BACKOFF_MIN;
                            silence = ping_interval.saturating_mul(3);
                            // Kills raised while the stream was down: a heartbeat now brings
                            // them from the pod's inbox, and an audit now closes the rest.
                            edge.heartbeat_now.notify_one();
                            edge.audit_now.notify_one();
                            edge.readiness.set(crate::state::KILL_COMMANDS, true);
                            tracing::debug!("kill switch stream subscribed");
                        }
                        Ok(Some(Ok(PodCommand::Kill(kill)))) => apply_kill(&edge, &kill),
                        Ok(Some(Ok(PodCommand::Ping | PodCommand::Unknown))) => {}
                        Ok(Some(Err(CoordinatorError::UnknownPod))) => {
                            edge.heartbeat_now.notify_one();
                            break;
                        }
                        Ok(Some(Err(error))) => {
                            tracing::debug!(%error, "kill switch stream failed");
                            break;
                        }
                        Ok(None) => break,
                        Err(_) => {
                            tracing::warn!("kill switch stream silent; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(CoordinatorError::UnknownPod) => edge.heartbeat_now.notify_one(),
            Err(error) => tracing::debug!(%error, "kill switch stream not opened"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(jitter(backoff)) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
