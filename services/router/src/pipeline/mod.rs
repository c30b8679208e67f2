//! The router's core: deliveries in, acknowledgements out.
//!
//! One dispatcher task takes deliveries in stream order, in chunks of whatever is ready:
//! it holds each in the [`ledger`], parses it ([`parse()`]), resolves the routes of the whole
//! chunk with one cached, batched lookup, and queues each event on the lane of its
//! (company, agent) of every target edge. Because the dispatcher queues in stream order and a
//! lane keeps order, the events of one key leave this router in stream order; the edges work
//! in parallel, and so do the lanes of one edge.
//!
//! When the coordinator cannot answer and the cache holds no fresh entry, the dispatcher stops
//! taking deliveries and retries with backoff: the held messages stay unacknowledged (kept
//! alive by in-progress acks). What the source already read into the intake channel and the
//! NATS client's pull buffer (a pull batch at most) is not held yet and gets no in-progress
//! acks: past the ack wait the server redelivers it while this router still has it, so it may
//! be forwarded twice (the edges drop the repeat). The rest stays in the stream. Readiness
//! reports the coordinator down meanwhile.

pub mod ledger;
pub mod parse;

use crate::backoff::Backoff;
use crate::forward::EdgeClient;
use crate::forward::edge::Obligation;
use crate::forward::registry::EdgeRegistry;
use crate::metrics::RouterMetrics;
use crate::ratelog::RateLimit;
use crate::resolve::cache::RouteCache;
use crate::resolve::{Pod, ResolveError, RouteQuery, RouteResolver};
use crate::source::Delivery;
use daisi_domain::subject::SubjectModel;
use daisi_runtime::Readiness;
use ledger::{Ledger, Verdict};
use parse::{Parsed, parse};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Deliveries handled per dispatch round at most.
const CHUNK: usize = 512;
/// Edges idle this long are dropped.
const EDGE_IDLE: Duration = Duration::from_secs(300);

/// The dispatcher and what it needs.
#[derive(Debug)]
pub struct Dispatcher<C, R> {
    /// Parses subjects.
    pub subjects: SubjectModel,
    /// Cached route lookups.
    pub routes: Arc<RouteCache<R>>,
    /// Edges by pod.
    pub edges: EdgeRegistry<C, R>,
    /// Held messages.
    pub ledger: Arc<Ledger>,
    /// Metrics.
    pub metrics: RouterMetrics,
    /// Where the coordinator's reachability is reported.
    pub readiness: Readiness,
}

impl<C: EdgeClient, R: RouteResolver> Dispatcher<C, R> {
    /// Dispatches deliveries until `stop` or the channel closes; hands the channel back so
    /// the caller can return what is left in it to the server, and itself: its edges must
    /// live on while their in-flight and held events settle within the shutdown grace.
    pub async fn run(
        mut self,
        mut deliveries: mpsc::Receiver<Delivery>,
        stop: CancellationToken,
    ) -> (mpsc::Receiver<Delivery>, Self) {
        let logs = RateLimit::new(Duration::from_secs(10));
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut last_sweep = Instant::now();
        loop {
            let first = tokio::select! {
                biased;
                () = stop.cancelled() => return (deliveries, self),
                next = deliveries.recv() => match next {
                    Some(d) => d,
                    None => return (deliveries, self),
                },
            };
            chunk.push(first);
            while chunk.len() < CHUNK {
                match deliveries.try_recv() {
                    Ok(d) => chunk.push(d),
                    Err(_) => break,
                }
            }
            self.dispatch(&mut chunk, &logs, &stop).await;
            if last_sweep.elapsed() >= EDGE_IDLE / 5 {
                last_sweep = Instant::now();
                self.edges.sweep(EDGE_IDLE);
            }
        }
    }

    async fn dispatch(
        &mut self,
        chunk: &mut Vec<Delivery>,
        logs: &RateLimit,
        stop: &CancellationToken,
    ) {
        let mut events: Vec<(u64, Parsed)> = Vec::with_capacity(chunk.len());
        for delivery in chunk.drain(..) {
            self.metrics.consumed.inc();
            if delivery.delivered > 1 {
                self.metrics.redelivered.inc();
            }
            self.metrics
                .consumer_lag
                .set(i64::try_from(delivery.pending).unwrap_or(i64::MAX));
            let parsed = parse(&self.subjects, &delivery);
            let (subject, sequence) = (delivery.subject.clone(), delivery.stream_sequence);
            let id = self.ledger.hold(delivery);
            match parsed {
                Ok(event) => events.push((id, event)),
                Err(reason) => {
                    if let Some(suppressed) = logs.check(reason.label()) {
                        tracing::warn!(
                            reason = reason.label(),
                            detail = %reason.describe(),
                            %subject,
                            stream_sequence = sequence,
                            suppressed,
                            "malformed event acknowledged"
                        );
                    }
                    self.ledger.finish(id, Verdict::Undeliverable(reason));
                }
            }
        }
        if events.is_empty() {
            return;
        }
        let mut queries: Vec<RouteQuery> = Vec::with_capacity(events.len() * 2);
        let mut spans = Vec::with_capacity(events.len());
        for (_, event) in &events {
            let start = queries.len();
            queries.extend(RouteQuery::for_target(&event.out.target));
            spans.push(start..queries.len());
        }
        let answers = match self.resolve(&queries, stop).await {
            Some(Ok(answers)) => answers,
            Some(Err(refusal)) => {
                // A definite refusal would be refused again: give the chunk up rather than
                // stall every event behind it.
                tracing::error!(error = %refusal, events = events.len(), "coordinator refused a route lookup");
                for (id, _) in events {
                    self.ledger.finish(
                        id,
                        Verdict::Undeliverable(ledger::Reason::Rejected(refusal.to_string())),
                    );
                }
                return;
            }
            // Stopping: the held messages are handed back by the shutdown sequence.
            None => return,
        };
        let mut pods: Vec<&Pod> = Vec::with_capacity(4);
        for ((id, event), span) in events.into_iter().zip(spans) {
            pods.clear();
            for answer in &answers[span] {
                for pod in answer.iter() {
                    if !pods.iter().any(|p| p.id == pod.id) {
                        pods.push(pod);
                    }
                }
            }
            if pods.is_empty() {
                self.ledger.finish(id, Verdict::NoRoute);
                continue;
            }
            let tracker = self.ledger.tracker(id, pods.len());
            let out = Arc::new(event.out);
            for pod in &pods {
                self.edges.edge(pod).send(
                    event.key_hash,
                    Obligation {
                        event: out.clone(),
                        tracker: tracker.clone(),
                    },
                );
            }
        }
    }

    /// Route answers for `queries`, retrying while the coordinator is unreachable; the
    /// refusal when it refuses; `None` when stopping.
    async fn resolve(
        &self,
        queries: &[RouteQuery],
        stop: &CancellationToken,
    ) -> Option<Result<Vec<Arc<[Pod]>>, ResolveError>> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match self.routes.pods(queries).await {
                Ok(answers) => {
                    self.readiness.set("coordinator", true);
                    return Some(Ok(answers));
                }
                Err(refusal @ ResolveError::Refused(_)) => {
                    self.readiness.set("coordinator", true);
                    return Some(Err(refusal));
                }
                Err(error) => {
                    self.metrics.resolve_errors.inc();
                    self.readiness.set("coordinator", false);
                    if backoff.attempts() == 0 || backoff.attempts().is_multiple_of(20) {
                        tracing::warn!(%error, "route lookup failed; holding events until the coordinator answers");
                    }
                    tokio::select! {
                        () = stop.cancelled() => return None,
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    }
}
