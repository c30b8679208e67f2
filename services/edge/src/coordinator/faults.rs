//! A fault injector in front of the real coordinator client, for tests and examples that need
//! a coordinator misbehaving in a way a process signal cannot produce on cue: slow acquire
//! replies (the acquire ran, its answer is late), lost acquire and select replies (the call
//! ran, the edge saw a failure), acquires applied after the edge gave up on them (a request
//! stuck in a stopped replica), slow route unregistrations and lost kill commands (a broken
//! pub/sub).
//!
//! It holds no session semantics of its own: every call is delegated to the [`GrpcCoordinator`]
//! it wraps (in tests, the real coordinator service over its in-memory store), so the edge is
//! tested against the one implementation of the contract.

use super::grpc::GrpcCoordinator;
use super::{
    AcquireOutcome, AcquireRequest, CommandStream, Coordinator, CoordinatorError, HeartbeatOutcome,
    HeldSession, Load, LostSession, PodCommand, PodIdentity, Route,
};
use daisi_domain::{ChatId, PodId};
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The switches, shared between the injector and the test that flips them.
#[derive(Debug, Default)]
pub struct Faults {
    /// Added after each acquire returned from the coordinator, in milliseconds.
    acquire_reply_delay_ms: AtomicU64,
    /// Kill commands on the pod's stream are dropped while set.
    drop_kills: AtomicBool,
    /// Opening the pod's command stream fails with `Unavailable` while set.
    refuse_watch: AtomicBool,
    /// Acquires that reached the coordinator and whose reply is being held back.
    acquires_held: AtomicU64,
    /// Added before each route unregistration is sent, in milliseconds.
    unregister_delay_ms: AtomicU64,
    /// Acquires run on the coordinator, but the edge gets `Unavailable` instead of the answer.
    lose_acquire_answers: AtomicBool,
    /// When non-zero: the edge gets `Unavailable` at once, and the acquire reaches the
    /// coordinator this many milliseconds later.
    late_acquire_ms: AtomicU64,
    /// Late acquires not applied yet.
    late_acquires: AtomicU64,
    /// When non-zero: each acquire's answer is dropped and the acquire sent again this many
    /// milliseconds later (a failover retry).
    acquire_retry_ms: AtomicU64,
    /// How many of the next select calls run but lose their answers.
    select_answers_to_lose: AtomicU64,
    /// Heartbeat answers lose their inbox (kill commands) while set.
    drop_inbox: AtomicBool,
    /// Heartbeats fail with `Unavailable` without reaching the coordinator while set.
    fail_heartbeats: AtomicBool,
    /// How many of the next heartbeats whose answer is REGISTERED run but lose that answer.
    registered_answers_to_lose: AtomicU64,
    /// How many of the next release calls fail with `Unavailable` without reaching the
    /// coordinator.
    releases_to_fail: AtomicU64,
}

