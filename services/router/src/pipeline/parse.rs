//! From a delivery to an event ready for the edges: the subject must follow the subject model
//! and the payload must be a JSON object (compat.md); anything else is a malformed message,
//! acknowledged and counted, never retried.

use super::ledger::Reason;
use crate::forward::OutEvent;
use crate::source::Delivery;
use crate::trace::event_headers;
use daisi_domain::event::inspect_payload;
use daisi_domain::subject::SubjectModel;
use std::hash::{DefaultHasher, Hash, Hasher};

/// A well-formed event.
#[derive(Debug)]
pub struct Parsed {
    /// What the edges receive.
    pub out: OutEvent,
    /// Hash of (company, agent): picks the ordered lane on every edge.
    pub key_hash: u64,
}

/// Parses `delivery` under `subjects`.
pub fn parse(subjects: &SubjectModel, delivery: &Delivery) -> Result<Parsed, Reason> {
    let subject = subjects
        .parse(&delivery.subject)
        .map_err(|e| Reason::MalformedSubject(e.to_string()))?;
    inspect_payload(&delivery.payload).map_err(|e| Reason::MalformedPayload(e.to_string()))?;
    let target = subject.target();
    // DefaultHasher::new() has fixed keys: the same key maps to the same lane everywhere.
    let mut hasher = DefaultHasher::new();
    target.company.hash(&mut hasher);
    target.agent.hash(&mut hasher);
    let (traceparent, tracestate) = event_headers(
        delivery.stream_sequence,
        delivery.trace.traceparent.as_deref(),
        delivery.trace.tracestate.as_deref(),
    );
    Ok(Parsed {
        key_hash: hasher.finish(),
        out: OutEvent {
            stream_sequence: delivery.stream_sequence,
            subject: delivery.subject.clone(),
            event_type: subject.event_type().to_owned(),
            target,
            payload: delivery.payload.clone(),
            request_id: delivery.trace.request_id.clone(),
            traceparent,
            tracestate,
            published_at: delivery.published_at,
            stream_epoch: delivery.stream_epoch,
        },
    })
}
