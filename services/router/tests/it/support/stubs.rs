//! Test doubles of the router's gRPC peers, served on 127.0.0.1:0: a coordinator answering
//! `LookupRoutes` and `ResolvePods` from routes the test sets, and an edge recording every
//! event it receives (with de-duplication by stream sequence, like a real edge).
//! Shared by the integration tests and the benchmark (`#[path]` include).
#![allow(dead_code, clippy::unwrap_used)]

use daisi_proto::coordinator::v1 as cpb;
use daisi_proto::coordinator::v1::pod_service_server::{PodService, PodServiceServer};
use daisi_proto::coordinator::v1::route_service_server::{RouteService, RouteServiceServer};
use daisi_proto::edge::v1 as epb;
use daisi_proto::edge::v1::edge_delivery_server::{EdgeDelivery, EdgeDeliveryServer};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// A server task on a local port; aborted on drop.
pub struct Served {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Served {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections. Established HTTP/2 connections live in their own tasks
    /// and survive; pair with [`Edge::set_unavailable`] to make a pod look dead.
    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(router: tonic::transport::server::Router, addr: Option<SocketAddr>) -> Served {
    let listener = TcpListener::bind(addr.unwrap_or(([127, 0, 0, 1], 0).into()))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = router
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    Served { addr, task }
}

// ------------------------------------------------------------------------------------------
// Coordinator

#[derive(Default)]
struct CoordinatorState {
    /// Route key ("agent:c:a", "chat:c:a:x", "admins:c:a" with "" wildcards) -> pods.
    routes: HashMap<String, BTreeSet<String>>,
    /// Registered pods -> delivery address.
    pods: HashMap<String, String>,
    down: bool,
    lookups: usize,
    resolves: usize,
}

/// A coordinator whose routes the test writes directly.
#[derive(Clone, Default)]
pub struct Coordinator {
    state: Arc<Mutex<CoordinatorState>>,
}

impl Coordinator {
    pub fn add_pod(&self, pod: &str, address: &str) {
        self.state
            .lock()
            .unwrap()
            .pods
            .insert(pod.into(), address.into());
    }

    /// The pod's lease lapsed: it is gone with its routes.
    pub fn remove_pod(&self, pod: &str) {
        let mut s = self.state.lock().unwrap();
        s.pods.remove(pod);
        for pods in s.routes.values_mut() {
            pods.remove(pod);
        }
    }

    fn add_route(&self, key: String, pod: &str) {
        self.state
            .lock()
            .unwrap()
            .routes
            .entry(key)
            .or_default()
            .insert(pod.into());
    }

    pub fn subscribe_agent(&self, pod: &str, company: &str, agent: &str) {
        self.add_route(format!("agent:{company}:{agent}"), pod);
    }

    pub fn subscribe_chat(&self, pod: &str, company: &str, agent: &str, chat: &str) {
        self.add_route(format!("chat:{company}:{agent}:{chat}"), pod);
    }

    /// Admin route with a filter ("" matches anything).
    pub fn subscribe_admins(&self, pod: &str, company: &str, agent: &str) {
        self.add_route(format!("admins:{company}:{agent}"), pod);
    }

    /// While down, every call fails with UNAVAILABLE.
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    pub fn lookups(&self) -> usize {
        self.state.lock().unwrap().lookups
    }

    pub async fn serve(&self) -> Served {
        serve(
            tonic::transport::Server::builder()
                .add_service(RouteServiceServer::new(self.clone()))
                .add_service(PodServiceServer::new(self.clone())),
            None,
        )
        .await
    }

