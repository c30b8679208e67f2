//! `daisi`: one binary for people operating daisi — the in-process dev stack, keys and tokens,
//! the coordinator's sessions, pods and routes, publishing events, tailing a socket, and
//! load-testing a running stack (`daisi bench`).

mod admin;
mod bench;
mod cli;
mod dev;
mod http;
mod keygen;
mod output;
mod publish;
mod redact;
mod tail;
mod token;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // Load-test workers run one thread each; the driver starts as many as it needs.
    let mut builder = if cli.is_bench_worker() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(error) => {
            output::fail(&format!("cannot start the tokio runtime: {error}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::dispatch(cli)) {
        Ok(code) => code,
        Err(error) => {
            output::fail(&output::describe(&error));
            ExitCode::FAILURE
        }
    }
}
