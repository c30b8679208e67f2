//! The command connection of a [`super::RedisStore`]: one Redis through a `ConnectionManager`,
//! or a Redis Cluster through redis-rs' cluster client, behind one `ConnectionLike` so scripts
//! and commands are sent the same way to both.
//!
//! Both connect lazily (the coordinator starts, unready, while Redis is down) and reconnect in
//! the background. The cluster client learns the topology from any reachable seed, follows
//! `MOVED`/`ASK` redirections and refreshes its slot map after a failover. Every key of a
//! deployment shares one hash tag (`keys.rs`), so each script runs on the one master that
//! serves that slot.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use std::time::Duration;

/// Where the store's Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One Redis (`redis://`, `unix://`).
    Single(String),
    /// A Redis Cluster, reached through these seed nodes (`redis://host:port`); the client
    /// discovers the other nodes from whichever seed answers.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// The URLs the kill-command subscription may connect to, tried in turn: any node of a
    /// cluster delivers a classic `PUBLISH` made on any other.
    pub(crate) fn subscription_urls(&self) -> Vec<String> {
        match self {
            Self::Single(url) => vec![url.clone()],
            Self::Cluster(seeds) => seeds.clone(),
        }
    }
}

/// A command connection to one Redis or to a Redis Cluster. Cheap to clone; clones share the
/// underlying connections.
#[derive(Clone)]
pub enum Connection {
    /// One Redis.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(_) => f.write_str("Connection::Single"),
            Self::Cluster(_) => f.write_str("Connection::Cluster"),
        }
    }
}

impl Connection {
    /// A lazy connection to `target`, every attempt and answer bounded by `timeout`. Must run
    /// inside a tokio runtime.
    pub(crate) fn open(
        target: &RedisTarget,
        timeout: Duration,
        tls: Option<&super::RedisTls>,
    ) -> RedisResult<Self> {
        match target {
            RedisTarget::Single(url) => {
                let client = super::client(url, tls)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_secs(1));
                Ok(Self::Single(ConnectionManager::new_lazy_with_config(
                    client, config,
                )?))
            }
            RedisTarget::Cluster(seeds) => {
                // Retries cover MOVED/ASK redirections and a failover's TRYAGAIN/CLUSTERDOWN;
                // the store's own timeout still bounds each call as a whole.
                let mut builder = ClusterClient::builder(seeds.iter().map(String::as_str));
                if let Some(tls) = tls {
                    builder = builder.certs(tls.certificates());
                }
                let client = builder
                    .retries(3)
                    .min_retry_wait(50)
                    .max_retry_wait(500)
                    .build()?;
                let config = ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                Ok(Self::Cluster(
                    client.get_pending_async_connection_with_config(config),
                ))
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
