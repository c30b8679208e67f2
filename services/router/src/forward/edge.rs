//! Delivery to one edge pod: ordered lanes, batching, a bounded backlog, and one health state
//! ([`EdgeHealth`]) that decides when the edge's events wait and when they fail fast.
//!
//! **Order.** Events of one (company, agent) always take the same lane (hash of the pair), and
//! a lane has at most one `Deliver` call in flight, retried until it settles before the next
//! batch goes. The edge hands the events of one call to each socket in request order, so a
//! socket sees the events of a key in the order the pipeline queued them, which is stream
//! order. Lanes run in parallel, so different keys do not wait for each other.
//!
//! **Batching.** Natural batching: a lane with no call in flight sends what is queued at once,
//! up to the batch size and the request byte limit; events that arrive while its call is in
//! flight wait in the lane and form the next batch. An idle edge gets each event without
//! delay, a busy one gets batches as large as its round trip lets pile up. An optional batch
//! delay (off by default) makes a lane wait that long for more before sending.
//!
//! **Detection by deadline.** A `Deliver` that gets no answer within its deadline is a failure
//! like a refused connection. A call still running after the probe timeout is checked with a
//! health probe of the same short deadline: an edge that does not answer it is failing now,
//! without waiting for the longer `Deliver` deadline; one that answers is merely slow.
//!
//! **Failing.** The lanes park their batch (in order) and wait for the health to change; one
//! prober task asks the edge with the short deadline, with jittered backoff, and the
//! coordinator (at most once a second) whether the pod is gone or moved. An answered probe
//! lets the lanes try again. Past the grace the edge is unreachable: every parked, queued and
//! new event for it is settled at once as unreachable.
//!
//! **Bounded backlog.** At most `max_pending` events are queued or in flight for one edge; each
//! of them holds a slot of the consumer's ack window until it settles. An event beyond the cap
//! never blocks the dispatcher or another edge: for a healthy (merely slow) edge it waits in
//! the edge's hold (`edge/hold.rs`: at most `max_held` more, in dispatch order, so every key
//! keeps its order), and once the hold is full too it is handed back to the server with a
//! delayed nak (nothing lost, but it comes back behind later events of its key, so it counts
//! for the edge's gap notice); for an edge that does not answer it is settled at once as
//! unreachable, as holding it would take the shared window from every other edge.

mod hold;

use super::health::{EdgeHealth, HealthState};
use super::{DeliverCall, DeliverError, EdgeClient, EventOutcome, GapNotice, OutEvent};
use crate::metrics::RouterMetrics;
use crate::pipeline::ledger::{EdgeOutcome, Tracker};
use crate::ratelog::RateLimit;
use crate::resolve::cache::RouteCache;
use crate::resolve::{PodStatus, RouteResolver};
use crate::trace::context_of;
use backon::{BackoffBuilder, ExponentialBuilder};
use daisi_domain::PodId;
use daisi_proto::limits::MAX_DELIVER_REQUEST_BYTES;
use daisi_telemetry::propagation::set_parent;
use hold::{Hold, Locked, Waiting};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Margin under the request byte limit for the request's own fields.
const REQUEST_OVERHEAD: usize = 16 * 1024;
/// Coordinator checks of a failing edge, at most one per this interval.
const RESOLVE_EVERY: Duration = Duration::from_secs(1);
/// First and longest pause between probes of a failing edge.
const PROBE_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// How edges are fed.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// Most events per call.
    pub batch_max_events: usize,
    /// Longest wait for a batch to fill; zero (the default) sends what is queued at once.
    pub batch_delay: Duration,
    /// Ordered lanes per edge.
    pub lanes: usize,
    /// Events held for an unreachable, still registered edge at most this long.
    pub unreachable_grace: Duration,
    /// Events queued or in flight for one edge at most.
    pub max_pending: usize,
    /// Events waiting in the edge's hold beyond `max_pending` at most.
    pub max_held: usize,
    /// Deadline of a health probe, and how long a `Deliver` runs before the edge is probed.
    pub probe_timeout: Duration,
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
    /// Obligations queued or in flight: the edge's share of the ack window.
    pending: AtomicUsize,
    /// Obligations beyond the cap waiting for room, in dispatch order (see [`hold`]).
    hold: Hold,
    /// The lanes, for moving entries out of the hold; weak, so dropping the [`Edge`] (which
    /// holds the strong senders) still ends the lanes.
    lanes: Vec<mpsc::WeakSender<Obligation>>,
    last_used: Mutex<Instant>,
    /// The edge left the registry and its state series was removed: a prober or lane still
    /// finishing must not create the series again (checked and set under this lock).
    retired: Mutex<bool>,
    health: EdgeHealth,
    /// Why the last call failed, for the unreachable verdict.
    last_error: Mutex<String>,
    /// Events given up on or handed back ([`EdgeOutcome::gives_up`]) since the last answered call: the next call
    /// carries the count, so the edge can tell its sockets they may have missed events.
    given_up: AtomicU64,
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
    lanes: Vec<mpsc::Sender<Obligation>>,
    /// Ends the prober when the edge is dropped.
    retired: CancellationToken,
}

