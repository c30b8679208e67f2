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
//! **Refresh ahead.** An entry used when it is older than half its `ttl` is looked up again in
//! the background (batched, at most `REFRESHES` lookups in flight), while the use itself is
//! answered from the entry, which is still fresh. A key used at least every `ttl / 2` therefore
//! never waits for the coordinator once warm; the staleness bound is unchanged, since only
//! entries younger than `ttl` are ever served (the refreshed one is stamped when its lookup is
//! sent, like any other).

use super::{Lookup, Pod, PodStatus, ResolveError, RouteQuery, RouteResolver};
use daisi_domain::PodId;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Entries above which expired ones are swept on the next lookup.
const SWEEP_ABOVE: usize = 50_000;
/// Background refresh lookups in flight at most.
const REFRESHES: usize = 4;

#[derive(Debug, Clone)]
struct Entry {
    sent_at: Instant,
    pods: Arc<[Pod]>,
    /// A background lookup of this query is in flight.
    refreshing: bool,
}

/// A [`RouteResolver`] with a time-bounded cache of lookups.
#[derive(Debug)]
pub struct RouteCache<R> {
    inner: R,
    ttl: Duration,
    stale_if_error: Duration,
    entries: Mutex<HashMap<RouteQuery, Entry>>,
    refreshes: Arc<tokio::sync::Semaphore>,
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
            refreshes: Arc::new(tokio::sync::Semaphore::new(REFRESHES)),
        }
    }

    /// The uncached resolver.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<RouteQuery, Entry>> {
        self.entries.lock()
    }

    /// The pods of each query, from fresh entries or one batched lookup of the others; fresh
    /// entries past half their life are refreshed in the background.
    pub async fn pods(
        self: &Arc<Self>,
        queries: &[RouteQuery],
    ) -> Result<Vec<Arc<[Pod]>>, ResolveError> {
        let now = Instant::now();
        let mut answers: Vec<Option<Arc<[Pod]>>> = Vec::with_capacity(queries.len());
        let mut missing: Vec<RouteQuery> = Vec::new();
        let mut ageing: Vec<RouteQuery> = Vec::new();
        {
            let mut entries = self.lock();
            let mut seen = std::collections::HashSet::new();
            for query in queries {
                match entries.get_mut(query) {
                    Some(e) if now.duration_since(e.sent_at) < self.ttl => {
                        answers.push(Some(e.pods.clone()));
                        if !e.refreshing && now.duration_since(e.sent_at) >= self.ttl / 2 {
                            e.refreshing = true;
                            ageing.push(query.clone());
                        }
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
        if !ageing.is_empty() {
            self.refresh_ahead(ageing);
        }
        if missing.is_empty() {
            return Ok(answers.into_iter().flatten().collect());
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
        if entries.len() > SWEEP_ABOVE {
            let ttl = self.ttl + self.stale_if_error;
            entries.retain(|_, e| sent_at.duration_since(e.sent_at) < ttl);
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

    /// Looks `queries` up again in a task of its own; their entries stay in use meanwhile.
    /// Without a free refresh slot nothing happens: the entries expire and are looked up on
    /// the event path as without refresh ahead.
    fn refresh_ahead(self: &Arc<Self>, queries: Vec<RouteQuery>) {
        let Ok(permit) = self.refreshes.clone().try_acquire_owned() else {
            self.unmark(&queries);
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let sent_at = Instant::now();
            match this.inner.lookup(&queries).await {
                Ok(Lookup { results }) if results.len() == queries.len() => {
                    let mut entries = this.lock();
                    for (query, pods) in queries.iter().zip(results) {
                        store(&mut entries, query, sent_at, Arc::from(pods));
                    }
                }
                // Nothing learned: the entries expire as usual.
                _ => this.unmark(&queries),
            }
            drop(permit);
        });
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
        }
        None => {
            entries.insert(
                query.clone(),
                Entry {
                    sent_at,
                    pods,
                    refreshing: false,
                },
            );
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
        let used = cache.pods(&[q("a"), q("a")]).await.unwrap();
        assert_eq!(used[0][0].id.as_str(), "pod0", "answered from the entry");
        settle().await;
        assert_eq!(
            *backend.queried.lock(),
            [1, 1],
            "one refresh, in the background"
        );
        cache.pods(&[q("a")]).await.unwrap();
        settle().await;
        assert_eq!(
            *backend.queried.lock(),
            [1, 1],
            "refreshed entries are young"
        );
        // Past the first entry's ttl, the refreshed one serves without a lookup.
        tokio::time::advance(Duration::from_millis(500)).await;
        let later = cache.pods(&[q("a")]).await.unwrap();
        assert_eq!(later[0][0].id.as_str(), "pod1");
        assert_eq!(backend.calls.load(Ordering::Relaxed), 2);
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
