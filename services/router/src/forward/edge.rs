//! Delivery to one edge pod: ordered lanes, batching, retries, and giving up only when the
//! coordinator says the pod is gone (or after the unreachable grace).
//!
//! **Order.** Events of one (company, agent) always take the same lane (hash of the pair), and
//! a lane has at most one `Deliver` call in flight, retried until it settles before the next
//! batch goes. The edge hands the events of one call to each socket in request order, so a
//! socket sees the events of a key in the order the pipeline queued them, which is stream
//! order. Lanes run in parallel, so different keys do not wait for each other.
//!
//! **Batching.** A lane sends what is queued, up to the batch size and the request byte limit,
//! after waiting at most the batch delay for more: a busy edge gets large batches, an idle one
//! gets single events after a short delay.
//!
//! **Failures.** `UNAVAILABLE`, deadlines and other transient failures are retried with
//! jittered backoff behind the edge's [`Breaker`]; on every failure (at most once a second) the
//! coordinator is asked whether the pod is gone, or has moved to another address. Gone: the
//! batch and everything queued for the pod is settled as gone. A definite refusal (invalid
//! request) is never retried.

use super::breaker::{Breaker, BreakerState};
use super::{DeliverCall, DeliverError, EdgeClient, EventOutcome, OutEvent};
use crate::backoff::Backoff;
use crate::metrics::RouterMetrics;
use crate::pipeline::ledger::{EdgeOutcome, Tracker};
use crate::ratelog::RateLimit;
use crate::resolve::cache::RouteCache;
use crate::resolve::{PodStatus, RouteResolver};
use crate::trace::context_of;
use daisi_domain::PodId;
use daisi_proto::limits::MAX_DELIVER_REQUEST_BYTES;
use daisi_telemetry::propagation::set_parent;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Margin under the request byte limit for the request's own fields.
const REQUEST_OVERHEAD: usize = 16 * 1024;
/// Coordinator checks of a failing edge, at most one per this interval.
const RESOLVE_EVERY: Duration = Duration::from_secs(1);

/// How edges are fed.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// Most events per call.
    pub batch_max_events: usize,
    /// Longest wait for a batch to fill.
    pub batch_delay: Duration,
    /// Ordered lanes per edge.
    pub lanes: usize,
    /// Events held for an unreachable, still registered edge at most this long.
    pub unreachable_grace: Duration,
    /// This router replica (for the edge's logs).
    pub router_id: Arc<str>,
}

/// One event owed to one edge.
#[derive(Debug)]
pub struct Obligation {
    /// The event.
    pub event: Arc<OutEvent>,
    /// Told how the edge settled it.
    pub tracker: Arc<Tracker>,
}

struct Shared<C, R> {
    pod: PodId,
    address: Mutex<Arc<str>>,
    gone: AtomicBool,
    /// Obligations queued or in flight.
    pending: AtomicUsize,
    last_used: Mutex<Instant>,
    breaker: Breaker,
    client: Arc<C>,
    resolver: Arc<RouteCache<R>>,
    settings: EdgeSettings,
    metrics: RouterMetrics,
    logs: Arc<RateLimit>,
    stop: CancellationToken,
}

/// The router's handle on one edge pod; dropping it ends the lanes once they are drained.
pub struct Edge<C, R> {
    shared: Arc<Shared<C, R>>,
    lanes: Vec<mpsc::UnboundedSender<Obligation>>,
}

impl<C, R> std::fmt::Debug for Edge<C, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("pod", &self.shared.pod)
            .field("lanes", &self.lanes.len())
            .finish()
    }
}

