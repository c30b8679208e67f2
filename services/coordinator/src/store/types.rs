//! The store's vocabulary: what edges ask for (acquire, renew, release), what the store answers,
//! and what operators see. Plain data over the domain ids, with no transport or Redis types, so
//! the gRPC layer and both stores share one meaning.

use daisi_domain::coordination::FencingToken;
use daisi_domain::{AgentId, ChatId, CompanyId, ConnectionId, PodId, SessionKey};
use jiff::Timestamp;
use std::time::Duration;

use super::Route;

/// Timing every store applies; taken from the coordinator's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSettings {
    /// A pod is purged when it does not heartbeat for this long; its sessions, which have no
    /// lease of their own, are vacant from that moment (before the purge).
    pub pod_lease: Duration,
    /// How long a user's selected chat is kept after its session ends, so a reconnect restores
    /// it.
    pub selection_retention: Duration,
    /// How long a connection that was taken over or killed is remembered (its tombstone), so
    /// that its next renew learns the true reason and no acquire brings it back, even when
    /// the kill command never reached its edge. Must cover the pod's next heartbeat (its
    /// inbox keeps the kill as long) and should cover the edge's next successful session audit.
    pub tombstone_ttl: Duration,
}

impl StoreSettings {
    /// Default selection retention: long enough for a laptop lid to close over lunch.
    pub const DEFAULT_SELECTION_RETENTION: Duration = Duration::from_secs(3600);
}

/// How [`AcquireRequest`] treats a key held by another connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireMode {
    /// The newcomer wins; the holder is killed.
    Takeover,
    /// Take the key only if nobody (or this very connection) holds it.
    IfVacant,
}

/// A connection holding (or having held) a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Pod of the socket; kill commands go to its stream.
    pub pod: PodId,
    /// The socket.
    pub connection: ConnectionId,
    /// The grant's fencing token.
    pub fencing: FencingToken,
}

/// A new connection asking for its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcquireRequest {
    /// Whose session.
    pub key: SessionKey,
    /// The connection's pod; must be registered.
    pub pod: PodId,
    /// The connection.
    pub connection: ConnectionId,
    /// Takeover or if-vacant.
    pub mode: AcquireMode,
    /// Routes registered for `pod` together with the grant (not when refused).
    pub routes: Vec<Route>,
}

/// The answer to an [`AcquireRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireOutcome {
    /// The connection holds the session now.
    Granted(Grant),
    /// If-vacant only: someone else holds it; nothing changed.
    Refused(Holder),
    /// The connection was taken over or killed within the tombstone lifetime (any mode):
    /// nothing changed, and the caller must close it. A kill is never undone by a retried or
    /// restoring acquire.
    Ended {
        /// Why the connection lost the session ([`EndReason::TakenOver`] or
        /// [`EndReason::KilledByAdmin`]).
        reason: EndReason,
        /// Who holds the key now, if anyone.
        current: Option<Holder>,
    },
}

/// A granted session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Strictly greater than every earlier token of the key.
    pub fencing: FencingToken,
    /// The holder this grant took the session from (already sent a kill command).
    pub previous: Option<Holder>,
    /// The user's last selected chat, restored (and its chat route registered for the pod).
    pub selected_chat: Option<ChatId>,
}

/// A session as an edge believes it holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeldSession {
    /// Whose session.
    pub key: SessionKey,
    /// The socket.
    pub connection: ConnectionId,
    /// Token of the socket's grant.
    pub fencing: FencingToken,
}

/// Why a connection no longer holds its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// Another connection acquired the key.
    TakenOver,
    /// An operator killed it.
    KilledByAdmin,
    /// It lapsed, was released, or never existed.
    Expired,
    /// The pod was purged with all its sessions.
    PodPurged,
}

impl EndReason {
    /// Stable lowercase name (wire format of kill commands, metric labels).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TakenOver => "taken_over",
            Self::KilledByAdmin => "killed_by_admin",
            Self::Expired => "expired",
            Self::PodPurged => "pod_purged",
        }
    }

    /// Parses [`EndReason::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::TakenOver,
            Self::KilledByAdmin,
            Self::Expired,
            Self::PodPurged,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
    }
}

/// A session of a renew request that the pod no longer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostSession {
    /// As sent by the pod.
    pub session: HeldSession,
    /// Why it is gone.
    pub reason: EndReason,
    /// Who holds the key now, if anyone.
    pub current: Option<Holder>,
}

/// The answer to a release batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Released {
    /// Sessions deleted.
    pub count: u32,
    /// Sessions left alone: someone else holds them or they were gone.
    pub not_held: Vec<HeldSession>,
}

