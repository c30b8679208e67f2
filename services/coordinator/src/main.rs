//! `daisi-coordinator`: configuration from `DAISI_COORDINATOR_*`, then [`daisi_coordinator::run`].

use daisi_coordinator::{Config, Listeners, SERVICE};
use std::process::ExitCode;

fn main() -> ExitCode {
    daisi_runtime::main_with(SERVICE, Config::from_env, |config, shutdown| async move {
        let listeners = Listeners::bind(&config).await?;
        daisi_coordinator::run(config, listeners, shutdown).await?;
        Ok(())
    })
}
