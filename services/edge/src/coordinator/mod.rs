//! What the edge needs from the session coordinator, as a small trait in the edge's own terms.
//!
//! Business code (sockets, lifecycle loops) only sees [`Coordinator`] and the plain types
//! below; [`grpc`] is the tonic transport to the real coordinator and [`faults`] a fault
//! injector in front of it for tests. There is no second implementation of the session
//! semantics here: tests, benches and examples run the coordinator's own service over its
//! in-memory store, in process, as `daisi dev` does. [`AnyCoordinator`] picks one at start-up,
//! a closed set rather than a trait object because async trait methods are not object safe.

mod convert;
pub mod faults;
pub mod grpc;

use daisi_domain::{ChatId, ConnectionId, PodId, SessionKey};

/// One interest of this pod in the route registry.
pub use daisi_domain::coordination::Route;
use futures_util::stream::BoxStream;
use std::future::Future;
use std::time::Duration;

/// A coordinator call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CoordinatorError {
    /// Unreachable, overloaded or too slow: the edge answers 503 + `Retry-After`.
    #[error("coordinator unavailable: {0}")]
    Unavailable(String),
    /// The coordinator does not know this pod (instance): heartbeat, then retry.
    #[error("pod not registered with the coordinator")]
    UnknownPod,
    /// The coordinator refused the request itself; retrying would not help.
    #[error("coordinator refused the request: {0}")]
    Rejected(String),
}

/// A session as held by one of this pod's connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeldSession {
    /// Whose session.
    pub key: SessionKey,
    /// The socket holding it.
    pub connection: ConnectionId,
    /// The fencing token of the socket's grant.
    pub fencing: u64,
}

impl HeldSession {
    /// Released, gives up whatever grant `connection` holds or is about to be given (fencing
    /// token 0, never granted): the release of an acquire whose answer was lost. The
    /// coordinator also tombstones the connection, so that acquire, if it is applied late, is
    /// refused.
    pub fn abandoned(key: SessionKey, connection: ConnectionId) -> Self {
        Self {
            key,
            connection,
            fencing: 0,
        }
    }
}

/// How an acquire treats a key held by another connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireMode {
    /// A new connection: take the session from whoever holds it (compat: newcomer wins).
    Takeover,
    /// Restoring live sockets after this pod was purged: never kill a newer connection.
    IfVacant,
}

/// What a new connection asks for.
#[derive(Debug, Clone)]
pub struct AcquireRequest {
    /// The session.
    pub key: SessionKey,
    /// The new connection.
    pub connection: ConnectionId,
    /// Takeover for new sockets.
    pub mode: AcquireMode,
    /// Routes registered with the grant (saves a round trip on connect).
    pub routes: Vec<Route>,
}

/// Who held a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its pod.
    pub pod: String,
    /// Its connection.
    pub connection: String,
    /// Its fencing token.
    pub fencing: u64,
}

/// The answer to an acquire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireOutcome {
    /// The connection holds the session now.
    Granted {
        /// Fencing token of the grant.
        fencing: u64,
        /// The connection that lost the session, if any (already sent a kill command).
        previous: Option<Holder>,
        /// The chat the user selected last; its route is already registered.
        selected_chat: Option<ChatId>,
    },
    /// IF_VACANT only: someone else holds it.
    Refused,
    /// This very connection lost the session a moment ago (taken over, killed, abandoned:
    /// the coordinator's tombstone), in any mode. Never retried: the socket is closed with
    /// 4402.
    Ended {
        /// Why, as the tombstone says.
        reason: EndReason,
    },
}

/// Why a session ended for its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Another connection took it.
    TakenOver,
    /// An operator killed it.
    KilledByAdmin,
    /// Its lease lapsed or it was released.
    Expired,
    /// This pod was purged from the registry.
    PodPurged,
    /// A reason this edge does not know (newer coordinator).
    Other,
}

impl EndReason {
    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TakenOver => "taken_over",
            Self::KilledByAdmin => "killed_by_admin",
            Self::Expired => "expired",
            Self::PodPurged => "pod_purged",
            Self::Other => "other",
        }
    }
}

/// A session the pod no longer holds, from a renew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostSession {
    /// The session as the pod held it.
    pub session: HeldSession,
    /// Why.
    pub reason: EndReason,
}

/// Timing the coordinator hands out with each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    /// The pod was (re)registered empty: routes and sessions must be restored.
    pub registered: bool,
    /// The pod's registration number after the call (0: not reported). A change means the
    /// pod was registered anew, also when the answer that said so was lost.
    pub registration: u64,
    /// When to heartbeat next.
    pub heartbeat_interval: Duration,
    /// The pod's inbox: kill commands raised for it and not yet acknowledged, oldest first
    /// (the repair path for kills the command stream missed).
    pub commands: Vec<Kill>,
    /// The highest inbox sequence in this answer (0 when empty): acknowledged with the next
    /// heartbeat once `commands` are applied.
    pub commands_through: u64,
}

/// This pod's identity in the pod registry.
#[derive(Debug, Clone)]
pub struct PodIdentity {
    /// Stable name.
    pub pod: PodId,
    /// Random per process start.
    pub instance: String,
    /// Where routers reach the delivery API.
    pub delivery_address: String,
}

/// A kill command for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    /// The session.
    pub key: SessionKey,
    /// The connection to close.
    pub connection: String,
    /// Close only if the socket's grant is not newer than this.
    pub fencing: u64,
    /// Why.
    pub reason: EndReason,
}

/// One message of the pod's command stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodCommand {
    /// The stream is live; `ping_interval` is the keep-alive period.
    Subscribed {
        /// Keep-alive period of this stream.
        ping_interval: Duration,
    },
    /// Close a connection.
    Kill(Kill),
    /// Keep-alive.
    Ping,
    /// Something this edge does not know; ignored.
    Unknown,
}

