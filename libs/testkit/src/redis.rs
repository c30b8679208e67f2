//! A private `redis-server` per test: listens on a unix socket in its own temporary directory
//! (no TCP port to race for, and a restart comes back on the same address), persists nothing,
//! and is killed when dropped. Stop, pause (SIGSTOP), resume and restart it to test outages.
//!
//! Synchronous on purpose so benchmarks (no async runtime) can use it as well; every wait is a
//! few milliseconds.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a fresh server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Starting or controlling the test Redis failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisServerError {
    /// `redis-server` could not be started (not installed?).
    #[error("cannot start redis-server (install it with `apt-get install redis-server`): {0}")]
    Spawn(std::io::Error),
    /// The temporary directory could not be created.
    #[error("cannot create {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The server did not answer `PING` in time.
    #[error("redis-server did not answer PING within {0:?}")]
    NotReady(Duration),
    /// A signal could not be delivered.
    #[error("cannot signal redis-server: {0}")]
    Signal(#[from] nix::Error),
}

/// A running (or deliberately stopped) `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    dir: PathBuf,
    socket: PathBuf,
    /// TCP port on 127.0.0.1 as well, when not 0 (to compare with a cluster over TCP).
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server in a fresh temporary directory and waits until it answers `PING`.
    pub fn start() -> Result<Self, RedisServerError> {
        Self::start_on_port(0)
    }

    /// Like [`RedisServer::start`], also listening on a free TCP port of 127.0.0.1
    /// ([`RedisServer::tcp_url`]).
    pub fn start_tcp() -> Result<Self, RedisServerError> {
        let port = crate::ports::free_port().map_err(RedisServerError::Spawn)?;
        Self::start_on_port(port)
    }

    fn start_on_port(port: u16) -> Result<Self, RedisServerError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "daisi-redis-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|source| RedisServerError::Dir {
            path: dir.clone(),
            source,
        })?;
        // Short socket paths: unix socket paths are limited to ~107 bytes.
        let socket = dir.join("r.sock");
        let mut server = Self {
            dir,
            socket,
            port,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), RedisServerError> {
        let _ = std::fs::remove_file(&self.socket);
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--unixsocket")
            .arg(&self.socket)
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(RedisServerError::Spawn)?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if ping(&self.socket) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(RedisServerError::NotReady(START_TIMEOUT))
    }

    /// The URL clients connect with (`unix:///…/r.sock`).
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// `redis://127.0.0.1:PORT` for a server from [`RedisServer::start_tcp`].
    pub fn tcp_url(&self) -> Option<String> {
        (self.port != 0).then(|| format!("redis://127.0.0.1:{}", self.port))
    }

    /// Path of the unix socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Kills the server (SIGKILL, like a crash); its data is gone. [`RedisServer::restart`]
    /// brings a new, empty one up on the same socket.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Starts the server again after [`RedisServer::stop`] (a no-op start if it runs).
    pub fn restart(&mut self) -> Result<(), RedisServerError> {
        if self.child.is_some() {
            return Ok(());
        }
        self.spawn()
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing answers, like a hung host.
    pub fn pause(&self) -> Result<(), RedisServerError> {
        self.signal(Signal::SIGSTOP)
    }

    /// Undoes [`RedisServer::pause`] (SIGCONT).
    pub fn resume(&self) -> Result<(), RedisServerError> {
        self.signal(Signal::SIGCONT)
    }

    fn signal(&self, signal: Signal) -> Result<(), RedisServerError> {
        if let Some(child) = &self.child {
            let pid = i32::try_from(child.id()).map_err(|_| nix::Error::ESRCH)?;
            kill(Pid::from_raw(pid), signal)?;
        }
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A paused process ignores SIGTERM until continued; SIGKILL works either way.
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a server answers `PING` on `socket`.
fn ping(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_stops_and_restarts() {
        let mut server = RedisServer::start().expect("redis-server starts");
        assert!(ping(server.socket()));
        server.stop();
        assert!(!ping(server.socket()));
        server.restart().expect("restarts");
        assert!(ping(server.socket()));
        server.pause().expect("pauses");
        assert!(!ping(server.socket()));
        server.resume().expect("resumes");
        assert!(ping(server.socket()));
    }
}
