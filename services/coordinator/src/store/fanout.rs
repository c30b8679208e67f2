//! Local fan-out of kill commands to the command streams open on this replica. The stores feed
//! it (Redis from its pub/sub subscription, memory directly); each stream gets the commands of
//! its pod.
//!
//! A stream that falls behind by [`STREAM_BUFFER`] commands is cut off rather than allowed to
//! stall the others: its edge reconnects, and its next renew reports what it missed.

use super::types::KillCommand;
use daisi_domain::PodId;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use tokio::sync::mpsc;

/// Commands buffered per stream before it is considered stuck.
const STREAM_BUFFER: usize = 1024;

type Subscribers = HashMap<PodId, Vec<(u64, mpsc::Sender<KillCommand>)>>;

/// The streams open on this replica, by pod.
#[derive(Debug, Default)]
pub(crate) struct Fanout {
    subscribers: Mutex<Subscribers>,
    next_id: AtomicU64,
}

impl Fanout {
    /// Opens a stream of `pod`'s commands.
    pub(crate) fn subscribe(self: &Arc<Self>, pod: &PodId) -> CommandStream {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(pod.clone()).or_default().push((id, tx));
        CommandStream {
            commands: rx,
            _registration: Registration {
                fanout: Arc::downgrade(self),
                pod: pod.clone(),
                id,
            },
        }
    }

    /// Hands `command` to every stream of its pod.
    pub(crate) fn dispatch(&self, command: &KillCommand) {
        let mut subscribers = self.lock();
        let Some(streams) = subscribers.get_mut(&command.pod) else {
            return;
        };
        streams.retain(|(_, tx)| match tx.try_send(command.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(pod = %command.pod, "command stream fell behind; closing it");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if streams.is_empty() {
            subscribers.remove(&command.pod);
        }
    }

    /// Ends every stream: the subscription they relied on is gone.
    pub(crate) fn disconnect_all(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Subscribers> {
        self.subscribers.lock()
    }
}

/// Kill commands for one pod. Ends (`None`) when the replica lost its subscription to the
/// command channel or fell behind; the caller then reconnects.
#[derive(Debug)]
pub struct CommandStream {
    commands: mpsc::Receiver<KillCommand>,
    _registration: Registration,
}

impl CommandStream {
    /// The next command, or `None` when the stream ended.
    pub async fn next(&mut self) -> Option<KillCommand> {
        self.commands.recv().await
    }
}

/// Removes its stream from the fan-out when the stream is dropped.
#[derive(Debug)]
struct Registration {
    fanout: Weak<Fanout>,
    pod: PodId,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(fanout) = self.fanout.upgrade() else {
            return;
        };
        let mut subscribers = fanout.lock();
        if let Some(streams) = subscribers.get_mut(&self.pod) {
            streams.retain(|(id, _)| *id != self.id);
            if streams.is_empty() {
                subscribers.remove(&self.pod);
            }
        }
    }
}
