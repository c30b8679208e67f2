//! A private NATS cluster with JetStream per test: `nats-server -js` once per node on
//! loopback, each with its own store directory and server name, joined by `--routes` into one
//! cluster. Ready once every node's `/healthz` answers 200 (JetStream has a metadata leader
//! and the node is current). Nodes can be killed (SIGKILL) and restarted on the same ports
//! and store; all are killed and cleaned up on drop.

use crate::nats::{NatsError, NatsServer};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

/// How long the nodes may take to agree on a JetStream metadata leader.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

/// A running NATS cluster on 127.0.0.1.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
    monitor_ports: Vec<u16>,
}

impl NatsCluster {
    /// Starts `size` nodes (3 for JetStream replicas 3) and waits until all are healthy.
    pub async fn start(size: usize) -> Result<Self, NatsError> {
        let ports = (0..size * 3)
            .map(|_| crate::ports::free_port())
            .collect::<Result<Vec<_>, _>>()
            .map_err(NatsError::Start)?;
        let (client, rest) = ports.split_at(size);
        let (cluster, monitor) = rest.split_at(size);
        let routes = cluster
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::with_capacity(size);
        for i in 0..size {
            let extra = vec![
                "--server_name".to_owned(),
                format!("n{i}"),
                "--cluster_name".to_owned(),
                "daisi-test".to_owned(),
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{}", cluster[i]),
                "--routes".to_owned(),
                routes.clone(),
                "-m".to_owned(),
                monitor[i].to_string(),
            ];
            let mut node = NatsServer::configured(client[i], extra);
            node.launch().await?;
            nodes.push(node);
        }
        let cluster = Self {
            nodes,
            monitor_ports: monitor.to_vec(),
        };
        cluster.wait_healthy(HEALTHY_WITHIN).await?;
        Ok(cluster)
    }

    /// Waits until every running node's `/healthz` answers 200.
    pub async fn wait_healthy(&self, within: Duration) -> Result<(), NatsError> {
        let deadline = Instant::now() + within;
        let client = crate::http_client();
        loop {
            let mut healthy = true;
            for (node, port) in self.nodes.iter().zip(&self.monitor_ports) {
                if node.pid().is_none() {
                    continue;
                }
                let ok = client
                    .get(format!("http://127.0.0.1:{port}/healthz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                healthy &= ok;
            }
            if healthy {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NatsError::NotReady {
                    timeout: within,
                    logs: self.logs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Client URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// The node at `index`.
    pub fn node(&self, index: usize) -> &NatsServer {
        &self.nodes[index]
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Kills node `index` with SIGKILL (a crash) and waits for it to exit.
    pub async fn kill(&mut self, index: usize) {
        self.nodes[index].stop_with(Signal::SIGKILL).await;
    }

    /// Starts node `index` again on its ports and store.
    pub async fn restart(&mut self, index: usize) -> Result<(), NatsError> {
        self.nodes[index].launch().await
    }

    /// Every node's output, each under a header.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("--- nats node n{i} ---\n{}", n.logs()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forms_a_jetstream_cluster_that_survives_a_node() {
        let mut cluster = NatsCluster::start(3).await.expect("the cluster starts");
        assert_eq!(cluster.urls().len(), 3);
        cluster.kill(0).await;
        assert!(cluster.node(0).pid().is_none());
        cluster
            .wait_healthy(Duration::from_secs(30))
            .await
            .expect("the other two stay healthy");
        cluster.restart(0).await.expect("restarts");
        cluster
            .wait_healthy(Duration::from_secs(30))
            .await
            .expect("all three healthy again");
    }
}
