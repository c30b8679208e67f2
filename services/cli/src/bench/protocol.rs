//! What the driver and its worker processes say to each other: one JSON document per line,
//! commands on the worker's stdin, answers on its stdout.

use super::latency::Buckets;
use super::plan::Plan;
use super::tally::Counts;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

/// The first line a worker reads: its share of the sockets and how to open them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Setup {
    /// The edge's client port.
    pub(crate) edge_addr: SocketAddr,
    /// `host[:port]` as the socket URLs name the edge.
    pub(crate) edge_host: String,
    /// `secret_token` of user sockets.
    pub(crate) api_key: String,
    /// User token key (hex); the worker mints its sockets' tokens.
    pub(crate) user_key: String,
    /// Who is who.
    pub(crate) plan: Plan,
    /// This run's id: events of other runs are counted apart.
    pub(crate) run: u32,
    /// First socket index of this worker.
    pub(crate) first: u64,
    /// Sockets of this worker.
    pub(crate) count: u64,
    /// Source addresses; socket `i` uses `sources[(i / per_source) % len]`.
    pub(crate) sources: Vec<Ipv4Addr>,
    /// Sockets per source address.
    pub(crate) per_source: u64,
    /// Handshakes in flight at once (this worker).
    pub(crate) concurrency: usize,
    /// Connection attempts per second (this worker), 0 for no pacing.
    pub(crate) rate: f64,
    /// Attempts after a 503 or a failed handshake before a socket counts as failed.
    pub(crate) retries: u32,
    /// Deadline of one handshake, up to the `ready` frame.
    pub(crate) handshake_timeout_ms: u64,
}

/// A command from the driver.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub(crate) enum Command {
    /// Close every socket, then open them all again at once (`storm`).
    Reconnect,
    /// Every measured event is out: from now on progress counts what the sockets that got
    /// `ready` owe for these, and only their arrivals (the drain waits for them).
    Sent {
        /// Measured events published.
        published: u64,
        /// Sequence numbers whose publish failed (sorted): not owed.
        excluded: Vec<u64>,
    },
    /// Send the tallies: `published` measured events went out, `excluded` of them (sorted)
    /// may not have reached the stream.
    Report {
        /// Measured events published.
        published: u64,
        /// Sequence numbers whose publish failed.
        excluded: Vec<u64>,
    },
    /// Close the sockets and exit.
    Quit,
}

/// How opening a batch of sockets went.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Opened {
    /// Sockets that got `ready`.
    pub(crate) ready: u64,
    /// Sockets that never did.
    pub(crate) failed: u64,
    /// Attempts repeated after a 503 or an error.
    pub(crate) retries: u64,
    /// From the first attempt until the last socket settled.
    pub(crate) seconds: f64,
    /// Time from the start to each socket's `ready`.
    pub(crate) time_to_ready: Buckets,
    /// A few distinct failure reasons.
    pub(crate) errors: Vec<String>,
}

/// What a worker received.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Received {
    /// Delivery counts of the measured events.
    pub(crate) counts: Counts,
    /// Publish → socket latency of measured events.
    pub(crate) latency: Buckets,
    /// Scheduled publish time → socket latency of measured events.
    pub(crate) from_schedule: Buckets,
    /// Warm-up events received.
    pub(crate) warmup: u64,
    /// Events of other runs (stale messages still in the stream).
    pub(crate) foreign: u64,
    /// Frames without a stamp after `ready` (error frames, other publishers' events).
    pub(crate) other_frames: u64,
    /// Sockets closed by the edge, by close code.
    pub(crate) closes: BTreeMap<String, u64>,
    /// Sockets still open.
    pub(crate) open: u64,
    /// First and last arrival of a measured event (ns since the Unix epoch).
    pub(crate) first_ns: Option<u64>,
    /// See `first_ns`.
    pub(crate) last_ns: Option<u64>,
}

/// A line from a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub(crate) enum Reply {
    /// Running totals, a few times a second.
    Progress {
        /// Sockets with `ready`.
        ready: u64,
        /// Sockets given up.
        failed: u64,
        /// First arrivals of measured events at the socket they belong to (no duplicates, no
        /// misrouted events; after `Sent`, only events published and owed).
        arrived: u64,
        /// After `Sent`: deliveries the sockets that got `ready` are owed.
        owed: Option<u64>,
    },
    /// The first opening finished.
    Opened(Opened),
    /// A `Reconnect` finished.
    Reopened(Opened),
    /// Answer to `Report`.
    Received(Box<Received>),
}
