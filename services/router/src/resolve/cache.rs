//! A short-lived cache of route lookups in front of the coordinator.
//!
//! **Staleness bound.** An entry is stamped with the instant its lookup was *sent* and used for
//! `ttl` from then. Suppose a socket's interest is registered at time `r`, and an event is
//! published at `p >= r + ttl`. The router looks the event's routes up at some `l >= p`.
//! Either it calls the coordinator (then it sees the interest, registered before the call), or
//! it uses an entry sent at `s > l - ttl >= p - ttl >= r`, i.e. sent after the registration,
//! which therefore includes it. So **a socket whose interest was registered at least `ttl`
//! before an event was published always gets that event**; only events published within `ttl`
//! of the registration may miss it. Negative answers ("nobody listens") are cached the same way
//! and obey the same bound. With the default `ttl` of 1 s and edges registering a chat before
//! confirming `select_chat` to the client, the window is invisible in practice.
//!
//! **Stale if error.** While the coordinator is *unavailable* (down, or its Redis is), an entry
//! is still served for `stale_if_error` past its `ttl`. That is safe because nothing can
//! register a new interest during the outage either (edges cannot acquire sessions or select
//! chats without the coordinator), so the last known routes are the best answer there is; it
//! keeps already connected sockets receiving through a short Redis or coordinator outage. A
//! query with no entry that recent makes the lookup fail, and the caller stops acknowledging
//! those events, which stay in the stream. `stale_if_error = 0` turns this off.
//!
//! **Refresh ahead.** One background task, started with the first lookup, wakes every
//! `ttl / 4` and looks up again, in one batched call, every entry that is at least `ttl / 2`
//! old and was used since it was stored; the uses themselves are answered from the entries,
//! which are still fresh. A key used at least every `ttl / 2` therefore never waits for the
//! coordinator once warm (its entry is refreshed at an age between `ttl / 2` and `3 ttl / 4`,
//! which leaves `ttl / 4` for the lookup), keys no longer used simply expire, and however many
//! keys are in use the coordinator gets about four refresh calls per `ttl` rather than one per
//! key. The staleness bound is unchanged, since only entries younger than `ttl` are ever served
//! (a refreshed one is stamped when its lookup is sent, like any other).

use super::{Lookup, Pod, PodStatus, ResolveError, RouteQuery, RouteResolver};
use daisi_domain::PodId;
use parking_lot::Mutex;
use prometheus::IntCounter;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// Entries above which expired ones are swept on the next lookup. After a sweep the bar is
/// twice what is left, so a cache that holds more live entries than this does not scan them
/// all on every miss (each sweep is paid for by as many inserts as it scans).
const SWEEP_ABOVE: usize = 50_000;

#[derive(Debug, Clone)]
struct Entry {
    sent_at: Instant,
    pods: Arc<[Pod]>,
    /// A background lookup of this query is in flight.
    refreshing: bool,
    /// Served since it was stored: worth refreshing.
    used: bool,
}

/// Counters of the lookups the cache sends to the coordinator.
#[derive(Debug, Clone)]
pub struct LookupCounters {
    /// Lookups on the event path (queries without a fresh entry).
    pub miss_calls: IntCounter,
    /// Queries in those lookups.
    pub miss_queries: IntCounter,
    /// Background refresh lookups.
    pub refresh_calls: IntCounter,
    /// Queries in those lookups.
    pub refresh_queries: IntCounter,
}

/// A [`RouteResolver`] with a time-bounded cache of lookups.
#[derive(Debug)]
pub struct RouteCache<R> {
    inner: R,
    ttl: Duration,
    stale_if_error: Duration,
    entries: Mutex<HashMap<RouteQuery, Entry>>,
    /// The refresher task was started.
    refresher: AtomicBool,
    /// Entries above which a lookup sweeps the expired ones (see [`SWEEP_ABOVE`]).
    sweep_above: AtomicUsize,
    counters: Option<LookupCounters>,
}

