//! One `WatchPodCommands` stream: forwards the pod's kill commands, pings while idle, and ends
//! when the edge hangs up, the server stops (cleanly, status OK), the replica loses its
//! command subscription (`UNAVAILABLE`: reconnect), the pod's instance is replaced
//! (`FAILED_PRECONDITION`), the pod opens a newer stream on this replica (`ABORTED`: the edge
//! keeps one), or the edge stops taking messages (it is not reading: nothing is left to tell
//! it).

use super::Shared;
use super::convert;
use super::sessions::current_instance;
use crate::store::{CommandStream, SessionStore};
use daisi_domain::PodId;
use daisi_proto::coordinator::v1 as pb;
use daisi_runtime::CancellationToken;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Status;

type Sender = mpsc::Sender<Result<pb::PodCommand, Status>>;

/// Ping intervals a stream may leave a message untaken before it counts as stuck: the edge
/// treats its stream as dead after three silent ones too.
const STUCK_AFTER_PINGS: u32 = 3;

/// The command stream open per pod on this replica. The edge keeps one stream; a newer one of
/// the same pod ends the one before, so a pod cannot pile up streams (and their tasks).
#[derive(Debug, Default)]
pub(crate) struct Watchers {
    streams: Arc<Mutex<HashMap<PodId, (u64, CancellationToken)>>>,
    next_id: AtomicU64,
}

impl Watchers {
    /// Registers a new stream of `pod`, ending the one it replaces. The stream ends when the
    /// returned token is cancelled; dropping the registration forgets it.
    pub(crate) fn open(&self, pod: &PodId) -> Watcher {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let replaced = CancellationToken::new();
        let older = self
            .streams
            .lock()
            .insert(pod.clone(), (id, replaced.clone()));
        if let Some((_, older)) = older {
            older.cancel();
        }
        Watcher {
            streams: self.streams.clone(),
            pod: pod.clone(),
            id,
            replaced,
        }
    }
}

/// One registered stream; unregisters itself when dropped (unless a newer one took its place).
#[derive(Debug)]
pub(crate) struct Watcher {
    streams: Arc<Mutex<HashMap<PodId, (u64, CancellationToken)>>>,
    pod: PodId,
    id: u64,
    /// Cancelled when a newer stream of the pod opened.
    replaced: CancellationToken,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let mut streams = self.streams.lock();
        if streams.get(&self.pod).is_some_and(|(id, _)| *id == self.id) {
            streams.remove(&self.pod);
        }
    }
}

pub(super) async fn forward<S: SessionStore>(
    shared: Arc<Shared<S>>,
    watcher: Watcher,
    instance: Option<String>,
    mut commands: CommandStream,
    tx: Sender,
) {
    let _open = shared.metrics.watch_stream();
    let pod = watcher.pod.clone();
    let every = shared.watch_ping_interval;
    let out = Out {
        tx,
        stop: &shared.stop,
        replaced: &watcher.replaced,
        stuck_after: every.saturating_mul(STUCK_AFTER_PINGS),
    };
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::debug!(%pod, "command stream opened");
    let ended = loop {
        tokio::select! {
            () = shared.stop.cancelled() => break "shutdown",
            () = watcher.replaced.cancelled() => {
                out.last_word(Status::aborted(
                    "replaced by a newer command stream of this pod",
                ));
                break "replaced";
            }
            () = out.tx.closed() => break "client gone",
            command = commands.next() => {
                let Some(command) = command else {
                    out.last_word(Status::unavailable(
                        "this replica lost its kill-command subscription; reconnect",
                    ));
                    break "subscription lost";
                };
                if let Err(ended) = out.send(convert::kill_out(&command)).await {
                    break ended;
                }
            }
            _ = ping.tick() => {
                // The pod may have been purged or restarted meanwhile: its stream must not
                // outlive its instance. A store error here is not the stream's problem.
                if let Err(status) = current_instance(&shared, &pod, instance.as_deref()).await
                    && status.code() == tonic::Code::FailedPrecondition
                {
                    out.last_word(status);
                    break "instance replaced";
                }
                let ping = pb::PodCommand {
                    command: Some(pb::pod_command::Command::Ping(pb::Ping {})),
                    issued_at: Some(convert::timestamp(jiff::Timestamp::now())),
                };
                if let Err(ended) = out.send(ping).await {
                    break ended;
                }
            }
        }
    };
    tracing::debug!(%pod, reason = ended, "command stream closed");
}

/// The stream's way out to the edge.
struct Out<'a> {
    tx: Sender,
    stop: &'a CancellationToken,
    replaced: &'a CancellationToken,
    /// How long one message may wait for room before the stream counts as stuck.
    stuck_after: Duration,
}

