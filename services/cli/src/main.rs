//! `daisi`: one binary for people operating daisi — the in-process dev stack, keys and tokens,
//! the coordinator's sessions, pods and routes, publishing events and tailing a socket.

mod admin;
mod cli;
mod dev;
mod http;
mod keygen;
mod output;
mod publish;
mod tail;
mod token;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
