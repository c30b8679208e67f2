//! [`RedisStore`]: the production store, on one Redis or on a Redis Cluster (`connection`).
//! Commands go through a lazy connection that reconnects in the background (connect and
//! response timeouts from the configuration); every multi-key operation is one Lua script
//! (`scripts`), so it is atomic under any interleaving of replicas; kill commands travel over
//! pub/sub (`pubsub`).
//!
//! Every call is bounded by the configured timeout as a whole: while Redis is down a call fails
//! with [`StoreError::Unavailable`] in about that time, instead of waiting for the manager's
//! reconnect attempts.

mod connection;
mod decode;
mod keys;
mod ops;
mod pubsub;
mod scripts;
mod sweep;

use super::fanout::Fanout;
use super::types::{HeldSession, StoreSettings};
use super::{StoreError, StoreResult};
pub use connection::{Connection, RedisTarget};
use daisi_domain::PodId;
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
    /// single script never blocks Redis for long (about a millisecond per 1,000 sessions). A
    /// pod sweep pops at most this many, and at most 200, sessions or routes per call.
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

    /// A key of this deployment's hash slot: the readiness probe reads it, so on a cluster the
    /// probe asks the master that serves every call.
    pub fn probe_key(&self) -> String {
        self.inner.keys.sequence()
    }

    /// Whether the kill-command subscription is live.
    pub fn is_subscribed(&self) -> bool {
        *self.inner.subscribed.borrow()
    }

    fn retention_ms(&self) -> u64 {
        millis(self.inner.settings.selection_retention)
    }

    /// Runs `op` within the store timeout, mapping failures.
    async fn bounded<T>(&self, op: impl Future<Output = redis::RedisResult<T>>) -> StoreResult<T> {
        match tokio::time::timeout(self.inner.timeout, op).await {
            Ok(result) => result.map_err(map_error),
            Err(_) => Err(StoreError::Unavailable(format!(
                "redis did not answer within {:?}",
                self.inner.timeout
            ))),
        }
    }

    /// Invokes a script with `KEYS[1] = key` and `ARGV = [tag, args...]`.
    async fn script<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        key: &str,
        args: &[&str],
    ) -> redis::RedisResult<T> {
        self.script_keys(script, &[key], args).await
    }

    /// Invokes a script with `KEYS = keys` and `ARGV = [tag, args...]`.
    async fn script_keys<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[&str],
        args: &[&str],
    ) -> redis::RedisResult<T> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        invocation.arg(self.inner.keys.tag());
        for arg in args {
            invocation.arg(*arg);
        }
        let mut connection = self.inner.connection.clone();
        invocation.invoke_async(&mut connection).await
    }

    /// Runs the renew or release script over `sessions` in chunks: `KEYS[1]` is the pod's
    /// session set, followed by the tombstone key of each session.
    async fn batched(
        &self,
        script: &redis::Script,
        pod: &PodId,
        head: &[&str],
        sessions: &[HeldSession],
    ) -> redis::RedisResult<Vec<Vec<String>>> {
        let key = self.inner.keys.pod_sessions(pod);
        let mut answers = Vec::new();
        for chunk in sessions.chunks(self.inner.chunk) {
            let encoded: Vec<(String, String)> = chunk
                .iter()
                .map(|s| (s.key.to_string(), s.fencing.0.to_string()))
                .collect();
            let mut args: Vec<&str> = head.to_vec();
            for (held, (key, fence)) in chunk.iter().zip(&encoded) {
                args.extend([key.as_str(), held.connection.as_str(), fence.as_str()]);
            }
            let tomb_keys: Vec<String> = chunk
                .iter()
                .map(|s| self.inner.keys.tombstones(&s.key))
                .collect();
            let mut keys = vec![key.as_str()];
            keys.extend(tomb_keys.iter().map(String::as_str));
            answers.push(self.script_keys(script, &keys, &args).await?);
        }
        Ok(answers)
    }

    fn tombstone_ms(&self) -> u64 {
        millis(self.inner.settings.tombstone_ttl)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn unavailable(error: RedisError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// Transport and server-state failures are retryable (`Unavailable`); a script or type error
/// is a bug (`Corrupt`).
fn map_error(error: RedisError) -> StoreError {
    match error.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => {
            StoreError::Corrupt(error.to_string())
        }
        ErrorKind::Server(
            ServerErrorKind::ResponseError | ServerErrorKind::CrossSlot | ServerErrorKind::NoPerm,
        ) => StoreError::Corrupt(error.to_string()),
        _ => unavailable(error),
    }
}
