//! The forwarding policy of one edge with a paused clock: the backlog cap (the edge's share
//! of the ack window), the hold beyond it and per-key order through it, detection of a silent edge by deadline, the
//! fail-fast after the grace, and recovery. The transport is a scripted [`EdgeClient`] (an
//! edge that answers, or one that never does), the coordinator a resolver that lists the pod.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::pipeline::ledger::{Ledger, Reason, Verdict, Verdicts};
use crate::resolve::{Lookup, RouteQuery};
use daisi_domain::subject::{DeliveryTarget, Scope};
use std::collections::HashMap;

const CAP: usize = 10;
const PROBE: Duration = Duration::from_millis(500);
const GRACE: Duration = Duration::from_secs(5);

/// An edge that answers every call at once, or (silent) never answers anything, or (gated)
/// answers each call once the test hands it a permit.
struct Scripted {
    silent: AtomicBool,
    gated: AtomicBool,
    gate: tokio::sync::Semaphore,
    delivered: AtomicUsize,
    /// When each call started and how many events it carried.
    calls: Mutex<Vec<(Instant, usize)>>,
    /// Stream sequences of the events accepted, in the order the calls were answered.
    accepted: Mutex<Vec<u64>>,
    /// Addresses whose connections the edge released.
    forgotten: Mutex<Vec<String>>,
}

impl Default for Scripted {
    fn default() -> Self {
        Self {
            silent: AtomicBool::new(false),
            gated: AtomicBool::new(false),
            gate: tokio::sync::Semaphore::new(0),
            delivered: AtomicUsize::new(0),
            calls: Mutex::new(Vec::new()),
            accepted: Mutex::new(Vec::new()),
            forgotten: Mutex::new(Vec::new()),
        }
    }
}

impl EdgeClient for Scripted {
    async fn deliver(&self, call: DeliverCall<'_>) -> Result<Vec<EventOutcome>, DeliverError> {
        self.calls.lock().push((Instant::now(), call.events.len()));
        if self.silent.load(Ordering::Acquire) {
            std::future::pending::<()>().await;
        }
        if self.gated.load(Ordering::Acquire) {
            self.gate.acquire().await.expect("gate open").forget();
        }
        self.delivered
            .fetch_add(call.events.len(), Ordering::AcqRel);
        self.accepted
            .lock()
            .extend(call.events.iter().map(|e| e.stream_sequence));
        Ok(call
            .events
            .iter()
            .map(|_| EventOutcome::Delivered(1))
            .collect())
    }

    async fn probe(&self, _address: &str, timeout: Duration) -> bool {
        if self.silent.load(Ordering::Acquire) {
            tokio::time::sleep(timeout).await;
            return false;
        }
        true
    }

    fn forget(&self, address: &str) {
        self.forgotten.lock().push(address.to_owned());
    }
}

/// The coordinator still lists the pod (its lease has not run out), at `address`.
struct Listed {
    address: Mutex<Arc<str>>,
}

impl Default for Listed {
    fn default() -> Self {
        Self {
            address: Mutex::new(Arc::from("http://edge")),
        }
    }
}

impl RouteResolver for Listed {
    async fn lookup(&self, queries: &[RouteQuery]) -> Result<Lookup, crate::resolve::ResolveError> {
        Ok(Lookup {
            results: queries.iter().map(|_| Vec::new()).collect(),
        })
    }

    async fn resolve_pods(
        &self,
        pods: &[PodId],
    ) -> Result<HashMap<PodId, PodStatus>, crate::resolve::ResolveError> {
        Ok(pods
            .iter()
            .map(|p| (p.clone(), PodStatus::Alive(self.address.lock().clone())))
            .collect())
    }
}

struct Rig {
    edge: Edge<Scripted, Listed>,
    metrics: RouterMetrics,
    client: Arc<Scripted>,
    ledger: Arc<Ledger>,
    verdicts: Verdicts,
    next: u64,
}

