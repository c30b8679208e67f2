//! Forwarding events to the edges that hold interested sockets.
//!
//! [`EdgeClient`] delivers one batch to one edge ([`grpc`] is the tonic adapter with its
//! channel pool and [`stream`] its long-lived delivery stream per edge). Policy lives here, independent of the transport: [`edge`] batches events per
//! edge in ordered lanes with a bounded backlog, [`health`] is the edge's one state
//! (healthy, failing since T, unreachable) that decides when its events wait and when they
//! fail fast, and [`registry`] keeps one [`edge::Edge`] per pod.

pub mod edge;
pub mod grpc;
pub mod health;
pub mod registry;
pub mod stream;

use bytes::Bytes;
use daisi_domain::PodId;
use daisi_domain::subject::DeliveryTarget;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// An event ready to be delivered, shared by every edge it goes to.
#[derive(Debug, Clone)]
pub struct OutEvent {
    /// JetStream stream sequence (the edges' de-duplication key).
    pub stream_sequence: u64,
    /// The NATS subject.
    pub subject: String,
    /// Who receives it on an edge.
    pub target: DeliveryTarget,
    /// `event_type` derived from the subject.
    pub event_type: String,
    /// The payload as published.
    pub payload: Bytes,
    /// `X-Request-ID` of the NATS message.
    pub request_id: Option<String>,
    /// Trace context to continue on the edge: the router's span for this event when traces
    /// are exported, else the publisher's context unchanged.
    pub traceparent: Option<String>,
    /// W3C `tracestate` accompanying `traceparent`.
    pub tracestate: Option<String>,
    /// When the stream stored it.
    pub published_at: Option<SystemTime>,
    /// The stream's incarnation (creation time in Unix nanoseconds; 0 unknown): with
    /// `stream_sequence`, the event's position for `json.v2` clients.
    pub stream_epoch: u64,
}

impl OutEvent {
    /// Rough encoded size, to keep a `Deliver` request under its byte limit.
    pub fn encoded_len(&self) -> usize {
        self.payload.len()
            + self.subject.len()
            + self.event_type.len()
            + self.target.company.as_str().len()
            + self.target.agent.as_str().len()
            + self.request_id.as_ref().map_or(0, String::len)
            + self.traceparent.as_ref().map_or(0, String::len)
            + self.tracestate.as_ref().map_or(0, String::len)
            + 64
    }
}

/// What an edge did with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// Handed to this many local sockets (0 is normal: nobody there wants it any more).
    Delivered(u32),
    /// Already delivered earlier (a retry or a redelivery).
    Duplicate,
    /// Refused as malformed: a definite answer, never retried.
    Rejected(String),
}

/// A `Deliver` call failed as a whole.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliverError {
    /// Unreachable, overloaded, shutting down or too slow: retry with backoff.
    #[error("edge unavailable: {0}")]
    Unavailable(String),
    /// The address now belongs to another pod: resolve the pod again.
    #[error("wrong pod at this address: {0}")]
    WrongPod(String),
    /// A definite refusal of the whole call (invalid request): never retried.
    #[error("edge refused the batch: {0}")]
    Refused(String),
}

/// One `Deliver` call.
#[derive(Debug)]
pub struct DeliverCall<'a> {
    /// The pod we believe listens at `address`.
    pub pod: &'a PodId,
    /// Its delivery endpoint.
    pub address: &'a str,
    /// The events, in the order their sockets must see them.
    pub events: &'a [Arc<OutEvent>],
    /// This router replica, for the edge's logs.
    pub router_id: &'a str,
}

/// A gap notice: events given up on for a pod.
#[derive(Debug)]
pub struct GapNotice<'a> {
    /// The pod we believe listens at `address`.
    pub pod: &'a PodId,
    /// Its delivery endpoint.
    pub address: &'a str,
    /// This router replica, for the edge's logs.
    pub router_id: &'a str,
    /// Events settled without delivery since the previous notice.
    pub given_up: u64,
}

/// Delivers batches of events to edges.
pub trait EdgeClient: Send + Sync + 'static {
    /// One attempt: per-event outcomes in request order, or why the call as a whole failed.
    fn deliver(
        &self,
        call: DeliverCall<'_>,
    ) -> impl Future<Output = Result<Vec<EventOutcome>, DeliverError>> + Send;

    /// Whether the edge at `address` answers a health probe within `timeout` (any answer
    /// counts: a frozen or unreachable edge gives none).
    fn probe(&self, address: &str, timeout: Duration) -> impl Future<Output = bool> + Send;

    /// The edge at `address` is no longer used: release its connections.
    fn forget(&self, address: &str);

    /// Tells the edge that events for it were given up, so its sockets learn they may have
    /// missed some. Clients without gap notices (test doubles) accept and drop them.
    fn notice_gap(
        &self,
        notice: GapNotice<'_>,
    ) -> impl Future<Output = Result<(), DeliverError>> + Send {
        let _ = notice;
        async { Ok(()) }
    }
}
