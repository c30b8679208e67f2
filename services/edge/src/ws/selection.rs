//! `select_chat` off the socket's loop.
//!
//! A selection is a coordinator call (and a Redis script behind it). Made inline, it would stop
//! the socket from writing events and answering pings for as long as the coordinator takes, up
//! to its deadline. So the socket loop only records the request here, and a task of its own
//! makes the call:
//!
//! - at most one call per socket is in flight;
//! - the latest request wins: requests made while a call is in flight replace each other, and
//!   only the last one is sent once the call ends (counted as `coalesced`);
//! - asking for the chat already selected, or already asked for, is a no-op (compat.md);
//! - a call whose answer is lost (deadline, broken connection, pod unknown for a moment) is
//!   made again, up to `RETRIES` times, unless a newer request waits: select is idempotent
//!   for the coordinator, so a repeat of a call that landed only re-asserts the route;
//! - a failure is reported with one `SubscriptionFailure` error frame, unless a newer request
//!   is waiting to replace it; a lost session closes the socket with 4402, as before.
//!
//! The task exists only while a selection is pending, so an idle socket carries one empty
//! slot here and no future at all.

use super::handle::SocketHandle;
use super::outbox::{CloseCause, CloseRequest};
use crate::coordinator::{Coordinator, CoordinatorError};
use crate::registry::chat_route;
use crate::state::Edge;
use daisi_domain::protocol::ServerMessage;
use daisi_domain::{ChatId, ErrorBody};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

/// A coordinator outage fails every socket's `select_chat`: one line per kind of failure and
/// minute, with the count of the others.
static FAILURE_LOGS: std::sync::LazyLock<daisi_runtime::ratelog::RateLimit> =
    std::sync::LazyLock::new(|| daisi_runtime::ratelog::RateLimit::new(Duration::from_secs(60)));

/// Calls made again after a lost answer before the client is told the selection failed. Each
/// is bounded by the coordinator timeout (and moves to another replica when one is silent).
const RETRIES: u32 = 2;

/// Pause before the first repeat, doubled for the next.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A socket's selection slot: empty unless a selection task runs for it.
#[derive(Debug, Default)]
pub struct Selection {
    pending: Mutex<Option<Box<Pending>>>,
}

/// What the running task works on.
#[derive(Debug)]
struct Pending {
    /// The chat most recently asked for (in flight or waiting); asking again is a no-op.
    latest: ChatId,
    /// Asked for while a call was in flight; sent once that call ends.
    next: Option<ChatId>,
}

/// How one coordinator call ended.
enum Outcome {
    /// Selected.
    Done,
    /// The coordinator failed; the client hears of it unless a newer request replaces it.
    Failed,
    /// The session is gone, the socket closed or the edge stopped: nothing more is sent.
    Stop,
}

/// Records the socket's request for `chat` and makes sure a task sends it. Never waits.
pub fn request(edge: &Edge, socket: &Arc<SocketHandle>, chat: ChatId) {
    let mut pending = socket.selection.pending.lock();
    match pending.as_mut() {
        Some(running) => {
            if running.latest == chat {
                return;
            }
            if running.next.replace(chat.clone()).is_some() {
                count(edge, "coalesced");
            }
            running.latest = chat;
        }
        None => {
            if socket.outbox.is_closing() || socket.selected_chat().as_ref() == Some(&chat) {
                return;
            }
            *pending = Some(Box::new(Pending {
                latest: chat.clone(),
                next: None,
            }));
            drop(pending);
            // Tracked with the socket tasks, so the drain waits for it like for its socket.
            edge.socket_tasks
                .spawn(run(edge.clone(), Arc::clone(socket), chat));
        }
    }
}

/// Sends `chat`, then whatever was asked for meanwhile, until nothing waits. The slot is
/// emptied under its lock in the same step that finds nothing waiting, so a request made
/// after that starts a new task and one made before it is picked up by this one.
async fn run(edge: Edge, socket: Arc<SocketHandle>, mut chat: ChatId) {
    let _pending = PendingGauge::enter(&edge);
    loop {
        let outcome = tokio::select! {
            outcome = select(&edge, &socket, chat) => outcome,
            // The drain is over: do not hold the edge's exit for a selection.
            () = edge.sockets_stop.cancelled() => Outcome::Stop,
        };
        let mut pending = socket.selection.pending.lock();
        let next = match outcome {
            Outcome::Stop => None,
            Outcome::Done | Outcome::Failed => pending.as_mut().and_then(|p| p.next.take()),
        };
        if next.is_none() && matches!(outcome, Outcome::Failed) {
            // Pushed under the slot's lock: a retry the client sends once it reads this
            // finds the slot empty and is not mistaken for a repeat.
            let frame = ServerMessage::Error(ErrorBody::subscription_failure()).to_json();
            socket.outbox.push(frame.into());
        }
        match next {
            // Back to the chat already selected (e.g. B, then A, then B again): nothing to do.
            Some(next) if socket.selected_chat().as_ref() != Some(&next) => chat = next,
            _ => {
                *pending = None;
                return;
            }
        }
    }
}

