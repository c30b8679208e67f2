//! The ledger of messages this router holds: each is acknowledged exactly when every edge it
//! was sent to has settled it (accepted, refused, or its pod is known gone), and not before.
//!
//! The pipeline [`Ledger::hold`]s a delivery before anything else happens to it, then either
//! finishes it at once (malformed, nobody listening) or hands a [`Tracker`] to each target
//! edge. The last edge to settle sends the verdict to the settler task ([`run_settler`]), which
//! acknowledges, counts and dead-letters. While a message is held longer than a third of the
//! ack wait, the settler sends in-progress acks so the server does not hand it to another
//! replica while this one is still working on it (up to a hold limit, after which the server's
//! redelivery takes over). On shutdown whatever is still held is negatively acknowledged
//! without delay, so another replica picks it up at once.
//!
//! A message to be redelivered later (an edge had no room for it) is not handed back with a
//! delayed nak: on a consumer with a backoff, nats-server (2.15 included) measures a nak's
//! delay against the backoff entry of the delivery count, so a 2 s delay on a second delivery
//! became `2 s + backoff[1] - backoff[0]` (32 s with the defaults). The ledger keeps it, with
//! in-progress acks, for the delay, then the settler sends a plain nak, which the server
//! honours at once.

use crate::metrics::RouterMetrics;
use crate::ratelog::RateLimit;
use crate::source::{Acker, DeadLetter, Delivery, Publisher, TraceHeaders};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why a message was acknowledged without reaching every target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The subject does not follow the subject model.
    MalformedSubject(String),
    /// The payload is not a JSON object.
    MalformedPayload(String),
    /// An edge refused the event (or the whole batch) as malformed.
    Rejected(String),
    /// A registered edge could not be reached within the unreachable grace (or its backlog
    /// was full while it did not answer).
    EdgeUnreachable(String),
    /// A healthy edge's backlog and hold were full, or the event waited in the hold past the
    /// grace (services/router/src/forward/edge/hold.rs).
    EdgeBacklogFull(String),
    /// Every target pod is gone (its clients reconnect elsewhere and resynchronise).
    PodGone,
}

impl Reason {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::MalformedSubject(_) => "malformed_subject",
            Self::MalformedPayload(_) => "malformed_payload",
            Self::Rejected(_) => "rejected",
            Self::EdgeUnreachable(_) => "edge_unreachable",
            Self::EdgeBacklogFull(_) => "edge_backlog_full",
            Self::PodGone => "pod_gone",
        }
    }

    /// The text of the dead-letter header.
    pub fn describe(&self) -> String {
        match self {
            Self::MalformedSubject(d)
            | Self::MalformedPayload(d)
            | Self::Rejected(d)
            | Self::EdgeUnreachable(d)
            | Self::EdgeBacklogFull(d) => format!("{}: {d}", self.label()),
            Self::PodGone => self.label().to_owned(),
        }
    }

    /// Whether it is worth a dead letter: a gone pod's clients resynchronise on reconnect, so
    /// replaying its events is pointless; everything else is data someone lost.
    pub fn dead_letter(&self) -> bool {
        !matches!(self, Self::PodGone)
    }
}

/// What finally happens to a held message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every target edge took it (or some pods were gone, but at least one took it).
    Delivered,
    /// Nobody listens: acknowledged, nothing to do.
    NoRoute,
    /// An edge had no room in its backlog nor its hold: handed back to the server for a later
    /// redelivery (the last resort, after the hold: nothing is lost, but the event may arrive
    /// behind later events of its key, so the edge also gets a gap notice).
    Redeliver,
    /// Acknowledged without reaching every target.
    Undeliverable(Reason),
}

/// How one edge settled one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeOutcome {
    /// Accepted (delivered to 0 or more sockets).
    Delivered,
    /// Accepted earlier already.
    Duplicate,
    /// The pod is gone.
    Gone,
    /// Refused as malformed.
    Rejected(String),
    /// Not reachable within the grace.
    Unreachable(String),
    /// A healthy (slow) edge's backlog and hold were both full: to be redelivered later.
    Deferred,
    /// Given up by a healthy (slow) edge: the event waited in its hold past the grace.
    BacklogFull(String),
}

