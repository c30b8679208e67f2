//! `EdgeDelivery` over tonic: batches go on one long-lived `DeliverStream` per edge
//! ([`super::stream`]), or as unary `Deliver` calls to an edge that does not serve the stream
//! (an older version) or when the stream's backlog is full; a small pool of HTTP/2 channels per
//! edge address for the unary calls (one channel multiplexes every call over one TCP
//! connection; a few spread the work of a busy edge), a deadline per batch, trace context in a
//! unary call's metadata (on the stream every event carries its own), and the health probe
//! (`grpc.health.v1`) of a failing edge, on the channel that carries the stream.

use super::stream::{DeliveryStream, StreamFailure};
use super::{DeliverCall, DeliverError, EdgeClient, EventOutcome, GapNotice, OutEvent};
use daisi_domain::subject::Scope;
use daisi_proto::edge::v1 as pb;
use daisi_proto::edge::v1::edge_delivery_client::EdgeDeliveryClient;
use daisi_proto::limits::EDGE_MAX_DECODING_BYTES;
use daisi_runtime::internal::ClientAuth;
use daisi_telemetry::propagation::{inject_grpc, set_request_id_grpc};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[derive(Debug)]
struct Pool {
    channels: Vec<Channel>,
    clients: Vec<EdgeDeliveryClient<InterceptedService<Channel, ClientAuth>>>,
    next: AtomicUsize,
    /// The delivery stream (on the first channel), once opened.
    stream: Mutex<Option<Arc<DeliveryStream>>>,
    /// The edge answered UNIMPLEMENTED to the stream: unary calls only.
    unary_only: Arc<AtomicBool>,
}

impl Pool {
    /// Queues `request` on the open stream (opening one if there is none or it ended); the
    /// request comes back when the stream's backlog is full.
    #[allow(clippy::type_complexity)]
    fn send_on_stream(
        &self,
        request: pb::DeliverRequest,
    ) -> Result<
        (
            Arc<DeliveryStream>,
            tokio::sync::oneshot::Receiver<Result<pb::DeliverResponse, StreamFailure>>,
        ),
        pb::DeliverRequest,
    > {
        let mut slot = self.stream.lock();
        let mut request = request;
        // A stream found closed is replaced once; a fresh one refuses only when full.
        for _ in 0..2 {
            let stream = match slot.as_ref() {
                Some(stream) if !stream.is_closed() => stream.clone(),
                _ => {
                    let stream = Arc::new(DeliveryStream::open(
                        self.clients[0].clone(),
                        self.unary_only.clone(),
                    ));
                    *slot = Some(stream.clone());
                    stream
                }
            };
            match stream.send(request) {
                Ok(answer) => return Ok((stream, answer)),
                Err(back) => request = back,
            }
        }
        Err(request)
    }

    /// Closes `stream` and forgets it, unless a newer one replaced it already.
    fn reset_stream(&self, stream: &Arc<DeliveryStream>) {
        stream.close();
        let mut slot = self.stream.lock();
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, stream)) {
            *slot = None;
        }
    }
}

/// Closes the stream of a batch that got no answer (deadline, or the caller gave up, as the
/// lanes do when the edge does not answer a probe): the next batch opens a fresh stream rather
/// than queue behind a silent one.
struct Unanswered<'a> {
    pool: &'a Pool,
    stream: Option<Arc<DeliveryStream>>,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            self.pool.reset_stream(&stream);
        }
    }
}

/// The tonic [`EdgeClient`].
#[derive(Debug)]
pub struct GrpcEdgeClient {
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    channels_per_edge: usize,
    timeout: Duration,
    /// The router's credentials (TLS client certificate, bearer token).
    auth: ClientAuth,
}

impl GrpcEdgeClient {
    /// A client keeping `channels_per_edge` channels per edge, each call bounded by `timeout`.
    /// Calls carry `auth`.
    pub fn new(channels_per_edge: usize, timeout: Duration, auth: ClientAuth) -> Self {
        Self {
            pools: Mutex::new(HashMap::new()),
            channels_per_edge: channels_per_edge.max(1),
            timeout,
            auth,
        }
    }