/// One coordinator call and its consequences.
async fn select(edge: &Edge, socket: &Arc<SocketHandle>, chat: ChatId) -> Outcome {
    let Some((company, agent)) = socket.user_agent() else {
        return Outcome::Stop;
    };
    if socket.outbox.is_closing() {
        count(edge, "abandoned");
        return Outcome::Stop;
    }
    // See `registry::routes` for why a ticket, and not a lock, orders this registration
    // against the route syncer's unregister batches.
    let routes = &edge.registry.routes;
    let mut attempt = 0;
    let (ticket, result) = loop {
        let ticket = routes.ticket();
        let result = edge
            .coordinator
            .select_chat(&edge.pod.pod, &socket.held(), &chat)
            .await;
        let lost = matches!(
            result,
            Err(CoordinatorError::Unavailable(_) | CoordinatorError::UnknownPod)
        );
        if !lost || attempt == RETRIES || newer_waits(socket) || socket.outbox.is_closing() {
            break (ticket, result);
        }
        drop(ticket);
        if matches!(result, Err(CoordinatorError::UnknownPod)) {
            edge.heartbeat_now.notify_one();
        }
        tokio::time::sleep(RETRY_PAUSE * 2u32.pow(attempt)).await;
        attempt += 1;
        count(edge, "retried");
    };
    match result {
        Ok(true) => {
            let route = chat_route(company, agent, &chat);
            let again = routes.count_in(&ticket, std::slice::from_ref(&route));
            drop(ticket);
            if let Err(error) = routes
                .register_again(&edge.coordinator, &edge.pod.pod, again)
                .await
            {
                routes.release(&route);
                count(edge, "failed");
                if let Some(suppressed) = FAILURE_LOGS.check("register") {
                    tracing::warn!(%error, suppressed, "select_chat route registration failed");
                }
                return Outcome::Failed;
            }
            if edge.registry.select_chat(socket, chat) {
                count(edge, "selected");
                Outcome::Done
            } else {
                // The socket left the index while the call was in flight: the route goes out
                // again, unregistered like any other unused route.
                routes.release(&route);
                count(edge, "abandoned");
                Outcome::Stop
            }
        }
        Ok(false) => {
            count(edge, "session_lost");
            socket.mark_session_lost();
            socket
                .outbox
                .close(CloseRequest::session_conflict(CloseCause::SessionLost));
            Outcome::Stop
        }
        Err(error) => {
            // The call may have landed (its answer was lost): the route goes to the syncer,
            // which unregisters it unless a socket needs it.
            let route = chat_route(company, agent, &chat);
            routes.retain(route.clone());
            routes.release(&route);
            count(edge, "failed");
            if let Some(suppressed) = FAILURE_LOGS.check("select") {
                tracing::warn!(%error, suppressed, "select_chat failed");
            }
            if matches!(error, CoordinatorError::UnknownPod) {
                edge.heartbeat_now.notify_one();
            }
            Outcome::Failed
        }
    }
}

/// A newer request replaces the one in flight: repeating this one is pointless.
fn newer_waits(socket: &SocketHandle) -> bool {
    socket
        .selection
        .pending
        .lock()
        .as_ref()
        .is_some_and(|p| p.next.is_some())
}

/// Counts a running selection task in `edge_chat_selections_pending`, and uncounts it however
/// the task ends (cancellation at runtime shutdown included).
struct PendingGauge(prometheus::IntGauge);

impl PendingGauge {
    fn enter(edge: &Edge) -> Self {
        let gauge = edge.metrics.chat_selections_pending.clone();
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for PendingGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn count(edge: &Edge, outcome: &str) {
    edge.metrics
        .chat_selections
        .with_label_values(&[outcome])
        .inc();
}