impl EdgeOutcome {
    /// Metric label of `router_forwarded_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Duplicate => "duplicate",
            Self::Gone => "pod_gone",
            Self::Rejected(_) => "rejected",
            Self::Unreachable(_) => "unreachable",
            Self::Deferred => "deferred",
            Self::BacklogFull(_) => "backlog_full",
        }
    }

    /// Whether the edge missed the event, or will get it out of order (a deferred event comes
    /// back behind later ones, which a `json.v2` socket's sequence floor then drops): it counts
    /// toward the edge's next gap notice.
    pub fn gives_up(&self) -> bool {
        matches!(
            self,
            Self::Unreachable(_) | Self::BacklogFull(_) | Self::Deferred
        )
    }
}

#[derive(Debug, Default)]
struct Fold {
    accepted: bool,
    deferred: bool,
    rejected: Option<String>,
    unreachable: Option<String>,
    backlog_full: Option<String>,
}

/// Counts down the edges one event still waits for.
#[derive(Debug)]
pub struct Tracker {
    id: u64,
    remaining: AtomicUsize,
    fold: Mutex<Fold>,
    verdicts: mpsc::UnboundedSender<(u64, Verdict)>,
}

impl Tracker {
    /// One edge settled the event; the last one sends the verdict.
    pub fn settle(&self, outcome: EdgeOutcome) {
        {
            let mut fold = self.fold.lock();
            match outcome {
                EdgeOutcome::Delivered | EdgeOutcome::Duplicate => fold.accepted = true,
                EdgeOutcome::Gone => {}
                EdgeOutcome::Rejected(r) => fold.rejected = Some(r),
                EdgeOutcome::Unreachable(r) => fold.unreachable = Some(r),
                EdgeOutcome::Deferred => fold.deferred = true,
                EdgeOutcome::BacklogFull(r) => fold.backlog_full = Some(r),
            }
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let fold = std::mem::take(&mut *self.fold.lock());
        // A refusal is final; an edge that merely had no room gets the message again (the
        // others drop the repeat by its stream sequence); then what was given up (a silent
        // edge before a slow one).
        let verdict = if let Some(reason) = fold.rejected {
            Verdict::Undeliverable(Reason::Rejected(reason))
        } else if fold.deferred {
            Verdict::Redeliver
        } else if let Some(reason) = fold.unreachable {
            Verdict::Undeliverable(Reason::EdgeUnreachable(reason))
        } else if let Some(reason) = fold.backlog_full {
            Verdict::Undeliverable(Reason::EdgeBacklogFull(reason))
        } else if fold.accepted {
            Verdict::Delivered
        } else {
            Verdict::Undeliverable(Reason::PodGone)
        };
        // The settler only stops after the ledger is released; a closed channel means the
        // message is being handed back to the server anyway.
        let _ = self.verdicts.send((self.id, verdict));
    }
}

#[derive(Debug)]
struct Held {
    acker: Arc<Acker>,
    /// Delivery attempt of this copy (1 on the first delivery).
    delivered: u64,
    received: Instant,
    /// When a plain nak hands it back, once a redelivery was decided (see the module docs).
    nak_at: Option<Instant>,
    sequence: u64,
    subject: String,
    payload: Bytes,
    trace: TraceHeaders,
}

/// The held messages and how many of them only wait for their deferred nak.
#[derive(Debug, Default)]
struct Book {
    held: HashMap<u64, Held>,
    deferred: usize,
}

impl Book {
    /// Whether nothing held is still being worked on (every message left waits for its nak).
    fn settled(&self) -> bool {
        self.held.len() == self.deferred
    }
}

/// Messages held by this router.
#[derive(Debug)]
pub struct Ledger {
    held: Mutex<Book>,
    next_id: AtomicU64,
    verdicts: mpsc::UnboundedSender<(u64, Verdict)>,
    emptied: Notify,
    metrics: RouterMetrics,
}

/// The receiving end of verdicts, for [`run_settler`].
#[derive(Debug)]
pub struct Verdicts(mpsc::UnboundedReceiver<(u64, Verdict)>);

#[cfg(test)]
impl Verdicts {
    /// Verdicts sent so far (tests of the forwarding policy read them without a settler).
    pub(crate) fn drain(&mut self) -> Vec<(u64, Verdict)> {
        std::iter::from_fn(|| self.0.try_recv().ok()).collect()
    }
}

impl Ledger {
    /// An empty ledger and the verdict channel its settler reads.
    pub fn new(metrics: RouterMetrics) -> (Arc<Self>, Verdicts) {
        let (tx, rx) = mpsc::unbounded_channel();
        let ledger = Arc::new(Self {
            held: Mutex::new(Book::default()),
            next_id: AtomicU64::new(1),
            verdicts: tx,
            emptied: Notify::new(),
            metrics,
        });
        (ledger, Verdicts(rx))
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Book> {
        self.held.lock()
    }

    /// Takes responsibility for a delivery; returns its ledger id.
    pub fn hold(&self, delivery: Delivery) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let held = Held {
            acker: Arc::new(delivery.acker),
            delivered: delivery.delivered,
            received: Instant::now(),
            nak_at: None,
            sequence: delivery.stream_sequence,
            subject: delivery.subject,
            payload: delivery.payload,
            trace: delivery.trace,
        };
        let mut book = self.lock();
        book.held.insert(id, held);
        self.metrics.acks_pending.set(gauge(book.held.len()));
        id
    }

