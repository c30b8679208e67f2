//! `EdgeDelivery.Deliver` over tonic: a small pool of HTTP/2 channels per edge address
//! (one channel multiplexes every call over one TCP connection; a few spread the work of a
//! busy edge), a deadline per call, trace context in the call's metadata, and the health
//! probe (`grpc.health.v1`) of a failing edge.

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
use std::sync::atomic::{AtomicUsize, Ordering};
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
        });
        pools.insert(address.to_owned(), pool.clone());
        Ok(pool)
    }
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

fn error(status: &tonic::Status) -> DeliverError {
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
        let index = pool.next.fetch_add(1, Ordering::Relaxed) % pool.clients.len();
        let mut client = pool.clients[index].clone();
        let mut request = tonic::Request::new(pb::DeliverRequest {
            pod_id: call.pod.as_str().to_owned(),
            events: call.events.iter().map(|e| event(e)).collect(),
            router_id: call.router_id.to_owned(),
        });
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
        if response.results.len() != call.events.len() {
            return Err(DeliverError::Unavailable(format!(
                "edge answered {} results for {} events",
                response.results.len(),
                call.events.len()
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
        // The channel deliveries use next: a frozen edge holds that connection silent.
        let index = pool.next.load(Ordering::Relaxed) % pool.channels.len();
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
