//! A private Redis Cluster per test: `redis-server --cluster-enabled yes` once per node on
//! loopback TCP ports, joined by `redis-cli --cluster create --cluster-replicas N`, ready once
//! every node reports `cluster_state:ok` and knows every other node. Each node has its own
//! directory (its `nodes.conf`), persists nothing, and is killed when the cluster is dropped.
//!
//! Nodes are inspected and controlled with `redis-cli` (which `redis-server` packages ship), so
//! this stays synchronous like [`crate::RedisServer`]. Every wait has a deadline.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the whole cluster may take to start (nodes, `--cluster create`, convergence).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline of one `redis-cli` call.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// Starting or inspecting the test cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisClusterError {
    /// A binary could not be started (not installed?).
    #[error("cannot start {bin} (install redis-server, which ships redis-cli): {source}")]
    Spawn {
        /// The binary.
        bin: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A directory or port could not be set up.
    #[error("cannot set up the cluster: {0}")]
    Setup(std::io::Error),
    /// Something did not happen in time; says what.
    #[error("{what} within {within:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        within: Duration,
    },
    /// `redis-cli` failed.
    #[error("redis-cli {args}: {output}")]
    Cli {
        /// Its arguments.
        args: String,
        /// What it printed.
        output: String,
    },
    /// A signal could not be delivered.
    #[error("cannot signal a cluster node: {0}")]
    Signal(#[from] nix::Error),
}

/// Shape and timing of a test cluster.
#[derive(Debug, Clone, Copy)]
pub struct ClusterOptions {
    /// Masters (at least 3: Redis Cluster needs a majority of masters to fail one over).
    pub masters: usize,
    /// Replicas per master.
    pub replicas: usize,
    /// `cluster-node-timeout`: how long a silent node takes to be declared failed (a replica
    /// is promoted about this long after its master dies).
    pub node_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            masters: 3,
            replicas: 1,
            node_timeout: Duration::from_millis(1_000),
        }
    }
}

/// One `redis-server` of the cluster.
#[derive(Debug)]
struct Node {
    port: u16,
    child: Option<Child>,
}

/// A running Redis Cluster on 127.0.0.1.
#[derive(Debug)]
pub struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
    /// For each killed master (by port): the ids of its replicas at the time of the kill.
    orphaned: Vec<(u16, Vec<String>)>,
}

/// A node's role as `CLUSTER NODES` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Client port.
    pub port: u16,
    /// Node id.
    pub id: String,
    /// Whether it is a master now.
    pub master: bool,
    /// The master's id, for a replica.
    pub master_id: Option<String>,
    /// Whether the cluster considers it failed.
    pub failed: bool,
}

impl RedisCluster {
    /// Three masters with one replica each, failover after about a second.
    pub fn start() -> Result<Self, RedisClusterError> {
        Self::start_with(ClusterOptions::default())
    }

