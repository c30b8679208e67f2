//! `daisi.edge.v1.EdgeDelivery`: routers hand the pod batches of events; each is checked,
//! de-duplicated by stream sequence, rendered once and queued to the matching local sockets.

pub mod dedup;
pub mod fanout;

use crate::state::Edge;
use daisi_domain::event::render_event_frame;
use daisi_domain::protocol::GapCause;
use daisi_proto::edge::v1 as pb;
use daisi_proto::limits;
use dedup::{Dedup, Seen};
use fanout::{Audience, EventFrames};
use futures_util::Stream;
use pb::edge_delivery_server::{EdgeDelivery, EdgeDeliveryServer};
use std::pin::Pin;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tonic::{Request, Response, Status, Streaming};

/// The delivery service of one edge.
#[derive(Debug, Clone)]
pub struct Delivery {
    edge: Edge,
    dedup: Arc<Dedup>,
}

/// The answers of a `DeliverStream`.
pub type DeliverResponses =
    Pin<Box<dyn Stream<Item = Result<pb::DeliverResponse, Status>> + Send + 'static>>;

impl Delivery {
    /// The service, ready to be added to the gRPC server.
    pub fn server(edge: Edge) -> EdgeDeliveryServer<Self> {
        let dedup = Dedup::new(edge.config.dedup_window);
        EdgeDeliveryServer::new(Self {
            edge,
            dedup: Arc::new(dedup),
        })
        .max_decoding_message_size(limits::EDGE_MAX_DECODING_BYTES)
    }

    /// One batch: checked as a whole, then every event delivered in order.
    fn deliver_batch(&self, request: &pb::DeliverRequest) -> Result<pb::DeliverResponse, Status> {
        if request.pod_id != self.edge.pod.pod.as_str() {
            return Err(Status::failed_precondition(format!(
                "this is pod {}, not {}",
                self.edge.pod.pod, request.pod_id
            )));
        }
        if request.events.len() > limits::MAX_DELIVER_BATCH {
            return Err(Status::invalid_argument(format!(
                "at most {} events per call, got {}",
                limits::MAX_DELIVER_BATCH,
                request.events.len()
            )));
        }
        let results = request
            .events
            .iter()
            .map(|event| self.deliver_one(event))
            .collect();
        Ok(pb::DeliverResponse { results })
    }

    fn deliver_one(&self, event: &pb::Event) -> pb::EventResult {
        let result = |outcome: pb::EventOutcome, reached: u32, reason: &str| pb::EventResult {
            stream_sequence: event.stream_sequence,
            outcome: outcome as i32,
            sockets_reached: reached,
            reject_reason: reason.to_owned(),
        };
        let audience = match audience(event) {
            Ok(audience) => audience,
            Err(reason) => {
                self.count("rejected");
                return result(pb::EventOutcome::Rejected, 0, &reason);
            }
        };
        let frame = match render_event_frame(&event.payload, &event.event_type) {
            Ok(frame) => Utf8Bytes::from(frame),
            Err(error) => {
                self.count("rejected");
                return result(pb::EventOutcome::Rejected, 0, &error.to_string());
            }
        };
        let seen = self.dedup.check(event.stream_sequence, event.stream_epoch);
        if seen == Seen::Repeat {
            self.count("duplicate");
            return result(pb::EventOutcome::Duplicate, 0, "");
        }
        self.count("delivered");
        let frames = EventFrames::new(frame, event.stream_sequence, event.stream_epoch);
        let reached = fanout::fan_out(&self.edge, &audience, &frames);
        if seen == Seen::Unsure {
            fanout::announce_gap(&self.edge, Some(&audience), GapCause::DedupOverflow);
        }
        result(pb::EventOutcome::Delivered, reached, "")
    }

    fn count(&self, outcome: &str) {
        self.edge
            .metrics
            .events_received
            .with_label_values(&[outcome])
            .inc();
    }
}

/// The sockets an event is for, or why it is malformed.
fn audience(event: &pb::Event) -> Result<Audience, String> {
    let target = event.target.as_ref().ok_or("event has no target")?;
    let company = target
        .company_id
        .parse()
        .map_err(|e| format!("target company_id: {e}"))?;
    let agent = target
        .agent_id
        .parse()
        .map_err(|e| format!("target agent_id: {e}"))?;
    if event.event_type.is_empty() {
        return Err("event_type is empty".to_owned());
    }
    match pb::DeliveryScope::try_from(target.scope) {
        Ok(pb::DeliveryScope::AgentUsers) => Ok(Audience::AgentUsers(company, agent)),
        Ok(pb::DeliveryScope::ChatUsers) => {
            let chat = target
                .chat_id
                .parse()
                .map_err(|e| format!("target chat_id: {e}"))?;
            Ok(Audience::ChatUsers(company, agent, chat))
        }
        Ok(pb::DeliveryScope::AgentUsersAndAdmins) => {
            Ok(Audience::AgentUsersAndAdmins(company, agent))
        }
        _ => Err(format!("unknown delivery scope {}", target.scope)),
    }
}

#[tonic::async_trait]
impl EdgeDelivery for Delivery {
    async fn deliver(
        &self,
        request: Request<pb::DeliverRequest>,
    ) -> Result<Response<pb::DeliverResponse>, Status> {
        self.deliver_batch(&request.into_inner()).map(Response::new)
    }

    type DeliverStreamStream = DeliverResponses;

    async fn deliver_stream(
        &self,
        request: Request<Streaming<pb::DeliverRequest>>,
    ) -> Result<Response<DeliverResponses>, Status> {
        // Each request is read and delivered when the previous answer was taken by the
        // transport, so the stream needs no task or buffer of its own and answers stay in
        // request order. After a whole-request error the stream ends. It also ends when the
        // sockets are stopped at shutdown: the server's graceful stop waits for open streams,
        // and a router keeps its stream open for as long as the edge answers.
        let state = (self.clone(), request.into_inner(), false);
        let answers =
            futures_util::stream::unfold(state, |(this, mut requests, ended)| async move {
                if ended {
                    return None;
                }
                let message = tokio::select! {
                    // The pod stops: end the stream, or the gRPC server's graceful stop waits
                    // for the router to hang up (a SIGTERMed edge never exited).
                    () = this.edge.sockets_stop.cancelled() => return None,
                    message = requests.message() => message,
                };
                let answer = match message {
                    Ok(Some(request)) => this.deliver_batch(&request),
                    Ok(None) => return None,
                    Err(status) => Err(status),
                };
                let ended = answer.is_err();
                Some((answer, (this, requests, ended)))
            });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn notice_gap(
        &self,
        request: Request<pb::NoticeGapRequest>,
    ) -> Result<Response<pb::NoticeGapResponse>, Status> {
        let request = request.into_inner();
        if request.pod_id != self.edge.pod.pod.as_str() {
            return Err(Status::failed_precondition(format!(
                "this is pod {}, not {}",
                self.edge.pod.pod, request.pod_id
            )));
        }
        if request.given_up > 0 {
            // A router settled events for this pod without delivering them while it could not
            // reach us: any socket may have missed some.
            tracing::warn!(router_id = %request.router_id, given_up = request.given_up, "a router gave up events for this pod; json.v2 sockets resync");
            fanout::announce_gap(&self.edge, None, GapCause::RouterGiveUp);
        }
        Ok(Response::new(pb::NoticeGapResponse {}))
    }
}