impl<R: RouteResolver> RouteCache<R> {
    /// Caches `inner`'s lookups for `ttl`, and for `stale_if_error` more while `inner` is
    /// unavailable.
    pub fn new(inner: R, ttl: Duration, stale_if_error: Duration) -> Self {
        Self {
            inner,
            ttl,
            stale_if_error,
            entries: Mutex::new(HashMap::new()),
            refresher: AtomicBool::new(false),
            sweep_above: AtomicUsize::new(SWEEP_ABOVE),
            counters: None,
        }
    }

    /// Counts the lookups sent in `counters`.
    #[must_use]
    pub fn with_counters(mut self, counters: LookupCounters) -> Self {
        self.counters = Some(counters);
        self
    }

    /// The uncached resolver.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<RouteQuery, Entry>> {
        self.entries.lock()
    }

    /// The pods of each query, from fresh entries or one batched lookup of the others; entries
    /// in use are refreshed in the background before they expire.
    pub async fn pods(
        self: &Arc<Self>,
        queries: &[RouteQuery],
    ) -> Result<Vec<Arc<[Pod]>>, ResolveError> {
        self.start_refresher();
        let now = Instant::now();
        let mut answers: Vec<Option<Arc<[Pod]>>> = Vec::with_capacity(queries.len());
        let mut missing: Vec<RouteQuery> = Vec::new();
        {
            let mut entries = self.lock();
            let mut seen = std::collections::HashSet::new();
            for query in queries {
                match entries.get_mut(query) {
                    Some(e) if now.duration_since(e.sent_at) < self.ttl => {
                        answers.push(Some(e.pods.clone()));
                        e.used = true;
                    }
                    _ => {
                        answers.push(None);
                        if seen.insert(query) {
                            missing.push(query.clone());
                        }
                    }
                }
            }
        }
        if missing.is_empty() {
            return Ok(answers.into_iter().flatten().collect());
        }
        if let Some(c) = &self.counters {
            c.miss_calls.inc();
            c.miss_queries.inc_by(missing.len() as u64);
        }
        let sent_at = Instant::now();
        let Lookup { results } = match self.inner.lookup(&missing).await {
            Ok(lookup) => lookup,
            Err(ResolveError::Unavailable(why)) => {
                return self
                    .stale(queries, answers, now)
                    .ok_or(ResolveError::Unavailable(why));
            }
            Err(e) => return Err(e),
        };
        if results.len() != missing.len() {
            return Err(ResolveError::Refused(format!(
                "{} results for {} queries",
                results.len(),
                missing.len()
            )));
        }
        let mut entries = self.lock();
        if entries.len() > self.sweep_above.load(Ordering::Relaxed) {
            let keep = self.ttl + self.stale_if_error;
            entries.retain(|_, e| sent_at.duration_since(e.sent_at) < keep);
            self.sweep_above
                .store(SWEEP_ABOVE.max(entries.len() * 2), Ordering::Relaxed);
        }
        let fetched: HashMap<&RouteQuery, Arc<[Pod]>> = missing
            .iter()
            .zip(results)
            .map(|(q, pods)| (q, Arc::from(pods)))
            .collect();
        for (query, pods) in &fetched {
            store(&mut entries, query, sent_at, pods.clone());
        }
        drop(entries);
        Ok(queries
            .iter()
            .zip(answers)
            .map(|(query, answer)| {
                answer
                    .or_else(|| fetched.get(query).cloned())
                    .unwrap_or_else(|| Arc::from(Vec::new()))
            })
            .collect())
    }

    /// Starts the refresher once (it needs a runtime, which `new` does not).
    fn start_refresher(self: &Arc<Self>) {
        if self.ttl.is_zero() || self.refresher.swap(true, Ordering::AcqRel) {
            return;
        }
        // Ticks counted from now, not from when the task first runs.
        let period = self.ttl / 4;
        let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        tokio::spawn(run_refresher(Arc::downgrade(self), ticks));
    }

    /// Entries at least `ttl / 2` old, used since they were stored and not being refreshed:
    /// marked as being refreshed, and returned. Entries too old to be served even while the
    /// coordinator is down are dropped on the way, so keys no longer used leave the cache.
    fn due(&self) -> Vec<RouteQuery> {
        let now = Instant::now();
        let keep = self.ttl + self.stale_if_error;
        let mut entries = self.lock();
        entries.retain(|_, e| now.duration_since(e.sent_at) < keep);
        entries
            .iter_mut()
            .filter(|(_, e)| {
                let age = now.duration_since(e.sent_at);
                e.used && !e.refreshing && age >= self.ttl / 2 && age < self.ttl
            })
            .map(|(query, e)| {
                e.refreshing = true;
                query.clone()
            })
            .collect()
    }

    /// Looks `queries` up again; their entries stay in use meanwhile. A failed or late lookup
    /// leaves them to expire (and be looked up on the event path, as without refresh ahead).
    async fn refresh(&self, queries: Vec<RouteQuery>) {
        if let Some(c) = &self.counters {
            c.refresh_calls.inc();
            c.refresh_queries.inc_by(queries.len() as u64);
        }
        let sent_at = Instant::now();
        // Past `ttl` the entries have expired anyway: a later answer is not waited for.
        match tokio::time::timeout(self.ttl, self.inner.lookup(&queries)).await {
            Ok(Ok(Lookup { results })) if results.len() == queries.len() => {
                let mut entries = self.lock();
                for (query, pods) in queries.iter().zip(results) {
                    store(&mut entries, query, sent_at, Arc::from(pods));
                }
            }
            _ => self.unmark(&queries),
        }
    }

    fn unmark(&self, queries: &[RouteQuery]) {
        let mut entries = self.lock();
        for query in queries {
            if let Some(e) = entries.get_mut(query) {
                e.refreshing = false;
            }
        }
    }

    /// Every query answered from fresh entries or, for the missing ones, entries within the
    /// stale-if-error window; `None` when one of them has no such entry.
    fn stale(
        &self,
        queries: &[RouteQuery],
        answers: Vec<Option<Arc<[Pod]>>>,
        now: Instant,
    ) -> Option<Vec<Arc<[Pod]>>> {
        let limit = self.ttl + self.stale_if_error;
        let entries = self.lock();
        queries
            .iter()
            .zip(answers)
            .map(|(query, answer)| {
                answer.or_else(|| {
                    entries
                        .get(query)
                        .filter(|e| now.duration_since(e.sent_at) < limit)
                        .map(|e| e.pods.clone())
                })
            })
            .collect()
    }

    /// Pod statuses, never cached: asked only when an edge fails, to learn that it is gone.
    pub async fn resolve_pods(
        &self,
        pods: &[PodId],
    ) -> Result<HashMap<PodId, PodStatus>, ResolveError> {
        self.inner.resolve_pods(pods).await
    }
}

