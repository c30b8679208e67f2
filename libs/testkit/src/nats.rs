//! A private `nats-server -js` per test: its own random port and store directory, stopped
//! (gracefully or with SIGKILL) and restarted on the same port and store, killed and cleaned
//! up on drop. Needs `nats-server` (>= 2.10) on `PATH`. [`NatsCluster`](crate::NatsCluster) runs several such
//! servers as one JetStream cluster.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use parking_lot::Mutex;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Starting the server failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The binary could not be started (not installed?).
    #[error("cannot start nats-server: {0}")]
    Start(std::io::Error),
    /// It did not report ready in time; its output says why.
    #[error("nats-server did not become ready within {timeout:?}; its output:\n{logs}")]
    NotReady {
        /// How long we waited.
        timeout: Duration,
        /// Everything it printed.
        logs: String,
    },
}

/// A running (or stopped, restartable) JetStream-enabled NATS server.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
    /// Arguments after the common ones (cluster membership).
    extra: Vec<String>,
}

const READY_WITHIN: Duration = Duration::from_secs(15);

fn store_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("daisi-nats-{}-{n}-{nanos}", std::process::id()))
}

impl NatsServer {
    /// Starts a server on a random port with a fresh store directory.
    pub async fn start() -> Result<Self, NatsError> {
        let mut server = Self {
            child: None,
            port: 0,
            store: store_dir(),
            logs: Arc::new(Mutex::new(Vec::new())),
            extra: Vec::new(),
        };
        server.launch().await?;
        Ok(server)
    }

    /// A server that is not started yet, on a fixed port with `extra` arguments.
    pub(crate) fn configured(port: u16, extra: Vec<String>) -> Self {
        Self {
            child: None,
            port,
            store: store_dir(),
            logs: Arc::new(Mutex::new(Vec::new())),
            extra,
        }
    }

    pub(crate) async fn launch(&mut self) -> Result<(), NatsError> {
        // Port -1 lets the server pick; a restart reuses the port it picked.
        let port = if self.port == 0 {
            "-1".to_owned()
        } else {
            self.port.to_string()
        };
        let mut child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"])
            .arg(&self.store)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(NatsError::Start)?;
        let (notify, mut seen) = watch::channel(0usize);
        for reader in [
            child
                .stderr
                .take()
                .map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stdout
                .take()
                .map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let logs = self.logs.clone();
            let notify = notify.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(reader).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let n = {
                        let mut logs = logs.lock();
                        logs.push(line);
                        logs.len()
                    };
                    notify.send_replace(n);
                }
            });
        }
        self.child = Some(child);
        let start = self.logs().lines().count();
        let ready = tokio::time::timeout(READY_WITHIN, async {
            loop {
                let port = {
                    let logs = self.logs.lock();
                    let fresh = &logs[start.min(logs.len())..];
                    let ready = fresh.iter().any(|l| l.contains("Server is ready"));
                    let port = fresh
                        .iter()
                        .find(|l| l.contains("Listening for client connections on"))
                        .and_then(|l| l.rsplit(':').next())
                        .and_then(|p| p.trim().parse::<u16>().ok());
                    ready.then_some(port).flatten()
                };
                if let Some(port) = port {
                    return port;
                }
                if seen.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        match ready {
            Ok(port) => {
                self.port = port;
                Ok(())
            }
            Err(_) => Err(NatsError::NotReady {
                timeout: READY_WITHIN,
                logs: self.logs(),
            }),
        }
    }

    /// `nats://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The process id, while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything the server printed, across restarts.
    pub fn logs(&self) -> String {
        self.logs.lock().join("\n")
    }

    /// Stops the server with `signal` (SIGTERM: graceful, SIGKILL: crash) and waits for it.
    pub async fn stop_with(&mut self, signal: Signal) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = kill(Pid::from_raw(pid), signal);
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }

    /// Sends `signal` without waiting (SIGSTOP freezes the server with its connections
    /// open, SIGCONT resumes it).
    pub fn signal(&self, signal: Signal) -> Result<(), nix::Error> {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .ok_or(nix::Error::ESRCH)?;
        let pid = i32::try_from(pid).map_err(|_| nix::Error::EINVAL)?;
        kill(Pid::from_raw(pid), signal)
    }

    /// Stops the server gracefully.
    pub async fn stop(&mut self) {
        self.stop_with(Signal::SIGTERM).await;
    }

    /// Starts it again on the same port with the same store (after [`NatsServer::stop`]).
    pub async fn restart(&mut self) -> Result<(), NatsError> {
        self.stop().await;
        self.launch().await
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
