//! What the rest of the edge knows about one socket: who it is, which session grant it holds,
//! which chat it selected (and which selection is on its way), and its send queue.

use super::outbox::Outbox;
use super::selection::Selection;
use crate::coordinator::HeldSession;
use daisi_domain::protocol::Subprotocol;
use daisi_domain::token::AdminClaims;
use daisi_domain::{AgentId, ChatId, CompanyId, ConnectionId, SessionKey};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// The two kinds of sockets.
#[derive(Debug, Clone)]
pub enum SocketKind {
    /// `GET /ws/{company}/{agent}`.
    User {
        /// From the token (and the path).
        company: CompanyId,
        /// From the token (and the path).
        agent: AgentId,
    },
    /// `GET /ws/admin`; the claims decide which `agents` events it gets.
    Admin(Box<AdminClaims>),
}

impl SocketKind {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::User { .. } => "user",
            Self::Admin(_) => "admin",
        }
    }
}

/// One socket, shared between its task, the local index and the lifecycle loops.
#[derive(Debug)]
pub struct SocketHandle {
    /// Local index key (cheaper than the connection id string).
    pub id: u64,
    /// The id the coordinator knows the socket by.
    pub connection: ConnectionId,
    /// User or admin.
    pub kind: SocketKind,
    /// The session the socket holds.
    pub key: SessionKey,
    /// Fencing token of the current grant (changes when the session is re-acquired after a
    /// pod purge).
    fencing: AtomicU64,
    /// The chat whose `messages` this socket receives.
    selected_chat: Mutex<Option<ChatId>>,
    /// Set once the session is known to be gone, so it is neither renewed nor released.
    session_lost: AtomicBool,
    /// Frames to send.
    pub outbox: Outbox,
    /// The `select_chat` request in flight and the one waiting behind it, if any.
    pub(crate) selection: Selection,
    /// `json.v1` or `json.v2`.
    pub protocol: Subprotocol,
    /// When the socket's token expires (Unix milliseconds; `i64::MAX` unknown). A `refresh`
    /// moves it later.
    expires_at_ms: AtomicI64,
    /// Whether the socket is closed once its token expires.
    enforce_expiry: bool,
}

impl SocketHandle {
    /// A new handle.
    pub fn new(
        id: u64,
        connection: ConnectionId,
        kind: SocketKind,
        key: SessionKey,
        fencing: u64,
        outbox: Outbox,
    ) -> Self {
        Self {
            id,
            connection,
            kind,
            key,
            fencing: AtomicU64::new(fencing),
            selected_chat: Mutex::new(None),
            session_lost: AtomicBool::new(false),
            outbox,
            selection: Selection::default(),
            protocol: Subprotocol::V1,
            expires_at_ms: AtomicI64::new(i64::MAX),
            enforce_expiry: false,
        }
    }

    /// The socket speaks `protocol`.
    pub fn with_protocol(mut self, protocol: Subprotocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The socket's token expires at `expires_at_ms` (Unix milliseconds); with `enforce`, the
    /// socket is closed then unless a refresh came first.
    pub fn with_expiry(mut self, expires_at_ms: i64, enforce: bool) -> Self {
        self.expires_at_ms = AtomicI64::new(expires_at_ms);
        self.enforce_expiry = enforce;
        self
    }

    /// When the socket's token expires (Unix milliseconds).
    pub fn expires_at_ms(&self) -> i64 {
        self.expires_at_ms.load(Ordering::Relaxed)
    }

    /// Whether the socket is closed when its token expires.
    pub fn expiry_enforced(&self) -> bool {
        self.enforce_expiry
    }

    /// A refresh: the expiry moves to `expires_at_ms` if that is later; `false` otherwise.
    pub fn extend_expiry(&self, expires_at_ms: i64) -> bool {
        self.expires_at_ms
            .fetch_max(expires_at_ms, Ordering::Relaxed)
            < expires_at_ms
    }

    /// The current fencing token.
    pub fn fencing(&self) -> u64 {
        self.fencing.load(Ordering::Relaxed)
    }

    /// Records a new grant.
    pub fn set_fencing(&self, fencing: u64) {
        self.fencing.store(fencing, Ordering::Relaxed);
    }

    /// The session as held by this socket, for renew/release/select.
    pub fn held(&self) -> HeldSession {
        HeldSession {
            key: self.key.clone(),
            connection: self.connection.clone(),
            fencing: self.fencing(),
        }
    }

    /// The selected chat.
    pub fn selected_chat(&self) -> Option<ChatId> {
        self.selected_chat.lock().clone()
    }

    /// Replaces the selected chat, returning the previous one.
    pub(crate) fn swap_selected_chat(&self, chat: Option<ChatId>) -> Option<ChatId> {
        std::mem::replace(&mut *self.selected_chat.lock(), chat)
    }

    /// Marks the session as gone (taken over, killed, expired).
    pub fn mark_session_lost(&self) {
        self.session_lost.store(true, Ordering::Relaxed);
    }

    /// Whether the session is gone.
    pub fn session_lost(&self) -> bool {
        self.session_lost.load(Ordering::Relaxed)
    }

    /// Company and agent of a user socket.
    pub fn user_agent(&self) -> Option<(&CompanyId, &AgentId)> {
        match &self.kind {
            SocketKind::User { company, agent } => Some((company, agent)),
            SocketKind::Admin(_) => None,
        }
    }
}