    fn pods_for(s: &CoordinatorState, q: &cpb::RouteQuery) -> Vec<String> {
        use cpb::route_query::Target;
        let get = |k: String| s.routes.get(&k).cloned().unwrap_or_default();
        let pods: BTreeSet<String> = match &q.target {
            Some(Target::Agent(a)) => get(format!("agent:{}:{}", a.company_id, a.agent_id)),
            Some(Target::Chat(c)) => get(format!(
                "chat:{}:{}:{}",
                c.company_id, c.agent_id, c.chat_id
            )),
            Some(Target::Admins(a)) => s
                .routes
                .iter()
                .filter(|(k, _)| {
                    let parts: Vec<&str> = k.split(':').collect();
                    parts.len() == 3
                        && parts[0] == "admins"
                        && (parts[1].is_empty() || parts[1] == a.company_id)
                        && (parts[2].is_empty() || parts[2] == a.agent_id)
                })
                .flat_map(|(_, pods)| pods.iter().cloned())
                .collect(),
            None => BTreeSet::new(),
        };
        pods.into_iter()
            .filter(|p| s.pods.contains_key(p))
            .collect()
    }
}

#[tonic::async_trait]
impl RouteService for Coordinator {
    async fn register_routes(
        &self,
        _: Request<cpb::RegisterRoutesRequest>,
    ) -> Result<Response<cpb::RegisterRoutesResponse>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn unregister_routes(
        &self,
        _: Request<cpb::UnregisterRoutesRequest>,
    ) -> Result<Response<cpb::UnregisterRoutesResponse>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn list_pod_routes(
        &self,
        _: Request<cpb::ListPodRoutesRequest>,
    ) -> Result<Response<cpb::ListPodRoutesResponse>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn lookup_routes(
        &self,
        request: Request<cpb::LookupRoutesRequest>,
    ) -> Result<Response<cpb::LookupRoutesResponse>, Status> {
        let mut s = self.state.lock().unwrap();
        if s.down {
            return Err(Status::unavailable("stub coordinator down"));
        }
        s.lookups += 1;
        let queries = request.into_inner().queries;
        if queries.len() > daisi_proto::limits::MAX_LOOKUP_BATCH {
            return Err(Status::invalid_argument("too many queries"));
        }
        let results: Vec<cpb::RouteLookupResult> = queries
            .iter()
            .map(|q| cpb::RouteLookupResult {
                pod_ids: Self::pods_for(&s, q),
            })
            .collect();
        let named: BTreeSet<&String> = results.iter().flat_map(|r| r.pod_ids.iter()).collect();
        let pods = named
            .into_iter()
            .map(|id| cpb::PodInfo {
                pod_id: id.clone(),
                delivery_address: s.pods.get(id).cloned().unwrap_or_default(),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(cpb::LookupRoutesResponse { results, pods }))
    }
}

#[tonic::async_trait]
impl PodService for Coordinator {
    async fn heartbeat(
        &self,
        _: Request<cpb::HeartbeatRequest>,
    ) -> Result<Response<cpb::HeartbeatResponse>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn deregister(
        &self,
        _: Request<cpb::DeregisterRequest>,
    ) -> Result<Response<cpb::DeregisterResponse>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn resolve_pods(
        &self,
        request: Request<cpb::ResolvePodsRequest>,
    ) -> Result<Response<cpb::ResolvePodsResponse>, Status> {
        let mut s = self.state.lock().unwrap();
        if s.down {
            return Err(Status::unavailable("stub coordinator down"));
        }
        s.resolves += 1;
        let mut response = cpb::ResolvePodsResponse::default();
        for id in request.into_inner().pod_ids {
            match s.pods.get(&id) {
                Some(address) => response.pods.push(cpb::PodInfo {
                    pod_id: id,
                    delivery_address: address.clone(),
                    ..Default::default()
                }),
                None => response.unknown_pod_ids.push(id),
            }
        }
        Ok(Response::new(response))
    }
}

// ------------------------------------------------------------------------------------------
// Edge

/// One event as an edge received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub sequence: u64,
    pub subject: String,
    pub event_type: String,
    pub company: String,
    pub agent: String,
    pub scope: i32,
    pub chat: String,
    pub payload: Vec<u8>,
    pub request_id: String,
    pub traceparent: String,
    /// `traceparent` of the call's metadata.
    pub call_traceparent: String,
    /// Whether the edge had seen the sequence before (answered DUPLICATE).
    pub duplicate: bool,
}

#[derive(Default)]
struct EdgeState {
    received: Vec<Received>,
    seen: HashSet<u64>,
    calls: usize,
    batch_sizes: Vec<usize>,
    unavailable: bool,
    delay: Option<Duration>,
    reject_subject_containing: Option<String>,
    /// Only count, do not keep events (benchmarks).
    count_only: bool,
    count: usize,
    /// Answers UNIMPLEMENTED to `DeliverStream`, like an edge older than it.
    unary_only: bool,
    /// `DeliverStream` calls received (refused ones included).
    streams: usize,
    /// Unary `Deliver` calls received.
    unary_calls: usize,
    /// Answers nothing (deliveries on either path, health checks) while set.
    frozen: bool,
}

/// An edge pod recording deliveries.
#[derive(Clone)]
pub struct Edge {
    pub pod: String,
    state: Arc<Mutex<EdgeState>>,
    changed: Arc<Notify>,
}

impl Edge {
    pub fn new(pod: &str) -> Self {
        Self {
            pod: pod.into(),
            state: Arc::default(),
            changed: Arc::default(),
        }
    }

