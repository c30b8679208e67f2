//! `daisi bench`: a load generator against a running stack. It opens client sockets (in worker
//! processes, spread over loopback source addresses), publishes stamped events open-loop into
//! JetStream or through the router's publish API, counts what every socket receives (losses,
//! duplicates, reorders), measures publish → socket latency, and samples the CPU and memory of
//! the service processes it is given. Modes:
//!
//! - `idle`: N sockets held; connects per second, edge RSS and CPU per socket.
//! - `fanout`: N sockets of one agent; every event goes to all of them.
//! - `spread`: N sockets, each its own agent; events round-robin (the chat workload).
//! - `storm`: N sockets all reconnect at once; time until all are `ready` again.
//!
//! Module map: [`plan`] (who is who, which event goes where), [`payload`] (the stamp),
//! [`tally`] (delivery accounting), [`latency`] (histograms), [`connect`] and [`worker`]
//! (client sockets), [`publisher`] (open-loop publishing), [`procstat`] (/proc sampling),
//! [`driver`] (the run), [`report`] (table and JSON), [`protocol`] (driver ↔ worker lines).

mod connect;
mod driver;
mod latency;
mod payload;
mod plan;
mod procstat;
mod protocol;
mod publisher;
mod report;
mod tally;
pub(crate) mod worker;

use crate::cli::parse_duration;
use clap::{Args, ValueEnum};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

pub(crate) use driver::run;

/// The workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// Hold N idle sockets: connects/s, edge RSS and CPU per socket.
    Idle,
    /// N sockets of one agent; every event goes to all of them.
    Fanout,
    /// N sockets each its own agent; events round-robin (the chat workload).
    Spread,
    /// Open N sockets, then reconnect them all at once: time until all are ready again.
    Storm,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Fanout => "fanout",
            Self::Spread => "spread",
            Self::Storm => "storm",
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// The workload.
    #[arg(value_enum)]
    mode: Mode,
    /// Client sockets.
    #[arg(long, default_value_t = 1000)]
    sockets: u64,
    /// Events per second (fanout, spread).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// How long events are published (fanout, spread).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Events published at the same rate before measuring, to warm caches and connections.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// How long to wait for deliveries after the last event.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    drain: Duration,
    /// How long idle sockets are held while CPU and memory are measured (idle).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    hold: Duration,
    /// Pause after the sockets are up, before measuring (registrations, first renewals).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    settle: Duration,
    /// Approximate size of each event payload, in bytes.
    #[arg(long, default_value_t = 512)]
    payload_bytes: usize,
    /// Company of every socket.
    #[arg(long, default_value = "bench")]
    company: String,

    /// Edge base URL (client port).
    #[arg(long, env = "DAISI_EDGE_URL", default_value = "http://127.0.0.1:8080")]
    edge: Url,
    /// User API key (`secret_token`).
    #[arg(
        long,
        env = "DAISI_EDGE_SECRET_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    api_key: String,
    /// User token key(s), 64 hex characters; tokens are minted locally.
    #[arg(
        long,
        env = "DAISI_EDGE_TOKEN_AES_KEY",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    key: String,
    /// Publish into NATS JetStream at this URL (otherwise through the router's publish API).
    #[arg(long, env = "DAISI_NATS_URL")]
    nats: Option<Url>,
    /// Router base URL (publish API), used without --nats.
    #[arg(
        long,
        env = "DAISI_ROUTER_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    router: Url,
    /// Router publish API key, used without --nats.
    #[arg(
        long,
        env = "DAISI_ROUTER_PUBLISH_API_KEY",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    publish_key: Option<String>,
    /// Subject prefix.
    #[arg(long, env = "DAISI_ROUTER_SUBJECT_PREFIX", default_value = "websocket")]
    prefix: String,
    /// Acknowledgements (or publish API requests) outstanding at most.
    #[arg(long, default_value_t = 512)]
    ack_window: usize,

    /// Handshakes in flight at once (over all workers).
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Connection attempts per second over all workers; 0 opens as fast as the concurrency
    /// allows. Use it (with --per-source) to stay under the edge's per-address budget
    /// (DAISI_EDGE_ADDRESS_RATE_PER_SECOND), or turn that budget off on the stack under test.
    #[arg(long, default_value_t = 0.0)]
    connect_rate: f64,
    /// Attempts after a 503 or 429 (waiting its Retry-After, at most 2 s) or a failed handshake.
    #[arg(long, default_value_t = 3)]
    connect_retries: u32,
    /// Deadline of one handshake, up to the `ready` frame.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    handshake_timeout: Duration,
    /// First loopback source address; sockets fill --per-source on each, then the next.
    #[arg(long, default_value = "127.0.0.2")]
    source_base: Ipv4Addr,
    /// Sockets per source address (loopback ports run out near 28,000 per address).
    #[arg(long, default_value_t = 5000)]
    per_source: u64,
    /// Worker processes; by default as many as --per-worker requires.
    #[arg(long)]
    workers: Option<usize>,
    /// Sockets per worker process at most (a process may hold 20,000 open files here).
    #[arg(long, default_value_t = 15_000)]
    per_worker: u64,

    /// A process to measure, as name=PID (repeatable), e.g. --pid edge=1234.
    #[arg(long = "pid", value_parser = procstat::parse_pid)]
    pids: Vec<procstat::Target>,
    /// A process to measure, found by its command name (repeatable), e.g. --proc nats-server.
    #[arg(long = "proc")]
    procs: Vec<String>,
    /// Name of the measured process whose RSS per socket is reported.
    #[arg(long, default_value = "edge")]
    edge_process: String,

    /// Run id stamped on the events (random by default); fixing it lets another publisher add
    /// events to a run, as the tests do to cause duplicates.
    #[arg(long, hide = true)]
    run_id: Option<u32>,
    /// Title of the report.
    #[arg(long)]
    label: Option<String>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}