    /// A tracker waiting for `edges` settlements of message `id`.
    pub fn tracker(&self, id: u64, edges: usize) -> Arc<Tracker> {
        Arc::new(Tracker {
            id,
            remaining: AtomicUsize::new(edges),
            fold: Mutex::new(Fold::default()),
            verdicts: self.verdicts.clone(),
        })
    }

    /// Settles message `id` now, without edges.
    pub fn finish(&self, id: u64, verdict: Verdict) {
        let _ = self.verdicts.send((id, verdict));
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.lock().held.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until nothing held is still being worked on: every message left (if any) only
    /// waits for its deferred nak, which [`Ledger::release_all`] sends at once.
    pub async fn wait_settled(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            if self.lock().settled() {
                return;
            }
            emptied.await;
        }
    }

    /// Hands every held message back to the server for immediate redelivery (shutdown).
    pub async fn release_all(&self) -> usize {
        let held: Vec<Held> = {
            let mut book = self.lock();
            book.deferred = 0;
            book.held.drain().map(|(_, h)| h).collect()
        };
        self.metrics.acks_pending.set(0);
        for h in &held {
            if h.acker.nak(Duration::ZERO).await.is_err() {
                self.metrics.ack_errors.inc();
            }
        }
        self.emptied.notify_waiters();
        held.len()
    }

    fn take(&self, id: u64) -> Option<Held> {
        let mut book = self.lock();
        let held = book.held.remove(&id);
        if held.as_ref().is_some_and(|h| h.nak_at.is_some()) {
            book.deferred -= 1;
        }
        self.metrics.acks_pending.set(gauge(book.held.len()));
        if book.settled() {
            self.emptied.notify_waiters();
        }
        held
    }

    /// Keeps message `id` for its redelivery delay, after which the settler hands it back;
    /// returns when. `None` when it is not held, or on the last delivery `max_deliver` allows
    /// (it is then given up, not handed back).
    fn defer(&self, id: u64, max_deliver: i64) -> Option<Instant> {
        let mut book = self.lock();
        let held = book.held.get_mut(&id)?;
        if held.nak_at.is_some() || i64::try_from(held.delivered).unwrap_or(i64::MAX) >= max_deliver
        {
            return None;
        }
        let due = Instant::now() + redeliver_delay(held.delivered);
        held.nak_at = Some(due);
        book.deferred += 1;
        if book.settled() {
            self.emptied.notify_waiters();
        }
        Some(due)
    }

