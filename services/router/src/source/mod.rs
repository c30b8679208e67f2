//! Where events come from: a durable, shared, explicitly acknowledged stream of NATS messages.
//!
//! [`EventSource`] is what the pipeline consumes and [`Publisher`] is how the publish API and
//! the dead-letter path write. Two backends implement both and pass one contract test suite
//! (`tests/it/source_contract.rs`): [`jetstream`] (production) and [`memory`] (dev stack and
//! tests), which reproduces the JetStream semantics the router relies on: ack wait,
//! redelivery with a growing delay, negative acks with a delay, in-progress acks, max deliver
//! and work sharing between consumers.
//!
//! Business code sees [`Delivery`] and [`Acker`], never an async-nats type.

pub mod jetstream;
pub mod memory;
pub use daisi_runtime::nats_auth;

use bytes::Bytes;
use std::future::Future;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Header carrying the reason a message was dead-lettered.
pub const DEAD_LETTER_REASON_HEADER: &str = "Daisi-Dead-Letter-Reason";
/// Header carrying the subject a dead letter was originally published on.
pub const DEAD_LETTER_SUBJECT_HEADER: &str = "Daisi-Original-Subject";
/// Header carrying the stream sequence of a dead letter.
pub const DEAD_LETTER_SEQUENCE_HEADER: &str = "Daisi-Stream-Sequence";

/// Correlation and trace headers of a message, as raw strings (validated by the telemetry
/// helpers when read from NATS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceHeaders {
    /// `X-Request-ID`.
    pub request_id: Option<String>,
    /// W3C `traceparent`.
    pub traceparent: Option<String>,
    /// W3C `tracestate`.
    pub tracestate: Option<String>,
}

/// One delivery of a stream message to this consumer.
#[derive(Debug)]
pub struct Delivery {
    /// The NATS subject.
    pub subject: String,
    /// The payload exactly as published.
    pub payload: Bytes,
    /// Correlation and trace headers.
    pub trace: TraceHeaders,
    /// Stream sequence: unique within the stream, the edges' de-duplication key.
    pub stream_sequence: u64,
    /// Delivery attempt, 1 on the first delivery.
    pub delivered: u64,
    /// Messages the server still holds for the consumer after this one (consumer lag).
    pub pending: u64,
    /// When the stream stored the message.
    pub published_at: Option<SystemTime>,
    /// The stream's incarnation: its creation time in Unix nanoseconds (0 when unknown). It
    /// changes when the stream is recreated, so (epoch, sequence) names one message forever.
    pub stream_epoch: u64,
    /// Settles this delivery.
    pub acker: Acker,
}

/// Settles one delivery with the server.
#[derive(Debug)]
pub struct Acker(AckerImpl);

enum AckerImpl {
    // Boxed: a JetStream acker carries the whole client context (256 bytes).
    JetStream(Box<async_nats::jetstream::message::Acker>),
    Memory(memory::MemoryAck),
}

impl std::fmt::Debug for AckerImpl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::JetStream(_) => f.write_str("JetStream"),
            Self::Memory(ack) => ack.fmt(f),
        }
    }
}

/// Settling a delivery failed (the connection is closed); the server will redeliver it.
#[derive(Debug, thiserror::Error)]
#[error("cannot settle the message: {0}")]
pub struct AckError(String);

impl Acker {
    /// Done: the server forgets the message.
    pub async fn ack(&self) -> Result<(), AckError> {
        match &self.0 {
            AckerImpl::JetStream(a) => a.ack().await.map_err(|e| AckError(e.to_string())),
            AckerImpl::Memory(a) => {
                a.ack();
                Ok(())
            }
        }
    }

    /// Not done: deliver it again after `delay`.
    pub async fn nak(&self, delay: Duration) -> Result<(), AckError> {
        match &self.0 {
            AckerImpl::JetStream(a) => a
                .ack_with(async_nats::jetstream::AckKind::Nak(
                    (!delay.is_zero()).then_some(delay),
                ))
                .await
                .map_err(|e| AckError(e.to_string())),
            AckerImpl::Memory(a) => {
                a.nak(delay);
                Ok(())
            }
        }
    }

    /// Still working on it: restart the ack wait.
    pub async fn progress(&self) -> Result<(), AckError> {
        match &self.0 {
            AckerImpl::JetStream(a) => a
                .ack_with(async_nats::jetstream::AckKind::Progress)
                .await
                .map_err(|e| AckError(e.to_string())),
            AckerImpl::Memory(a) => {
                a.progress();
                Ok(())
            }
        }
    }
}

/// A message to publish into the stream.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Subject (already validated against the subject model by the caller).
    pub subject: String,
    /// Payload.
    pub payload: Bytes,
    /// Correlation and trace headers to attach.
    pub trace: TraceHeaders,
}

