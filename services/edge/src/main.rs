//! `daisi-edge`: configuration from `DAISI_EDGE_*`, then [`daisi_edge::run`].

use daisi_edge::{Config, Listeners, SERVICE};
use std::process::ExitCode;

fn main() -> ExitCode {
    daisi_runtime::main_with(SERVICE, Config::from_env, |config, shutdown| async move {
        let listeners = Listeners::bind(&config).await?;
        daisi_edge::run(config, listeners, shutdown).await?;
        Ok(())
    })
}
