//! The edge's tunable bounds: client limits, per-socket buffers and queue, TLS files.
//!
//! Kept apart from the identity and address settings in `mod.rs` because these are the knobs
//! an operator turns under load, each with a default measured to suit many idle sockets.

use super::Raw;
use daisi_config::Validator;
use std::path::PathBuf;
use std::time::Duration;

/// The longest write coalescing window accepted: beyond it the added latency is no longer a
/// trade anyone wants, and frames risk the send queue's bound.
pub const MAX_WRITE_COALESCE: Duration = Duration::from_secs(1);

/// What one client, and the pod as a whole, may cost.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open sockets (user and admin) beyond which new upgrades get 503.
    pub max_connections: usize,
    /// Largest client message (and frame) accepted; larger ones close the socket (1009).
    pub max_message_size: usize,
    /// Sustained client messages per second per socket.
    pub rate_per_second: u32,
    /// Messages a socket may send in a burst above the sustained rate.
    pub rate_burst: u32,
    /// Rejected messages within the rate window after which the socket is closed (4429).
    pub rate_close_after: u32,
}

/// What happens when a socket's send queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumerPolicy {
    /// Drop the oldest queued frame to make room (counted); the socket stays.
    DropOldest,
    /// Close the socket (4008 "slow consumer", counted); the client reconnects and resyncs.
    Close,
}

/// Per-socket memory: the dominant cost of many idle connections.
#[derive(Debug, Clone)]
pub struct SocketTuning {
    /// Frames queued per socket before the slow-consumer policy applies.
    pub send_queue: usize,
    /// The slow-consumer policy.
    pub slow_consumer: SlowConsumerPolicy,
    /// tungstenite read buffer, allocated up front per socket.
    pub read_buffer: usize,
    /// tungstenite write buffer target before bytes go to the socket.
    pub write_buffer: usize,
    /// After a socket wrote data frames, how long its next data frames wait so that the ones
    /// arriving meanwhile leave together in one vectored write (`DAISI_EDGE_WRITE_COALESCE`).
    /// Zero (the default) writes every wake-up's frames at once.
    pub write_coalesce: Duration,
}

/// PEM files for TLS termination by the edge.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

pub(super) fn limits(v: &mut Validator, raw: &Raw) -> Option<Limits> {
    let max_connections = v.int_in(
        "MAX_CONNECTIONS",
        raw.max_connections.as_deref(),
        50_000usize,
        1,
        1_000_000,
    );
    let max_message_size = v.int_in(
        "MAX_MESSAGE_SIZE",
        raw.max_message_size.as_deref(),
        16_384usize,
        256,
        16 << 20,
    );
    let rate_per_second = v.int_in(
        "RATE_LIMIT_PER_SECOND",
        raw.rate_limit_per_second.as_deref(),
        20u32,
        1,
        100_000,
    );
    let rate_burst = v.int_in(
        "RATE_LIMIT_BURST",
        raw.rate_limit_burst.as_deref(),
        40u32,
        1,
        100_000,
    );
    let rate_close_after = v.int_in(
        "RATE_LIMIT_CLOSE_AFTER",
        raw.rate_limit_close_after.as_deref(),
        20u32,
        1,
        100_000,
    );
    Some(Limits {
        max_connections: max_connections?,
        max_message_size: max_message_size?,
        rate_per_second: rate_per_second?,
        rate_burst: rate_burst?,
        rate_close_after: rate_close_after?,
    })
}

pub(super) fn sockets(v: &mut Validator, raw: &Raw) -> Option<SocketTuning> {
    let send_queue = v.int_in("SEND_QUEUE", raw.send_queue.as_deref(), 256usize, 1, 65_536);
    let slow_consumer = v
        .one_of(
            "SLOW_CONSUMER_POLICY",
            raw.slow_consumer_policy.as_deref(),
            "drop-oldest",
            &["drop-oldest", "close"],
        )
        .map(|p| match p {
            "close" => SlowConsumerPolicy::Close,
            _ => SlowConsumerPolicy::DropOldest,
        });
    // tungstenite allocates (and zero-fills) the whole read buffer per socket up front, and
    // client messages (`ready`, `select_chat`, pings, a `refresh` with its token) are a few
    // hundred bytes: 512 bytes instead of tungstenite's 128 KiB (1 KiB cost 0.5 KiB more RSS per
    // idle socket, docs/performance.md). A larger client message still reads (the buffer grows
    // for that frame). The write buffer is a threshold, not an allocation, and only concerns
    // control frames: text frames are written straight to the connection (`ws::stream`).
    let read_buffer = v.int_in(
        "WS_READ_BUFFER",
        raw.ws_read_buffer.as_deref(),
        512usize,
        256,
        1 << 20,
    );
    let write_buffer = v.int_in(
        "WS_WRITE_BUFFER",
        raw.ws_write_buffer.as_deref(),
        4096usize,
        0,
        1 << 20,
    );
    // Off by default: it trades each event's latency (up to the window) for fewer socket
    // writes, which only pays when a socket gets several events per window (fan-out).
    let write_coalesce = v.duration_or_zero(
        "WRITE_COALESCE",
        raw.write_coalesce.as_deref(),
        Duration::ZERO,
    );
    if let Some(window) = write_coalesce {
        v.ensure(
            window <= MAX_WRITE_COALESCE,
            "WRITE_COALESCE",
            "must be at most 1s (0ms, the default, turns it off; a few ms is the useful range)",
        );
    }
    Some(SocketTuning {
        send_queue: send_queue?,
        write_coalesce: write_coalesce?,
        slow_consumer: slow_consumer?,
        read_buffer: read_buffer?,
        write_buffer: write_buffer?,
    })
}

pub(super) fn tls(
    v: &mut Validator,
    cert: Option<&str>,
    key: Option<&str>,
) -> Option<Option<TlsFiles>> {
    fn present(s: Option<&str>) -> Option<&str> {
        s.map(str::trim).filter(|s| !s.is_empty())
    }
    match (present(cert), present(key)) {
        (None, None) => Some(None),
        (Some(cert), Some(key)) => Some(Some(TlsFiles {
            cert: cert.into(),
            key: key.into(),
        })),
        (Some(_), None) => {
            v.problem("TLS_KEY_PATH", "is required when TLS_CERT_PATH is set");
            None
        }
        (None, Some(_)) => {
            v.problem("TLS_CERT_PATH", "is required when TLS_KEY_PATH is set");
            None
        }
    }
}
