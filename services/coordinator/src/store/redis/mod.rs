//! [`RedisStore`]: the production store, on one Redis or on a Redis Cluster (`connection`).
//! Commands go through a lazy connection that reconnects in the background (connect and
//! response timeouts from the configuration). Keys are sharded by what a call looks up
//! (`keys`); every script touches one slot and is atomic there (`scripts`), and an operation
//! that concerns several slots is a short sequence of such steps, ordered so that any prefix
//! of it leaves a safe state (`steps`). Kill commands travel over pub/sub (`pubsub`).
//!
//! Every call is bounded by the configured timeout as a whole: while Redis is down a call fails
//! with [`StoreError::Unavailable`] in about that time, instead of waiting for the manager's
//! reconnect attempts.

mod api;
mod connection;
mod decode;
mod keys;
mod ops;
mod pods;
mod pubsub;
mod scripts;
mod steps;
mod sweep;

use super::fanout::Fanout;
use super::types::StoreSettings;
use super::{StoreError, StoreResult};
pub use connection::{Connection, RedisTarget};
use keys::Keys;
use redis::{ErrorKind, RedisError, ServerErrorKind};
use scripts::Scripts;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Connection settings of a [`RedisStore`].
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// One Redis or a cluster's seed nodes. URLs may carry a password: never logged.
    pub target: RedisTarget,
    /// Prefix of every key (several deployments can share one Redis).
    pub key_prefix: String,
    /// Upper bound of every call, and the connect timeout.
    pub timeout: Duration,
    /// Most sessions one renew or release script call handles; larger batches are split so a
    /// single script never blocks Redis for long (about a millisecond per 1,000 sessions), and
    /// on a cluster split by slot first. A pod sweep takes at most this many, and at most 200,
    /// sessions or routes per call.
    pub chunk: usize,
    /// For `rediss://` URLs: a private CA and a client certificate (PEM), when the server
    /// needs them. Without it a `rediss://` URL trusts the system's CA store.
    pub tls: Option<RedisTls>,
}

/// TLS material of a `rediss://` connection, read at start-up.
#[derive(Clone, Default)]
pub struct RedisTls {
    /// PEM CA certificate(s) that sign the server's certificate.
    pub ca: Option<Vec<u8>>,
    /// PEM client certificate and key, for servers that require one (`tls-auth-clients`).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.is_some())
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

impl RedisTls {
    /// The redis-rs form.
    pub(crate) fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca.clone(),
        }
    }
}

/// A client of `url`, with `tls`'s CA and client certificate when given.
pub(crate) fn client(url: &str, tls: Option<&RedisTls>) -> redis::RedisResult<redis::Client> {
    match tls {
        Some(tls) => redis::Client::build_with_tls(url, tls.certificates()),
        None => redis::Client::open(url),
    }
}

/// The Redis-backed store. Cheap to clone; clones share connections and the subscription.
#[derive(Debug, Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: StoreSettings,
    connection: Connection,
    keys: Keys,
    scripts: Scripts,
    timeout: Duration,
    chunk: usize,
    /// Whether the target is a cluster: batches are then split by slot.
    cluster: bool,
    fanout: Arc<Fanout>,
    subscribed: watch::Receiver<bool>,
    subscriber: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

