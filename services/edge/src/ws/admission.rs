//! Admission of a new socket, before the upgrade: capacity and drain checks, the session
//! acquired from the coordinator (with its routes), the socket entered in the local index with
//! the `ready` frame queued, and a [`SocketLease`] that undoes all of it when dropped, whether
//! the socket ran and closed or the upgrade never completed.

use super::handle::{SocketHandle, SocketKind};
use super::outbox::{CloseCause, CloseRequest, Outbox};
use crate::coordinator::{
    AcquireMode, AcquireOutcome, AcquireRequest, Coordinator, CoordinatorError,
};
use crate::lifecycle::pod;
use crate::registry::{base_route, chat_route};
use crate::state::Edge;
use axum::extract::ws::Utf8Bytes;
use daisi_domain::protocol::{READY_FRAME, Subprotocol};
use daisi_domain::{ConnectionId, SessionKey};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio_util::task::task_tracker::TaskTrackerToken;

/// Why a socket was not admitted; each maps to a plain HTTP answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// SIGTERM received.
    #[error("edge is draining")]
    Draining,
    /// `max_connections` reached.
    #[error("edge is at capacity")]
    Capacity,
    /// The coordinator cannot be reached (503 + Retry-After).
    #[error("coordinator unavailable: {0}")]
    CoordinatorDown(String),
    /// The coordinator refused (500).
    #[error("coordinator refused: {0}")]
    CoordinatorRefused(String),
    /// IF_VACANT refusals never happen for new sockets; kept for completeness (409).
    #[error("session held elsewhere")]
    Conflict,
}

/// An admitted socket. Dropping it removes the socket from the index, queues its session for
/// release (unless it was lost) and updates the gauges.
#[derive(Debug)]
pub struct SocketLease {
    edge: Edge,
    /// The socket.
    pub handle: Arc<SocketHandle>,
    /// Why it closed, once known (for the disconnect metric).
    reason: std::sync::Mutex<&'static str>,
    started: AtomicBool,
    /// When the socket task started, for the connection-duration histogram.
    connected_at: std::sync::OnceLock<Instant>,
    _task: TaskTrackerToken,
}

impl SocketLease {
    /// The socket task started; from now on the socket counts as connected.
    pub fn started(&self) {
        self.started.store(true, Ordering::Relaxed);
        let _ = self.connected_at.set(Instant::now());
        self.edge
            .metrics
            .connects
            .with_label_values(&[self.handle.kind.label()])
            .inc();
    }

    /// Records why the socket closed.
    pub fn set_reason(&self, reason: &'static str) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// The shared edge state.
    pub fn edge(&self) -> &Edge {
        &self.edge
    }
}

impl Drop for SocketLease {
    fn drop(&mut self) {
        let edge = &self.edge;
        if edge.registry.remove(&self.handle) && !self.handle.session_lost() {
            edge.releases.push(self.handle.held());
        }
        let reason = if self.started.load(Ordering::Relaxed) {
            *self.reason.lock().unwrap_or_else(|e| e.into_inner())
        } else {
            "upgrade_failed"
        };
        edge.metrics.disconnects.with_label_values(&[reason]).inc();
        if let Some(at) = self.connected_at.get() {
            edge.metrics
                .connection_seconds
                .with_label_values(&[self.handle.kind.label()])
                .observe(at.elapsed().as_secs_f64());
        }
        edge.refresh_socket_gauges();
    }
}

/// How an admitted socket behaves beyond who it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketOptions {
    /// `json.v1` or `json.v2` (gaps announced, positions on events).
    pub protocol: Subprotocol,
    /// When the token expires (Unix milliseconds).
    pub expires_at_ms: i64,
    /// Close the socket when the token expires without a refresh.
    pub enforce_expiry: bool,
    /// A recovery will replay history first: live events are held aside until it is done.
    pub recover: bool,
}

/// Admits a `json.v1` socket of `kind` holding `key`.
pub async fn admit(edge: &Edge, kind: SocketKind, key: SessionKey) -> Result<SocketLease, Refusal> {
    admit_with(edge, kind, key, SocketOptions::default()).await
}