impl<C, R> std::fmt::Debug for Edge<C, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("pod", &self.shared.pod)
            .field("lanes", &self.lanes.len())
            .finish()
    }
}

impl<C, R> Drop for Edge<C, R> {
    fn drop(&mut self) {
        self.retired.cancel();
    }
}

impl<C: EdgeClient, R: RouteResolver> Edge<C, R> {
    /// Starts the lanes and the prober of `pod` at `address`.
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
        // Each lane could take the whole backlog; `pending` bounds the sum.
        let capacity = settings.max_pending.max(1);
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..lanes).map(|_| mpsc::channel(capacity)).unzip();
        let shared = Arc::new(Shared {
            pod,
            address: Mutex::new(address),
            gone: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
            hold: Hold::default(),
            lanes: senders.iter().map(mpsc::Sender::downgrade).collect(),
            last_used: Mutex::new(Instant::now()),
            retired: Mutex::new(false),
            health: EdgeHealth::new(settings.unreachable_grace),
            last_error: Mutex::new(String::new()),
            given_up: AtomicU64::new(0),
            client,
            resolver,
            settings,
            metrics,
            logs,
            stop,
        });
        shared.report_state(HealthState::Healthy);
        for rx in receivers {
            tokio::spawn(run_lane(shared.clone(), rx));
        }
        let lanes = senders;
        let retired = shared.stop.child_token();
        tokio::spawn(run_prober(shared.clone(), retired.clone()));
        Self {
            shared,
            lanes,
            retired,
        }
    }

    /// Queues an obligation on the lane of `key_hash`, holds it when the backlog is full (in
    /// order, see `edge/hold.rs`), or settles it at once when the pod is gone, the edge
    /// unreachable, or backlog and hold are full (handed back). Never waits. Called by the
    /// dispatcher only: the hold's order relies on one producer.
    pub fn send(&self, key_hash: u64, obligation: Obligation) {
        let shared = &self.shared;
        if shared.gone.load(Ordering::Acquire) {
            shared.settle(&obligation, EdgeOutcome::Gone);
            return;
        }
        // Used even when failing fast: the edge (and its prober) stays while it is routed to.
        *shared.last_used.lock() = Instant::now();
        let state = shared.health.state();
        if state.fails_fast() {
            shared.settle(&obligation, shared.unreachable());
            return;
        }
        let lane = usize::try_from(key_hash % self.lanes.len() as u64).unwrap_or(0);
        let max = shared.settings.max_pending;
        // Fast path: nothing older waits (only this producer fills the hold) and there is room.
        if shared.hold.is_empty() && shared.pending.load(Ordering::Acquire) < max {
            shared.enqueue(&self.lanes[lane], obligation);
            return;
        }
        let mut hold = shared.hold.lock();
        shared.drain(&mut hold);
        if hold.is_empty() && shared.pending.load(Ordering::Acquire) < max {
            shared.enqueue(&self.lanes[lane], obligation);
            return;
        }
        if state == HealthState::Healthy && hold.len() < shared.settings.max_held {
            hold.push_back(Waiting {
                lane,
                obligation,
                since: Instant::now(),
            });
            shared.metrics.edge_held.inc();
            return;
        }
        drop(hold);
        // Beyond backlog and hold: handed back (healthy) or given up (failing); both announced.
        shared.overflow(&obligation, state);
    }

    /// The pod moved to `address` (the coordinator says so).
    pub fn set_address(&self, address: &Arc<str>) {
        self.shared.move_to(address);
    }

    /// The current address.
    pub fn address(&self) -> Arc<str> {
        self.shared.address.lock().clone()
    }

    /// Whether the coordinator reported the pod gone.
    pub fn is_gone(&self) -> bool {
        self.shared.gone.load(Ordering::Acquire)
    }

    /// Whether nothing is queued or held and nothing was sent for `idle`.
    pub fn is_idle(&self, idle: Duration) -> bool {
        self.shared.pending.load(Ordering::Acquire) == 0
            && self.shared.hold.is_empty()
            && self.shared.last_used.lock().elapsed() >= idle
    }

    /// Events queued or in flight for the edge.
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::Acquire)
    }

    /// Events waiting in the edge's hold for room in its backlog.
    pub fn held(&self) -> usize {
        self.shared.hold.len()
    }

    /// The edge's health.
    pub fn health(&self) -> HealthState {
        self.shared.health.state()
    }

    /// The edge leaves the registry: its state series goes, for good (dashboards and alerts
    /// must not show departed pods).
    pub fn retire_state(&self) {
        let mut retired = self.shared.retired.lock();
        *retired = true;
        // Best effort: the series may never have been created.
        let _ = self
            .shared
            .metrics
            .edge_state
            .remove_label_values(&[self.shared.pod.as_str()]);
    }

    /// The pod.
    pub fn pod(&self) -> &PodId {
        &self.shared.pod
    }
}

