//! The one task per socket: it selects over the client's frames, its send queue, its
//! heartbeat timer and the edge's stop signal, and nothing it does waits on another service.
//!
//! - Outgoing frames (events, and the socket's own replies such as the `ready` echo and error
//!   frames) go through the send queue and are fed in batches, flushed once per batch. Every
//!   write is bounded by a timeout, so a client that stopped reading cannot pin the task.
//! - `select_chat` is handed to [`super::selection`], which calls the coordinator from a task
//!   of its own; the loop keeps writing and pinging meanwhile.
//! - One timer ([`super::heartbeat`]) sends the pings and closes a client that was silent
//!   for `pong_wait`, at that deadline.
//! - With a write coalescing window (`DAISI_EDGE_WRITE_COALESCE`, off by default), after a
//!   write the loop writes no data frames before the window has passed: frames arriving
//!   meanwhile wait in the send queue (without waking the task) and leave together in one
//!   vectored write, each still its own text frame. A socket that wrote nothing within the
//!   window writes at once, so a lone event gets no added latency. The same timer marks the
//!   window's end (no timer of its own), and only once a frame waits: a socket that gets one
//!   event at a time pays no extra wake-up (a busy one, whose last window ended with frames,
//!   waits from the write on, so later frames do not wake it either). Close requests, resync
//!   frames, pongs, pings, reads and the stop signal do not wait for the window. The window trades latency for CPU: most of a fan-out's
//!   cost is one `writev` per socket wake-up (docs/performance.md).
//! - Every client frame, control frames included, draws from the rate limit.
//! - How the socket ends, in both directions, is [`super::closing`]; that cold path is boxed,
//!   so an idle socket's future holds only the loop's state.

use super::admission::SocketLease;
use super::client_frames;
use super::closing;
use super::handle::SocketHandle;
use super::heartbeat::{Due, Heartbeat};
use super::outbox::CloseRequest;
use super::rate_limit::{RateLimiter, Verdict};
use super::recovery;
use super::stream::{self, Socket};
use crate::state::Edge;
use daisi_domain::ErrorBody;
use daisi_domain::protocol::{Position, ServerMessage, Subprotocol};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

/// Frames written per flush.
const BATCH: usize = 64;