/// Admits a socket of `kind` holding `key`, behaving as `options` say.
pub async fn admit_with(
    edge: &Edge,
    kind: SocketKind,
    key: SessionKey,
    options: SocketOptions,
) -> Result<SocketLease, Refusal> {
    if edge.draining() {
        return Err(Refusal::Draining);
    }
    if edge.registry.len() >= edge.config.limits.max_connections {
        return Err(Refusal::Capacity);
    }
    let connection = ConnectionId::generate();
    let started = Instant::now();
    let result = acquire_and_index(edge, kind, key, connection, options).await;
    let outcome = match &result {
        Ok(_) => "granted",
        Err(Refusal::CoordinatorDown(_)) => "unavailable",
        Err(_) => "refused",
    };
    edge.metrics
        .acquire_seconds
        .with_label_values(&[outcome])
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn acquire_and_index(
    edge: &Edge,
    kind: SocketKind,
    key: SessionKey,
    connection: ConnectionId,
    options: SocketOptions,
) -> Result<SocketLease, Refusal> {
    let base = base_route(&kind);
    for attempt in 0..2 {
        let gate = edge.registry.routes.gate().await;
        let request = AcquireRequest {
            key: key.clone(),
            connection: connection.clone(),
            mode: AcquireMode::Takeover,
            routes: vec![base.clone()],
        };
        let outcome = edge.coordinator.acquire(&edge.pod.pod, request).await;
        let (fencing, previous, selected_chat) = match outcome {
            Ok(AcquireOutcome::Granted {
                fencing,
                previous,
                selected_chat,
            }) => (fencing, previous, selected_chat),
            Ok(AcquireOutcome::Refused) => return Err(Refusal::Conflict),
            Err(CoordinatorError::UnknownPod) if attempt == 0 => {
                // The coordinator lost this pod (restart, lapsed lease): register, then retry.
                // The gate is released first: the heartbeat's restore takes it too.
                drop(gate);
                pod::heartbeat_once(edge).await;
                continue;
            }
            Err(CoordinatorError::Unavailable(e)) => return Err(Refusal::CoordinatorDown(e)),
            Err(CoordinatorError::UnknownPod) => {
                return Err(Refusal::CoordinatorDown("pod not registered".to_owned()));
            }
            Err(CoordinatorError::Rejected(e)) => return Err(Refusal::CoordinatorRefused(e)),
        };
        let mut outbox = Outbox::new(
            edge.config.sockets.send_queue,
            edge.config.sockets.slow_consumer,
        );
        if options.protocol == Subprotocol::V2 {
            outbox = outbox.announcing_gaps();
            if options.recover {
                // Before the socket enters the index: no live event may slip past the hold.
                outbox.hold();
            }
        }
        let handle = Arc::new(
            SocketHandle::new(
                edge.registry.next_id(),
                connection,
                kind,
                key,
                fencing,
                outbox,
            )
            .with_protocol(options.protocol)
            .with_expiry(options.expires_at_ms, options.enforce_expiry),
        );
        edge.registry.routes.retain(base);
        if let (Some(chat), Some((company, agent))) = (&selected_chat, handle.user_agent()) {
            edge.registry
                .routes
                .retain(chat_route(company, agent, chat));
            handle.swap_selected_chat(Some(chat.clone()));
        }
        // `ready` goes first; events arriving before the socket task starts queue behind it.
        handle.outbox.push(Utf8Bytes::from_static(READY_FRAME));
        edge.registry.insert(handle.clone());
        drop(gate);
        if let Some(previous) = previous.filter(|p| p.pod == edge.pod.pod.as_str()) {
            close_local_previous(edge, &handle, &previous.connection, previous.fencing);
        }
        edge.refresh_socket_gauges();
        return Ok(SocketLease {
            edge: edge.clone(),
            handle,
            reason: std::sync::Mutex::new("client_closed"),
            started: AtomicBool::new(false),
            connected_at: std::sync::OnceLock::new(),
            _task: edge.socket_tasks.token(),
        });
    }
    Err(Refusal::CoordinatorDown("pod not registered".to_owned()))
}

/// Same-pod takeover: the coordinator also sends a kill on the stream, but closing here saves
/// the round trip (kill handling is idempotent).
fn close_local_previous(edge: &Edge, new: &SocketHandle, connection: &str, fencing: u64) {
    if let Some(old) = edge.registry.by_connection(connection)
        && old.id != new.id
        && old.key == new.key
        && old.fencing() <= fencing
    {
        old.mark_session_lost();
        if old
            .outbox
            .close(CloseRequest::session_conflict(CloseCause::SessionConflict))
        {
            edge.metrics
                .kills
                .with_label_values(&["closed_locally"])
                .inc();
        }
    }
}