impl Faults {
    /// Holds every acquire reply back for `delay` (zero: no delay).
    pub fn delay_acquire_replies(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.acquire_reply_delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Holds every route unregistration back for `delay` before it is sent (a slow batch that
    /// lands after later registrations).
    pub fn delay_unregisters(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.unregister_delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Refuses to open the pod's command stream (`true`: `Unavailable`) or opens it again
    /// (`false`).
    pub fn refuse_watch(&self, refuse: bool) {
        self.refuse_watch.store(refuse, Ordering::Relaxed);
    }

    /// Drops kill commands (`true`) or delivers them again (`false`).
    pub fn drop_kills(&self, drop: bool) {
        self.drop_kills.store(drop, Ordering::Relaxed);
    }

    /// Acquires still run on the coordinator, but their answers are lost (`true`): the edge
    /// sees `Unavailable`.
    pub fn lose_acquire_answers(&self, lose: bool) {
        self.lose_acquire_answers.store(lose, Ordering::Relaxed);
    }

    /// Acquires fail at once with `Unavailable` and reach the coordinator `delay` later (zero:
    /// off), as a request stuck in a stopped coordinator replica would.
    pub fn apply_acquires_late(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.late_acquire_ms.store(ms, Ordering::Relaxed);
    }

    /// Late acquires (see [`Faults::apply_acquires_late`]) that have not reached the
    /// coordinator yet.
    pub fn late_acquires_pending(&self) -> u64 {
        self.late_acquires.load(Ordering::Relaxed)
    }

    /// Each acquire runs, its answer is dropped, and it is sent again `delay` later, as the
    /// channel's failover retry does when a replica goes silent (zero: off). Counted in
    /// [`Faults::acquires_held`] meanwhile.
    pub fn retry_acquires_after(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.acquire_retry_ms.store(ms, Ordering::Relaxed);
    }

    /// Heartbeats fail at once without reaching the coordinator (`true`), so the pod's lease
    /// lapses, or reach it again (`false`).
    pub fn fail_heartbeats(&self, fail: bool) {
        self.fail_heartbeats.store(fail, Ordering::Relaxed);
    }

    /// The next `n` heartbeats that (re)register the pod run on the coordinator, but the edge
    /// sees `Unavailable`: its retry then finds the pod registered and is answered RENEWED.
    pub fn lose_registered_answers(&self, n: u64) {
        self.registered_answers_to_lose.store(n, Ordering::Relaxed);
    }

    /// The next `n` select calls run on the coordinator, but the edge sees `Unavailable`.
    pub fn lose_select_answers(&self, n: u64) {
        self.select_answers_to_lose.store(n, Ordering::Relaxed);
    }

    /// While set, heartbeat answers arrive without their inbox, as if it could not be read.
    pub fn drop_inbox(&self, drop: bool) {
        self.drop_inbox.store(drop, Ordering::Relaxed);
    }

    /// The next `n` release calls fail (`Unavailable`) without reaching the coordinator.
    pub fn fail_releases(&self, n: u64) {
        self.releases_to_fail.store(n, Ordering::Relaxed);
    }

    /// Acquires the coordinator has answered whose reply is being held back now.
    pub fn acquires_held(&self) -> u64 {
        self.acquires_held.load(Ordering::Relaxed)
    }
}

/// Counts a held-back reply for as long as it lives (the caller may be cancelled meanwhile).
struct Held<'a>(&'a Faults);

impl<'a> Held<'a> {
    fn count(faults: &'a Faults) -> Self {
        faults.acquires_held.fetch_add(1, Ordering::Relaxed);
        Self(faults)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.acquires_held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// [`Coordinator`] delegating to a [`GrpcCoordinator`], with [`Faults`] applied.
#[derive(Debug, Clone)]
pub struct FaultInjector {
    inner: GrpcCoordinator,
    faults: Arc<Faults>,
}

impl FaultInjector {
    /// Wraps `inner`; the returned [`Faults`] flips the switches.
    pub fn new(inner: GrpcCoordinator) -> (Self, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        (
            Self {
                inner,
                faults: faults.clone(),
            },
            faults,
        )
    }
}

impl Coordinator for FaultInjector {
    async fn heartbeat(
        &self,
        pod: &PodIdentity,
        load: Load,
        acked: u64,
    ) -> Result<HeartbeatOutcome, CoordinatorError> {
        if self.faults.fail_heartbeats.load(Ordering::Relaxed) {
            return Err(CoordinatorError::Unavailable(
                "injected: heartbeat failed".into(),
            ));
        }
        let mut outcome = self.inner.heartbeat(pod, load, acked).await?;
        if outcome.registered
            && self
                .faults
                .registered_answers_to_lose
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(CoordinatorError::Unavailable(
                "injected: registered answer lost".into(),
            ));
        }
        if self.faults.drop_inbox.load(Ordering::Relaxed) {
            outcome.commands.clear();
            outcome.commands_through = 0;
        }
        Ok(outcome)
    }

    async fn deregister(&self, pod: &PodIdentity) -> Result<(), CoordinatorError> {
        self.inner.deregister(pod).await
    }

    async fn acquire(
        &self,
        pod: &PodId,
        request: AcquireRequest,
    ) -> Result<AcquireOutcome, CoordinatorError> {
        let late = self.faults.late_acquire_ms.load(Ordering::Relaxed);
        if late > 0 {
            let (inner, faults, pod) = (self.inner.clone(), self.faults.clone(), pod.clone());
            faults.late_acquires.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(late)).await;
                let outcome = inner.acquire(&pod, request).await;
                tracing::debug!(?outcome, "late acquire applied");
                faults.late_acquires.fetch_sub(1, Ordering::Relaxed);
            });
            return Err(CoordinatorError::Unavailable(
                "injected: acquire stuck on its way".to_owned(),
            ));
        }
        let retry = self.faults.acquire_retry_ms.load(Ordering::Relaxed);
        if retry > 0 {
            let first = self.inner.acquire(pod, request.clone()).await;
            let _held = Held::count(&self.faults);
            tracing::debug!(?first, "acquire answer dropped; sending it again");
            tokio::time::sleep(Duration::from_millis(retry)).await;
            return self.inner.acquire(pod, request).await;
        }
        let outcome = self.inner.acquire(pod, request).await;
        if self.faults.lose_acquire_answers.load(Ordering::Relaxed) {
            return Err(CoordinatorError::Unavailable(format!(
                "injected: acquire answer lost ({outcome:?})"
            )));
        }
        let delay = self.faults.acquire_reply_delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            let _held = Held::count(&self.faults);
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        outcome
    }

