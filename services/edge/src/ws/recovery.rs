//! Recovery of a reconnecting `json.v2` client (`?since=<epoch>:<seq>`): before the socket
//! loop starts, the socket task replays from the stream what the socket's interest missed
//! since that position, then switches to live delivery with no gap and no duplicate.
//!
//! - The socket entered the index *holding* live events aside ([`super::outbox::Outbox::hold`]),
//!   so everything routed to it from admission on is kept, with its stream sequence.
//! - The replay reads the stream from `seq + 1` through an ordered consumer filtered to the
//!   socket's interest, in stream order, and writes the frames straight to the socket. It
//!   follows the stream until it is caught up *and* `seam` has passed since it started: an
//!   event published before the routers' route caches saw the new interest may never arrive
//!   live, but it is replayed (the seam is at least the routers' cache TTL).
//! - Then the held events above the last replayed sequence are queued (those at or below it
//!   were replayed), and the socket loop starts.
//! - The epoch differs (stream recreated), the position is older than the stream's first
//!   message or than `max_age`, more than `max_events` would be replayed, or the stream cannot
//!   be read in `timeout`: the client gets `resync` (after whatever was replayed), then live
//!   events. The timeout bounds the reads from the stream, not the writes to the socket: those
//!   have the socket's write deadline, and one cut short would leave a frame half sent.
//! - The socket is asked to close (a takeover, a kill) or the edge stops: the replay ends
//!   between two reads or writes and the socket loop closes it.

use super::gap;
use super::handle::{SocketHandle, SocketKind};
use super::stream::{self, Socket};
use crate::history::HistoryEvent;
use crate::state::Edge;
use daisi_domain::event::{render_event_frame, render_event_frame_v2};
use daisi_domain::protocol::{GapCause, Position};
use daisi_domain::subject::{Scope, SubjectModel};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Labels of `edge_recoveries_total`.
pub const OUTCOMES: [&str; 3] = ["replayed", "resync", "failed"];

/// Frames written per flush during a replay.
const BATCH: usize = 64;

/// Why a replay stopped early.
enum Stop {
    /// The client must resync.
    Gap(GapCause),
    /// The connection broke.
    Broken,
    /// The socket is closing or the edge stops: the socket loop takes over.
    Closing,
}

/// The socket broke during the recovery.
#[derive(Debug)]
pub struct Broken;

/// Replays what the socket missed since `since`, then releases the held live events.
pub async fn run(
    edge: &Edge,
    handle: &Arc<SocketHandle>,
    socket: &mut Socket,
    since: Position,
    write_timeout: Duration,
) -> Result<(), Broken> {
    // `ready` (queued at admission, ahead of the hold) goes first.
    let mut frames = Vec::new();
    handle.outbox.take_frames(usize::MAX, &mut frames);
    if write(socket, &mut frames, write_timeout).await.is_err() {
        return Err(Broken);
    }
    let mut last = since.seq;
    // Set once the stream's epoch is known to be the client's: only then are the client's
    // position and the replayed sequences comparable with the live events' sequences.
    let mut confirmed = None;
    let replay = replay(
        edge,
        handle,
        socket,
        since,
        (&mut last, &mut confirmed),
        write_timeout,
    );
    let replayed = replay.await;
    let held_whole = handle.outbox.release(confirmed.map(|epoch| (epoch, last)));
    let stop = match replayed {
        Ok(()) => None,
        Err(Stop::Gap(cause)) => Some(cause),
        Err(Stop::Broken) => return Err(Broken),
        // The socket loop closes it; nothing to announce.
        Err(Stop::Closing) => return Ok(()),
    };
    let outcome = match stop.or((!held_whole).then_some(GapCause::BeyondWindow)) {
        Some(cause) => {
            tracing::debug!(cause = cause.as_str(), "recovery ends in resync");
            gap::announce(edge, handle, cause);
            if cause == GapCause::RecoveryUnavailable {
                "failed"
            } else {
                "resync"
            }
        }
        None => "replayed",
    };
    edge.metrics.recoveries.with_label_values(&[outcome]).inc();
    Ok(())
}