impl<C: EdgeClient, R: RouteResolver> Edge<C, R> {
    /// Starts the lanes of `pod` at `address`.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        pod: PodId,
        address: Arc<str>,
        settings: EdgeSettings,
        client: Arc<C>,
        resolver: Arc<RouteCache<R>>,
        metrics: RouterMetrics,
        logs: Arc<RateLimit>,
        stop: CancellationToken,
    ) -> Self {
        let lanes = settings.lanes.max(1);
        let shared = Arc::new(Shared {
            pod,
            address: Mutex::new(address),
            gone: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
            last_used: Mutex::new(Instant::now()),
            breaker: Breaker::default(),
            client,
            resolver,
            settings,
            metrics,
            logs,
            stop,
        });
        shared.report_breaker();
        let lanes = (0..lanes)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(run_lane(shared.clone(), rx));
                tx
            })
            .collect();
        Self { shared, lanes }
    }

    /// Queues an obligation on the lane of `key_hash`.
    pub fn send(&self, key_hash: u64, obligation: Obligation) {
        let shared = &self.shared;
        if shared.gone.load(Ordering::Acquire) {
            shared
                .metrics
                .forwarded
                .with_label_values(&["pod_gone"])
                .inc();
            obligation.tracker.settle(EdgeOutcome::Gone);
            return;
        }
        *lock(&shared.last_used) = Instant::now();
        shared.pending.fetch_add(1, Ordering::AcqRel);
        let lane = usize::try_from(key_hash % self.lanes.len() as u64).unwrap_or(0);
        if let Err(mpsc::error::SendError(obligation)) = self.lanes[lane].send(obligation) {
            // The lane ended (shutdown): the message is handed back to the server.
            shared.pending.fetch_sub(1, Ordering::AcqRel);
            drop(obligation);
        }
    }

    /// The pod moved to `address` (the coordinator says so).
    pub fn set_address(&self, address: &Arc<str>) {
        let mut current = lock(&self.shared.address);
        if *current != *address {
            *current = address.clone();
        }
    }

    /// The current address.
    pub fn address(&self) -> Arc<str> {
        lock(&self.shared.address).clone()
    }

    /// Whether the coordinator reported the pod gone.
    pub fn is_gone(&self) -> bool {
        self.shared.gone.load(Ordering::Acquire)
    }

    /// Whether nothing is queued and nothing was sent for `idle`.
    pub fn is_idle(&self, idle: Duration) -> bool {
        self.shared.pending.load(Ordering::Acquire) == 0
            && lock(&self.shared.last_used).elapsed() >= idle
    }

    /// The pod id.
    pub fn pod(&self) -> &PodId {
        &self.shared.pod
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn run_lane<C: EdgeClient, R: RouteResolver>(
    shared: Arc<Shared<C, R>>,
    mut rx: mpsc::UnboundedReceiver<Obligation>,
) {
    let max_events = shared.settings.batch_max_events.max(1);
    let max_bytes = MAX_DELIVER_REQUEST_BYTES - REQUEST_OVERHEAD;
    let mut carry: Option<Obligation> = None;
    loop {
        let first = match carry.take() {
            Some(o) => o,
            None => tokio::select! {
                () = shared.stop.cancelled() => return,
                next = rx.recv() => match next {
                    Some(o) => o,
                    None => return,
                },
            },
        };
        let mut bytes = first.event.encoded_len();
        let mut batch = vec![first];
        let deadline = Instant::now() + shared.settings.batch_delay;
        while batch.len() < max_events {
            let next = match rx.try_recv() {
                Ok(o) => Some(o),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    tokio::time::timeout_at(deadline, rx.recv())
                        .await
                        .ok()
                        .flatten()
                }
            };
            let Some(next) = next else { break };
            let size = next.event.encoded_len();
            if bytes + size > max_bytes {
                carry = Some(next);
                break;
            }
            bytes += size;
            batch.push(next);
        }
        let n = batch.len();
        shared.send_batch(batch).await;
        shared.pending.fetch_sub(n, Ordering::AcqRel);
    }
}

impl<C: EdgeClient, R: RouteResolver> Shared<C, R> {
    fn report_breaker(&self) {
        self.metrics
            .breaker_state
            .with_label_values(&[self.pod.as_str()])
            .set(self.breaker.state().as_gauge());
    }

    fn settle_all(&self, batch: &[Obligation], outcome: &EdgeOutcome) {
        self.metrics
            .forwarded
            .with_label_values(&[outcome.label()])
            .inc_by(batch.len() as u64);
        for o in batch {
            o.tracker.settle(outcome.clone());
        }
    }