impl RedisStore {
    /// A store that connects lazily (so the coordinator starts, unready, while Redis is down)
    /// and subscribes to kill commands in the background. Must run inside a tokio runtime.
    pub fn new(redis: &RedisSettings, settings: StoreSettings) -> redis::RedisResult<Self> {
        let tls = redis.tls.as_ref();
        let connection = Connection::open(&redis.target, redis.timeout, tls)?;
        let subscription = redis
            .target
            .subscription_urls()
            .iter()
            .map(|url| client(url, tls))
            .collect::<redis::RedisResult<Vec<_>>>()?;
        let keys = Keys::new(&redis.key_prefix);
        let fanout = Arc::new(Fanout::default());
        let (up, subscribed) = watch::channel(false);
        let subscriber = tokio::spawn(pubsub::run(
            subscription,
            keys.commands_channel(),
            fanout.clone(),
            redis.timeout,
            up,
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                connection,
                keys,
                scripts: Scripts::new(),
                timeout: redis.timeout,
                chunk: redis.chunk.max(1),
                cluster: matches!(redis.target, RedisTarget::Cluster(_)),
                fanout,
                subscribed,
                subscriber,
            }),
        })
    }

    /// The command connection, for the readiness probe and tests.
    pub fn connection(&self) -> Connection {
        self.inner.connection.clone()
    }

    /// A key of this deployment's slot (the pod index): the readiness probe reads it.
    pub fn probe_key(&self) -> String {
        self.inner.keys.probe()
    }

    /// Whether the kill-command subscription is live.
    pub fn is_subscribed(&self) -> bool {
        *self.inner.subscribed.borrow()
    }

    fn retention_ms(&self) -> u64 {
        millis(self.inner.settings.selection_retention)
    }

    /// Runs the steps of one operation within the store timeout, as a whole.
    async fn within<T>(&self, op: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        match tokio::time::timeout(self.inner.timeout, op).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "redis did not answer within {:?}",
                self.inner.timeout
            ))),
        }
    }

    /// Invokes a script with `KEYS = keys` (one slot) and `ARGV = args`.
    async fn script<T: redis::FromRedisValue, K: AsRef<str>, A: AsRef<str>>(
        &self,
        script: &redis::Script,
        keys: &[K],
        args: &[A],
    ) -> StoreResult<T> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key.as_ref());
        }
        for arg in args {
            invocation.arg(arg.as_ref());
        }
        let mut connection = self.inner.connection.clone();
        invocation
            .invoke_async(&mut connection)
            .await
            .map_err(map_error)
    }

    /// Sends one plain command (its keys in one slot).
    async fn query<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> StoreResult<T> {
        let mut connection = self.inner.connection.clone();
        cmd.query_async(&mut connection).await.map_err(map_error)
    }

    /// Runs `calls` with at most [`PARALLEL`] in flight, answers in order.
    /// (A `Vec`, not an iterator: a lazy `map` closure held across awaits makes the
    /// operation's future not provably `Send`.)
    async fn parallel<T, F>(&self, calls: Vec<F>) -> StoreResult<Vec<T>>
    where
        F: Future<Output = StoreResult<T>>,
    {
        use futures_util::{StreamExt, TryStreamExt};
        futures_util::stream::iter(calls)
            .buffered(PARALLEL)
            .try_collect()
            .await
    }

    /// Splits items whose slot is decided by `keys[i]` into batches of one script call each:
    /// at most `chunk` items, and on a cluster only items of one slot together.
    fn batches(&self, keys: &[String]) -> Vec<Vec<usize>> {
        let mut groups: Vec<Vec<usize>> = Vec::new();
        if self.inner.cluster {
            let mut by_slot = std::collections::HashMap::new();
            for (i, key) in keys.iter().enumerate() {
                let slot = redis::cluster_routing::Slot::for_key(key);
                let group = *by_slot.entry(slot).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                groups[group].push(i);
            }
        } else {
            groups.push((0..keys.len()).collect());
        }
        groups
            .iter()
            .flat_map(|g| g.chunks(self.inner.chunk).map(<[usize]>::to_vec))
            .filter(|g| !g.is_empty())
            .collect()
    }

    fn tombstone_ms(&self) -> u64 {
        millis(self.inner.settings.tombstone_ttl)
    }
}

/// Most calls of one operation in flight at once (a renew of 1,000 sessions on a cluster is
/// about one script per session, multiplexed over the nodes' connections).
const PARALLEL: usize = 64;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn unavailable(error: RedisError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// Transport and server-state failures are retryable (`Unavailable`); a script or type error
/// is a bug (`Corrupt`), and so is a key of the wrong type (`WRONGTYPE`, an error code the
/// client library does not classify): a foreign or corrupted write that no retry repairs.
/// Authentication failures (`NOAUTH`, `WRONGPASS`) stay `Unavailable`: fixing the
/// configuration repairs them without a restart.
fn map_error(error: RedisError) -> StoreError {
    match error.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => {
            StoreError::Corrupt(error.to_string())
        }
        ErrorKind::Server(
            ServerErrorKind::ResponseError | ServerErrorKind::CrossSlot | ServerErrorKind::NoPerm,
        ) => StoreError::Corrupt(error.to_string()),
        ErrorKind::Extension if error.code() == Some("WRONGTYPE") => {
            StoreError::Corrupt(error.to_string())
        }
        _ => unavailable(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: &str) -> RedisError {
        redis::make_extension_error(code.to_owned(), Some("details".to_owned()))
    }

    #[test]
    fn a_key_of_the_wrong_type_is_corrupt_and_auth_failures_are_unavailable() {
        assert!(matches!(
            map_error(server_error("WRONGTYPE")),
            StoreError::Corrupt(_)
        ));
        for code in ["NOAUTH", "WRONGPASS", "SOMETHINGNEW"] {
            assert!(
                matches!(map_error(server_error(code)), StoreError::Unavailable(_)),
                "{code}"
            );
        }
    }
}
