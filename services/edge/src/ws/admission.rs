//! Admission of a new socket, before the upgrade: capacity and drain checks, the session
//! acquired from the coordinator (with its routes), the socket entered in the local index with
//! the `ready` frame queued, and a [`SocketLease`] that undoes all of it when dropped, whether
//! the socket ran and closed or the upgrade never completed.

use super::handle::{SocketHandle, SocketKind};
use super::outbox::{CloseCause, Outbox};
use crate::coordinator::{
    AcquireMode, AcquireOutcome, AcquireRequest, Coordinator, CoordinatorError, EndReason,
    HeldSession,
};
use crate::lifecycle::{close_lost, pod};
use crate::registry::{KillTarget, base_route, chat_route};
use crate::state::Edge;
use daisi_domain::protocol::{READY_FRAME, Subprotocol};
use daisi_domain::{ConnectionId, SessionKey};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;
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
    reason: parking_lot::Mutex<&'static str>,
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
        *self.reason.lock() = reason;
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
            *self.reason.lock()
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

/// [`admit`] in a task of its own, which outlives the caller. hyper drops the upgrade handler
/// when the client goes away (and the door's deadline drops the whole connection), which would
/// cancel an admission between the coordinator granting the session and the socket being
/// indexed: the grant (and the routes it registered) would be held by nobody until the lease
/// lapsed, and the previous connection would have been killed for nothing. Run here, the
/// admission always finishes; when nobody waits for the lease any more, dropping it releases
/// the session and the routes like any closed socket's.
pub async fn admit_detached(
    edge: &Edge,
    kind: SocketKind,
    key: SessionKey,
    options: SocketOptions,
) -> Result<SocketLease, Refusal> {
    let (reply, lease) = tokio::sync::oneshot::channel();
    let task_edge = edge.clone();
    // Tracked with the socket tasks: the drain waits for an admission like for a socket.
    edge.socket_tasks.spawn(async move {
        let admitted = admit_with(&task_edge, kind, key, options).await;
        if let Err(Ok(lease)) = reply.send(admitted) {
            tracing::debug!(connection = %lease.handle.connection, "client gone during admission; releasing");
            task_edge
                .metrics
                .rejected
                .with_label_values(&["client_gone"])
                .inc();
            drop(lease);
        }
    });
    lease.await.unwrap_or_else(|_| {
        Err(Refusal::CoordinatorDown(
            "admission task ended without an answer".to_owned(),
        ))
    })
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
    let Some(_place) = edge.registry.reserve(edge.config.limits.max_connections) else {
        return Err(Refusal::Capacity);
    };
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
    let routes = &edge.registry.routes;
    for attempt in 0..2 {
        // Orders the routes this acquire registers against unregister batches without holding
        // anything across the call (`registry::routes`).
        let ticket = routes.ticket();
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
            Ok(AcquireOutcome::Ended { reason }) => {
                // This connection was killed or taken over while its acquire was on its way
                // (an operator's kill naming it, a retry after a takeover): closed like a
                // socket whose session ended, never retried.
                // An earlier attempt of this acquire (a failover retry) may have registered
                // routes: the base route goes to the syncer, a restored chat route to the
                // reconciliation.
                routes.retain(base.clone());
                routes.release(&base);
                routes.request_reconcile();
                return Ok(ended(edge, kind, key, connection, options, reason));
            }
            Err(CoordinatorError::UnknownPod) if attempt == 0 => {
                // The coordinator lost this pod (restart, lapsed lease): register, then retry.
                drop(ticket);
                pod::heartbeat_once(edge).await;
                continue;
            }
            Err(CoordinatorError::Unavailable(e)) => {
                // The acquire may have been applied (now, or later: a request stuck in a
                // stopped coordinator replica), leaving a session and routes nobody holds.
                edge.releases.abandon(
                    HeldSession::abandoned(key.clone(), connection.clone()),
                    base.clone(),
                );
                return Err(Refusal::CoordinatorDown(e));
            }
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
        let mut registered = vec![base.clone()];
        if let (Some(chat), Some((company, agent))) = (&selected_chat, handle.user_agent()) {
            registered.push(chat_route(company, agent, chat));
            handle.swap_selected_chat(Some(chat.clone()));
        }
        let again = routes.count_in(&ticket, &registered);
        drop(ticket);
        if let Err(error) = routes
            .register_again(&edge.coordinator, &edge.pod.pod, again)
            .await
        {
            // Not admitted after all: undo the counts and give the grant back.
            for route in &registered {
                routes.release(route);
            }
            edge.releases.push(handle.held());
            return Err(match error {
                CoordinatorError::Rejected(e) => Refusal::CoordinatorRefused(e),
                other => Refusal::CoordinatorDown(other.to_string()),
            });
        }
        // `ready` goes first; events arriving before the socket task starts queue behind it.
        handle.outbox.push(Utf8Bytes::from_static(READY_FRAME));
        let killed_before_indexing = edge.registry.insert(handle.clone());
        if edge.draining() {
            // The drain began while this socket was admitted, maybe after its last pass over
            // the index: nobody else would ask it to close, and the drain would wait for it
            // to its deadline.
            handle
                .outbox
                .close(crate::ws::outbox::CloseRequest::shutdown());
        }
        if killed_before_indexing {
            // Taken over (or killed) while the acquire reply was on its way: the close request
            // overrides the queued `ready`, so the client gets the SessionConflict frame and
            // 4402 and never streams next to the new holder.
            close_lost(&handle, CloseCause::SessionConflict);
            edge.metrics
                .kills
                .with_label_values(&["applied_at_admission"])
                .inc();
        }
        if let Some(previous) = previous.filter(|p| p.pod == edge.pod.pod.as_str()) {
            close_local_previous(edge, &handle, &previous.connection, previous.fencing);
        }
        edge.refresh_socket_gauges();
        return Ok(SocketLease {
            edge: edge.clone(),
            handle,
            reason: parking_lot::Mutex::new("client_closed"),
            started: AtomicBool::new(false),
            connected_at: std::sync::OnceLock::new(),
            _task: edge.socket_tasks.token(),
        });
    }
    Err(Refusal::CoordinatorDown("pod not registered".to_owned()))
}