    /// A cluster of the given shape; returns once every node agrees the cluster is ok.
    pub fn start_with(options: ClusterOptions) -> Result<Self, RedisClusterError> {
        let deadline = Instant::now() + START_TIMEOUT;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "daisi-rcluster-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(RedisClusterError::Setup)?;
        let mut cluster = Self {
            dir,
            nodes: Vec::new(),
            orphaned: Vec::new(),
        };
        let count = options.masters * (1 + options.replicas);
        let ports = (0..count * 2)
            .map(|_| crate::ports::free_port())
            .collect::<Result<Vec<_>, _>>()
            .map_err(RedisClusterError::Setup)?;
        for pair in ports.chunks(2) {
            let (port, bus) = (pair[0], pair[1]);
            let node_dir = cluster.dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).map_err(RedisClusterError::Setup)?;
            let timeout_ms = options.node_timeout.as_millis().to_string();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", &timeout_ms])
                // A replica may always be promoted, however long it was cut off.
                .args(["--cluster-replica-validity-factor", "0"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|source| RedisClusterError::Spawn {
                    bin: "redis-server",
                    source,
                })?;
            cluster.nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        for node in &cluster.nodes {
            wait_until(
                deadline,
                &format!("node {} answers PING", node.port),
                || cli(node.port, &["PING"]).is_ok_and(|a| a.trim() == "PONG"),
            )?;
        }
        let mut create = vec!["--cluster".to_owned(), "create".to_owned()];
        create.extend(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port)),
        );
        create.extend([
            "--cluster-replicas".to_owned(),
            options.replicas.to_string(),
            "--cluster-yes".to_owned(),
        ]);
        run_cli(&create, START_TIMEOUT)?;
        cluster.wait_healthy(deadline.saturating_duration_since(Instant::now()))?;
        Ok(cluster)
    }

    /// Waits until every running node says `cluster_state:ok` and all of them agree on the
    /// number of masters serving slots.
    pub fn wait_healthy(&self, within: Duration) -> Result<(), RedisClusterError> {
        let deadline = Instant::now() + within;
        wait_until(deadline, "the cluster reports ok on every node", || {
            self.running_ports().iter().all(|&port| {
                cli(port, &["CLUSTER", "INFO"]).is_ok_and(|info| {
                    info.contains("cluster_state:ok")
                        && info.contains("cluster_slots_ok:16384")
                        && info
                            .lines()
                            .find_map(|l| l.trim().strip_prefix("cluster_known_nodes:"))
                            .and_then(|n| n.parse::<usize>().ok())
                            .is_some_and(|n| n >= self.nodes.len())
                })
            })
        })
    }

    /// Seed URLs of every node, `redis://127.0.0.1:PORT`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// Client ports of every node (running or killed).
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Client ports of the nodes still running.
    pub fn running_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// Every node as the first running node sees it (`CLUSTER NODES`).
    pub fn topology(&self) -> Result<Vec<NodeInfo>, RedisClusterError> {
        let port = *self
            .running_ports()
            .first()
            .ok_or_else(|| RedisClusterError::Cli {
                args: "CLUSTER NODES".to_owned(),
                output: "no node is running".to_owned(),
            })?;
        let text = cli(port, &["CLUSTER", "NODES"])?;
        Ok(text.lines().filter_map(parse_node_line).collect())
    }

    /// The client port of the master serving `key` (by its hash slot).
    pub fn master_of(&self, key: &str) -> Result<u16, RedisClusterError> {
        let port = *self.running_ports().first().unwrap_or(&0);
        let slot: u16 = cli(port, &["CLUSTER", "KEYSLOT", key])?
            .trim()
            .parse()
            .map_err(|_| RedisClusterError::Cli {
                args: format!("CLUSTER KEYSLOT {key}"),
                output: "not a slot number".to_owned(),
            })?;
        let text = cli(port, &["CLUSTER", "NODES"])?;
        text.lines()
            .find_map(|line| {
                let info = parse_node_line(line)?;
                let serves = line.split_whitespace().skip(8).any(|range| {
                    let mut bounds = range.split('-');
                    let start = bounds.next().and_then(|s| s.parse::<u16>().ok());
                    let end = bounds.next().and_then(|s| s.parse::<u16>().ok()).or(start);
                    matches!((start, end), (Some(a), Some(b)) if a <= slot && slot <= b)
                });
                (info.master && !info.failed && serves).then_some(info.port)
            })
            .ok_or_else(|| RedisClusterError::Cli {
                args: format!("CLUSTER NODES (slot {slot})"),
                output: text.clone(),
            })
    }

    /// Keys stored on the node at `port` (`DBSIZE`).
    pub fn dbsize(&self, port: u16) -> Result<u64, RedisClusterError> {
        let answer = cli(port, &["DBSIZE"])?;
        answer.trim().parse().map_err(|_| RedisClusterError::Cli {
            args: "DBSIZE".to_owned(),
            output: answer,
        })
    }

    /// Runs one command on the node at `port` and answers what `redis-cli` printed.
    pub fn command(&self, port: u16, args: &[&str]) -> Result<String, RedisClusterError> {
        cli(port, args)
    }

    /// Waits until every replica of the master at `port` has acknowledged its whole
    /// replication stream (`WAIT`), so a failover loses nothing written before.
    pub fn sync_replicas(&self, port: u16, within: Duration) -> Result<(), RedisClusterError> {
        let nodes = self.topology()?;
        let id = nodes.iter().find(|n| n.port == port).map(|n| n.id.clone());
        let replicas = nodes
            .iter()
            .filter(|n| !n.failed && n.master_id.is_some() && n.master_id == id)
            .count();
        let ms = within.as_millis().to_string();
        let answer = cli(port, &["WAIT", &replicas.to_string(), &ms])?;
        let acked: usize = answer.trim().parse().unwrap_or(0);
        if acked < replicas {
            return Err(RedisClusterError::Timeout {
                what: format!("{acked} of {replicas} replicas of {port} acknowledged"),
                within,
            });
        }
        Ok(())
    }

    /// Kills the node at `port` with SIGKILL (a crash); it stays down. A master's replicas
    /// are noted first, for [`RedisCluster::wait_failover`].
    pub fn kill(&mut self, port: u16) -> Result<(), RedisClusterError> {
        let nodes = self.topology()?;
        if let Some(id) = nodes.iter().find(|n| n.port == port).map(|n| n.id.clone()) {
            let replicas = nodes
                .iter()
                .filter(|n| n.master_id.as_ref() == Some(&id))
                .map(|n| n.id.clone())
                .collect();
            self.orphaned.push((port, replicas));
        }
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port)
            && let Some(mut child) = node.child.take()
        {
            let pid = i32::try_from(child.id()).map_err(|_| nix::Error::ESRCH)?;
            kill(Pid::from_raw(pid), Signal::SIGKILL)?;
            let _ = child.wait();
        }
        Ok(())
    }

    /// Waits until a replica the master at `dead` had when [`RedisCluster::kill`] killed it is
    /// a master, and the cluster is ok again on every running node; answers its port.
    pub fn wait_failover(&self, dead: u16, within: Duration) -> Result<u16, RedisClusterError> {
        let deadline = Instant::now() + within;
        let replicas: &[String] = self
            .orphaned
            .iter()
            .find(|(port, _)| *port == dead)
            .map(|(_, ids)| ids.as_slice())
            .unwrap_or_default();
        let mut promoted = None;
        wait_until(
            deadline,
            &format!("a replica of {dead} is promoted"),
            || {
                promoted = self.topology().ok().and_then(|nodes| {
                    nodes
                        .iter()
                        .find(|n| n.master && !n.failed && replicas.contains(&n.id))
                        .map(|n| n.port)
                });
                promoted.is_some()
            },
        )?;
        self.wait_healthy_running(deadline.saturating_duration_since(Instant::now()))?;
        Ok(promoted.unwrap_or_default())
    }

    fn wait_healthy_running(&self, within: Duration) -> Result<(), RedisClusterError> {
        let deadline = Instant::now() + within;
        wait_until(
            deadline,
            "every running node reports cluster_state:ok",
            || {
                self.running_ports().iter().all(|&port| {
                    cli(port, &["CLUSTER", "INFO"]).is_ok_and(|i| i.contains("cluster_state:ok"))
                })
            },
        )
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One line of `CLUSTER NODES`: `id addr flags master ping pong epoch link slots...`.
fn parse_node_line(line: &str) -> Option<NodeInfo> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [id, addr, flags, master, ..] = fields.as_slice() else {
        return None;
    };
    // addr is `ip:port@busport[,hostname]`.
    let port = addr.split('@').next()?.rsplit(':').next()?.parse().ok()?;
    let flags: Vec<&str> = flags.split(',').collect();
    Some(NodeInfo {
        port,
        id: (*id).to_owned(),
        master: flags.contains(&"master"),
        master_id: (*master != "-").then(|| (*master).to_owned()),
        failed: flags.contains(&"fail") || flags.contains(&"fail?"),
    })
}