/// How a socket's loop ended.
enum End {
    /// The server closes: send this close (after its error frame) and stop.
    Close(CloseRequest, &'static str),
    /// The client sent Close: answer it and stop.
    ClientClosed,
    /// The connection broke or the edge stopped; nothing to send.
    Gone(&'static str),
}

/// What a client frame asks of the loop.
enum Step {
    /// Nothing more.
    Continue,
    /// A pong was queued by tungstenite: flush it.
    Flush,
    /// Stop.
    End(End),
}

/// Runs the socket until it closes, after replaying what it missed since `recover` (a
/// reconnecting `json.v2` client). This future is the socket task's whole state.
pub async fn run(lease: SocketLease, mut socket: Socket, recover: Option<Position>) {
    lease.started();
    let edge = lease.edge().clone();
    let handle = lease.handle.clone();
    let write_timeout = edge.config.pong_wait;
    let recovered = match recover {
        // Boxed: cold, and its state should not sit in every socket's future.
        Some(since) => {
            Box::pin(recovery::run(
                &edge,
                &handle,
                &mut socket,
                since,
                write_timeout,
            ))
            .await
        }
        None => Ok(()),
    };
    let end = match recovered {
        Ok(()) => serve(&edge, &handle, &mut socket, write_timeout).await,
        Err(recovery::Broken) => End::Gone("write_failed"),
    };
    handle.outbox.shut();
    match end {
        End::Close(request, reason) => {
            lease.set_reason(reason);
            Box::pin(closing::initiate(&mut socket, request, write_timeout)).await;
        }
        End::ClientClosed => {
            lease.set_reason("client_closed");
            Box::pin(closing::answer(&mut socket)).await;
        }
        End::Gone(reason) => lease.set_reason(reason),
    }
    // The lease's drop takes the socket out of the index and queues its session release.
    drop(lease);
}

/// The loop itself.
async fn serve(
    edge: &Edge,
    handle: &Arc<SocketHandle>,
    socket: &mut Socket,
    write_timeout: Duration,
) -> End {
    let config = &edge.config;
    let now = Instant::now();
    let mut limiter = RateLimiter::new(
        config.limits.rate_per_second,
        config.limits.rate_burst,
        config.limits.rate_close_after,
        now,
    );
    // Spread the first ping over one interval so sockets opened together do not ping together.
    let offset = Duration::from_millis(handle.id.wrapping_mul(7919) % 1000)
        .mul_f64(config.ping_interval.as_secs_f64());
    let mut heartbeat = Heartbeat::new(now, config.ping_interval, config.pong_wait, offset);
    let mut wake = wake_at(&heartbeat, handle);
    let mut timer = Box::pin(tokio::time::sleep_until(wake));
    // What the timer is armed for: `wake`, or the end of a coalescing window when earlier;
    // `None` once it fired (a fired sleep stays ready, so it must be re-armed).
    let mut armed = Some(wake);
    let mut batch = Vec::new();
    let v2 = handle.protocol == Subprotocol::V2;
    // No data frames are written before this instant (set after a write when a window is on).
    let mut hold: Option<Instant> = None;
    // Frames wait for `hold`: the send queue defers and the timer is armed for it.
    let mut waiting = false;
    // The last window ended with frames to write: a busy socket, whose next window starts
    // waiting right after the write. Otherwise a window only waits once a frame arrives within
    // it, so a socket with one event at a time pays no timer wake-up for the window.
    let mut eager = false;

    loop {
        // Read from the config each time rather than copied once: a `Duration` fewer in every
        // idle socket's state.
        let coalescing = !config.sockets.write_coalesce.is_zero();
        // A gap to announce goes ahead of the frames still queued (they are newer than it).
        if v2 && let Some(cause) = handle.outbox.take_resync(Instant::now()) {
            batch.push(Utf8Bytes::from(cause.resync_frame()));
            edge.metrics.gaps.of(cause).inc();
        }
        // Within a coalescing window queued frames wait, unless a resync frame leaves now
        // anyway (they then follow it); a close request never waits.
        let holding = batch.is_empty() && hold.is_some_and(|until| Instant::now() < until);
        if holding {
            if let Some(close) = handle.outbox.take_close() {
                let cause = close.cause.as_str();
                return End::Close(close, cause);
            }
            waiting = waiting || handle.outbox.defer_if_queued();
        } else {
            hold = None;
            let waited = std::mem::take(&mut waiting);
            // Whatever is queued goes out first (also covers a wake-up lost to a cancelled
            // wait), a batch at a time: each batch has its own write deadline, and a close
            // request is looked at between batches.
            if let Some(close) = handle.outbox.take(BATCH, &mut batch) {
                let cause = close.cause.as_str();
                return End::Close(close, cause);
            }
            eager = waited && !batch.is_empty();
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            if write_batch(socket, &mut batch, write_timeout)
                .await
                .is_err()
            {
                return End::Gone("write_failed");
            }
            edge.metrics.frames.text_out.inc_by(n);
            edge.metrics.socket_writes.inc();
            // A full batch may have left more queued: that goes out next, without a window
            // (the window starts after the write that empties the queue).
            if coalescing && n < BATCH as u64 {
                hold = Instant::now().checked_add(config.sockets.write_coalesce);
                if eager {
                    // Frames pushed from now on wait for the timer, armed below at the
                    // window's end; if none came by then, the socket is no longer eager.
                    handle.outbox.defer();
                    waiting = true;
                }
            }
            continue;
        }
        // Going idle: an idle socket keeps no batch buffer (a batch allocates anew), nor the
        // room its send queue grew to.
        batch.shrink_to_fit();
        handle.outbox.trim();
        if v2 || handle.expiry_enforced() {
            // A refresh or a rate-limited resync may have moved the next wake-up.
            wake = wake_at(&heartbeat, handle);
        }
        let target = match hold {
            Some(until) if waiting => until.min(wake),
            _ => wake,
        };
        if armed != Some(target) {
            armed = Some(target);
            timer.as_mut().reset(target);
        }
        tokio::select! {
            () = handle.outbox.ready() => {}
            () = edge.sockets_stop.cancelled() => return End::Gone("stopped"),
            () = &mut timer => {
                if handle.expiry_enforced() && expired(handle) {
                    return End::Close(closing::token_expired(), "token_expired");
                }
                match heartbeat.due(Instant::now()) {
                    Due::Silent => return End::Close(closing::pong_timeout(), "pong_timeout"),
                    Due::Ping => {
                        let ping = socket.send(Message::Ping(Default::default()));
                        if !matches!(tokio::time::timeout(write_timeout, ping).await, Ok(Ok(()))) {
                            return End::Gone("write_failed");
                        }
                    }
                    Due::Nothing => {}
                }
                wake = wake_at(&heartbeat, handle);
                armed = None;
            }
            incoming = socket.next() => {
                let now = Instant::now();
                heartbeat.heard(now);
                let mut large = false;
                let step = match incoming {
                    None => Step::End(End::Gone("client_closed")),
                    Some(Err(error)) => Step::End(read_failed(&error)),
                    Some(Ok(message)) => {
                        large = message.len() > config.sockets.read_buffer;
                        on_message(edge, handle, &mut limiter, now, message)
                    }
                };
                match step {
                    Step::Continue => {}
                    Step::Flush => {
                        if !matches!(tokio::time::timeout(write_timeout, socket.flush()).await, Ok(Ok(()))) {
                            return End::Gone("write_failed");
                        }
                    }
                    Step::End(end) => return end,
                }
                // tungstenite's read buffer grew to that message's frame and would stay so.
                if large {
                    let shed = tokio::time::timeout(write_timeout, stream::shed_read_buffer(socket));
                    if !matches!(shed.await, Ok(Ok(_))) {
                        return End::Gone("write_failed");
                    }
                }
            }
        }
    }
}

/// The next instant the loop must act on its own: a ping or pong deadline, the token's expiry
/// (when enforced), a rate-limited resync (`json.v2`).
fn wake_at(heartbeat: &Heartbeat, handle: &SocketHandle) -> Instant {
    let mut at = heartbeat.wake_at();
    if handle.expiry_enforced() {
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let left = u64::try_from(handle.expires_at_ms().saturating_sub(now_ms)).unwrap_or(0);
        if let Some(expiry) = Instant::now().checked_add(Duration::from_millis(left)) {
            at = at.min(expiry);
        }
    }
    if handle.protocol == Subprotocol::V2
        && let Some(due) = handle.outbox.resync_due()
    {
        at = at.min(due);
    }
    at
}

/// Whether the socket's token has expired.
fn expired(handle: &SocketHandle) -> bool {
    jiff::Timestamp::now().as_millisecond() >= handle.expires_at_ms()
}

/// One client message: counted, rate limited, handled. Replies go through the send queue.
fn on_message(
    edge: &Edge,
    handle: &Arc<SocketHandle>,
    limiter: &mut RateLimiter,
    now: Instant,
    message: Message,
) -> Step {
    let frames = &edge.metrics.frames;
    match &message {
        Message::Close(_) => return Step::End(End::ClientClosed),
        Message::Text(_) => frames.text_in.inc(),
        Message::Binary(_) => frames.binary_in.inc(),
        Message::Ping(_) => frames.ping_in.inc(),
        Message::Pong(_) => frames.pong_in.inc(),
        // tungstenite never yields raw frames when reading.
        Message::Frame(_) => return Step::Continue,
    }
    match limiter.check(now) {
        Verdict::Allow => {}
        Verdict::Refuse => {
            edge.metrics.rate_limited.inc();
            // Only text frames are told. A refused ping is not flushed: its pong leaves with
            // the next write.
            if matches!(message, Message::Text(_)) {
                let frame = ServerMessage::Error(ErrorBody::rate_limited()).to_json();
                handle.outbox.push(frame.into());
            }
            return Step::Continue;
        }
        Verdict::Close => {
            edge.metrics.rate_limited.inc();
            return Step::End(End::Close(closing::rate_limited(), "rate_limited"));
        }
    }
    match message {
        Message::Text(text) => {
            if let Some(reply) = client_frames::handle(edge, handle, text) {
                handle.outbox.push(reply);
            }
            Step::Continue
        }
        // tungstenite queued the pong; flush so it leaves now.
        Message::Ping(_) => Step::Flush,
        // compat: binary frames are ignored (they still cost their share of the budget).
        Message::Binary(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {
            Step::Continue
        }
    }
}

fn read_failed(error: &WsError) -> End {
    if closing::is_too_big(error) {
        return End::Close(closing::too_big(), "message_too_big");
    }
    tracing::debug!(%error, "websocket read failed");
    End::Gone("read_failed")
}

async fn write_batch(
    socket: &mut Socket,
    batch: &mut Vec<Utf8Bytes>,
    timeout: Duration,
) -> Result<(), ()> {
    let written = tokio::time::timeout(timeout, stream::write_text(socket, batch)).await;
    batch.clear();
    match written {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}
