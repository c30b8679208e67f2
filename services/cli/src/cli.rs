//! Command-line grammar (clap) and dispatch to the subcommands.

use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;
use std::time::Duration;
use url::Url;

/// daisi: realtime WebSocket gateway — operations and development tool.
#[derive(Debug, Parser)]
#[command(name = "daisi", version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run coordinator, router and edge in this process with in-memory backends (no Redis,
    /// NATS or Docker needed); prints a console URL, tokens and a publish command.
    Dev(crate::dev::DevArgs),
    /// Print new AES token keys and API secrets in .env format.
    Keygen(crate::keygen::KeygenArgs),
    /// Mint a user or admin token, locally from keys or through an edge's HTTP API.
    #[command(subcommand)]
    Token(crate::token::TokenCommand),
    /// Inspect or end live sessions (coordinator gRPC).
    #[command(subcommand)]
    Sessions(crate::admin::SessionsCommand),
    /// List registered edge pods (coordinator gRPC).
    Pods(crate::admin::PodsArgs),
    /// Show which pods hold interest in a company/agent/chat, or everything a pod holds.
    Routes(crate::admin::RoutesArgs),
    /// Publish an event to NATS JetStream or through a router's publish API.
    Publish(crate::publish::PublishArgs),
    /// Connect as a client and print events as they arrive, with close codes and reasons.
    Tail(crate::tail::TailArgs),
    /// Load-test a running stack: sockets, events, latency, losses, CPU and memory.
    Bench(Box<crate::bench::BenchArgs>),
    /// A load-test worker process (started by `daisi bench`).
    #[command(hide = true)]
    BenchWorker,
}

impl Cli {
    /// Whether this process is a load-test worker, which runs on one thread.
    pub(crate) fn is_bench_worker(&self) -> bool {
        matches!(self.command, Command::BenchWorker)
    }
}

/// Where the coordinator's gRPC API is.
#[derive(Debug, Clone, Args)]
pub(crate) struct CoordinatorArgs {
    /// Coordinator gRPC endpoint.
    #[arg(
        long,
        env = "DAISI_COORDINATOR_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub(crate) coordinator: Url,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Parses `30s`, `24h`, `7d`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration such as 30s, 24h or 7d ({e})"))?;
    if d.is_zero() {
        return Err("the duration must be greater than zero".into());
    }
    Ok(d)
}

pub(crate) async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Dev(args) => crate::dev::run(args).await,
        Command::Keygen(args) => crate::keygen::run(&args),
        Command::Token(command) => crate::token::run(command).await,
        Command::Sessions(command) => crate::admin::sessions(command).await,
        Command::Pods(args) => crate::admin::pods(args).await,
        Command::Routes(args) => crate::admin::routes(args).await,
        Command::Publish(args) => crate::publish::run(args).await,
        Command::Tail(args) => crate::tail::run(args).await,
        Command::Bench(args) => crate::bench::run(*args).await,
        Command::BenchWorker => crate::bench::worker::run().await,
    }
}
