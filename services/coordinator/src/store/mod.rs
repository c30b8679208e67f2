//! The coordinator's storage, behind one small trait: exclusive sessions with fencing tokens,
//! the kill-command fan-out between replicas, the route and pod registries, and the purge of
//! expired pods. [`RedisStore`] is the production store; [`MemoryStore`] keeps the same
//! semantics in process for the dev stack and tests. Both pass one contract test suite
//! (`tests/it/contract`).
//!
//! Business code (the gRPC services, the reaper) sees only this trait and its data types.

mod error;
mod fanout;
mod memory;
pub mod redis;
mod types;

pub use self::redis::{
    Connection as RedisConnection, RedisSettings, RedisStore, RedisTarget, RedisTls,
};
pub use daisi_domain::coordination::{Route, RouteParseError, RouteQuery};
pub use error::StoreError;
pub use fanout::CommandStream;
pub use memory::MemoryStore;
pub use types::*;

use daisi_domain::{ChatId, ConnectionId, PodId, SessionKey};
use std::future::Future;

/// Result of every store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// Sessions, kill commands, routes and pods. Every operation is atomic per item under any
/// interleaving of calls from any number of coordinator replicas.
///
/// Calls naming a pod (except removals and [`SessionStore::deregister`]) fail with
/// [`StoreError::UnknownPod`] unless the pod is registered and within its lease.
///
/// A session has no lease of its own: it is held exactly as long as the pod registration that
/// acquired it lives (the pod's current registration, within its lease; a pod that lapsed and
/// heartbeats again starts a new registration), so the pod's heartbeat keeps all its sessions.
/// The sessions of a lapsed or re-registered pod are vacant at once, before any purge: every
/// call treats them as absent, and taking one kills nobody.
pub trait SessionStore: Send + Sync + 'static {
    /// The timing this store applies.
    fn settings(&self) -> &StoreSettings;

    /// Gives the session to a new connection. Takeover kills the previous holder (a
    /// [`KillCommand`] for its pod) and tombstones it; if-vacant refuses instead. A connection
    /// that already holds the key gets its grant back. A tombstoned
    /// connection (taken over or killed within [`StoreSettings::tombstone_ttl`]) is refused in
    /// every mode ([`AcquireOutcome::Ended`]): nothing undoes a kill.
    fn acquire(
        &self,
        request: AcquireRequest,
    ) -> impl Future<Output = StoreResult<AcquireOutcome>> + Send;

    /// Audits `sessions` of `pod` (read-only: sessions live with their pod); answers those it
    /// no longer holds (a grant of another pod is not held by `pod`). A tombstoned connection is reported with its tombstone's reason (taken
    /// over, killed by an operator), never as expired, even once the key is vacant again.
    fn renew(
        &self,
        pod: &PodId,
        sessions: &[HeldSession],
    ) -> impl Future<Output = StoreResult<Vec<LostSession>>> + Send;

    /// Compare-and-delete of `sessions`: each is removed only if `pod` holds it and its
    /// connection and fencing token still match, so a taken-over session keeps its new holder
    /// and a pod never removes another pod's session. A session released with
    /// [`FencingToken::ABANDONED`](daisi_domain::coordination::FencingToken::ABANDONED) is
    /// removed if its connection holds it on `pod` with any token, and the connection is
    /// tombstoned ([`EndReason::Expired`]) unless it holds the key on another pod: an acquire
    /// of it whose answer was lost cannot grant it later.
    fn release(
        &self,
        pod: &PodId,
        sessions: &[HeldSession],
    ) -> impl Future<Output = StoreResult<Released>> + Send;

    /// Stores the selected chat of a held user session and registers its chat route for
    /// `pod`, on every call (idempotent: `true` always means the route is in place). `false`
    /// when the session is not held by that grant of `pod` any more.
    fn select_chat(
        &self,
        pod: &PodId,
        session: &HeldSession,
        chat: &ChatId,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// The session of `key`, if someone holds it.
    fn get_session(
        &self,
        key: &SessionKey,
    ) -> impl Future<Output = StoreResult<Option<SessionInfo>>> + Send;

    /// A page of the sessions matching `filter`.
    fn list_sessions(
        &self,
        filter: &SessionFilter,
        page: &PageRequest,
    ) -> impl Future<Output = StoreResult<Page<SessionInfo>>> + Send;

    /// Deletes the session of `key` (only if `connection` holds it, when given), tombstones its
    /// holder and sends it a kill command with [`EndReason::KilledByAdmin`]. Answers the killed
    /// session. A named `connection` that does not hold the key is tombstoned all the same (its
    /// acquire may be in flight; it is then refused).
    fn kill_session(
        &self,
        key: &SessionKey,
        connection: Option<&ConnectionId>,
        message: &str,
    ) -> impl Future<Output = StoreResult<Option<SessionInfo>>> + Send;

    /// Kill commands for `pod`, raised on any replica, from the moment this returns. The stream
    /// ends when this replica loses its subscription (commands may have been missed: the
    /// caller reconnects, and the next renew reports lost sessions with their true reason).
    fn watch_commands(
        &self,
        pod: &PodId,
    ) -> impl Future<Output = StoreResult<CommandStream>> + Send;

    /// The inbox of `pod`: the kill commands raised for it (takeovers, operator kills) within
    /// [`StoreSettings::tombstone_ttl`], oldest first, at most [`INBOX_LIMIT`], after dropping
    /// the entries up to sequence `acked` (sequences increase per pod). The same commands
    /// [`SessionStore::watch_commands`] streams, appended in the same atomic step that
    /// publishes them, so a command a stream missed (lost pub/sub message, broken stream)
    /// reaches the pod with its next heartbeat.
    fn pod_inbox(
        &self,
        pod: &PodId,
        acked: u64,
    ) -> impl Future<Output = StoreResult<Vec<InboxEntry>>> + Send;

    /// Adds routes of `pod` (set semantics).
    fn register_routes(
        &self,
        pod: &PodId,
        routes: &[Route],
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Removes routes of `pod`; missing ones are ignored. Allowed for unknown pods.
    fn unregister_routes(
        &self,
        pod: &PodId,
        routes: &[Route],
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// For each query, the live pods interested, plus those pods' records.
    fn lookup_routes(
        &self,
        queries: &[RouteQuery],
    ) -> impl Future<Output = StoreResult<Lookup>> + Send;

    /// A page of route registrations.
    fn list_routes(
        &self,
        selector: &RouteSelector,
        page: &PageRequest,
    ) -> impl Future<Output = StoreResult<Page<RouteEntry>>> + Send;

    /// Registers or extends the lease of a pod; a new instance (or a lapsed lease) purges the
    /// previous registration's sessions and routes. The purge never touches what the new
    /// registration acquires or registers meanwhile. `purged` counts what this call removed: a
    /// store may finish a large purge later (the Redis store sweeps for at most its timeout
    /// here and leaves the rest to the reaper).
    fn heartbeat(
        &self,
        heartbeat: &PodHeartbeat,
    ) -> impl Future<Output = StoreResult<HeartbeatOutcome>> + Send;

    /// Removes `pod` if `instance` is its current instance, purging its sessions and routes
    /// (counted and finished as in [`SessionStore::heartbeat`]).
    fn deregister(
        &self,
        pod: &PodId,
        instance: &str,
    ) -> impl Future<Output = StoreResult<Purged>> + Send;

    /// The live records of `pods`, and the ids that are not registered.
    fn resolve_pods(&self, pods: &[PodId]) -> impl Future<Output = StoreResult<Resolved>> + Send;

    /// A page of live pods.
    fn list_pods(
        &self,
        page: &PageRequest,
    ) -> impl Future<Output = StoreResult<Page<PodRecord>>> + Send;

    /// Purges every pod whose lease lapsed, with its sessions and routes, and finishes purges
    /// a crashed replica left midway. Safe to run on every replica at once: each pod is
    /// purged by exactly one caller, never one that registered again meanwhile, and nothing
    /// a new registration of the pod holds is touched.
    fn reap_expired_pods(&self) -> impl Future<Output = StoreResult<Vec<(PodId, Purged)>>> + Send;
}

/// The chat route of a user session, `None` for admin sessions (both stores register it on
/// select and restore it on acquire).
pub(crate) fn chat_route(
    key: &daisi_domain::SessionKey,
    chat: &daisi_domain::ChatId,
) -> Option<Route> {
    match key {
        daisi_domain::SessionKey::User { company, agent, .. } => Some(Route::Chat {
            company: company.clone(),
            agent: agent.clone(),
            chat: chat.clone(),
        }),
        daisi_domain::SessionKey::Admin { .. } => None,
    }
}
