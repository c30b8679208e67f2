//! One cancellation token per process, cancelled by SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
//! Every task takes a child of it, so shutdown reaches socket tasks as well as servers.

use tokio_util::sync::CancellationToken;

/// Returns a token cancelled on the first SIGTERM or SIGINT. Must be called inside a tokio
/// runtime. If a handler cannot be installed (no signal support) the token is only cancelled by
/// its owner, and the failure is logged.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let signal = wait_for_signal().await;
        tracing::info!(signal, "shutdown requested");
        trigger.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM; only ctrl-c will stop the process");
            return ctrl_c().await;
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        name = ctrl_c() => name,
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    ctrl_c().await
}

async fn ctrl_c() -> &'static str {
    match tokio::signal::ctrl_c().await {
        Ok(()) => "SIGINT",
        Err(error) => {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending().await
        }
    }
}