async fn run_lane<C: EdgeClient, R: RouteResolver>(
    shared: Arc<Shared<C, R>>,
    mut rx: mpsc::Receiver<Obligation>,
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
        let delay = shared.settings.batch_delay;
        let deadline = Instant::now() + delay;
        while batch.len() < max_events {
            let next = match rx.try_recv() {
                Ok(o) => Some(o),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                // Natural batching: nothing more queued, send now.
                Err(mpsc::error::TryRecvError::Empty) if delay.is_zero() => None,
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
        // Always under the lock (once per batch): the dispatcher checks for room and adds to
        // the hold under the same lock, so room made here is never missed by both sides.
        let mut hold = shared.hold.lock();
        shared.drain(&mut hold);
    }
}

/// Asks a failing edge whether it is back, and the coordinator whether it is gone or moved,
/// until the edge is healthy again; then waits for the next failure.
async fn run_prober<C: EdgeClient, R: RouteResolver>(
    shared: Arc<Shared<C, R>>,
    retired: CancellationToken,
) {
    let fresh = || {
        ExponentialBuilder::default()
            .with_min_delay(PROBE_BACKOFF.0)
            .with_max_delay(PROBE_BACKOFF.1)
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut backoff = fresh();
    // The failing clock of the current episode: an edge that answers probes but not
    // deliveries flips back to failing with the same clock, and is then probed with the
    // backoff of the episode rather than at once (each answered probe lets the lanes try).
    let mut episode: Option<Instant> = None;
    let mut changes = shared.health.subscribe();
    loop {
        // Wait for trouble.
        while *changes.borrow_and_update() == HealthState::Healthy {
            tokio::select! {
                () = retired.cancelled() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
        }
        let since = match shared.health.state() {
            HealthState::Failing { since } | HealthState::Unreachable { since } => Some(since),
            HealthState::Healthy => None,
        };
        if since != episode {
            episode = since;
            backoff = fresh();
        } else {
            let pause = backoff.next().unwrap_or(PROBE_BACKOFF.1);
            tokio::select! {
                () = retired.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
        let mut last_resolve: Option<Instant> = None;
        loop {
            let state = shared.health.state();
            shared.report_state(state);
            if state == HealthState::Healthy || shared.gone.load(Ordering::Acquire) {
                break;
            }
            if last_resolve.is_none_or(|t| t.elapsed() >= RESOLVE_EVERY) {
                last_resolve = Some(Instant::now());
                shared.resolve().await;
                if shared.gone.load(Ordering::Acquire) {
                    return;
                }
            }
            let address = shared.address.lock().clone();
            let started = Instant::now();
            if shared
                .client
                .probe(&address, shared.settings.probe_timeout)
                .await
            {
                shared.health.probe_answered();
                shared.report_state(HealthState::Healthy);
                shared.send_gap_notice().await;
                break;
            }
            let state = shared.health.failed(started);
            shared.report_state(state);
            let pause = backoff.next().unwrap_or(PROBE_BACKOFF.1);
            tokio::select! {
                () = retired.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

impl<C: EdgeClient, R: RouteResolver> Shared<C, R> {
    fn report_state(&self, state: HealthState) {
        let retired = self.retired.lock();
        if *retired {
            return;
        }
        self.metrics
            .edge_state
            .with_label_values(&[self.pod.as_str()])
            .set(state.as_gauge());
    }

    fn settle(&self, obligation: &Obligation, outcome: EdgeOutcome) {
        if outcome.gives_up() {
            self.given_up.fetch_add(1, Ordering::AcqRel);
        }
        self.metrics
            .forwarded
            .with_label_values(&[outcome.label()])
            .inc();
        obligation.tracker.settle(outcome);
    }

    /// Queues `obligation` on `lane` (the caller checked for room).
    fn enqueue(&self, lane: &mpsc::Sender<Obligation>, obligation: Obligation) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        match lane.try_send(obligation) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(obligation)) => {
                // Not reached while `pending` bounds the lanes; kept as a second bound.
                self.pending.fetch_sub(1, Ordering::AcqRel);
                self.overflow(&obligation, self.health.state());
            }
            Err(mpsc::error::TrySendError::Closed(obligation)) => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                self.lane_ended(&obligation);
            }
        }
    }

    /// Moves entries from the front of the hold to their lanes while there is room; gives up
    /// an entry that waited past the grace (a gap, not a reordering).
    fn drain(&self, hold: &mut Locked<'_>) {
        let max = self.settings.max_pending;
        let grace = self.settings.unreachable_grace;
        while let Some(front) = hold.front() {
            let expired = front.since.elapsed() >= grace;
            if !expired && self.pending.load(Ordering::Acquire) >= max {
                return;
            }
            let Some(waiting) = hold.pop_front() else {
                return;
            };
            if expired {
                // The verdict a lane would give it now, if there is one.
                let outcome = if self.gone.load(Ordering::Acquire) {
                    EdgeOutcome::Gone
                } else if self.health.state().fails_fast() {
                    self.unreachable()
                } else {
                    EdgeOutcome::BacklogFull(format!(
                        "waited {grace:?} for room in the backlog of edge {} ({max} events)",
                        self.pod
                    ))
                };
                self.settle(&waiting.obligation, outcome);
                continue;
            }
            match self
                .lanes
                .get(waiting.lane)
                .and_then(mpsc::WeakSender::upgrade)
            {
                Some(lane) => self.enqueue(&lane, waiting.obligation),
                None => self.lane_ended(&waiting.obligation),
            }
        }
    }

    /// An obligation for a lane that ended: at shutdown it is left to the ledger, which hands
    /// every message still held back to the server; otherwise the edge was replaced (its pod
    /// gone) or swept, and the obligation is settled here, or its message would stay held
    /// (never acknowledged, kept in the ledger) until the server's ack wait.
    fn lane_ended(&self, obligation: &Obligation) {
        if self.stop.is_cancelled() {
            return;
        }
        let outcome = if self.gone.load(Ordering::Acquire) {
            EdgeOutcome::Gone
        } else {
            EdgeOutcome::Deferred
        };
        self.settle(obligation, outcome);
    }

    fn settle_all(&self, batch: &[Obligation], outcome: &EdgeOutcome) {
        if outcome.gives_up() {
            self.given_up
                .fetch_add(batch.len() as u64, Ordering::AcqRel);
        }
        self.metrics
            .forwarded
            .with_label_values(&[outcome.label()])
            .inc_by(batch.len() as u64);
        for o in batch {
            o.tracker.settle(outcome.clone());
        }
    }

    fn unreachable(&self) -> EdgeOutcome {
        let error = self.last_error.lock().clone();
        EdgeOutcome::Unreachable(format!(
            "edge {} unreachable for {:?}: {error}",
            self.pod, self.settings.unreachable_grace
        ))
    }

    /// An event beyond the backlog cap and the hold of a healthy edge: handed back for a later
    /// redelivery (nothing lost; it may arrive behind later events of its key, so it counts
    /// toward the gap notice). Beyond the cap of an edge that does not answer: given up.
    fn overflow(&self, obligation: &Obligation, state: HealthState) {
        let max = self.settings.max_pending;
        if state == HealthState::Healthy {
            self.settle(obligation, EdgeOutcome::Deferred);
        } else {
            let error = self.last_error.lock().clone();
            self.settle(
                obligation,
                EdgeOutcome::Unreachable(format!(
                    "edge {} backlog full ({max} events) while it does not answer: {error}",
                    self.pod
                )),
            );
        }
    }

    /// The pod now listens at `address`: later calls go there, and the connections to the old
    /// address are released (pod addresses change with every restart of a Kubernetes pod, so
    /// keeping them would grow the client's pools with every rollout). Whether it moved.
    fn move_to(&self, address: &Arc<str>) -> bool {
        let old = {
            let mut current = self.address.lock();
            if *current == *address {
                return false;
            }
            std::mem::replace(&mut *current, address.clone())
        };
        self.client.forget(&old);
        true
    }

    /// Asks the coordinator about the pod: gone (settle everything) or moved.
    async fn resolve(&self) {
        match self
            .resolver
            .resolve_pods(std::slice::from_ref(&self.pod))
            .await
        {
            Ok(statuses) => match statuses.get(&self.pod) {
                Some(PodStatus::Alive(current)) => {
                    if self.move_to(current) {
                        tracing::info!(edge = %self.pod, address = %current, "edge moved");
                        self.health.wake();
                    }
                }
                Some(PodStatus::Gone) | None => {
                    self.gone.store(true, Ordering::Release);
                    tracing::info!(edge = %self.pod, "edge gone; its pending events are acknowledged as undeliverable");
                    self.health.wake();
                }
            },
            Err(e) => tracing::debug!(error = %e, "cannot ask the coordinator about an edge"),
        }
    }

    /// Sends one batch until it settles: delivered, refused, the pod gone, or the edge
    /// unreachable.
    async fn send_batch(&self, batch: Vec<Obligation>) {
        let events: Vec<Arc<OutEvent>> = batch.iter().map(|o| o.event.clone()).collect();
        let mut changes = self.health.subscribe();
        loop {
            // Before reading the state: a change after the read must wake the wait below.
            changes.mark_unchanged();
            if self.gone.load(Ordering::Acquire) {
                self.settle_all(&batch, &EdgeOutcome::Gone);
                return;
            }
            match self.health.state() {
                HealthState::Unreachable { .. } => {
                    self.settle_all(&batch, &self.unreachable());
                    return;
                }
                HealthState::Failing { .. } => {
                    // Parked: the prober or the end of the grace moves us on.
                    let until = self
                        .health
                        .fail_fast_at()
                        .unwrap_or_else(|| Instant::now() + RESOLVE_EVERY);
                    tokio::select! {
                        () = self.stop.cancelled() => return,
                        _ = changes.changed() => {}
                        () = tokio::time::sleep_until(until) => {}
                    }
                    continue;
                }
                HealthState::Healthy => {}
            }
            let address = self.address.lock().clone();
            let started = Instant::now();
            let result = tokio::select! {
                () = self.stop.cancelled() => return,
                result = self.attempt(&address, &events) => result,
            };
            let elapsed = started.elapsed().as_secs_f64();
            self.metrics.batch_size.observe(events.len() as f64);
            match result {
                Ok(outcomes) => {
                    self.observe("ok", elapsed);
                    self.recovered();
                    self.send_gap_notice().await;
                    for (o, outcome) in batch.iter().zip(outcomes) {
                        let outcome = match outcome {
                            EventOutcome::Delivered(_) => EdgeOutcome::Delivered,
                            EventOutcome::Duplicate => EdgeOutcome::Duplicate,
                            EventOutcome::Rejected(reason) => EdgeOutcome::Rejected(reason),
                        };
                        self.settle(o, outcome);
                    }
                    return;
                }
                Err(DeliverError::Refused(reason)) => {
                    self.observe("refused", elapsed);
                    self.recovered();
                    self.settle_all(&batch, &EdgeOutcome::Rejected(reason));
                    return;
                }
                Err(error) => {
                    self.observe("failed", elapsed);
                    *self.last_error.lock() = error.to_string();
                    let state = self.health.failed(started);
                    self.report_state(state);
                    if self
                        .logs
                        .check(&format!("edge_down:{}", self.pod))
                        .is_some()
                    {
                        tracing::warn!(edge = %self.pod, %address, %error, grace = ?self.settings.unreachable_grace, "edge not answering; holding its events");
                    }
                }
            }
        }
    }

    /// The edge answers again after events were given up: tell it, so its `json.v2` sockets
    /// resync. Best effort: a failed notice keeps its count for the next answer.
    async fn send_gap_notice(&self) {
        if self.given_up.load(Ordering::Acquire) == 0 || self.gone.load(Ordering::Acquire) {
            return;
        }
        let given_up = self.given_up.swap(0, Ordering::AcqRel);
        if given_up == 0 {
            return;
        }
        let address = self.address.lock().clone();
        let notice = GapNotice {
            pod: &self.pod,
            address: &address,
            router_id: &self.settings.router_id,
            given_up,
        };
        let sent =
            tokio::time::timeout(self.settings.probe_timeout, self.client.notice_gap(notice)).await;
        match sent {
            Ok(Ok(())) => {}
            // An edge without gap notices (older version): nothing to retry.
            Ok(Err(DeliverError::Refused(_))) => {}
            _ => {
                self.given_up.fetch_add(given_up, Ordering::AcqRel);
                tracing::debug!(edge = %self.pod, "gap notice not delivered; retried on the next answer");
            }
        }
    }

    /// One `Deliver`, watched: still running after the probe timeout, the edge is probed, and
    /// an edge that does not answer the probe fails the attempt at once.
    async fn attempt(
        &self,
        address: &str,
        events: &[Arc<OutEvent>],
    ) -> Result<Vec<EventOutcome>, DeliverError> {
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
        let call = self
            .client
            .deliver(DeliverCall {
                pod: &self.pod,
                address,
                events,
                router_id: &self.settings.router_id,
            })
            .instrument(span);
        tokio::pin!(call);
        tokio::select! {
            result = &mut call => return result,
            () = tokio::time::sleep(self.settings.probe_timeout) => {}
        }
        let probe = self.client.probe(address, self.settings.probe_timeout);
        tokio::select! {
            result = &mut call => result,
            answered = probe => {
                if answered {
                    // Slow, not gone: the call keeps its own deadline.
                    call.await
                } else {
                    Err(DeliverError::Unavailable(format!(
                        "no answer to a health probe within {:?} while a delivery was running",
                        self.settings.probe_timeout
                    )))
                }
            }
        }
    }

    fn observe(&self, result: &str, seconds: f64) {
        self.metrics
            .forward_latency
            .with_label_values(&[result])
            .observe(seconds);
    }

    fn recovered(&self) {
        let was = self.health.state();
        self.health.delivered();
        if was != HealthState::Healthy {
            tracing::info!(edge = %self.pod, "edge reachable again");
            self.report_state(HealthState::Healthy);
        }
    }
}

#[cfg(test)]
mod tests;