/// A socket admitted only to be closed with 4402 and the compat SessionConflict frame, as
/// any socket whose session ended: it holds no grant and is never indexed, so no event
/// reaches it and it releases nothing.
fn ended(
    edge: &Edge,
    kind: SocketKind,
    key: SessionKey,
    connection: ConnectionId,
    options: SocketOptions,
    reason: EndReason,
) -> SocketLease {
    let outbox = Outbox::new(
        edge.config.sockets.send_queue,
        edge.config.sockets.slow_consumer,
    );
    let handle = Arc::new(
        SocketHandle::new(edge.registry.next_id(), connection, kind, key, 0, outbox)
            .with_protocol(options.protocol),
    );
    close_lost(&handle, CloseCause::SessionConflict);
    edge.metrics
        .kills
        .with_label_values(&["applied_at_admission"])
        .inc();
    tracing::debug!(connection = %handle.connection, reason = reason.as_str(), "acquire refused: the connection's session ended");
    SocketLease {
        edge: edge.clone(),
        handle,
        reason: parking_lot::Mutex::new("session_conflict"),
        started: AtomicBool::new(false),
        connected_at: std::sync::OnceLock::new(),
        _task: edge.socket_tasks.token(),
    }
}

/// Same-pod takeover: the coordinator also sends a kill on the stream, but closing here saves
/// the round trip (kill handling is idempotent). A previous connection still being admitted
/// here gets the kill when it is indexed.
fn close_local_previous(edge: &Edge, new: &SocketHandle, connection: &str, fencing: u64) {
    match edge.registry.kill_target(connection, &new.key, fencing) {
        KillTarget::Socket(old)
            if old.id != new.id && old.key == new.key && old.fencing() <= fencing =>
        {
            if close_lost(&old, CloseCause::SessionConflict) {
                edge.metrics
                    .kills
                    .with_label_values(&["closed_locally"])
                    .inc();
            }
        }
        KillTarget::Socket(_) | KillTarget::Remembered | KillTarget::Invalid => {}
    }
}
