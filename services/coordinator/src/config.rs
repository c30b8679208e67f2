//! Settings of the session coordinator, read from `DAISI_COORDINATOR_*` variables.

use daisi_config::{ConfigError, Env, Loaded, Validator};
use daisi_runtime::internal::InternalSecurity;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;
use url::Url;

/// Prefix of every coordinator variable.
pub const PREFIX: &str = "DAISI_COORDINATOR_";

/// Checked coordinator settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// gRPC API for edges, routers and internal teams.
    pub grpc_addr: SocketAddr,
    /// `/health`, `/ready` and `/metrics`.
    pub http_addr: SocketAddr,
    /// Where sessions, routes and pods live. Not printed: it may carry a password.
    pub redis_url: RedisUrl,
    /// CA and client certificate of a `rediss://` Redis (`REDIS_CA`, `REDIS_TLS_CERT`,
    /// `REDIS_TLS_KEY`); `None` for `redis://`, or `rediss://` with the system's CAs.
    pub redis_tls: Option<crate::store::RedisTls>,
    /// Seed nodes of a Redis Cluster (`redis://host:port`, several so start-up does not depend
    /// on one node). Non-empty: the store runs on the cluster and `redis_url` is unused.
    pub redis_cluster_urls: Vec<RedisUrl>,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    pub key_prefix: String,
    /// How long a pod stays registered without a heartbeat. Sessions have no lease of their
    /// own: they live exactly as long as the pod registration that holds them.
    pub pod_lease: Duration,
    /// Upper bound of every Redis call, so a dead Redis fails calls fast instead of hanging them.
    pub redis_timeout: Duration,
    /// Longest batch (renew, release, route register or lookup) one call may carry.
    pub max_batch: usize,
    /// Time allowed for in-flight calls and streams to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Where sessions, routes and pods live: Redis in production, process memory for the dev
    /// stack and tests of other services.
    pub store: StoreKind,
    /// How long a user's selected chat is kept after the session's last renew or release, so
    /// a reconnect (even after a pod crash) restores it.
    pub selection_retention: Duration,
    /// Keep-alive period of `WatchPodCommands` streams; edges reconnect after three silent ones.
    pub watch_ping_interval: Duration,
    /// Authentication of internal gRPC (`DAISI_INTERNAL_*`, shared by every service).
    pub internal: InternalSecurity,
    /// How long a connection that was taken over or killed is remembered (and its kill kept in
    /// its pod's inbox), so its next heartbeat or session audit closes it with the true reason
    /// even when the kill command was lost, and no acquire brings it back. At least the pod
    /// lease; by default the pod lease plus two default edge audit intervals (150 s).
    pub tombstone_ttl: Duration,
}

/// Which store backs the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// Redis at `redis_url` (shared by every replica).
    Redis,
    /// Process memory: one replica only, state lost on exit.
    Memory,
}

impl Config {
    /// Settings for tests and embedding: loopback port 0 for both listeners, the in-memory
    /// store, defaults otherwise. Fields are public; adjust what a test needs.
    pub fn for_tests() -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            grpc_addr: loopback,
            http_addr: loopback,
            redis_url: RedisUrl(Url::parse("redis://127.0.0.1:6379").expect("a literal URL")),
            redis_tls: None,
            redis_cluster_urls: Vec::new(),
            key_prefix: "daisi".to_owned(),
            pod_lease: Duration::from_secs(30),
            redis_timeout: Duration::from_secs(1),
            max_batch: 5_000,
            shutdown_grace: Duration::from_secs(2),
            store: StoreKind::Memory,
            selection_retention: Duration::from_secs(3600),
            watch_ping_interval: Duration::from_secs(10),
            internal: InternalSecurity::off(),
            tombstone_ttl: default_tombstone_ttl(Duration::from_secs(30)),
        }
    }
}

impl Config {
    /// The Redis the store uses: the cluster when seeds are configured, else `redis_url`.
    pub fn redis_target(&self) -> crate::store::RedisTarget {
        if self.redis_cluster_urls.is_empty() {
            crate::store::RedisTarget::Single(self.redis_url.0.to_string())
        } else {
            crate::store::RedisTarget::Cluster(
                self.redis_cluster_urls
                    .iter()
                    .map(|u| u.0.to_string())
                    .collect(),
            )
        }
    }
}