    /// Ackers of messages held for at least `min_age` but less than `max_age`, and of those
    /// waiting for their deferred nak (the server must not redeliver them before it).
    fn due_for_progress(&self, min_age: Duration, max_age: Duration) -> Vec<Arc<Acker>> {
        let now = Instant::now();
        self.lock()
            .held
            .values()
            .filter(|h| {
                let age = now.duration_since(h.received);
                age >= min_age && (age < max_age || h.nak_at.is_some())
            })
            .map(|h| h.acker.clone())
            .collect()
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Settler settings.
#[derive(Debug, Clone)]
pub struct SettlerSettings {
    /// The consumer's ack wait: in-progress acks go out every third of it.
    pub ack_wait: Duration,
    /// Held longer than this, a message is left to the server's redelivery.
    pub hold_limit: Duration,
    /// Where undeliverable messages are republished.
    pub dead_letter_subject: Option<String>,
    /// The consumer's max deliver: a message on its last delivery is not handed back.
    pub max_deliver: i64,
}

/// How long a message an edge had no room for is kept before it is handed back, per delivery
/// so far (1 s, 2 s, ... up to 10 s): long enough for a slow edge to drain, short next to the
/// ack wait.
fn redeliver_delay(delivered: u64) -> Duration {
    Duration::from_secs(delivered.clamp(1, 10))
}

/// Acknowledges settled messages, dead-letters undeliverable ones and keeps long-held ones
/// alive, until `stop`.
pub async fn run_settler<P: Publisher>(
    ledger: Arc<Ledger>,
    Verdicts(mut verdicts): Verdicts,
    publisher: P,
    settings: SettlerSettings,
    stop: CancellationToken,
) {
    let metrics = ledger.metrics.clone();
    let logs = RateLimit::new(Duration::from_secs(10));
    let period = (settings.ack_wait / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Messages kept for a later redelivery, by when they are handed back.
    let mut deferred: BTreeSet<(Instant, u64)> = BTreeSet::new();
    loop {
        let next_nak = deferred.first().map(|(due, _)| *due);
        tokio::select! {
            () = stop.cancelled() => return,
            verdict = verdicts.recv() => {
                let Some((id, verdict)) = verdict else { return };
                if verdict == Verdict::Redeliver
                    && let Some(due) = ledger.defer(id, settings.max_deliver)
                {
                    metrics.acked.with_label_values(&["redeliver"]).inc();
                    deferred.insert((due, id));
                    continue;
                }
                let Some(held) = ledger.take(id) else { continue };
                settle(held, verdict, &publisher, &settings, &metrics, &logs).await;
            }
            () = sleep_until_some(next_nak) => {
                let now = Instant::now();
                while let Some(&(due, id)) = deferred.first()
                    && due <= now
                {
                    deferred.pop_first();
                    // Gone when shutdown released it already.
                    if let Some(held) = ledger.take(id)
                        && held.acker.nak(Duration::ZERO).await.is_err()
                    {
                        metrics.ack_errors.inc();
                    }
                }
            }
            _ = tick.tick() => {
                for acker in ledger.due_for_progress(period, settings.hold_limit) {
                    if acker.progress().await.is_err() {
                        metrics.ack_errors.inc();
                    }
                }
            }
        }
    }
}

/// Sleeps until `at`, or forever without it.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn settle<P: Publisher>(
    held: Held,
    mut verdict: Verdict,
    publisher: &P,
    settings: &SettlerSettings,
    metrics: &RouterMetrics,
    logs: &RateLimit,
) {
    if verdict == Verdict::Redeliver {
        // Not deferred (see `run_settler`): its last delivery. The server would drop it
        // silently after it: give it up visibly instead.
        verdict = Verdict::Undeliverable(Reason::EdgeBacklogFull(format!(
            "an edge had no room for it in {} deliveries",
            held.delivered
        )));
    }
    match &verdict {
        Verdict::Redeliver => {}
        Verdict::Delivered => metrics.acked.with_label_values(&["delivered"]).inc(),
        Verdict::NoRoute => metrics.acked.with_label_values(&["no_route"]).inc(),
        Verdict::Undeliverable(reason) => {
            metrics.acked.with_label_values(&["undeliverable"]).inc();
            metrics
                .undeliverable
                .with_label_values(&[reason.label()])
                .inc();
            if let Some(suppressed) = logs.check(reason.label()) {
                tracing::warn!(
                    reason = reason.label(),
                    detail = %reason.describe(),
                    subject = %held.subject,
                    stream_sequence = held.sequence,
                    request_id = held.trace.request_id.as_deref().unwrap_or(""),
                    suppressed,
                    "event acknowledged as undeliverable"
                );
            }
            if reason.dead_letter()
                && let Some(subject) = &settings.dead_letter_subject
            {
                let letter = DeadLetter {
                    original_subject: held.subject.clone(),
                    stream_sequence: held.sequence,
                    payload: held.payload.clone(),
                    reason: reason.describe(),
                    trace: held.trace.clone(),
                };
                match publisher.dead_letter(subject, letter).await {
                    Ok(()) => metrics.dead_lettered.inc(),
                    Err(error) => {
                        if logs.check("dead_letter_failed").is_some() {
                            tracing::warn!(%error, "cannot publish a dead letter");
                        }
                    }
                }
            }
        }
    }
    if held.acker.ack().await.is_err() {
        metrics.ack_errors.inc();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::source::memory::{MemorySettings, MemoryStream};
    use crate::source::{EventSource, Outgoing};

    const MAX_DELIVER: i64 = 2;

    async fn rig() -> (
        MemoryStream,
        crate::source::memory::MemorySource,
        Arc<Ledger>,
        CancellationToken,
    ) {
        let stream = MemoryStream::new(MemorySettings {
            ack_wait: Duration::from_secs(30),
            max_deliver: MAX_DELIVER,
            ..MemorySettings::default()
        });
        let registry = daisi_telemetry::Metrics::new("router").unwrap();
        let metrics = RouterMetrics::register(&registry).unwrap();
        let (ledger, verdicts) = Ledger::new(metrics);
        let stop = CancellationToken::new();
        tokio::spawn(run_settler(
            ledger.clone(),
            verdicts,
            stream.clone(),
            SettlerSettings {
                ack_wait: Duration::from_secs(30),
                hold_limit: Duration::from_secs(60),
                dead_letter_subject: Some("dlq".into()),
                max_deliver: MAX_DELIVER,
            },
            stop.clone(),
        ));
        stream
            .publish(Outgoing {
                subject: "websocket.c1.a1.chats".into(),
                payload: Bytes::from_static(b"{}"),
                trace: TraceHeaders::default(),
            })
            .await
            .unwrap();
        let consumer = stream.consumer();
        (stream, consumer, ledger, stop)
    }

    /// One dead letter for lack of room, the message acknowledged and released.
    fn assert_given_up_as_backlog_full(stream: &MemoryStream, ledger: &Ledger) {
        let letters = stream.dead_letters();
        assert_eq!(letters.len(), 1);
        assert!(
            letters[0].1.reason.starts_with("edge_backlog_full"),
            "{}",
            letters[0].1.reason
        );
        assert!(stream.is_empty(), "acknowledged");
        assert!(ledger.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_edge_without_room_gets_the_message_again_later_and_a_last_delivery_is_given_up_visibly()
     {
        let (stream, mut consumer, ledger, stop) = rig().await;
        // Two targets: one took it, the other had no room in its backlog nor its hold.
        let first = consumer.next().await.unwrap();
        assert_eq!(first.delivered, 1);
        let id = ledger.hold(first);
        let tracker = ledger.tracker(id, 2);
        tracker.settle(EdgeOutcome::Delivered);
        tracker.settle(EdgeOutcome::Deferred);
        // Handed back with a delayed nak: not acknowledged, not dead-lettered, back later.
        let again = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .expect("redelivered after the nak's delay")
            .unwrap();
        assert_eq!(again.delivered, 2);
        assert!(stream.dead_letters().is_empty());
        assert_eq!(stream.len(), 1);

        // The last delivery the consumer allows: given up with a reason, not dropped silently.
        let id = ledger.hold(again);
        ledger.tracker(id, 1).settle(EdgeOutcome::Deferred);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_given_up_as_backlog_full(&stream, &ledger);
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_kept_for_its_redelivery_delay_does_not_hold_up_shutdown() {
        let (stream, mut consumer, ledger, stop) = rig().await;
        let first = consumer.next().await.unwrap();
        let id = ledger.hold(first);
        ledger.tracker(id, 1).settle(EdgeOutcome::Deferred);
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Kept for its delay (1 s), not worked on: shutdown does not wait for it, and
        // releasing hands it back at once.
        assert_eq!(ledger.len(), 1);
        tokio::time::timeout(Duration::from_millis(1), ledger.wait_settled())
            .await
            .expect("settled");
        assert_eq!(ledger.release_all().await, 1);
        let again = tokio::time::timeout(Duration::from_millis(100), consumer.next())
            .await
            .expect("handed back at once")
            .unwrap();
        assert_eq!(again.delivered, 2);
        // The settler's timer finds it gone and sends nothing more.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(stream.len(), 1);
        assert!(stream.dead_letters().is_empty());
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_an_edge_gave_up_for_lack_of_room_is_dead_lettered_and_acknowledged() {
        let (stream, mut consumer, ledger, stop) = rig().await;
        // Two targets: one took it, the other's hold kept it past the grace.
        let first = consumer.next().await.unwrap();
        let id = ledger.hold(first);
        let tracker = ledger.tracker(id, 2);
        tracker.settle(EdgeOutcome::Delivered);
        tracker.settle(EdgeOutcome::BacklogFull("full".into()));
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Given up with a reason, never handed back (a redelivery would come back behind
        // later events of its key).
        assert_given_up_as_backlog_full(&stream, &ledger);
        let redelivered = tokio::time::timeout(Duration::from_secs(60), consumer.next()).await;
        assert!(redelivered.is_err(), "not redelivered");
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_outweighs_what_was_given_up_and_a_silent_edge_outweighs_a_full_one() {
        let (_stream, _consumer, ledger, stop) = rig().await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let tracker = |outcomes: Vec<EdgeOutcome>| {
            let t = Tracker {
                id: 7,
                remaining: AtomicUsize::new(outcomes.len()),
                fold: Mutex::new(Fold::default()),
                verdicts: tx.clone(),
            };
            for o in outcomes {
                t.settle(o);
            }
        };
        tracker(vec![
            EdgeOutcome::BacklogFull("full".into()),
            EdgeOutcome::Rejected("bad".into()),
        ]);
        tracker(vec![
            EdgeOutcome::Unreachable("frozen".into()),
            EdgeOutcome::BacklogFull("full".into()),
        ]);
        tracker(vec![
            EdgeOutcome::BacklogFull("full".into()),
            EdgeOutcome::Delivered,
        ]);
        tracker(vec![
            EdgeOutcome::Unreachable("frozen".into()),
            EdgeOutcome::Delivered,
        ]);
        tracker(vec![EdgeOutcome::Gone, EdgeOutcome::Delivered]);
        // An edge without room in backlog nor hold gets the event again; only a refusal
        // outweighs that.
        tracker(vec![
            EdgeOutcome::Unreachable("frozen".into()),
            EdgeOutcome::Deferred,
        ]);
        tracker(vec![
            EdgeOutcome::Deferred,
            EdgeOutcome::Rejected("bad".into()),
        ]);
        let verdicts: Vec<Verdict> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Undeliverable(Reason::Rejected("bad".into())),
                Verdict::Undeliverable(Reason::EdgeUnreachable("frozen".into())),
                Verdict::Undeliverable(Reason::EdgeBacklogFull("full".into())),
                Verdict::Undeliverable(Reason::EdgeUnreachable("frozen".into())),
                Verdict::Delivered,
                Verdict::Redeliver,
                Verdict::Undeliverable(Reason::Rejected("bad".into())),
            ]
        );
        drop(ledger);
        stop.cancel();
    }
}