impl Rig {
    fn new() -> Self {
        Self::with_delay(Duration::ZERO)
    }

    fn with_delay(batch_delay: Duration) -> Self {
        let registry = daisi_telemetry::Metrics::new("router").unwrap();
        let metrics = RouterMetrics::register(&registry).unwrap();
        let (ledger, verdicts) = Ledger::new(metrics.clone());
        let kept = metrics.clone();
        let client = Arc::new(Scripted::default());
        let edge = Edge::spawn(
            "edge-1".parse().unwrap(),
            Arc::from("http://edge"),
            EdgeSettings {
                batch_max_events: 4,
                batch_delay,
                lanes: 2,
                unreachable_grace: GRACE,
                max_pending: CAP,
                max_held: CAP,
                probe_timeout: PROBE,
                router_id: Arc::from("router-test"),
            },
            client.clone(),
            Arc::new(RouteCache::new(
                Listed::default(),
                Duration::from_secs(1),
                Duration::ZERO,
            )),
            metrics,
            Arc::new(RateLimit::new(Duration::from_secs(30))),
            CancellationToken::new(),
        );
        Self {
            edge,
            metrics: kept,
            client,
            ledger,
            verdicts,
            next: 0,
        }
    }

    /// Sends `n` events (each its own message) for the edge, spread over its lanes.
    fn send(&mut self, n: usize) {
        for _ in 0..n {
            let key = self.next + 1;
            self.send_keyed(key, 1);
        }
    }

    /// Sends `n` events of one key (one lane).
    fn send_keyed(&mut self, key: u64, n: usize) {
        for _ in 0..n {
            self.next += 1;
            let event = Arc::new(OutEvent {
                stream_sequence: self.next,
                subject: "websocket.c1.a1.chats".into(),
                target: DeliveryTarget {
                    company: "c1".parse().unwrap(),
                    agent: "a1".parse().unwrap(),
                    scope: Scope::Agent,
                },
                event_type: "chat".into(),
                payload: bytes::Bytes::from_static(b"{}"),
                request_id: None,
                traceparent: None,
                tracestate: None,
                published_at: None,
                stream_epoch: 1,
            });
            let tracker = self.ledger.tracker(self.next, 1);
            self.edge.send(key, Obligation { event, tracker });
        }
    }