/// A stored session, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Whose session.
    pub key: SessionKey,
    /// Who holds it.
    pub holder: Holder,
    /// When the holder acquired it.
    pub since: Timestamp,
    /// When it lapses unless its pod heartbeats: its pod's lease end.
    pub lease_expires_at: Timestamp,
    /// The selected chat (user sessions only).
    pub selected_chat: Option<ChatId>,
}

/// A command for one pod: close a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillCommand {
    /// The pod whose edge holds the connection.
    pub pod: PodId,
    /// The session being ended.
    pub key: SessionKey,
    /// The connection to close.
    pub connection: ConnectionId,
    /// Token of the grant being killed; the edge ignores kills of newer grants.
    pub fencing: FencingToken,
    /// Why.
    pub reason: EndReason,
    /// Free text for logs (an operator's reason); never shown to clients.
    pub message: String,
    /// When it was raised.
    pub issued_at: Timestamp,
}

/// One entry of a pod's inbox: a kill command kept for the pod's heartbeats, so a command its
/// stream missed is still applied ([`super::SessionStore::pod_inbox`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEntry {
    /// Increasing per store; the pod acknowledges entries up to a sequence.
    pub sequence: u64,
    /// The command, as streamed.
    pub command: KillCommand,
}

/// Most entries kept in one pod's inbox (the newest). A pod that falls this far behind has lost
/// far more than kills; its sessions' renews still tell it each true reason.
pub const INBOX_LIMIT: usize = 1_000;

/// Self-reported load of a pod.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodLoad {
    /// Open user sockets.
    pub user_sockets: u32,
    /// Open admin sockets.
    pub admin_sockets: u32,
}

/// One heartbeat of an edge pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodHeartbeat {
    /// The pod.
    pub pod: PodId,
    /// Random id of the pod's process; a new one purges the previous life's state.
    pub instance: String,
    /// URI of the pod's delivery endpoint.
    pub delivery_address: String,
    /// Optional load report.
    pub load: Option<PodLoad>,
}

/// What a heartbeat did. `registration` is the pod's registration number after the call: it
/// changes exactly when the pod was registered anew, so an edge that missed the `Registered`
/// answer (a reply lost, a retry on another replica) still sees that it must restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// The lease was extended; sessions and routes are intact.
    Renewed {
        /// The pod's registration number.
        registration: u64,
    },
    /// The pod starts empty: first heartbeat, new instance, or lapsed lease. `purged` counts
    /// what the previous registration left behind.
    Registered {
        /// State of the previous registration that was purged.
        purged: Purged,
        /// The pod's new registration number.
        registration: u64,
    },
}

impl HeartbeatOutcome {
    /// The pod's registration number after the heartbeat.
    pub fn registration(&self) -> u64 {
        match self {
            Self::Renewed { registration } | Self::Registered { registration, .. } => *registration,
        }
    }
}

/// Counts of what a pod purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Sessions deleted.
    pub sessions: u32,
    /// Route registrations deleted.
    pub routes: u32,
}

/// A registered pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRecord {
    /// The pod.
    pub pod: PodId,
    /// Its current process.
    pub instance: String,
    /// URI of its delivery endpoint.
    pub delivery_address: String,
    /// First heartbeat of this instance.
    pub registered_at: Timestamp,
    /// Latest heartbeat.
    pub last_heartbeat_at: Timestamp,
    /// Purged after this unless it heartbeats.
    pub lease_expires_at: Timestamp,
    /// As of the latest heartbeat.
    pub load: Option<PodLoad>,
}

/// The answer to a batched route lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    /// Per query, in query order: the live pods interested.
    pub results: Vec<Vec<PodId>>,
    /// Every pod named in `results`, once.
    pub pods: Vec<PodRecord>,
}

/// The answer to a pod resolution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Registered pods within their lease.
    pub pods: Vec<PodRecord>,
    /// The ids asked for that are not registered.
    pub unknown: Vec<PodId>,
}

/// Which sessions an operator lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionFilter {
    /// User sessions of a company.
    Company(CompanyId),
    /// User sessions of one agent of a company.
    Agent(CompanyId, AgentId),
    /// Admin sessions.
    Admins,
}

/// Which route registrations an operator lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteSelector {
    /// The pods of one route.
    Route(Route),
    /// The routes of one pod.
    Pod(PodId),
}

/// One (route, pod) registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    /// The interest.
    pub route: Route,
    /// The pod holding it.
    pub pod: PodId,
}

/// One page of a listing: at most `size` items after the position `token` points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Most items wanted (the page may hold fewer even when more follow).
    pub size: usize,
    /// Opaque position from the previous page; `None` for the first page.
    pub token: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts; `None` when the listing is complete.
    pub next: Option<String>,
}