    async fn send_batch(&self, batch: Vec<Obligation>) {
        let events: Vec<Arc<OutEvent>> = batch.iter().map(|o| o.event.clone()).collect();
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let mut first_failure: Option<Instant> = None;
        let mut last_resolve: Option<Instant> = None;
        loop {
            if self.gone.load(Ordering::Acquire) {
                self.settle_all(&batch, &EdgeOutcome::Gone);
                return;
            }
            if let Some(wait) = self.breaker.wait() {
                self.report_breaker();
                tokio::select! {
                    () = self.stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            let address = lock(&self.address).clone();
            let span = tracing::info_span!(
                "router.forward",
                edge = %self.pod,
                events = events.len(),
            );
            if let Some(first) = events.first() {
                set_parent(
                    &span,
                    context_of(first.traceparent.as_deref(), first.tracestate.as_deref()),
                );
            }
            let started = Instant::now();
            let result = self
                .client
                .deliver(DeliverCall {
                    pod: &self.pod,
                    address: &address,
                    events: &events,
                    router_id: &self.settings.router_id,
                })
                .instrument(span)
                .await;
            let elapsed = started.elapsed().as_secs_f64();
            self.metrics.batch_size.observe(events.len() as f64);
            match result {
                Ok(outcomes) => {
                    self.metrics
                        .forward_latency
                        .with_label_values(&["ok"])
                        .observe(elapsed);
                    self.recovered();
                    for (o, outcome) in batch.iter().zip(outcomes) {
                        let outcome = match outcome {
                            EventOutcome::Delivered(_) => EdgeOutcome::Delivered,
                            EventOutcome::Duplicate => EdgeOutcome::Duplicate,
                            EventOutcome::Rejected(reason) => EdgeOutcome::Rejected(reason),
                        };
                        self.metrics
                            .forwarded
                            .with_label_values(&[outcome.label()])
                            .inc();
                        o.tracker.settle(outcome);
                    }
                    return;
                }
                Err(DeliverError::Refused(reason)) => {
                    self.metrics
                        .forward_latency
                        .with_label_values(&["refused"])
                        .observe(elapsed);
                    self.recovered();
                    self.settle_all(&batch, &EdgeOutcome::Rejected(reason));
                    return;
                }
                Err(error) => {
                    self.metrics
                        .forward_latency
                        .with_label_values(&["failed"])
                        .observe(elapsed);
                    let was = self.breaker.state();
                    self.breaker.failure();
                    self.report_breaker();
                    if was == BreakerState::Closed
                        && self.breaker.state() != BreakerState::Closed
                        && self
                            .logs
                            .check(&format!("edge_down:{}", self.pod))
                            .is_some()
                    {
                        tracing::warn!(edge = %self.pod, %address, %error, "edge unreachable; holding its events");
                    }
                    let now = Instant::now();
                    let since = *first_failure.get_or_insert(now);
                    if last_resolve.is_none_or(|t| now.duration_since(t) >= RESOLVE_EVERY) {
                        last_resolve = Some(now);
                        match self
                            .resolver
                            .resolve_pods(std::slice::from_ref(&self.pod))
                            .await
                        {
                            Ok(statuses) => match statuses.get(&self.pod) {
                                Some(PodStatus::Alive(current)) => {
                                    if *current != address {
                                        tracing::info!(edge = %self.pod, address = %current, "edge moved");
                                        *lock(&self.address) = current.clone();
                                        continue;
                                    }
                                }
                                Some(PodStatus::Gone) | None => {
                                    self.gone.store(true, Ordering::Release);
                                    tracing::info!(edge = %self.pod, "edge gone; its pending events are acknowledged as undeliverable");
                                    self.settle_all(&batch, &EdgeOutcome::Gone);
                                    return;
                                }
                            },
                            Err(e) => {
                                tracing::debug!(error = %e, "cannot ask the coordinator about an edge")
                            }
                        }
                    }
                    if now.duration_since(since) >= self.settings.unreachable_grace {
                        self.settle_all(&batch, &EdgeOutcome::Unreachable(error.to_string()));
                        return;
                    }
                    tokio::select! {
                        () = self.stop.cancelled() => return,
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    }

    fn recovered(&self) {
        let was = self.breaker.state();
        self.breaker.success();
        if was != BreakerState::Closed {
            tracing::info!(edge = %self.pod, "edge reachable again");
            self.report_breaker();
        }
    }
}
