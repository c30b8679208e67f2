//! An in-process stream with one shared durable consumer, for the dev stack and tests.
//!
//! It keeps the JetStream semantics the router depends on, so the pipeline behaves the same on
//! both: every message gets a stream sequence; a delivery that is not acknowledged within the
//! ack wait comes back (after the consumer's backoff) with its delivery count raised; a
//! negative ack brings it back after its delay; an in-progress ack restarts the ack wait; after
//! max deliver attempts it is dropped; at most max ack pending deliveries are outstanding; and
//! several [`MemorySource`]s of one [`MemoryStream`] share the work like replicas sharing a
//! durable consumer. Acknowledged messages are forgotten (work-queue retention), so memory
//! stays bounded by what is unacknowledged.

use super::{
    Acker, AckerImpl, DeadLetter, Delivery, EventSource, LagProbe, Outgoing, PublishError,
    Publisher, SourceState, TraceHeaders, redelivery_backoff, redelivery_delay,
};
use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// Consumer settings of a memory stream (the same knobs as the JetStream consumer).
#[derive(Debug, Clone)]
pub struct MemorySettings {
    /// Redelivery delay of an unacknowledged delivery.
    pub ack_wait: Duration,
    /// Delivery attempts before a message is dropped.
    pub max_deliver: i64,
    /// Outstanding deliveries across all consumers.
    pub max_ack_pending: usize,
    /// Messages kept at most; publishing beyond fails like a full stream.
    pub max_messages: usize,
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_deliver: 10,
            max_ack_pending: 10_000,
            max_messages: 1_000_000,
        }
    }
}

#[derive(Debug)]
struct Stored {
    subject: String,
    payload: Bytes,
    trace: TraceHeaders,
    published_at: SystemTime,
    /// Deliveries so far.
    delivered: u64,
    /// When the outstanding delivery times out (or a nak'd one becomes due); `None` while the
    /// message has never been delivered.
    due: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    messages: BTreeMap<u64, Stored>,
    /// Next sequence to assign.
    next_sequence: u64,
    /// First sequence never delivered yet.
    cursor: u64,
    /// Outstanding deliveries by the time they come back (ack wait or nak delay).
    timers: BTreeSet<(Instant, u64)>,
    dead_letters: Vec<(String, DeadLetter)>,
}

#[derive(Debug)]
struct Shared {
    settings: MemorySettings,
    backoff: Vec<Duration>,
    state: Mutex<State>,
    /// Wakes waiting consumers on publish and on every settlement.
    changed: Notify,
    /// A memory stream is always "connected".
    source_state: watch::Sender<SourceState>,
    /// The stream's incarnation: its creation time in Unix nanoseconds, like JetStream's.
    epoch: u64,
}

/// The stream; clone it freely. Publishing and every [`MemorySource`] share it.
#[derive(Debug, Clone)]
pub struct MemoryStream {
    shared: Arc<Shared>,
}

impl MemoryStream {
    /// An empty stream whose consumer follows `settings`.
    pub fn new(settings: MemorySettings) -> Self {
        let backoff = redelivery_backoff(settings.ack_wait, settings.max_deliver);
        Self {
            shared: Arc::new(Shared {
                settings,
                backoff,
                state: Mutex::new(State {
                    next_sequence: 1,
                    cursor: 1,
                    ..State::default()
                }),
                changed: Notify::new(),
                source_state: watch::Sender::new(SourceState::Consuming),
                epoch: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            }),
        }
    }

    /// Another consumer handle on the shared durable consumer (a router replica).
    pub fn consumer(&self) -> MemorySource {
        MemorySource {
            stream: self.clone(),
        }
    }

    /// The stream's incarnation (creation time in Unix nanoseconds).
    pub fn epoch(&self) -> u64 {
        self.shared.epoch
    }

    /// Dead letters published so far, with their subjects (tests and the dev stack).
    pub fn dead_letters(&self) -> Vec<(String, DeadLetter)> {
        self.lock().dead_letters.clone()
    }

    /// Messages stored and not yet acknowledged.
    pub fn len(&self) -> usize {
        self.lock().messages.len()
    }