    /// An edge that only counts events (for benchmarks).
    pub fn counting(pod: &str) -> Self {
        let edge = Self::new(pod);
        edge.state.lock().unwrap().count_only = true;
        edge
    }

    pub async fn serve(&self) -> Served {
        self.serve_at(None).await
    }

    /// Serves on a given address (to come back on the same port after a kill).
    pub async fn serve_at(&self, addr: Option<SocketAddr>) -> Served {
        serve(
            tonic::transport::Server::builder()
                .add_service(
                    EdgeDeliveryServer::new(self.clone())
                        .max_decoding_message_size(daisi_proto::limits::EDGE_MAX_DECODING_BYTES),
                )
                .add_service(HealthServer::new(self.clone())),
            addr,
        )
        .await
    }

    /// While set, `DeliverStream` is answered UNIMPLEMENTED (an edge older than it).
    pub fn set_unary_only(&self, unary_only: bool) {
        self.state.lock().unwrap().unary_only = unary_only;
    }

    /// While set, nothing is answered: deliveries (unary or on a stream) and health checks
    /// wait (at most a minute).
    pub fn set_frozen(&self, frozen: bool) {
        self.state.lock().unwrap().frozen = frozen;
    }

    /// `DeliverStream` calls received, refused ones included.
    pub fn streams(&self) -> usize {
        self.state.lock().unwrap().streams
    }

    /// Unary `Deliver` calls received.
    pub fn unary_calls(&self) -> usize {
        self.state.lock().unwrap().unary_calls
    }

    /// Waits while frozen, at most a minute.
    async fn thaw(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.state.lock().unwrap().frozen && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// While set, every call fails with UNAVAILABLE.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.state.lock().unwrap().unavailable = unavailable;
    }

    /// Every call takes this long (a slow edge keeps messages in flight).
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.state.lock().unwrap().delay = delay;
    }

    /// Events whose subject contains `needle` are answered REJECTED.
    pub fn reject_subjects_containing(&self, needle: &str) {
        self.state.lock().unwrap().reject_subject_containing = Some(needle.into());
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Events accepted (first receipts and duplicates).
    pub fn count(&self) -> usize {
        self.state.lock().unwrap().count
    }

    /// Distinct stream sequences received.
    pub fn distinct(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }

    pub fn calls(&self) -> usize {
        self.state.lock().unwrap().calls
    }

    pub fn batch_sizes(&self) -> Vec<usize> {
        self.state.lock().unwrap().batch_sizes.clone()
    }

    /// Waits until `n` distinct events arrived, or `timeout`; returns the distinct count.
    pub async fn wait_distinct(&self, n: usize, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            let have = self.distinct();
            if have >= n {
                return have;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.distinct();
            }
        }
    }
}

#[tonic::async_trait]
impl EdgeDelivery for Edge {
    async fn notice_gap(
        &self,
        _request: Request<epb::NoticeGapRequest>,
    ) -> Result<Response<epb::NoticeGapResponse>, Status> {
        Ok(Response::new(epb::NoticeGapResponse {}))
    }