impl Out<'_> {
    /// Hands `command` to the stream. An edge that stops reading fills the buffer: the wait
    /// for room still ends on shutdown, on a newer stream, when the edge hangs up (the send
    /// fails), or after `stuck_after`; `Err` says why the stream ends.
    async fn send(&self, command: pb::PodCommand) -> Result<(), &'static str> {
        tokio::select! {
            () = self.stop.cancelled() => Err("shutdown"),
            () = self.replaced.cancelled() => Err("replaced"),
            sent = tokio::time::timeout(self.stuck_after, self.tx.send(Ok(command))) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err("client gone"),
                Err(_) => {
                    tracing::warn!(waited = ?self.stuck_after, "edge stopped reading its command stream; ending it");
                    Err("client not reading")
                }
            },
        }
    }

    /// The status the stream ends with, if there is room for it (an edge that does not read
    /// would not see it anyway).
    fn last_word(&self, status: Status) {
        let _ = self.tx.try_send(Err(status));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::metrics::CoordinatorMetrics;
    use crate::store::{
        AcquireMode, AcquireOutcome, AcquireRequest, MemoryStore, PodHeartbeat, StoreSettings,
    };
    use daisi_domain::SessionKey;

    const PING: Duration = Duration::from_millis(100);

    async fn shared() -> Arc<Shared<MemoryStore>> {
        let store = MemoryStore::new(StoreSettings {
            pod_lease: Duration::from_secs(30),
            selection_retention: Duration::from_secs(60),
            tombstone_ttl: Duration::from_secs(60),
        });
        for pod in ["edge-1", "edge-2"] {
            store
                .heartbeat(&PodHeartbeat {
                    pod: pod.parse().unwrap(),
                    instance: "i1".to_owned(),
                    delivery_address: "http://10.0.0.1:50061".to_owned(),
                    load: None,
                })
                .await
                .unwrap();
        }
        let registry = daisi_telemetry::Metrics::new("coordinator").unwrap();
        Arc::new(Shared {
            store: Arc::new(store),
            metrics: CoordinatorMetrics::new(&registry).unwrap(),
            watch_ping_interval: PING,
            replica_id: "r1".to_owned(),
            stop: CancellationToken::new(),
            watchers: Watchers::default(),
        })
    }

    async fn take(shared: &Shared<MemoryStore>, pod: &str, connection: &str) {
        let outcome = shared
            .store
            .acquire(AcquireRequest {
                key: "u:c1:a1:u1".parse::<SessionKey>().unwrap(),
                pod: pod.parse().unwrap(),
                connection: connection.parse().unwrap(),
                mode: AcquireMode::Takeover,
                routes: Vec::new(),
            })
            .await
            .unwrap();
        assert!(matches!(outcome, AcquireOutcome::Granted(_)));
    }

    /// A stream whose edge does not read: its one-message buffer is full and a kill for it is
    /// waiting, so the task is blocked handing that kill over.
    async fn stuck_stream(
        shared: &Arc<Shared<MemoryStore>>,
    ) -> (
        tokio::task::JoinHandle<()>,
        mpsc::Receiver<Result<pb::PodCommand, Status>>,
    ) {
        let pod: PodId = "edge-1".parse().unwrap();
        let commands = shared.store.watch_commands(&pod).await.unwrap();
        let (tx, rx) = mpsc::channel(1);
        tx.try_send(Err(Status::ok("unread"))).unwrap();
        let watcher = shared.watchers.open(&pod);
        let task = tokio::spawn(forward(shared.clone(), watcher, None, commands, tx));
        take(shared, "edge-1", "c1").await;
        take(shared, "edge-2", "c2").await;
        (task, rx)
    }

    #[tokio::test]
    async fn a_stream_whose_edge_stopped_reading_still_ends_on_shutdown() {
        let mut shared = shared().await;
        // Pings would end it on their own; this is about shutdown.
        Arc::get_mut(&mut shared).unwrap().watch_ping_interval = Duration::from_secs(3600);
        let (task, _unread) = stuck_stream(&shared).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        shared.stop.cancel();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("the stream ends on shutdown")
            .unwrap();
    }

    #[tokio::test]
    async fn a_stream_whose_edge_stopped_reading_ends_after_three_ping_intervals() {
        let shared = shared().await;
        let (task, _unread) = stuck_stream(&shared).await;
        tokio::time::timeout(PING * 3 + Duration::from_secs(2), task)
            .await
            .expect("the stuck stream ends while its edge is still connected")
            .unwrap();
    }

    #[tokio::test]
    async fn a_newer_stream_of_the_pod_ends_the_older_one() {
        let shared = shared().await;
        let pod: PodId = "edge-1".parse().unwrap();
        let open = |shared: &Arc<Shared<MemoryStore>>| {
            let shared = shared.clone();
            let pod = pod.clone();
            async move {
                let commands = shared.store.watch_commands(&pod).await.unwrap();
                let (tx, rx) = mpsc::channel(8);
                let watcher = shared.watchers.open(&pod);
                let task = tokio::spawn(forward(shared, watcher, None, commands, tx));
                (task, rx)
            }
        };
        let (older, mut older_rx) = open(&shared).await;
        let (newer, mut newer_rx) = open(&shared).await;
        tokio::time::timeout(Duration::from_secs(2), older)
            .await
            .expect("the older stream ends")
            .unwrap();
        let last = older_rx.recv().await.unwrap().unwrap_err();
        assert_eq!(last.code(), tonic::Code::Aborted);
        // The newer one lives on and gets the pod's kills.
        take(&shared, "edge-1", "c1").await;
        take(&shared, "edge-2", "c2").await;
        let kill = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                let message = newer_rx.recv().await.unwrap().unwrap();
                if let Some(pb::pod_command::Command::Kill(kill)) = message.command {
                    return kill;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(kill.connection_id, "c1");
        assert!(!newer.is_finished());
        // Once it ends, its registration is gone.
        drop(newer_rx);
        tokio::time::timeout(Duration::from_secs(2), newer)
            .await
            .unwrap()
            .unwrap();
        assert!(shared.watchers.streams.lock().is_empty());
    }
}