    /// Whether every message was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock()
    }

    fn settle(&self, sequence: u64, generation: u64, how: Settle) {
        {
            let mut state = self.lock();
            let ack_wait = self.shared.settings.ack_wait;
            let Some(stored) = state.messages.get_mut(&sequence) else {
                return;
            };
            // A nak or progress of an older delivery than the outstanding one is ignored; an
            // ack counts whatever the delivery, as in JetStream.
            let current = stored.delivered == generation;
            let old_due = stored.due;
            let new_due = match how {
                Settle::Ack => None,
                Settle::Nak(delay) if current => Some(Instant::now() + delay),
                Settle::Progress if current => Some(Instant::now() + ack_wait),
                Settle::Nak(_) | Settle::Progress => return,
            };
            if let Some(due) = old_due {
                state.timers.remove(&(due, sequence));
            }
            match new_due {
                Some(due) => {
                    if let Some(stored) = state.messages.get_mut(&sequence) {
                        stored.due = Some(due);
                    }
                    state.timers.insert((due, sequence));
                }
                None => {
                    state.messages.remove(&sequence);
                }
            }
        }
        self.shared.changed.notify_waiters();
    }

    /// The next delivery if one is available now, else when to look again.
    fn poll(&self) -> Result<Delivery, Option<Instant>> {
        let mut state = self.lock();
        let now = Instant::now();
        let settings = &self.shared.settings;
        // Redeliveries first, as JetStream does.
        let mut redeliver = None;
        while let Some(&(due, sequence)) = state.timers.first() {
            if due > now {
                break;
            }
            state.timers.pop_first();
            let delivered = state.messages.get(&sequence).map_or(0, |m| m.delivered);
            if i64::try_from(delivered).unwrap_or(i64::MAX) >= settings.max_deliver {
                // Max deliver reached: JetStream stops delivering it; so do we.
                state.messages.remove(&sequence);
                continue;
            }
            redeliver = Some(sequence);
            break;
        }
        let sequence = match redeliver {
            Some(sequence) => sequence,
            None => {
                if state.timers.len() >= settings.max_ack_pending
                    || !state.messages.contains_key(&state.cursor)
                {
                    return Err(state.timers.first().map(|(due, _)| *due));
                }
                let sequence = state.cursor;
                state.cursor += 1;
                sequence
            }
        };
        let pending = state.next_sequence.saturating_sub(state.cursor);
        let Some(stored) = state.messages.get_mut(&sequence) else {
            return Err(None);
        };
        stored.delivered += 1;
        let delay = redelivery_delay(&self.shared.backoff, settings.ack_wait, stored.delivered);
        let due = now + delay;
        stored.due = Some(due);
        let delivery = Delivery {
            subject: stored.subject.clone(),
            payload: stored.payload.clone(),
            trace: stored.trace.clone(),
            stream_sequence: sequence,
            delivered: stored.delivered,
            pending,
            published_at: Some(stored.published_at),
            stream_epoch: self.shared.epoch,
            acker: Acker(AckerImpl::Memory(MemoryAck {
                stream: self.clone(),
                sequence,
                generation: stored.delivered,
            })),
        };
        state.timers.insert((due, sequence));
        Ok(delivery)
    }
}

enum Settle {
    Ack,
    Nak(Duration),
    Progress,
}

/// Settles one delivery of a memory stream.
pub struct MemoryAck {
    stream: MemoryStream,
    sequence: u64,
    generation: u64,
}

impl std::fmt::Debug for MemoryAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryAck")
            .field("sequence", &self.sequence)
            .field("generation", &self.generation)
            .finish()
    }
}

impl MemoryAck {
    pub(super) fn ack(&self) {
        self.stream
            .settle(self.sequence, self.generation, Settle::Ack);
    }

    pub(super) fn nak(&self, delay: Duration) {
        self.stream
            .settle(self.sequence, self.generation, Settle::Nak(delay));
    }

    pub(super) fn progress(&self) {
        self.stream
            .settle(self.sequence, self.generation, Settle::Progress);
    }
}

impl Publisher for MemoryStream {
    async fn publish(&self, message: Outgoing) -> Result<u64, PublishError> {
        let sequence = {
            let mut state = self.lock();
            if state.messages.len() >= self.shared.settings.max_messages {
                return Err(PublishError::Refused("memory stream is full".into()));
            }
            let sequence = state.next_sequence;
            state.next_sequence += 1;
            state.messages.insert(
                sequence,
                Stored {
                    subject: message.subject,
                    payload: message.payload,
                    trace: message.trace,
                    published_at: SystemTime::now(),
                    delivered: 0,
                    due: None,
                },
            );
            sequence
        };
        self.shared.changed.notify_waiters();
        Ok(sequence)
    }

    async fn dead_letter(&self, subject: &str, letter: DeadLetter) -> Result<(), PublishError> {
        self.lock().dead_letters.push((subject.to_owned(), letter));
        Ok(())
    }
}

/// One consumer handle of a [`MemoryStream`].
#[derive(Debug, Clone)]
pub struct MemorySource {
    stream: MemoryStream,
}

impl EventSource for MemorySource {
    type Publisher = MemoryStream;

    async fn next(&mut self) -> Option<Delivery> {
        loop {
            // Register interest before looking, so a publish between the look and the wait
            // is not missed.
            let changed = self.stream.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.stream.poll() {
                Ok(delivery) => return Some(delivery),
                Err(Some(due)) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
                Err(None) => changed.await,
            }
        }
    }

    fn publisher(&self) -> MemoryStream {
        self.stream.clone()
    }

    fn state(&self) -> watch::Receiver<SourceState> {
        self.stream.shared.source_state.subscribe()
    }

    fn lag_probe(&self) -> LagProbe {
        let stream = self.stream.clone();
        Arc::new(move || {
            let state = stream.lock();
            state.next_sequence.saturating_sub(state.cursor)
        })
    }
}