/// The command stream; ends or errors when the coordinator connection breaks.
pub type CommandStream = BoxStream<'static, Result<PodCommand, CoordinatorError>>;

/// Load reported with heartbeats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Open user sockets.
    pub user_sockets: u32,
    /// Open admin sockets.
    pub admin_sockets: u32,
}

/// The coordinator operations the edge uses.
pub trait Coordinator: Send + Sync {
    /// Registers the pod or extends its lease; acknowledges the pod's inbox up to `acked`.
    fn heartbeat(
        &self,
        pod: &PodIdentity,
        load: Load,
        acked: u64,
    ) -> impl Future<Output = Result<HeartbeatOutcome, CoordinatorError>> + Send;

    /// Removes the pod and whatever it still holds.
    fn deregister(
        &self,
        pod: &PodIdentity,
    ) -> impl Future<Output = Result<(), CoordinatorError>> + Send;

    /// Takes a session for a new connection.
    fn acquire(
        &self,
        pod: &PodId,
        request: AcquireRequest,
    ) -> impl Future<Output = Result<AcquireOutcome, CoordinatorError>> + Send;

    /// Renews a batch; returns the sessions no longer held.
    fn renew(
        &self,
        pod: &PodId,
        sessions: Vec<HeldSession>,
    ) -> impl Future<Output = Result<Vec<LostSession>, CoordinatorError>> + Send;

    /// Releases a batch (compare-and-delete).
    fn release(
        &self,
        pod: &PodId,
        sessions: Vec<HeldSession>,
    ) -> impl Future<Output = Result<(), CoordinatorError>> + Send;

    /// Stores a user's selected chat and registers its route; `false` when the session is
    /// no longer held.
    fn select_chat(
        &self,
        pod: &PodId,
        session: &HeldSession,
        chat: &ChatId,
    ) -> impl Future<Output = Result<bool, CoordinatorError>> + Send;

    /// Adds routes of this pod.
    fn register_routes(
        &self,
        pod: &PodId,
        routes: Vec<Route>,
    ) -> impl Future<Output = Result<(), CoordinatorError>> + Send;

    /// Removes routes of this pod.
    fn unregister_routes(
        &self,
        pod: &PodId,
        routes: Vec<Route>,
    ) -> impl Future<Output = Result<(), CoordinatorError>> + Send;

    /// Every route of this pod, as the coordinator holds them (paged underneath).
    fn list_routes(
        &self,
        pod: &PodId,
    ) -> impl Future<Output = Result<Vec<Route>, CoordinatorError>> + Send;

    /// Opens the pod's command stream.
    fn watch(
        &self,
        pod: &PodIdentity,
    ) -> impl Future<Output = Result<CommandStream, CoordinatorError>> + Send;
}

/// The coordinator the edge runs against: the real one over gRPC, directly or behind the
/// fault injector.
#[derive(Debug, Clone)]
pub enum AnyCoordinator {
    /// tonic client of `daisi.coordinator.v1`.
    Grpc(grpc::GrpcCoordinator),
    /// The gRPC client behind a fault injector (tests).
    Faulty(faults::FaultInjector),
}

macro_rules! dispatch {
    ($self:ident, $c:ident => $call:expr) => {
        match $self {
            AnyCoordinator::Grpc($c) => $call.await,
            AnyCoordinator::Faulty($c) => $call.await,
        }
    };
}

impl Coordinator for AnyCoordinator {
    async fn heartbeat(
        &self,
        pod: &PodIdentity,
        load: Load,
        acked: u64,
    ) -> Result<HeartbeatOutcome, CoordinatorError> {
        dispatch!(self, c => c.heartbeat(pod, load, acked))
    }

    async fn deregister(&self, pod: &PodIdentity) -> Result<(), CoordinatorError> {
        dispatch!(self, c => c.deregister(pod))
    }

    async fn acquire(
        &self,
        pod: &PodId,
        request: AcquireRequest,
    ) -> Result<AcquireOutcome, CoordinatorError> {
        dispatch!(self, c => c.acquire(pod, request))
    }

    async fn renew(
        &self,
        pod: &PodId,
        sessions: Vec<HeldSession>,
    ) -> Result<Vec<LostSession>, CoordinatorError> {
        dispatch!(self, c => c.renew(pod, sessions))
    }

    async fn release(
        &self,
        pod: &PodId,
        sessions: Vec<HeldSession>,
    ) -> Result<(), CoordinatorError> {
        dispatch!(self, c => c.release(pod, sessions))
    }

    async fn select_chat(
        &self,
        pod: &PodId,
        session: &HeldSession,
        chat: &ChatId,
    ) -> Result<bool, CoordinatorError> {
        dispatch!(self, c => c.select_chat(pod, session, chat))
    }

    async fn register_routes(
        &self,
        pod: &PodId,
        routes: Vec<Route>,
    ) -> Result<(), CoordinatorError> {
        dispatch!(self, c => c.register_routes(pod, routes))
    }

    async fn unregister_routes(
        &self,
        pod: &PodId,
        routes: Vec<Route>,
    ) -> Result<(), CoordinatorError> {
        dispatch!(self, c => c.unregister_routes(pod, routes))
    }

    async fn list_routes(&self, pod: &PodId) -> Result<Vec<Route>, CoordinatorError> {
        dispatch!(self, c => c.list_routes(pod))
    }

    async fn watch(&self, pod: &PodIdentity) -> Result<CommandStream, CoordinatorError> {
        dispatch!(self, c => c.watch(pod))
    }
}
