//! The stream's history, read by recoveries of reconnecting `json.v2` sockets.
//!
//! [`jetstream`] is the one backend: an ephemeral *ordered consumer* filtered to the socket's
//! interest and starting right after the client's position. Ordered consumers deliver in
//! stream order without acks and recreate themselves on a sequence mismatch; the filter makes
//! the server skip other agents' events, so the replay costs what the socket missed, not what
//! the stream holds. (Direct gets would be one round trip per event, or per subject with
//! `next_by_subject`; measured slower, see docs/protocol.md.)
//!
//! Business code sees [`StreamState`] and [`HistoryEvent`], never an async-nats type.

pub mod jetstream;

use bytes::Bytes;
use std::time::SystemTime;

/// What the stream holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamState {
    /// The stream's incarnation (creation time in Unix nanoseconds), as routers stamp it.
    pub epoch: u64,
    /// Lowest sequence still stored.
    pub first_seq: u64,
    /// Last sequence assigned.
    pub last_seq: u64,
    /// The stream rewrites subjects (partitioned mode): stored subjects are not the published
    /// ones, and a replay filtered on published subjects would silently find nothing.
    pub transformed: bool,
}

/// One stored event.
#[derive(Debug, Clone)]
pub struct HistoryEvent {
    /// Stream sequence.
    pub seq: u64,
    /// Subject as published.
    pub subject: String,
    /// Payload as published.
    pub payload: Bytes,
    /// When the stream stored it.
    pub published_at: SystemTime,
    /// Messages after this one that the replay would still deliver (0: caught up).
    pub pending: u64,
}

/// Reading history failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("stream history unavailable: {0}")]
pub struct HistoryError(pub String);