/// A Redis URL whose `Debug` hides credentials.
#[derive(Clone)]
pub struct RedisUrl(pub Url);

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RedisUrl({})",
            daisi_config::url_without_credentials(&self.0)
        )
    }
}

#[derive(Debug, Deserialize)]
struct Raw {
    grpc_addr: Option<String>,
    http_addr: Option<String>,
    redis_url: Option<String>,
    redis_ca: Option<String>,
    redis_tls_cert: Option<String>,
    redis_tls_key: Option<String>,
    redis_cluster_urls: Option<String>,
    key_prefix: Option<String>,
    session_lease: Option<String>,
    renew_interval: Option<String>,
    pod_lease: Option<String>,
    redis_timeout: Option<String>,
    max_batch: Option<String>,
    shutdown_grace: Option<String>,
    store: Option<String>,
    selection_retention: Option<String>,
    watch_ping_interval: Option<String>,
    tombstone_ttl: Option<String>,
}

impl Config {
    /// Reads and checks the coordinator settings from `env`.
    pub fn from_env(env: &Env) -> Result<Loaded<Self>, ConfigError> {
        let internal = InternalSecurity::from_env(env);
        let loaded = daisi_config::load::<Raw>(PREFIX, env).and_then(|l| l.try_map(Self::from_raw));
        daisi_config::join(loaded, internal).map(|(mut loaded, internal)| {
            loaded.value.internal = internal;
            loaded
        })
    }