/// Replays from `since`: `last` follows the last sequence written, `confirmed` is set to the
/// epoch once the stream is known to be the client's.
async fn replay(
    edge: &Edge,
    handle: &SocketHandle,
    socket: &mut Socket,
    since: Position,
    (last, confirmed): (&mut u64, &mut Option<u64>),
    write_timeout: Duration,
) -> Result<(), Stop> {
    let settings = &edge.config.recovery;
    let (Some(history), Some(config)) = (edge.history.get(), settings.history.as_ref()) else {
        return Err(Stop::Gap(GapCause::RecoveryUnavailable));
    };
    let now = Instant::now();
    let seam_end = now + settings.seam;
    // Reads from the stream give up here; writes have their own deadline (module docs).
    let deadline = now + settings.timeout;
    let unavailable = |_| Stop::Gap(GapCause::RecoveryUnavailable);
    let state = read(edge, handle, deadline, history.state())
        .await?
        .map_err(unavailable)?;
    if state.transformed {
        return Err(Stop::Gap(GapCause::RecoveryUnavailable));
    }
    if state.epoch != since.epoch || since.seq > state.last_seq {
        return Err(Stop::Gap(GapCause::EpochChanged));
    }
    *confirmed = Some(state.epoch);
    if since.seq.saturating_add(1) < state.first_seq {
        return Err(Stop::Gap(GapCause::BeyondWindow));
    }
    let oldest = SystemTime::now()
        .checked_sub(settings.max_age)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut caught_up = state.last_seq <= since.seq;
    let events = read(
        edge,
        handle,
        deadline,
        history.replay(filter(handle, &config.subjects), since.seq + 1),
    )
    .await?
    .map_err(unavailable)?;
    let mut events = std::pin::pin!(events);
    let mut frames = Vec::with_capacity(BATCH);
    let mut batch_last = *last;
    let mut replayed = 0usize;
    loop {
        if caught_up && !frames.is_empty() {
            flush(socket, &mut frames, write_timeout, last, batch_last).await?;
        }
        if caught_up && Instant::now() >= seam_end {
            break;
        }
        let next = if caught_up {
            // Caught up, the replay follows the stream until the seam has passed.
            match read(edge, handle, seam_end.min(deadline), events.next()).await {
                Ok(next) => next,
                Err(Stop::Gap(_)) if Instant::now() >= seam_end => break,
                Err(stop) => return Err(stop),
            }
        } else {
            read(edge, handle, deadline, events.next()).await?
        };
        let Some(Ok(event)) = next else {
            return Err(Stop::Gap(GapCause::RecoveryUnavailable));
        };
        caught_up = event.pending == 0;
        if event.seq <= batch_last {
            continue;
        }
        batch_last = event.seq;
        if let Some(frame) = frame_for(handle, &config.subjects, &event, state.epoch) {
            if event.published_at < oldest {
                return Err(Stop::Gap(GapCause::BeyondWindow));
            }
            replayed += 1;
            if replayed > settings.max_events {
                return Err(Stop::Gap(GapCause::BeyondWindow));
            }
            frames.push(frame);
        }
        if frames.len() >= BATCH {
            flush(socket, &mut frames, write_timeout, last, batch_last).await?;
        }
    }
    flush(socket, &mut frames, write_timeout, last, batch_last).await?;
    edge.metrics.recovery_events.inc_by(replayed as u64);
    Ok(())
}

/// Awaits a read from the stream until `deadline` (then the client must resync), unless the
/// socket is asked to close or the edge stops first.
async fn read<T>(
    edge: &Edge,
    handle: &SocketHandle,
    deadline: Instant,
    reading: impl Future<Output = T>,
) -> Result<T, Stop> {
    let mut reading = std::pin::pin!(reading);
    loop {
        if handle.outbox.is_closing() || edge.sockets_stop.is_cancelled() {
            return Err(Stop::Closing);
        }
        tokio::select! {
            read = &mut reading => return Ok(read),
            () = tokio::time::sleep_until(deadline) => {
                return Err(Stop::Gap(GapCause::RecoveryUnavailable));
            }
            () = edge.sockets_stop.cancelled() => return Err(Stop::Closing),
            // A close request wakes the queue (held live events do not): checked above.
            () = handle.outbox.ready() => {}
        }
    }
}

/// Writes the batch; the last replayed sequence moves only once its frame left.
async fn flush(
    socket: &mut Socket,
    frames: &mut Vec<Utf8Bytes>,
    write_timeout: Duration,
    last: &mut u64,
    batch_last: u64,
) -> Result<(), Stop> {
    write(socket, frames, write_timeout)
        .await
        .map_err(|()| Stop::Broken)?;
    *last = batch_last;
    Ok(())
}

async fn write(
    socket: &mut Socket,
    frames: &mut Vec<Utf8Bytes>,
    timeout: Duration,
) -> Result<(), ()> {
    if frames.is_empty() {
        return Ok(());
    }
    let written = tokio::time::timeout(timeout, stream::write_text(socket, frames)).await;
    frames.clear();
    match written {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// The stream subjects that can concern the socket: its agent's events, or every agent's
/// `agents` events for an admin (narrowed when the admin subscribed to one agent).
fn filter(handle: &SocketHandle, subjects: &SubjectModel) -> String {
    let prefix = subjects.prefix();
    match &handle.kind {
        SocketKind::User { company, agent } => format!("{prefix}.{company}.{agent}.>"),
        SocketKind::Admin(claims) => {
            match (&claims.subscribed_company_id, &claims.subscribed_agent_id) {
                (Some(company), Some(agent)) => format!("{prefix}.{company}.{agent}.agents"),
                _ => format!("{prefix}.*.*.agents"),
            }
        }
    }
}

/// The socket's `json.v2` frame of a stored event, if the socket would receive it now.
fn frame_for(
    handle: &SocketHandle,
    subjects: &SubjectModel,
    event: &HistoryEvent,
    epoch: u64,
) -> Option<Utf8Bytes> {
    let subject = subjects.parse(&event.subject).ok()?;
    let target = subject.target();
    let wanted = match &handle.kind {
        SocketKind::User { company, agent } => {
            *company == target.company
                && *agent == target.agent
                && match &target.scope {
                    Scope::Chat(chat) => handle.selected_chat().as_ref() == Some(chat),
                    Scope::Agent | Scope::AgentAndAdmins => true,
                }
        }
        SocketKind::Admin(claims) => {
            target.scope == Scope::AgentAndAdmins
                && claims.wants_agent_event(&target.company, &target.agent)
        }
    };
    if !wanted {
        return None;
    }
    let v1 = render_event_frame(&event.payload, subject.event_type()).ok()?;
    Some(Utf8Bytes::from(render_event_frame_v2(
        &v1, event.seq, epoch,
    )))
}
