//! The command connection of a [`super::RedisStore`]: one Redis through a `ConnectionManager`,
//! or a Redis Cluster through redis-rs' cluster client, behind one `ConnectionLike` so scripts
//! and commands are sent the same way to both.
//!
//! Both connect lazily (the coordinator starts, unready, while Redis is down) and reconnect in
//! the background; the readiness probe replaces a connection that stays silent
//! ([`Connection::reconnect`]). The cluster client learns the topology from any reachable seed, follows
//! `MOVED`/`ASK` redirections and refreshes its slot map after a failover. Each script's keys
//! share one slot (`keys.rs`), so it runs on the master that serves that slot; keys of one
//! deployment spread over every master.

use parking_lot::RwLock;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use std::sync::Arc;
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
/// underlying connections, and a `Connection::reconnect` made through one clone is seen by
/// all of them.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Shared>,
}

struct Shared {
    /// Builds a fresh lazy client connection (the same settings every time).
    open: Box<dyn Fn() -> RedisResult<Live> + Send + Sync>,
    /// The connection calls go through. Read (and cloned) per call; never held across an await.
    live: RwLock<Live>,
}

#[derive(Clone)]
enum Live {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.inner.live.read() {
            Live::Single(_) => f.write_str("Connection::Single"),
            Live::Cluster(_) => f.write_str("Connection::Cluster"),
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
        let open: Box<dyn Fn() -> RedisResult<Live> + Send + Sync> = match target {
            RedisTarget::Single(url) => {
                let client = super::client(url, tls)?;
                Box::new(move || {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(timeout))
                        .set_response_timeout(Some(timeout))
                        .set_number_of_retries(2)
                        .set_max_delay(Duration::from_secs(1));
                    Ok(Live::Single(ConnectionManager::new_lazy_with_config(
                        client.clone(),
                        config,
                    )?))
                })
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
                Box::new(move || {
                    let config = ClusterConfig::new()
                        .set_connection_timeout(timeout)
                        .set_response_timeout(timeout);
                    Ok(Live::Cluster(
                        client.get_pending_async_connection_with_config(config),
                    ))
                })
            }
        };
        let live = RwLock::new(open()?);
        Ok(Self {
            inner: Arc::new(Shared { open, live }),
        })
    }

    /// Replaces the client connection by a fresh lazy one, for every clone. The readiness probe
    /// calls it when Redis has not answered for a while: a `ConnectionManager` created while
    /// Redis was unreachable was seen never to connect once Redis came up (the coordinator
    /// stayed unready; services/coordinator/tests/it/redis_later.rs). Calls in flight finish on
    /// the old connection.
    pub(crate) fn reconnect(&self) -> RedisResult<()> {
        let fresh = (self.inner.open)()?;
        *self.inner.live.write() = fresh;
        Ok(())
    }

    fn live(&self) -> Live {
        self.inner.live.read().clone()
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self.live() {
            Live::Single(mut c) => Box::pin(async move { c.req_packed_command(cmd).await }),
            Live::Cluster(mut c) => Box::pin(async move { c.req_packed_command(cmd).await }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self.live() {
            Live::Single(mut c) => {
                Box::pin(async move { c.req_packed_commands(pipeline, offset, count).await })
            }
            Live::Cluster(mut c) => {
                Box::pin(async move { c.req_packed_commands(pipeline, offset, count).await })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &*self.inner.live.read() {
            Live::Single(c) => c.get_db(),
            Live::Cluster(c) => c.get_db(),
        }
    }
}
