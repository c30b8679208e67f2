//! One `WatchPodCommands` stream: forwards the pod's kill commands, pings while idle, and ends
//! when the edge hangs up, the server stops (cleanly, status OK), the replica loses its
//! command subscription (`UNAVAILABLE`: reconnect) or the pod's instance is replaced
//! (`FAILED_PRECONDITION`).

use super::Shared;
use super::convert;
use super::sessions::current_instance;
use crate::store::{CommandStream, SessionStore};
use daisi_domain::PodId;
use daisi_proto::coordinator::v1 as pb;
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::Status;

type Sender = mpsc::Sender<Result<pb::PodCommand, Status>>;

pub(super) async fn forward<S: SessionStore>(
    shared: Arc<Shared<S>>,
    pod: PodId,
    instance: Option<String>,
    mut commands: CommandStream,
    tx: Sender,
) {
    let _open = shared.metrics.watch_stream();
    let every = shared.watch_ping_interval;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::debug!(%pod, "command stream opened");
    let ended = loop {
        tokio::select! {
            () = shared.stop.cancelled() => break "shutdown",
            () = tx.closed() => break "client gone",
            command = commands.next() => {
                let Some(command) = command else {
                    let _ = tx
                        .send(Err(Status::unavailable(
                            "this replica lost its kill-command subscription; reconnect",
                        )))
                        .await;
                    break "subscription lost";
                };
                if tx.send(Ok(convert::kill_out(&command))).await.is_err() {
                    break "client gone";
                }
            }
            _ = ping.tick() => {
                // The pod may have been purged or restarted meanwhile: its stream must not
                // outlive its instance. A store error here is not the stream's problem.
                if let Err(status) = current_instance(&shared, &pod, instance.as_deref()).await
                    && status.code() == tonic::Code::FailedPrecondition
                {
                    let _ = tx.send(Err(status)).await;
                    break "instance replaced";
                }
                let ping = pb::PodCommand {
                    command: Some(pb::pod_command::Command::Ping(pb::Ping {})),
                    issued_at: Some(convert::timestamp(jiff::Timestamp::now())),
                };
                if tx.send(Ok(ping)).await.is_err() {
                    break "client gone";
                }
            }
        }
    };
    tracing::debug!(%pod, reason = ended, "command stream closed");
}