    fn pool(&self, address: &str) -> Result<Arc<Pool>, DeliverError> {
        let mut pools = self.pools.lock();
        if let Some(pool) = pools.get(address) {
            return Ok(pool.clone());
        }
        let endpoint = Endpoint::from_shared(address.to_owned())
            .map_err(|e| DeliverError::Refused(format!("invalid edge address: {e}")))?
            .connect_timeout(self.timeout.min(Duration::from_secs(2)))
            .timeout(self.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .http2_adaptive_window(true);
        let channels: Vec<Channel> = (0..self.channels_per_edge)
            .map(|_| self.auth.connect_lazy(&endpoint))
            .collect();
        let clients = channels
            .iter()
            .map(|channel| {
                EdgeDeliveryClient::with_interceptor(channel.clone(), self.auth.clone())
                    .max_encoding_message_size(EDGE_MAX_DECODING_BYTES)
            })
            .collect();
        let pool = Arc::new(Pool {
            channels,
            clients,
            next: AtomicUsize::new(0),
            stream: Mutex::new(None),
            unary_only: Arc::new(AtomicBool::new(false)),
        });
        pools.insert(address.to_owned(), pool.clone());
        Ok(pool)
    }
}

impl GrpcEdgeClient {
    async fn deliver_unary(
        &self,
        pool: &Pool,
        call: &DeliverCall<'_>,
        request: pb::DeliverRequest,
    ) -> Result<Vec<EventOutcome>, DeliverError> {
        let index = pool.next.fetch_add(1, Ordering::Relaxed) % pool.clients.len();
        let mut client = pool.clients[index].clone();
        let mut request = tonic::Request::new(request);
        let metadata = request.metadata_mut();
        inject_grpc(metadata);
        // Without trace export the router's span has no context: continue the publisher's.
        if metadata.get("traceparent").is_none()
            && let Some(first) = call.events.first()
        {
            for (key, value) in [
                ("traceparent", &first.traceparent),
                ("tracestate", &first.tracestate),
            ] {
                if let Some(value) = value
                    && let Ok(value) = MetadataValue::try_from(value.as_str())
                {
                    metadata.insert(key, value);
                }
            }
        }
        if let Some(first) = call.events.first().and_then(|e| e.request_id.as_deref())
            && call
                .events
                .iter()
                .all(|e| e.request_id.as_deref() == Some(first))
        {
            set_request_id_grpc(metadata, first);
        }
        let response = client
            .deliver(request)
            .await
            .map_err(|s| error(&s))?
            .into_inner();
        outcomes(response, call.events.len())
    }
}

/// The per-event outcomes of an answer to `sent` events.
fn outcomes(response: pb::DeliverResponse, sent: usize) -> Result<Vec<EventOutcome>, DeliverError> {
    if response.results.len() != sent {
        return Err(DeliverError::Unavailable(format!(
            "edge answered {} results for {sent} events",
            response.results.len(),
        )));
    }
    Ok(response
        .results
        .into_iter()
        .map(|r| match pb::EventOutcome::try_from(r.outcome) {
            Ok(pb::EventOutcome::Duplicate) => EventOutcome::Duplicate,
            Ok(pb::EventOutcome::Rejected) => {
                EventOutcome::Rejected(if r.reject_reason.is_empty() {
                    "rejected by the edge".to_owned()
                } else {
                    r.reject_reason
                })
            }
            // Unspecified or unknown values count as delivered: the edge took the event
            // and has nothing more specific to say (proto rule: treat unknown as unspecified).
            _ => EventOutcome::Delivered(r.sockets_reached),
        })
        .collect())
}

fn event(e: &OutEvent) -> pb::Event {
    let (scope, chat_id) = match &e.target.scope {
        Scope::Agent => (pb::DeliveryScope::AgentUsers, String::new()),
        Scope::Chat(chat) => (pb::DeliveryScope::ChatUsers, chat.as_str().to_owned()),
        Scope::AgentAndAdmins => (pb::DeliveryScope::AgentUsersAndAdmins, String::new()),
    };
    pb::Event {
        stream_sequence: e.stream_sequence,
        subject: e.subject.clone(),
        target: Some(pb::Target {
            company_id: e.target.company.as_str().to_owned(),
            agent_id: e.target.agent.as_str().to_owned(),
            scope: scope.into(),
            chat_id,
        }),
        event_type: e.event_type.clone(),
        payload: e.payload.to_vec(),
        request_id: e.request_id.clone().unwrap_or_default(),
        traceparent: e.traceparent.clone().unwrap_or_default(),
        tracestate: e.tracestate.clone().unwrap_or_default(),
        stream_epoch: e.stream_epoch,
        published_at: e.published_at.and_then(|t| {
            let since = t.duration_since(UNIX_EPOCH).ok()?;
            Some(prost_types::Timestamp {
                seconds: i64::try_from(since.as_secs()).ok()?,
                nanos: i32::try_from(since.subsec_nanos()).ok()?,
            })
        }),
    }
}

pub(super) fn error(status: &tonic::Status) -> DeliverError {
    use tonic::Code;
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::FailedPrecondition => DeliverError::WrongPod(message),
        Code::InvalidArgument
        | Code::Unimplemented
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::NotFound
        | Code::AlreadyExists
        | Code::OutOfRange => DeliverError::Refused(message),
        // Unavailable, DeadlineExceeded, ResourceExhausted, Cancelled, Aborted, Unknown (how
        // transport failures surface), Internal, DataLoss: not a definite answer.
        _ => DeliverError::Unavailable(message),
    }
}