    async fn deliver(
        &self,
        request: Request<epb::DeliverRequest>,
    ) -> Result<Response<epb::DeliverResponse>, Status> {
        let call_traceparent = traceparent_of(&request);
        self.state.lock().unwrap().unary_calls += 1;
        self.handle(request.into_inner(), call_traceparent)
            .await
            .map(Response::new)
    }

    type DeliverStreamStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<epb::DeliverResponse, Status>> + Send>,
    >;

    async fn deliver_stream(
        &self,
        request: Request<tonic::Streaming<epb::DeliverRequest>>,
    ) -> Result<Response<Self::DeliverStreamStream>, Status> {
        {
            let mut s = self.state.lock().unwrap();
            s.streams += 1;
            if s.unary_only {
                return Err(Status::unimplemented("stub edge without DeliverStream"));
            }
        }
        let call_traceparent = traceparent_of(&request);
        let state = (self.clone(), request.into_inner(), call_traceparent, false);
        let answers = futures_util::stream::unfold(
            state,
            |(edge, mut requests, call_traceparent, ended)| async move {
                if ended {
                    return None;
                }
                let answer = match requests.message().await {
                    Ok(Some(request)) => edge.handle(request, call_traceparent.clone()).await,
                    Ok(None) => return None,
                    Err(status) => Err(status),
                };
                let ended = answer.is_err();
                Some((answer, (edge, requests, call_traceparent, ended)))
            },
        );
        Ok(Response::new(Box::pin(answers)))
    }
}

fn traceparent_of<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tonic::async_trait]
impl Health for Edge {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.thaw().await;
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving.into(),
        }))
    }

    type WatchStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<HealthCheckResponse, Status>> + Send>,
    >;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("stub edge: no watch"))
    }
}

impl Edge {
    /// One batch, on either path.
    async fn handle(
        &self,
        request: epb::DeliverRequest,
        call_traceparent: String,
    ) -> Result<epb::DeliverResponse, Status> {
        self.thaw().await;
        let delay = self.state.lock().unwrap().delay;
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let results = {
            let mut s = self.state.lock().unwrap();
            if s.unavailable {
                return Err(Status::unavailable("stub edge unavailable"));
            }
            if request.pod_id != self.pod {
                return Err(Status::failed_precondition(format!(
                    "this is {}, not {}",
                    self.pod, request.pod_id
                )));
            }
            s.calls += 1;
            s.batch_sizes.push(request.events.len());
            let mut results = Vec::with_capacity(request.events.len());
            for e in request.events {
                if let Some(needle) = &s.reject_subject_containing
                    && e.subject.contains(needle.as_str())
                {
                    results.push(epb::EventResult {
                        stream_sequence: e.stream_sequence,
                        outcome: epb::EventOutcome::Rejected.into(),
                        sockets_reached: 0,
                        reject_reason: "stub rejects it".into(),
                    });
                    continue;
                }
                let duplicate = !s.seen.insert(e.stream_sequence);
                s.count += 1;
                if !s.count_only {
                    let target = e.target.clone().unwrap_or_default();
                    s.received.push(Received {
                        sequence: e.stream_sequence,
                        subject: e.subject,
                        event_type: e.event_type,
                        company: target.company_id,
                        agent: target.agent_id,
                        scope: target.scope,
                        chat: target.chat_id,
                        payload: e.payload,
                        request_id: e.request_id,
                        traceparent: e.traceparent,
                        call_traceparent: call_traceparent.clone(),
                        duplicate,
                    });
                }
                results.push(epb::EventResult {
                    stream_sequence: e.stream_sequence,
                    outcome: if duplicate {
                        epb::EventOutcome::Duplicate
                    } else {
                        epb::EventOutcome::Delivered
                    }
                    .into(),
                    sockets_reached: 1,
                    reject_reason: String::new(),
                });
            }
            results
        };
        self.changed.notify_waiters();
        Ok(epb::DeliverResponse { results })
    }
}