/// Polls `check` every 50 ms until it holds or `deadline` passes.
fn wait_until(
    deadline: Instant,
    what: &str,
    mut check: impl FnMut() -> bool,
) -> Result<(), RedisClusterError> {
    let started = Instant::now();
    loop {
        if check() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(RedisClusterError::Timeout {
                what: what.to_owned(),
                within: deadline.saturating_duration_since(started),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `redis-cli -h 127.0.0.1 -p PORT args...`, its standard output.
fn cli(port: u16, args: &[&str]) -> Result<String, RedisClusterError> {
    let mut full = vec![
        "-h".to_owned(),
        "127.0.0.1".to_owned(),
        "-p".to_owned(),
        port.to_string(),
    ];
    full.extend(args.iter().map(|a| (*a).to_owned()));
    run_cli(&full, CLI_TIMEOUT)
}

fn run_cli(args: &[String], within: Duration) -> Result<String, RedisClusterError> {
    let mut child = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| RedisClusterError::Spawn {
            bin: "redis-cli",
            source,
        })?;
    let deadline = Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RedisClusterError::Timeout {
                    what: format!("redis-cli {} finishes", args.join(" ")),
                    within,
                });
            }
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|source| RedisClusterError::Spawn {
            bin: "redis-cli",
            source,
        })?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() && !text.starts_with("ERR") {
        Ok(text)
    } else {
        Err(RedisClusterError::Cli {
            args: args.join(" "),
            output: format!("{text}{}", String::from_utf8_lossy(&output.stderr)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_a_cluster_that_fails_over() {
        let mut cluster = RedisCluster::start().expect("the cluster starts");
        let nodes = cluster.topology().expect("topology");
        assert_eq!(nodes.len(), 6);
        assert_eq!(nodes.iter().filter(|n| n.master).count(), 3);
        let master = cluster
            .master_of("{daisi}:seq")
            .expect("a master serves the slot");
        cluster
            .sync_replicas(master, Duration::from_secs(5))
            .expect("replicas in sync");
        cluster.kill(master).expect("killed");
        let promoted = cluster
            .wait_failover(master, Duration::from_secs(30))
            .expect("a replica takes over");
        assert_ne!(promoted, master);
        assert_eq!(cluster.master_of("{daisi}:seq").expect("served"), promoted);
    }
}
