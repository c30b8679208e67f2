//! The shared body of every daisi `main`: read and check the configuration before anything
//! else (exit 64 with every problem listed when it is wrong), start the runtime and telemetry,
//! raise the open-file limit, wire SIGTERM/SIGINT to a shutdown token, run the service, and
//! turn its outcome into an exit code.

use daisi_config::{ConfigError, EXIT_BAD_CONFIG, Env, Loaded};
use daisi_telemetry::TelemetryConfig;
use std::future::Future;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Runs a service binary. `load` turns the environment into the service's config; `run` gets
/// it with the process shutdown token and returns when the service has stopped.
#[allow(clippy::print_stderr)] // before telemetry exists, stderr is the only channel
pub fn main_with<C, F, Fut>(
    service: &'static str,
    load: impl FnOnce(&Env) -> Result<Loaded<C>, ConfigError>,
    run: F,
) -> ExitCode
where
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let env = Env::from_process();
    let loaded = match load(&env) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("{service}: {error}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let telemetry = match TelemetryConfig::from_lookup(service, |k| env.get(k).map(str::to_owned)) {
        Ok(t) => t,
        Err(error) => {
            eprintln!("{service}: {error}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("{service}: cannot start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let _guard = match daisi_telemetry::init(&telemetry) {
            Ok(guard) => guard,
            Err(error) => {
                eprintln!("{service}: cannot start telemetry: {error}");
                return ExitCode::FAILURE;
            }
        };
        crate::fd_limit::raise_and_log();
        for variable in &loaded.unknown {
            tracing::warn!(%variable, "ignoring an environment variable that is not a setting of this service");
        }
        let shutdown = crate::shutdown::on_signal();
        match run(loaded.value, shutdown).await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(error) => {
                tracing::error!(error = format!("{error:#}"), "service failed");
                eprintln!("{service}: {error:#}");
                ExitCode::FAILURE
            }
        }
    })
}