impl EdgeClient for GrpcEdgeClient {
    async fn deliver(&self, call: DeliverCall<'_>) -> Result<Vec<EventOutcome>, DeliverError> {
        let pool = self.pool(call.address)?;
        let request = pb::DeliverRequest {
            pod_id: call.pod.as_str().to_owned(),
            events: call.events.iter().map(|e| event(e)).collect(),
            router_id: call.router_id.to_owned(),
        };
        let request = if pool.unary_only.load(Ordering::Acquire) {
            request
        } else {
            match pool.send_on_stream(request) {
                Ok((stream, answer)) => {
                    let mut unanswered = Unanswered {
                        pool: &pool,
                        stream: Some(stream),
                    };
                    match tokio::time::timeout(self.timeout, answer).await {
                        Ok(Ok(Ok(response))) => {
                            unanswered.stream = None;
                            return outcomes(response, call.events.len());
                        }
                        Ok(Ok(Err(StreamFailure::Failed(error)))) => return Err(error),
                        Ok(Err(_dropped)) => {
                            return Err(DeliverError::Unavailable(
                                "the delivery stream ended".to_owned(),
                            ));
                        }
                        Err(_elapsed) => {
                            return Err(DeliverError::Unavailable(format!(
                                "no answer on the delivery stream within {:?}",
                                self.timeout
                            )));
                        }
                        Ok(Ok(Err(StreamFailure::Unimplemented))) => {
                            // An older edge: this batch and the next go as unary calls.
                            unanswered.stream = None;
                            pb::DeliverRequest {
                                pod_id: call.pod.as_str().to_owned(),
                                events: call.events.iter().map(|e| event(e)).collect(),
                                router_id: call.router_id.to_owned(),
                            }
                        }
                    }
                }
                // The stream's backlog is full: this batch goes as a call of its own.
                Err(request) => request,
            }
        };
        self.deliver_unary(&pool, &call, request).await
    }

    async fn notice_gap(&self, notice: GapNotice<'_>) -> Result<(), DeliverError> {
        let pool = self.pool(notice.address)?;
        let index = pool.next.fetch_add(1, Ordering::Relaxed) % pool.clients.len();
        let mut client = pool.clients[index].clone();
        client
            .notice_gap(pb::NoticeGapRequest {
                pod_id: notice.pod.as_str().to_owned(),
                router_id: notice.router_id.to_owned(),
                given_up: notice.given_up,
            })
            .await
            .map_err(|s| error(&s))?;
        Ok(())
    }

    async fn probe(&self, address: &str, timeout: Duration) -> bool {
        let Ok(pool) = self.pool(address) else {
            return false;
        };
        // The channel deliveries use next (the stream's is the first): a frozen edge holds
        // that connection silent.
        let index = if pool.unary_only.load(Ordering::Acquire) {
            pool.next.load(Ordering::Relaxed) % pool.channels.len()
        } else {
            0
        };
        let mut client = HealthClient::new(pool.channels[index].clone());
        match tokio::time::timeout(timeout, client.check(HealthCheckRequest::default())).await {
            Ok(Ok(_)) => true,
            // A status the edge itself returned (unknown service, ...) is an answer; the ones
            // tonic makes up for a broken transport are not.
            Ok(Err(status)) => !matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
                    | tonic::Code::DeadlineExceeded
            ),
            Err(_elapsed) => false,
        }
    }

    fn forget(&self, address: &str) {
        self.pools.lock().remove(address);
    }
}