    /// Lets the lanes and the prober run for `d` of (paused, auto-advancing) time.
    async fn run_for(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    fn verdicts(&mut self) -> Vec<Verdict> {
        self.verdicts.drain().into_iter().map(|(_, v)| v).collect()
    }
}

fn count(verdicts: &[Verdict], want: impl Fn(&Verdict) -> bool) -> usize {
    verdicts.iter().filter(|v| want(v)).count()
}

fn unreachable(v: &Verdict) -> bool {
    matches!(v, Verdict::Undeliverable(Reason::EdgeUnreachable(_)))
}

fn backlog_full(v: &Verdict) -> bool {
    matches!(v, Verdict::Undeliverable(Reason::EdgeBacklogFull(_)))
}

#[tokio::test(start_paused = true)]
async fn a_healthy_edge_gets_everything_and_its_backlog_empties() {
    let mut rig = Rig::new();
    rig.send(CAP);
    rig.run_for(Duration::from_millis(50)).await;
    let verdicts = rig.verdicts();
    assert_eq!(count(&verdicts, |v| *v == Verdict::Delivered), CAP);
    assert_eq!(rig.edge.pending(), 0);
    assert_eq!(rig.client.delivered.load(Ordering::Acquire), CAP);
}

#[tokio::test(start_paused = true)]
async fn the_backlog_is_capped_and_a_silent_edge_fails_fast_after_the_grace() {
    let mut rig = Rig::new();
    rig.client.silent.store(true, Ordering::Release);
    let frozen_at = Instant::now();

    // The cap holds; beyond it a (so far) healthy edge's events wait in its hold.
    rig.send(CAP + 3);
    assert_eq!(rig.edge.pending(), CAP, "the edge's share of the window");
    assert_eq!(rig.edge.held(), 3);
    rig.run_for(Duration::from_millis(10)).await;
    assert!(rig.verdicts().is_empty(), "the capped ones wait");

    // Detected by deadline: the calls run past the probe timeout, the probe gets no answer.
    rig.run_for(PROBE * 2 + Duration::from_millis(10)).await;
    assert!(
        matches!(rig.edge.health(), HealthState::Failing { .. }),
        "{:?}",
        rig.edge.health()
    );
    // Beyond the cap while failing: given up at once, never queued nor held.
    rig.send(2);
    assert_eq!(rig.edge.pending(), CAP);
    assert_eq!(rig.edge.held(), 3);
    let verdicts = rig.verdicts();
    assert_eq!(count(&verdicts, unreachable), 2);

    // The grace ends: every queued and held event settles at once, new ones never wait.
    let until = frozen_at + GRACE;
    tokio::time::sleep_until(until + Duration::from_millis(10)).await;
    assert!(rig.edge.health().fails_fast());
    let verdicts = rig.verdicts();
    assert_eq!(count(&verdicts, unreachable), CAP + 3, "{verdicts:?}");
    assert_eq!(rig.edge.pending(), 0, "the window share is free again");
    assert_eq!(rig.edge.held(), 0);
    rig.send(5);
    let verdicts = rig.verdicts();
    assert_eq!(count(&verdicts, unreachable), 5, "new events fail fast");
    assert_eq!(rig.edge.pending(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_edge_that_moved_is_called_at_its_new_address_and_the_old_one_is_released() {
    let mut rig = Rig::new();
    rig.client.silent.store(true, Ordering::Release);
    rig.send(2);
    // The pod restarted elsewhere: the coordinator lists it at a new address.
    *rig.edge.shared.resolver.inner().address.lock() = Arc::from("http://edge-moved");
    rig.run_for(PROBE * 2 + RESOLVE_EVERY + Duration::from_millis(10))
        .await;
    assert_eq!(&*rig.edge.address(), "http://edge-moved");
    assert_eq!(
        *rig.client.forgotten.lock(),
        vec!["http://edge".to_owned()],
        "the old address's connections are released"
    );
    rig.client.silent.store(false, Ordering::Release);
    rig.run_for(PROBE * 4).await;
    let verdicts = rig.verdicts();
    assert_eq!(
        count(&verdicts, |v| *v == Verdict::Delivered),
        2,
        "{verdicts:?}"
    );
}

/// Series of `daisi_router_edge_state`.
fn state_series(metrics: &RouterMetrics) -> usize {
    use prometheus::core::Collector;
    metrics
        .edge_state
        .collect()
        .iter()
        .map(|family| family.get_metric().len())
        .sum()
}

#[tokio::test(start_paused = true)]
async fn a_retired_edge_keeps_no_state_series_even_when_its_prober_reports_late() {
    let mut rig = Rig::new();
    rig.client.silent.store(true, Ordering::Release);
    rig.send(1);
    rig.run_for(PROBE * 2 + Duration::from_millis(10)).await;
    assert!(matches!(rig.edge.health(), HealthState::Failing { .. }));
    assert_eq!(state_series(&rig.metrics), 1);
    // Retired while its prober waits for a probe: the probe's verdict comes later.
    rig.edge.retire_state();
    assert_eq!(state_series(&rig.metrics), 0);
    rig.run_for(PROBE * 4).await;
    assert_eq!(state_series(&rig.metrics), 0, "the series came back");
}

#[tokio::test(start_paused = true)]
async fn a_failing_edge_that_answers_again_gets_its_parked_events() {
    let mut rig = Rig::new();
    rig.client.silent.store(true, Ordering::Release);
    rig.send(6);
    rig.run_for(PROBE * 2 + Duration::from_millis(10)).await;
    assert!(matches!(rig.edge.health(), HealthState::Failing { .. }));
    assert!(rig.verdicts().is_empty(), "parked, not given up");

    // Thawed before the grace: the prober's next probe is answered and the lanes resend.
    rig.client.silent.store(false, Ordering::Release);
    // The prober's next try comes within its longest pause, which backon's jitter may double
    // (a random part up to the current delay), plus one probe deadline.
    rig.run_for(PROBE_BACKOFF.1 * 2 + PROBE * 2).await;
    assert_eq!(rig.edge.health(), HealthState::Healthy);
    let verdicts = rig.verdicts();
    assert_eq!(
        count(&verdicts, |v| *v == Verdict::Delivered),
        6,
        "{verdicts:?}"
    );
    assert_eq!(rig.edge.pending(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_edge_recovers_when_a_probe_is_answered() {
    let mut rig = Rig::new();
    rig.client.silent.store(true, Ordering::Release);
    rig.send(3);
    rig.run_for(GRACE + PROBE * 2).await;
    assert!(rig.edge.health().fails_fast());
    assert_eq!(count(&rig.verdicts(), unreachable), 3);

    rig.client.silent.store(false, Ordering::Release);
    // The prober's next try comes within its longest pause, which backon's jitter may double
    // (a random part up to the current delay), plus one probe deadline.
    rig.run_for(PROBE_BACKOFF.1 * 2 + PROBE * 2).await;
    assert_eq!(rig.edge.health(), HealthState::Healthy);
    rig.send(4);
    rig.run_for(Duration::from_millis(50)).await;
    assert_eq!(
        count(&rig.verdicts(), |v| *v == Verdict::Delivered),
        4,
        "new events reach the thawed edge"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_lane_sends_at_once_and_a_busy_one_batches_what_arrived_meanwhile() {
    let mut rig = Rig::new();
    rig.client.gated.store(true, Ordering::Release);
    let sent_at = Instant::now();
    rig.send_keyed(7, 1);
    // Let the lane run without letting time pass: the call must start with no timer.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        *rig.client.calls.lock(),
        [(sent_at, 1)],
        "an idle lane sends a lone event at once"
    );
    // While that call is in flight, three more arrive on the same lane: one batch.
    rig.send_keyed(7, 3);
    rig.client.gate.add_permits(2);
    rig.run_for(Duration::from_millis(10)).await;
    let sizes: Vec<usize> = rig.client.calls.lock().iter().map(|c| c.1).collect();
    assert_eq!(
        sizes,
        [1, 3],
        "what arrived during the call forms the next batch"
    );
    assert_eq!(count(&rig.verdicts(), |v| *v == Verdict::Delivered), 4);
    assert_eq!(rig.edge.pending(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_batch_delay_still_waits_for_more() {
    let mut rig = Rig::with_delay(Duration::from_millis(2));
    let sent_at = Instant::now();
    rig.send_keyed(7, 1);
    rig.run_for(Duration::from_millis(1)).await;
    rig.send_keyed(7, 1);
    rig.run_for(Duration::from_millis(10)).await;
    assert_eq!(
        *rig.client.calls.lock(),
        [(sent_at + Duration::from_millis(2), 2)],
        "one call after the delay, with both events"
    );
}

/// A burst of three keys, interleaved, twice the cap: the events beyond the cap wait in the
/// hold and every key reaches the edge complete and in order (handed back, they would come
/// back behind later events of their key).
#[tokio::test(start_paused = true)]
async fn a_burst_beyond_the_cap_waits_in_the_hold_and_keeps_each_keys_order() {
    let mut rig = Rig::new();
    rig.client.gated.store(true, Ordering::Release);
    let keys = [11_u64, 12, 13];
    let mut key_of = HashMap::new();
    for i in 0..2 * CAP {
        let key = keys[i % keys.len()];
        rig.send_keyed(key, 1);
        key_of.insert(rig.next, key);
        // Let the lanes take what they can meanwhile, as the dispatcher would.
        tokio::task::yield_now().await;
    }
    assert_eq!(rig.edge.pending(), CAP);
    assert_eq!(rig.edge.held(), CAP);
    assert!(rig.verdicts().is_empty(), "nothing given up or handed back");

    // The edge answers, one call at a time.
    for _ in 0..(2 * CAP) {
        rig.client.gate.add_permits(1);
        rig.run_for(Duration::from_millis(1)).await;
    }
    rig.run_for(Duration::from_millis(50)).await;
    let verdicts = rig.verdicts();
    assert_eq!(
        count(&verdicts, |v| *v == Verdict::Delivered),
        2 * CAP,
        "{verdicts:?}"
    );
    assert_eq!(rig.edge.pending(), 0);
    assert_eq!(rig.edge.held(), 0);
    let accepted = rig.client.accepted.lock().clone();
    assert_eq!(accepted.len(), 2 * CAP);
    for key in keys {
        let order: Vec<u64> = accepted
            .iter()
            .copied()
            .filter(|s| key_of[s] == key)
            .collect();
        assert!(order.is_sorted(), "key {key}: {order:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn beyond_the_hold_an_event_is_handed_back_and_past_the_grace_in_it_given_up_both_announced()
{
    let mut rig = Rig::new();
    rig.client.gated.store(true, Ordering::Release);
    rig.send(2 * CAP + 2);
    assert_eq!(rig.edge.pending(), CAP);
    assert_eq!(rig.edge.held(), CAP);
    // Beyond backlog and hold: handed back for a later redelivery (nothing lost), and counted
    // for the gap notice (it may come back behind later events of its key).
    let verdicts = rig.verdicts();
    assert_eq!(
        count(&verdicts, |v| *v == Verdict::Redeliver),
        2,
        "{verdicts:?}"
    );
    assert_eq!(count(&verdicts, backlog_full), 0, "{verdicts:?}");
    assert_eq!(rig.edge.shared.given_up.load(Ordering::Acquire), 2);

    // The edge stays slow (answers probes, not the calls) past the grace: the next event
    // finds the hold's entries too old and gives them up, then waits itself.
    rig.run_for(GRACE + Duration::from_millis(10)).await;
    assert_eq!(rig.edge.health(), HealthState::Healthy);
    rig.send(1);
    let verdicts = rig.verdicts();
    assert_eq!(count(&verdicts, backlog_full), CAP, "{verdicts:?}");
    assert_eq!(rig.edge.held(), 1);
    assert_eq!(
        rig.edge.shared.given_up.load(Ordering::Acquire),
        CAP as u64 + 2,
        "the next answered call carries a gap notice"
    );
}

#[tokio::test(start_paused = true)]
async fn an_edge_dropped_with_events_in_its_hold_settles_them_rather_than_strand_them() {
    let mut rig = Rig::new();
    rig.client.gated.store(true, Ordering::Release);
    for _ in 0..2 * CAP {
        rig.send_keyed(7, 1);
        tokio::task::yield_now().await;
    }
    assert_eq!(rig.edge.pending(), CAP);
    assert_eq!(rig.edge.held(), CAP);
    // The registry replaces the edge (its pod was reported gone and a route names it again)
    // while its calls are in flight and its hold is full; the router keeps running.
    let Rig {
        edge,
        client,
        mut verdicts,
        ..
    } = rig;
    drop(edge);
    for _ in 0..(2 * CAP) {
        client.gate.add_permits(1);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let verdicts: Vec<Verdict> = verdicts.drain().into_iter().map(|(_, v)| v).collect();
    assert_eq!(
        verdicts.len(),
        2 * CAP,
        "every event settled, none left held until the ack wait: {verdicts:?}"
    );
    assert_eq!(
        count(&verdicts, |v| *v == Verdict::Redeliver),
        CAP,
        "the held ones are handed back for redelivery: {verdicts:?}"
    );
}
