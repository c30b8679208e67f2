//! `daisi-router`: configuration from `DAISI_ROUTER_*`, then [`daisi_router::run`].

use daisi_router::{Config, Listeners, SERVICE};
use std::process::ExitCode;

fn main() -> ExitCode {
    daisi_runtime::main_with(SERVICE, Config::from_env, |config, shutdown| async move {
        let listeners = Listeners::bind(&config).await?;
        daisi_router::run(config, listeners, shutdown).await?;
        Ok(())
    })
}