/// Records the answer of a lookup sent at `sent_at`, unless a later one is already there.
fn store(
    entries: &mut HashMap<RouteQuery, Entry>,
    query: &RouteQuery,
    sent_at: Instant,
    pods: Arc<[Pod]>,
) {
    match entries.get_mut(query) {
        Some(e) if e.sent_at > sent_at => {}
        Some(e) => {
            e.sent_at = sent_at;
            e.pods = pods;
            e.refreshing = false;
            e.used = false;
        }
        None => {
            entries.insert(
                query.clone(),
                Entry {
                    sent_at,
                    pods,
                    refreshing: false,
                    used: false,
                },
            );
        }
    }
}

/// At every tick, refreshes the entries that are due in one batched lookup, until the cache
/// is dropped. One refresh at a time: a slow coordinator makes it skip ticks, it does not pile
/// up calls.
async fn run_refresher<R: RouteResolver>(cache: Weak<RouteCache<R>>, mut ticks: Interval) {
    loop {
        ticks.tick().await;
        let Some(cache) = cache.upgrade() else { return };
        let due = cache.due();
        if !due.is_empty() {
            cache.refresh(due).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Counting {
        calls: AtomicUsize,
        queried: Mutex<Vec<usize>>,
        fail: std::sync::atomic::AtomicBool,
    }

    impl RouteResolver for Arc<Counting> {
        async fn lookup(&self, queries: &[RouteQuery]) -> Result<Lookup, ResolveError> {
            if self.fail.load(Ordering::Relaxed) {
                return Err(ResolveError::Unavailable("down".into()));
            }
            let n = self.calls.fetch_add(1, Ordering::Relaxed);
            self.queried.lock().push(queries.len());
            let pod = Pod {
                id: format!("pod{n}").parse().unwrap(),
                address: Arc::from("http://x"),
            };
            Ok(Lookup {
                results: queries.iter().map(|_| vec![pod.clone()]).collect(),
            })
        }
        async fn resolve_pods(
            &self,
            _: &[PodId],
        ) -> Result<HashMap<PodId, PodStatus>, ResolveError> {
            Ok(HashMap::new())
        }
    }

    fn q(agent: &str) -> RouteQuery {
        RouteQuery::Agent {
            company: "c".parse().unwrap(),
            agent: agent.parse().unwrap(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fresh_entries_are_served_and_expire_after_ttl() {
        let backend = Arc::new(Counting::default());
        let cache = Arc::new(RouteCache::new(
            backend.clone(),
            Duration::from_secs(1),
            Duration::ZERO,
        ));
        let first = cache.pods(&[q("a"), q("b"), q("a")]).await.unwrap();
        assert_eq!(first.len(), 3);
        assert_eq!(first[0], first[2]);
        assert_eq!(*backend.queried.lock(), [2], "duplicates asked once");
        tokio::time::advance(Duration::from_millis(400)).await;
        cache.pods(&[q("a"), q("c")]).await.unwrap();
        assert_eq!(*backend.queried.lock(), [2, 1], "only the miss");
        tokio::time::advance(Duration::from_millis(700)).await;
        let again = cache.pods(&[q("a")]).await.unwrap();
        assert_eq!(again[0][0].id.as_str(), "pod2", "expired entry refetched");
    }

    #[tokio::test(start_paused = true)]
    async fn keys_no_longer_used_leave_the_cache() {
        let backend = Arc::new(Counting::default());
        let cache = Arc::new(RouteCache::new(
            backend.clone(),
            Duration::from_secs(1),
            Duration::from_secs(2),
        ));
        let keys: Vec<RouteQuery> = (0..100).map(|i| q(&format!("a{i}"))).collect();
        cache.pods(&keys).await.unwrap();
        assert_eq!(cache.lock().len(), 100);
        // Still servable while the coordinator is down: kept.
        tokio::time::advance(Duration::from_millis(2_500)).await;
        settle().await;
        assert_eq!(cache.lock().len(), 100);
        // Past ttl + stale_if_error: the refresher's next tick drops them, no lookup needed.
        tokio::time::advance(Duration::from_millis(1_000)).await;
        settle().await;
        assert_eq!(cache.lock().len(), 0);
        assert_eq!(*backend.queried.lock(), [100], "nothing looked up again");
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_used_past_half_its_ttl_is_refreshed_in_the_background() {
        let backend = Arc::new(Counting::default());
        let cache = Arc::new(RouteCache::new(
            backend.clone(),
            Duration::from_secs(1),
            Duration::ZERO,
        ));
        cache.pods(&[q("a")]).await.unwrap();
        tokio::time::advance(Duration::from_millis(600)).await;
        settle().await;
        assert_eq!(
            *backend.queried.lock(),
            [1],
            "not used since it was stored: not refreshed"
        );
        let used = cache.pods(&[q("a"), q("a")]).await.unwrap();
        assert_eq!(used[0][0].id.as_str(), "pod0", "answered from the entry");
        // The refresher's next tick (every ttl / 4) refreshes it.
        tokio::time::advance(Duration::from_millis(150)).await;
        settle().await;
        assert_eq!(
            *backend.queried.lock(),
            [1, 1],
            "one refresh, in the background"
        );
        cache.pods(&[q("a")]).await.unwrap();
        tokio::time::advance(Duration::from_millis(250)).await;
        settle().await;
        assert_eq!(
            *backend.queried.lock(),
            [1, 1],
            "refreshed entries are young"
        );
        // Past the first entry's ttl, the refreshed one serves without a lookup.
        tokio::time::advance(Duration::from_millis(100)).await;
        let later = cache.pods(&[q("a")]).await.unwrap();
        assert_eq!(later[0][0].id.as_str(), "pod1");
        assert_eq!(backend.calls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_in_use_are_refreshed_together_and_never_looked_up_on_the_event_path() {
        let backend = Arc::new(Counting::default());
        let cache = Arc::new(RouteCache::new(
            backend.clone(),
            Duration::from_secs(1),
            Duration::ZERO,
        ));
        let keys: Vec<RouteQuery> = (0..100).map(|i| q(&format!("a{i}"))).collect();
        // Each key alone, as natural batching hands them to the cache at a low rate.
        for key in &keys {
            cache.pods(std::slice::from_ref(key)).await.unwrap();
        }
        assert_eq!(
            backend.calls.load(Ordering::Relaxed),
            100,
            "cold: one miss each"
        );
        // Every key used every 100 ms for 10 ttls.
        for _ in 0..100 {
            tokio::time::advance(Duration::from_millis(100)).await;
            settle().await;
            for key in &keys {
                cache.pods(std::slice::from_ref(key)).await.unwrap();
            }
        }
        let queried = backend.queried.lock().clone();
        let refreshes = &queried[100..];
        assert!(
            refreshes.iter().all(|&n| n == 100),
            "warm keys are only looked up in refreshes of all of them together: {refreshes:?}"
        );
        assert!(
            (10..=20).contains(&refreshes.len()),
            "one or two refresh calls per ttl, not one per key: {}",
            refreshes.len()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_leaves_the_entry_to_expire_at_its_ttl() {
        let backend = Arc::new(Counting::default());
        let cache = Arc::new(RouteCache::new(
            backend.clone(),
            Duration::from_secs(1),
            Duration::ZERO,
        ));
        cache.pods(&[q("a")]).await.unwrap();
        backend.fail.store(true, Ordering::Relaxed);
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(cache.pods(&[q("a")]).await.is_ok(), "still fresh");
        settle().await;
        tokio::time::advance(Duration::from_millis(400)).await;
        assert!(
            matches!(
                cache.pods(&[q("a")]).await,
                Err(ResolveError::Unavailable(_))
            ),
            "never served past its ttl"
        );
        backend.fail.store(false, Ordering::Relaxed);
        assert!(cache.pods(&[q("a")]).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn stale_entries_are_served_only_within_the_window_while_the_coordinator_is_down() {
        let backend = Arc::new(Counting::default());
        let cache = Arc::new(RouteCache::new(
            backend.clone(),
            Duration::from_secs(1),
            Duration::from_secs(5),
        ));
        cache.pods(&[q("a")]).await.unwrap();
        backend.fail.store(true, Ordering::Relaxed);
        tokio::time::advance(Duration::from_secs(3)).await;
        let stale = cache
            .pods(&[q("a")])
            .await
            .expect("within the window: served");
        assert_eq!(stale[0].len(), 1);
        assert!(
            matches!(
                cache.pods(&[q("a"), q("never-seen")]).await,
                Err(ResolveError::Unavailable(_))
            ),
            "a query without any entry fails the lookup"
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(matches!(
            cache.pods(&[q("a")]).await,
            Err(ResolveError::Unavailable(_))
        ));
        backend.fail.store(false, Ordering::Relaxed);
        assert!(
            cache.pods(&[q("a")]).await.is_ok(),
            "recovers with the coordinator"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stale_entries_are_never_served_when_the_window_is_zero() {
        let backend = Arc::new(Counting::default());
        let cache = Arc::new(RouteCache::new(
            backend.clone(),
            Duration::from_secs(1),
            Duration::ZERO,
        ));
        cache.pods(&[q("a")]).await.unwrap();
        backend.fail.store(true, Ordering::Relaxed);
        assert!(cache.pods(&[q("a")]).await.is_ok(), "fresh: served");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(matches!(
            cache.pods(&[q("a")]).await,
            Err(ResolveError::Unavailable(_))
        ));
    }
}