    async fn renew(
        &self,
        pod: &PodId,
        sessions: Vec<HeldSession>,
    ) -> Result<Vec<LostSession>, CoordinatorError> {
        self.inner.renew(pod, sessions).await
    }

    async fn release(
        &self,
        pod: &PodId,
        sessions: Vec<HeldSession>,
    ) -> Result<(), CoordinatorError> {
        let fail = self
            .faults
            .releases_to_fail
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(CoordinatorError::Unavailable(
                "injected release failure".to_owned(),
            ));
        }
        self.inner.release(pod, sessions).await
    }

    async fn select_chat(
        &self,
        pod: &PodId,
        session: &HeldSession,
        chat: &ChatId,
    ) -> Result<bool, CoordinatorError> {
        let outcome = self.inner.select_chat(pod, session, chat).await;
        let lose = self
            .faults
            .select_answers_to_lose
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if lose {
            return Err(CoordinatorError::Unavailable(format!(
                "injected: select answer lost ({outcome:?})"
            )));
        }
        outcome
    }

    async fn register_routes(
        &self,
        pod: &PodId,
        routes: Vec<Route>,
    ) -> Result<(), CoordinatorError> {
        self.inner.register_routes(pod, routes).await
    }

    async fn unregister_routes(
        &self,
        pod: &PodId,
        routes: Vec<Route>,
    ) -> Result<(), CoordinatorError> {
        let delay = self.faults.unregister_delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.inner.unregister_routes(pod, routes).await
    }

    async fn list_routes(&self, pod: &PodId) -> Result<Vec<Route>, CoordinatorError> {
        self.inner.list_routes(pod).await
    }

    async fn watch(&self, pod: &PodIdentity) -> Result<CommandStream, CoordinatorError> {
        if self.faults.refuse_watch.load(Ordering::Relaxed) {
            return Err(CoordinatorError::Unavailable(
                "fault injector: command stream refused".to_owned(),
            ));
        }
        let stream = self.inner.watch(pod).await?;
        let faults = self.faults.clone();
        Ok(stream
            .filter(move |command| {
                let lost = matches!(command, Ok(PodCommand::Kill(_)))
                    && faults.drop_kills.load(Ordering::Relaxed);
                std::future::ready(!lost)
            })
            .boxed())
    }
}