/// A message given up on, for the dead-letter subject.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Subject it was published on.
    pub original_subject: String,
    /// Its stream sequence.
    pub stream_sequence: u64,
    /// Its payload, unchanged.
    pub payload: Bytes,
    /// Why it was given up (`malformed_subject: ...`).
    pub reason: String,
    /// Its correlation and trace headers.
    pub trace: TraceHeaders,
}

/// Publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The stream did not acknowledge in time or the connection is down; retry later.
    #[error("stream unavailable: {0}")]
    Unavailable(String),
    /// The server refused the message (too large, no stream for the subject, ...).
    #[error("publish refused: {0}")]
    Refused(String),
}

/// Writes into the stream (publish API) and to the dead-letter subject.
pub trait Publisher: Clone + Send + Sync + 'static {
    /// Publishes into the stream and waits for the stream's acknowledgement; returns the
    /// stream sequence of the stored message.
    fn publish(&self, message: Outgoing) -> impl Future<Output = Result<u64, PublishError>> + Send;

    /// Republishes a given-up message to `subject` with the reason in
    /// [`DEAD_LETTER_REASON_HEADER`]. Best effort: plain publish, no stream acknowledgement.
    fn dead_letter(
        &self,
        subject: &str,
        letter: DeadLetter,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;
}

/// The consumer's condition, for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceState {
    /// Not bound to the stream yet (connecting, creating the stream or the consumer).
    Connecting,
    /// Bound, and messages or heartbeats arrive.
    Consuming,
    /// Bound, but neither messages nor heartbeats arrived within the heartbeat window:
    /// the consumer is wedged even if the TCP connection looks fine.
    Wedged,
    /// The connection to the server is down.
    Disconnected,
}

/// A durable consumer shared by every router replica.
pub trait EventSource: Send + 'static {
    /// The matching writer.
    type Publisher: Publisher;

    /// The next delivery. Reconnects, rebinds and backs off by itself; `None` only once the
    /// source is closed for good (see [`EventSource::failure`]).
    fn next(&mut self) -> impl Future<Output = Option<Delivery>> + Send;

    /// Why the source closed, when it closed because retrying cannot help (a setting contradicts
    /// the server's state): the router then stops with this message.
    fn failure(&self) -> Option<String> {
        None
    }

    /// Deliveries that already arrived and were not yet taken, without waiting: the router
    /// hands them back to the server when it stops, rather than leave them to the ack wait.
    /// Empty for a source that buffers nothing on the client side.
    fn take_buffered(&mut self) -> Vec<Delivery> {
        Vec::new()
    }

    /// A writer into the same stream.
    fn publisher(&self) -> Self::Publisher;

    /// Follows the consumer's condition.
    fn state(&self) -> watch::Receiver<SourceState>;

    /// Reads the consumer lag (messages not yet delivered) as last known.
    fn lag_probe(&self) -> LagProbe;
}

/// Reads the consumer lag; cheap, callable from any task.
pub type LagProbe = std::sync::Arc<dyn Fn() -> u64 + Send + Sync>;

/// Redelivery delays the consumer is configured with (`backoff`): the ack wait, then doubling
/// up to five minutes, one entry per redelivery the max deliver allows (at most 8). A router
/// that crashes leaves its messages to be redelivered after the ack wait; a message that
/// crashes routers again and again is retried less and less often until max deliver ends it.
pub fn redelivery_backoff(ack_wait: Duration, max_deliver: i64) -> Vec<Duration> {
    let cap = Duration::from_secs(300).max(ack_wait);
    let entries = usize::try_from(max_deliver.saturating_sub(1))
        .unwrap_or(0)
        .min(8);
    let mut delay = ack_wait;
    (0..entries)
        .map(|_| {
            let current = delay.min(cap);
            delay = delay.saturating_mul(2);
            current
        })
        .collect()
}

/// The delay before redelivering a message delivered `delivered` times, following `backoff`
/// (the last entry repeats), or `ack_wait` without one.
pub fn redelivery_delay(backoff: &[Duration], ack_wait: Duration, delivered: u64) -> Duration {
    let index = usize::try_from(delivered.saturating_sub(1)).unwrap_or(usize::MAX);
    backoff
        .get(index)
        .or(backoff.last())
        .copied()
        .unwrap_or(ack_wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_ack_wait_and_fits_max_deliver() {
        let s = Duration::from_secs;
        assert_eq!(redelivery_backoff(s(30), 1), Vec::<Duration>::new());
        assert_eq!(redelivery_backoff(s(30), 4), [s(30), s(60), s(120)]);
        assert_eq!(redelivery_backoff(s(200), 100).len(), 8);
        assert!(redelivery_backoff(s(200), 100).iter().all(|d| *d <= s(300)));
        let b = redelivery_backoff(s(1), 3);
        assert_eq!(redelivery_delay(&b, s(1), 1), s(1));
        assert_eq!(redelivery_delay(&b, s(1), 2), s(2));
        assert_eq!(redelivery_delay(&b, s(1), 9), s(2));
        assert_eq!(redelivery_delay(&[], s(7), 3), s(7));
    }
}
