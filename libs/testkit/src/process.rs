//! A service binary running as a child process.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Starting a service failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The binary could not be started.
    #[error("cannot start {bin}: {source}")]
    Start {
        /// Path of the binary.
        bin: String,
        /// Why.
        source: std::io::Error,
    },
    /// It did not log its start line in time (or exited first); the logs say why.
    #[error("{bin} did not log {message:?} within {timeout:?}; its output:\n{logs}")]
    NotStarted {
        /// Path of the binary.
        bin: String,
        /// Log message waited for.
        message: String,
        /// How long.
        timeout: Duration,
        /// Everything it printed.
        logs: String,
    },
}

/// How a process ended, with everything it printed.
#[derive(Debug)]
pub struct Exited {
    /// Exit status.
    pub status: ExitStatus,
    /// stdout and stderr lines, interleaved in arrival order.
    pub output: String,
}

/// A running service. Killed when dropped, so a failing test leaves nothing behind.
#[derive(Debug)]
pub struct ServiceProcess {
    bin: String,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    fields: HashMap<String, String>,
}

type Lines = (Arc<Mutex<Vec<String>>>, watch::Sender<usize>);

fn collect<R: AsyncRead + Unpin + Send + 'static>(reader: R, (logs, notify): Lines) {
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

fn command(bin: &str, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin);
    // A clean environment: only what the test sets, plus PATH and a log level.
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

impl ServiceProcess {
    /// Starts `bin` with exactly `env` (plus PATH and `RUST_LOG=info`) and waits until it logs
    /// a JSON line whose `message` is `started_message`; that line's fields become
    /// [`ServiceProcess::field`] and [`ServiceProcess::addr`].
    pub async fn spawn(
        bin: &str,
        env: &[(&str, &str)],
        started_message: &str,
        timeout: Duration,
    ) -> Result<Self, SpawnError> {
        Self::spawn_with_args(bin, &[], env, started_message, timeout).await
    }

    /// Like [`ServiceProcess::spawn`], with command-line arguments.
    pub async fn spawn_with_args(
        bin: &str,
        args: &[&str],
        env: &[(&str, &str)],
        started_message: &str,
        timeout: Duration,
    ) -> Result<Self, SpawnError> {
        let mut cmd = command(bin, env);
        cmd.args(args);
        let mut child = cmd.spawn().map_err(|source| SpawnError::Start {
            bin: bin.to_owned(),
            source,
        })?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (notify, mut seen) = watch::channel(0);
        if let Some(out) = child.stdout.take() {
            collect(out, (logs.clone(), notify.clone()));
        }
        if let Some(err) = child.stderr.take() {
            collect(err, (logs.clone(), notify));
        }
        let mut process = Self {
            bin: bin.to_owned(),
            child,
            logs,
            fields: HashMap::new(),
        };
        let found = tokio::time::timeout(timeout, async {
            loop {
                if let Some(fields) = process.find_line(started_message) {
                    return Some(fields);
                }
                if seen.changed().await.is_err() {
                    return process.find_line(started_message);
                }
            }
        })
        .await;
        match found {
            Ok(Some(fields)) => {
                process.fields = fields;
                Ok(process)
            }
            _ => Err(SpawnError::NotStarted {
                bin: bin.to_owned(),
                message: started_message.to_owned(),
                timeout,
                logs: process.logs(),
            }),
        }
    }

    fn find_line(&self, message: &str) -> Option<HashMap<String, String>> {
        let logs = self.logs.lock();
        logs.iter().find_map(|line| {
            let Value::Object(map) = serde_json::from_str::<Value>(line).ok()? else {
                return None;
            };
            if map.get("message").and_then(Value::as_str) != Some(message) {
                return None;
            }
            Some(
                map.into_iter()
                    .map(|(k, v)| {
                        let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                        (k, v)
                    })
                    .collect(),
            )
        })
    }

    /// A field of the start line (e.g. `http`).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// A field of the start line parsed as a socket address; `None` when absent or not one.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.field(name)?.parse().ok()
    }

    /// Everything the process printed so far.
    pub fn logs(&self) -> String {
        self.logs.lock().join("\n")
    }

    /// Whether some log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs.lock().iter().any(|l| l.contains(needle))
    }

    /// The process id, while the process runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends `signal` (SIGTERM for a graceful stop, SIGKILL for a crash, SIGSTOP to freeze).
    pub fn signal(&self, signal: Signal) -> Result<(), nix::Error> {
        let pid = self.child.id().ok_or(nix::Error::ESRCH)?;
        let pid = i32::try_from(pid).map_err(|_| nix::Error::EINVAL)?;
        kill(Pid::from_raw(pid), signal)
    }

    /// Waits for the process to exit, up to `timeout`. `None` when it is still running.
    pub async fn wait(&mut self, timeout: Duration) -> Option<Exited> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()?
            .ok()?;
        // Let the log readers drain what the process wrote last.
        tokio::time::sleep(Duration::from_millis(50)).await;
        Some(Exited {
            status,
            output: self.logs(),
        })
    }

    /// Path of the binary.
    pub fn bin(&self) -> &str {
        &self.bin
    }
}

/// Runs `bin` with exactly `env` until it exits (it must exit within `timeout`, or `None`).
pub async fn run_to_exit(bin: &str, env: &[(&str, &str)], timeout: Duration) -> Option<Exited> {
    run_with_args(bin, &[], env, timeout).await
}

/// Runs `bin args...` with exactly `env` until it exits (within `timeout`, or `None`).
pub async fn run_with_args(
    bin: &str,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Option<Exited> {
    let mut cmd = command(bin, env);
    cmd.args(args);
    let child = cmd.spawn().ok()?;
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .ok()?
        .ok()?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Some(Exited {
        status: output.status,
        output: text,
    })
}

/// Resident memory of process `pid` in KiB (`VmRSS` of `/proc/{pid}/status`; Linux only).
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