    fn from_raw(raw: Raw) -> Result<Self, ConfigError> {
        let mut v = Validator::new(PREFIX);
        let grpc_addr = v.socket_addr("GRPC_ADDR", raw.grpc_addr.as_deref(), "0.0.0.0:50051");
        let http_addr = v.socket_addr("HTTP_ADDR", raw.http_addr.as_deref(), "0.0.0.0:9091");
        let redis_url = v.url(
            "REDIS_URL",
            raw.redis_url.as_deref(),
            Some("redis://127.0.0.1:6379"),
            &["redis", "rediss", "redis+unix", "unix"],
        );
        // Cluster nodes announce TCP addresses, so seeds are `redis://host:port` only.
        let redis_cluster_urls = match raw.redis_cluster_urls.as_deref().map(str::trim) {
            None | Some("") => Some(Vec::new()),
            Some(value) => v.list_with("REDIS_CLUSTER_URLS", Some(value), parse_cluster_seed),
        };
        if redis_cluster_urls.as_ref().is_some_and(|s| !s.is_empty()) {
            v.ensure(
                raw.redis_url.as_deref().is_none_or(|u| u.trim().is_empty()),
                "REDIS_CLUSTER_URLS",
                format!("set either {PREFIX}REDIS_URL (one Redis) or {PREFIX}REDIS_CLUSTER_URLS (a Redis Cluster), not both"),
            );
        }
        let tls_url = redis_url.as_ref().is_some_and(|u| u.scheme() == "rediss")
            || redis_cluster_urls
                .as_ref()
                .is_some_and(|seeds| seeds.iter().any(|u| u.0.scheme() == "rediss"));
        let redis_tls = redis_tls(&mut v, tls_url, &raw);
        let key_prefix = v.parse_with(
            "KEY_PREFIX",
            raw.key_prefix.as_deref(),
            Some("daisi".to_owned()),
            parse_key_prefix,
        );
        // Sessions lost their own leases (issue 17): refuse the old knobs loudly rather than
        // ignore them, naming what replaced them.
        v.ensure(
            raw.session_lease.as_deref().is_none_or(|s| s.trim().is_empty()),
            "SESSION_LEASE",
            format!("is gone: a session lives as long as its pod's registration ({PREFIX}POD_LEASE); unset it"),
        );
        v.ensure(
            raw.renew_interval.as_deref().is_none_or(|s| s.trim().is_empty()),
            "RENEW_INTERVAL",
            "is gone: edges no longer renew sessions; they audit them every DAISI_EDGE_SESSION_AUDIT_INTERVAL (set on the edges); unset it",
        );
        let pod_lease = v.duration(
            "POD_LEASE",
            raw.pod_lease.as_deref(),
            Duration::from_secs(30),
        );
        let redis_timeout = v.duration(
            "REDIS_TIMEOUT",
            raw.redis_timeout.as_deref(),
            Duration::from_secs(1),
        );
        let max_batch = v.int_in(
            "MAX_BATCH",
            raw.max_batch.as_deref(),
            5_000usize,
            1,
            100_000,
        );
        let shutdown_grace = v.duration(
            "SHUTDOWN_GRACE",
            raw.shutdown_grace.as_deref(),
            Duration::from_secs(10),
        );
        let store = v
            .one_of("STORE", raw.store.as_deref(), "redis", &["redis", "memory"])
            .map(|kind| match kind {
                "memory" => StoreKind::Memory,
                _ => StoreKind::Redis,
            });
        let selection_retention = v.duration(
            "SELECTION_RETENTION",
            raw.selection_retention.as_deref(),
            Duration::from_secs(3600),
        );
        let watch_ping_interval = v.duration(
            "WATCH_PING_INTERVAL",
            raw.watch_ping_interval.as_deref(),
            Duration::from_secs(10),
        );
        let tombstone_ttl = v.duration(
            "TOMBSTONE_TTL",
            raw.tombstone_ttl.as_deref(),
            default_tombstone_ttl(pod_lease.unwrap_or(Duration::from_secs(30))),
        );
        if let (Some(lease), Some(ttl)) = (pod_lease, tombstone_ttl) {
            v.ensure(
                ttl >= lease,
                "TOMBSTONE_TTL",
                format!(
                    "must be at least {PREFIX}POD_LEASE ({}) so a killed connection's pod still finds the kill in its inbox at its next heartbeat",
                    humantime::format_duration(lease)
                ),
            );
        }
        v.finish(|| {
            Some(Self {
                grpc_addr: grpc_addr?,
                http_addr: http_addr?,
                redis_url: RedisUrl(redis_url?),
                redis_tls: redis_tls?,
                redis_cluster_urls: redis_cluster_urls?,
                key_prefix: key_prefix?,
                pod_lease: pod_lease?,
                redis_timeout: redis_timeout?,
                max_batch: max_batch?,
                shutdown_grace: shutdown_grace?,
                store: store?,
                selection_retention: selection_retention?,
                watch_ping_interval: watch_ping_interval?,
                internal: InternalSecurity::off(),
                tombstone_ttl: tombstone_ttl?,
            })
        })
    }
}

/// The CA and client certificate files of a `rediss://` Redis, read now so a bad path stops
/// the start. `Some(None)`: nothing to add (plain `redis://`, or the system's CAs).
#[allow(clippy::option_option)]
fn redis_tls(
    v: &mut Validator,
    tls_url: bool,
    raw: &Raw,
) -> Option<Option<crate::store::RedisTls>> {
    let present = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let (ca, cert, key) = (
        present(&raw.redis_ca),
        present(&raw.redis_tls_cert),
        present(&raw.redis_tls_key),
    );
    if !tls_url {
        for (name, value) in [
            ("REDIS_CA", &ca),
            ("REDIS_TLS_CERT", &cert),
            ("REDIS_TLS_KEY", &key),
        ] {
            v.ensure(
                value.is_none(),
                name,
                "needs a rediss:// REDIS_URL or REDIS_CLUSTER_URLS (TLS)",
            );
        }
        return Some(None);
    }
    let mut read = |name: &str, path: &Option<String>, what: &str| -> Option<Option<Vec<u8>>> {
        let Some(path) = path else { return Some(None) };
        match std::fs::read(path) {
            Ok(bytes)
                if String::from_utf8_lossy(&bytes).contains(&format!("-----BEGIN {what}")) =>
            {
                Some(Some(bytes))
            }
            Ok(_) => {
                v.problem(name, format!("`{path}` holds no PEM {what}"));
                None
            }
            Err(e) => {
                v.problem(name, format!("cannot read `{path}`: {e}"));
                None
            }
        }
    };
    let ca = read("REDIS_CA", &ca, "CERTIFICATE")?;
    let cert_bytes = read("REDIS_TLS_CERT", &cert, "CERTIFICATE")?;
    // Keys come as PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY.
    let key_bytes = read("REDIS_TLS_KEY", &key, "")?;
    let client = match (cert_bytes, key_bytes) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => {
            v.problem("REDIS_TLS_KEY", "is required with REDIS_TLS_CERT");
            return None;
        }
        (None, Some(_)) => {
            v.problem("REDIS_TLS_CERT", "is required with REDIS_TLS_KEY");
            return None;
        }
    };
    Some((ca.is_some() || client.is_some()).then_some(crate::store::RedisTls { ca, client }))
}

