//! The one task per socket: it selects over the client's frames, its send queue, its ping
//! timer and the edge's stop signal. One task (rather than a reader and a writer) keeps an idle
//! socket down to one small future.
//!
//! Outgoing frames are fed in batches and flushed once per batch. Every write is bounded by a
//! timeout so a client that stopped reading cannot pin the task forever.

use super::admission::SocketLease;
use super::client_frames::{self, Reply};
use super::outbox::CloseRequest;
use super::rate_limit::{RateLimiter, Verdict};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use daisi_domain::ErrorBody;
use daisi_domain::error_code::close;
use daisi_domain::protocol::ServerMessage;
use futures_util::{SinkExt, StreamExt};
use std::borrow::Cow;
use std::time::{Duration, Instant};
use tokio::time::MissedTickBehavior;

/// Frames written per flush.
const BATCH: usize = 64;
/// How long a closing socket waits for the client's close frame.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(1);
/// Close code for a client message above the size limit (RFC 6455 "message too big").
const MESSAGE_TOO_BIG: u16 = 1009;

/// How a socket's loop ended.
enum End {
    /// Send this close (after its error frame) and stop.
    Close(CloseRequest, &'static str),
    /// The client went away or the connection broke; nothing to send.
    Gone(&'static str),
}

/// Runs the socket until it closes. Boxed by the caller: many of these futures are alive.
pub async fn run(lease: SocketLease, mut socket: WebSocket) {
    lease.started();
    let edge = lease.edge().clone();
    let handle = lease.handle.clone();
    let config = &edge.config;
    let write_timeout = config.pong_wait;
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
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + offset + config.ping_interval,
        config.ping_interval,
    );
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_seen = now;
    let mut batch = Vec::with_capacity(BATCH);

    let end = loop {
        // Whatever is queued goes out first (also covers a wake-up lost to a cancelled wait).
        if let Some(close) = handle.outbox.take(BATCH, &mut batch) {
            break End::Close(close.clone(), close.cause.as_str());
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            if write_batch(&mut socket, &mut batch, write_timeout)
                .await
                .is_err()
            {
                break End::Gone("write_failed");
            }
            edge.metrics
                .frames_out
                .with_label_values(&["text"])
                .inc_by(n);
            continue;
        }
        tokio::select! {
            () = handle.outbox.ready() => {}
            () = edge.sockets_stop.cancelled() => break End::Gone("stopped"),
            _ = ping.tick() => {
                if last_seen.elapsed() > config.pong_wait {
                    break End::Close(pong_timeout(), "pong_timeout");
                }
                let sent = tokio::time::timeout(write_timeout, socket.send(Message::Ping(Default::default()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    break End::Gone("write_failed");
                }
            }
            incoming = socket.next() => {
                last_seen = Instant::now();
                match incoming {
                    None => break End::Gone("client_closed"),
                    Some(Err(error)) => {
                        if is_too_big(&error) {
                            break End::Close(too_big(), "message_too_big");
                        }
                        tracing::debug!(%error, "websocket read failed");
                        break End::Gone("read_failed");
                    }
                    Some(Ok(Message::Close(_))) => break End::Gone("client_closed"),
                    Some(Ok(Message::Ping(_))) => {
                        // tungstenite queued the pong; flush so it leaves now.
                        edge.metrics.frames_in.with_label_values(&["ping"]).inc();
                        if tokio::time::timeout(write_timeout, socket.flush()).await.is_err() {
                            break End::Gone("write_failed");
                        }
                    }
                    Some(Ok(Message::Pong(_))) => {
                        edge.metrics.frames_in.with_label_values(&["pong"]).inc();
                    }
                    Some(Ok(Message::Binary(_))) => {
                        // compat: binary frames are ignored.
                        edge.metrics.frames_in.with_label_values(&["binary"]).inc();
                    }
                    Some(Ok(Message::Text(text))) => {
                        edge.metrics.frames_in.with_label_values(&["text"]).inc();
                        match limiter.check(Instant::now()) {
                            Verdict::Allow => {}
                            Verdict::Refuse => {
                                edge.metrics.rate_limited.inc();
                                if send_error(&mut socket, ErrorBody::rate_limited(), write_timeout).await.is_err() {
                                    break End::Gone("write_failed");
                                }
                                continue;
                            }
                            Verdict::Close => {
                                edge.metrics.rate_limited.inc();
                                break End::Close(rate_limited(), "rate_limited");
                            }
                        }
                        match client_frames::handle(&edge, &handle, text).await {
                            Reply::Nothing => {}
                            Reply::Frame(frame) => {
                                let sent = tokio::time::timeout(write_timeout, socket.send(Message::Text(frame))).await;
                                if !matches!(sent, Ok(Ok(()))) {
                                    break End::Gone("write_failed");
                                }
                            }
                            // Lost sessions and similar closes arrive through the outbox.
                            Reply::Closing => {}
                        }
                    }
                }
            }
        }
    };

    match end {
        End::Close(request, reason) => {
            lease.set_reason(reason);
            send_close(&mut socket, request, write_timeout).await;
        }
        End::Gone(reason) => lease.set_reason(reason),
    }
    // The lease's drop takes the socket out of the index and queues its session release.
    drop(lease);
}

async fn write_batch(
    socket: &mut WebSocket,
    batch: &mut Vec<Utf8Bytes>,
    timeout: Duration,
) -> Result<(), ()> {
    let write = async {
        for frame in batch.drain(..) {
            socket.feed(Message::Text(frame)).await?;
        }
        socket.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn send_error(socket: &mut WebSocket, body: ErrorBody, timeout: Duration) -> Result<(), ()> {
    let frame = ServerMessage::Error(body).to_json();
    match tokio::time::timeout(timeout, socket.send(Message::Text(frame.into()))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Error frame (if any), then the close frame; bounded, best effort.
async fn send_close(socket: &mut WebSocket, request: CloseRequest, timeout: Duration) {
    let timeout = timeout.min(Duration::from_secs(5));
    let close = async {
        if let Some(body) = request.error {
            let frame = ServerMessage::Error(body).to_json();
            socket.feed(Message::Text(frame.into())).await?;
        }
        let reason: Utf8Bytes = match request.reason {
            Cow::Borrowed(s) => Utf8Bytes::from_static(s),
            Cow::Owned(s) => s.into(),
        };
        socket
            .send(Message::Close(Some(CloseFrame {
                code: request.code,
                reason,
            })))
            .await
    };
    if let Ok(Err(error)) = tokio::time::timeout(timeout, close).await {
        tracing::debug!(%error, "close frame not sent");
        return;
    }
    // Complete the closing handshake: wait (briefly) for the client's close frame, so the
    // connection is not torn down under frames the client is still writing (e.g. pongs).
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
        while let Some(Ok(message)) = socket.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

fn pong_timeout() -> CloseRequest {
    CloseRequest {
        error: None,
        code: close::INTERNAL_ERROR,
        reason: Cow::Borrowed(close::PONG_TIMEOUT_REASON),
        cause: super::outbox::CloseCause::Protocol,
    }
}

fn rate_limited() -> CloseRequest {
    CloseRequest {
        error: Some(ErrorBody::rate_limited()),
        code: close::RATE_LIMITED,
        reason: Cow::Borrowed("RateLimitExceeded: Rate limit exceeded"),
        cause: super::outbox::CloseCause::Protocol,
    }
}

fn too_big() -> CloseRequest {
    CloseRequest {
        error: Some(ErrorBody::bad_request("Message too large")),
        code: MESSAGE_TOO_BIG,
        reason: Cow::Borrowed("Message too large"),
        cause: super::outbox::CloseCause::Protocol,
    }
}

fn is_too_big(error: &axum::Error) -> bool {
    // axum wraps tungstenite's error; its capacity errors read "Space limit exceeded" or
    // mention the size limits.
    let text = error.to_string().to_ascii_lowercase();
    text.contains("capacity") || text.contains("too long") || text.contains("limit")
}
