//! One cancellation token per process, cancelled by SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
//! Every task takes a child of it, so shutdown reaches socket tasks as well as servers.

use tokio_util::sync::CancellationToken;

/// Returns a token cancelled on the first SIGTERM or SIGINT. Must be called inside a tokio
/// runtime. The handlers are installed before this returns, so a signal that arrives at any
/// later moment is seen (not left to the default action, which would kill the process). If a
/// handler cannot be installed the failure is logged and that signal keeps its default action.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    let signals = Signals::install();
    tokio::spawn(async move {
        let signal = signals.wait().await;
        tracing::info!(signal, "shutdown requested");
        trigger.cancel();
    });
    token
}

/// SIGTERM and SIGINT listeners, installed at construction.
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installs the handlers now. Must be called inside a tokio runtime.
    pub fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let install = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(error) => {
                    tracing::error!(%error, signal = name, "cannot listen for the signal");
                    None
                }
            };
            Self {
                term: install(SignalKind::terminate(), "SIGTERM"),
                int: install(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Waits for the first of the installed signals; returns its name.
    pub async fn wait(mut self) -> &'static str {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = recv(&mut self.term) => "SIGTERM",
                () = recv(&mut self.int) => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