/// The edges' default session audit interval (`DAISI_EDGE_SESSION_AUDIT_INTERVAL`), which the
/// default tombstone lifetime covers.
pub const DEFAULT_EDGE_AUDIT_INTERVAL: Duration = Duration::from_secs(60);

/// The pod lease plus two default edge audit intervals: an edge whose kill command and inbox
/// delivery were both lost learns the truth at its next audit, and one more audit may fail (a
/// coordinator restart, a Redis failover) before the tombstone is gone.
pub fn default_tombstone_ttl(pod_lease: Duration) -> Duration {
    pod_lease.saturating_add(DEFAULT_EDGE_AUDIT_INTERVAL.saturating_mul(2))
}

/// One seed of a Redis Cluster: `redis://[user:password@]host:port`, no path (cluster nodes
/// have only database 0). The error never repeats the value (it may carry a password).
fn parse_cluster_seed(value: &str) -> Result<RedisUrl, String> {
    let url = Url::parse(value).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err(format!(
            "scheme `{}` is not supported; use redis://host:port or rediss://host:port",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) || url.port().is_none() {
        return Err("needs a host and a port (redis://host:port)".to_owned());
    }
    if !matches!(url.path(), "" | "/") {
        return Err("must not name a database: a Redis Cluster has only database 0".to_owned());
    }
    Ok(RedisUrl(url))
}

/// Key prefixes end up in every Redis key; keep them to a safe alphabet so they cannot break
/// the `{prefix}:...` key layout or the cluster hash tags.
fn parse_key_prefix(value: &str) -> Result<String, String> {
    let ok = value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "`{value}` may only use letters, digits, '-' and '_' (at most 64 characters)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = Config::from_env(&Env::default()).expect("defaults").value;
        assert_eq!(config.grpc_addr.port(), 50051);
        assert_eq!(config.pod_lease, Duration::from_secs(30));
        assert_eq!(config.key_prefix, "daisi");
        assert_eq!(config.tombstone_ttl, Duration::from_secs(150));
        assert_eq!(config.tombstone_ttl, Config::for_tests().tombstone_ttl);
    }

    #[test]
    fn the_tombstone_lifetime_follows_the_timing_and_is_checked() {
        let env = Env::from_pairs([("DAISI_COORDINATOR_POD_LEASE", "20s")]);
        let config = Config::from_env(&env).expect("valid").value;
        assert_eq!(config.tombstone_ttl, Duration::from_secs(140));
        let env = Env::from_pairs([
            ("DAISI_COORDINATOR_POD_LEASE", "20s"),
            ("DAISI_COORDINATOR_TOMBSTONE_TTL", "19s"),
        ]);
        let err = Config::from_env(&env).expect_err("too short");
        assert!(err.mentions("DAISI_COORDINATOR_TOMBSTONE_TTL"), "{err}");
    }

    #[test]
    fn bad_values_are_all_reported() {
        let env = Env::from_pairs([
            ("DAISI_COORDINATOR_REDIS_URL", "http://127.0.0.1"),
            ("DAISI_COORDINATOR_KEY_PREFIX", "a:b{c}"),
            ("DAISI_COORDINATOR_POD_LEASE", "soon"),
        ]);
        let err = Config::from_env(&env).expect_err("invalid");
        for var in ["REDIS_URL", "KEY_PREFIX", "POD_LEASE"] {
            assert!(err.mentions(&format!("{PREFIX}{var}")), "{var}: {err}");
        }
    }

    #[test]
    fn the_removed_session_lease_settings_are_refused_naming_their_replacements() {
        let env = Env::from_pairs([
            ("DAISI_COORDINATOR_SESSION_LEASE", "30s"),
            ("DAISI_COORDINATOR_RENEW_INTERVAL", "10s"),
        ]);
        let err = Config::from_env(&env).expect_err("removed settings");
        let text = err.to_string();
        assert!(err.mentions("DAISI_COORDINATOR_SESSION_LEASE"), "{text}");
        assert!(err.mentions("DAISI_COORDINATOR_RENEW_INTERVAL"), "{text}");
        assert!(text.contains("DAISI_COORDINATOR_POD_LEASE"), "{text}");
        assert!(text.contains("DAISI_EDGE_SESSION_AUDIT_INTERVAL"), "{text}");
    }

    #[test]
    fn store_and_selection_settings_are_checked() {
        let env = Env::from_pairs([
            ("DAISI_COORDINATOR_STORE", "Memory"),
            ("DAISI_COORDINATOR_WATCH_PING_INTERVAL", "2s"),
        ]);
        let config = Config::from_env(&env).expect("valid").value;
        assert_eq!(config.store, StoreKind::Memory);
        assert_eq!(config.watch_ping_interval, Duration::from_secs(2));
        assert_eq!(config.selection_retention, Duration::from_secs(3600));
        let env = Env::from_pairs([
            ("DAISI_COORDINATOR_STORE", "etcd"),
            ("DAISI_COORDINATOR_SELECTION_RETENTION", "an hour"),
        ]);
        let err = Config::from_env(&env).expect_err("invalid");
        for var in ["STORE", "SELECTION_RETENTION"] {
            assert!(err.mentions(&format!("{PREFIX}{var}")), "{var}: {err}");
        }
        assert_eq!(Config::for_tests().store, StoreKind::Memory);
    }

    #[test]
    fn cluster_seeds_are_checked() {
        let env = Env::from_pairs([(
            "DAISI_COORDINATOR_REDIS_CLUSTER_URLS",
            "redis://10.0.0.1:7000, redis://:pw@10.0.0.2:7001",
        )]);
        let config = Config::from_env(&env).expect("valid").value;
        assert_eq!(config.redis_cluster_urls.len(), 2);
        assert!(matches!(
            config.redis_target(),
            crate::store::RedisTarget::Cluster(seeds) if seeds.len() == 2
        ));
        assert!(!format!("{config:?}").contains("pw@"));
        assert!(matches!(
            Config::for_tests().redis_target(),
            crate::store::RedisTarget::Single(_)
        ));
        for bad in [
            "unix:///tmp/r.sock",
            "redis://10.0.0.1",
            "redis://10.0.0.1:7000/2",
            "redis://10.0.0.1:7000,",
        ] {
            let env = Env::from_pairs([("DAISI_COORDINATOR_REDIS_CLUSTER_URLS", bad)]);
            let err = Config::from_env(&env).expect_err(bad);
            assert!(
                err.mentions("DAISI_COORDINATOR_REDIS_CLUSTER_URLS"),
                "{bad}: {err}"
            );
        }
        let env = Env::from_pairs([
            (
                "DAISI_COORDINATOR_REDIS_CLUSTER_URLS",
                "redis://10.0.0.1:7000",
            ),
            ("DAISI_COORDINATOR_REDIS_URL", "redis://10.0.0.9:6379"),
        ]);
        let err = Config::from_env(&env).expect_err("both set");
        assert!(
            err.mentions("DAISI_COORDINATOR_REDIS_CLUSTER_URLS"),
            "{err}"
        );
    }

    #[test]
    fn debug_hides_the_redis_password() {
        let env = Env::from_pairs([("DAISI_COORDINATOR_REDIS_URL", "redis://:hunter2@redis:6379")]);
        let config = Config::from_env(&env).expect("valid").value;
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
