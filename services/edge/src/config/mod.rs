//! Settings of the edge, read from `DAISI_EDGE_*` variables.

mod door;
mod recovery;
mod tuning;

pub use door::{AddressBudget, Door, Minting, Origins};
pub use recovery::{ExpiryEnforcement, History, Recovery};
pub use tuning::{Limits, SlowConsumerPolicy, SocketTuning, TlsFiles};

use daisi_config::{ConfigError, Env, Loaded, SecretString, Validator};
use daisi_domain::PodId;
use daisi_domain::token::{TokenKey, TokenKeyring};
use daisi_runtime::internal::InternalSecurity;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;
use url::Url;

/// Prefix of every edge variable.
pub const PREFIX: &str = "DAISI_EDGE_";

/// Checked edge settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Client-facing HTTP: WebSockets, token minting, health, readiness, metrics.
    pub http_addr: SocketAddr,
    /// gRPC `EdgeDelivery`, called by routers.
    pub grpc_addr: SocketAddr,
    /// This pod's identity in the coordinator's registries (the Kubernetes pod name).
    pub pod_id: PodId,
    /// The address routers use to reach `grpc_addr` (the pod IP in Kubernetes).
    pub advertise_url: Url,
    /// The coordinator gRPC endpoint(s): one Service URL, or several replicas to fail over.
    pub coordinator_urls: Vec<Url>,
    /// Keys of user tokens; the first encrypts, all decrypt (rotation).
    pub user_keys: TokenKeyring,
    /// Keys of admin tokens; the first encrypts, all decrypt.
    pub admin_keys: TokenKeyring,
    /// API key of user sockets (`secret_token` of the old service); also of `/generate-token`
    /// on the public port while [`Minting::public`] is on.
    pub secret_token: SecretString,
    /// API key of admin sockets (and of the public `/admin/generate-token` in compat mode).
    pub admin_secret_token: SecretString,
    /// During a rotation of [`Config::secret_token`], the old key, still accepted.
    pub previous_secret_token: Option<SecretString>,
    /// During a rotation of [`Config::admin_secret_token`], the old key, still accepted.
    pub previous_admin_secret_token: Option<SecretString>,
    /// How often the server pings each socket.
    pub ping_interval: Duration,
    /// How long a socket may stay silent (no pong, no frame) before it is closed.
    pub pong_wait: Duration,
    /// Browser origins allowed to open sockets.
    pub origins: Origins,
    /// What a connection may cost before it is admitted: deadline, cap, per-address budget.
    pub door: Door,
    /// Token minting: the internal listener and the public-port compat switch.
    pub minting: Minting,
    /// Serve the live console page at `/console` (on in `daisi dev`, off by default).
    pub console: bool,
    /// Time allowed to drain sockets and release sessions after SIGTERM.
    pub shutdown_grace: Duration,
    /// Share of `shutdown_grace` over which socket closes are spread, so a deploy does not
    /// send every client to the surviving pods in the same instant.
    pub drain_spread: Duration,
    /// Upper bound of every unary coordinator call; a slower coordinator counts as down.
    pub coordinator_timeout: Duration,
    /// How often the pod's sessions are audited with the coordinator (one batched, read-only
    /// call): the backstop for a kill whose stream message and inbox delivery were both lost.
    /// Sessions themselves live with the pod's heartbeat.
    pub session_audit_interval: Duration,
    /// Certificate and key when the edge terminates TLS itself (no ingress in front).
    pub tls: Option<TlsFiles>,
    /// Bounds on what one client or the whole pod may cost.
    pub limits: Limits,
    /// Per-socket buffers and queue.
    pub sockets: SocketTuning,
    /// Validated tokens kept so reconnect storms do not redo the crypto.
    pub token_cache_size: usize,
    /// Stream sequences remembered to drop events a router delivers twice.
    pub dedup_window: usize,
    /// `json.v2`: token expiry on live sockets and recovery after a reconnect.
    pub recovery: Recovery,
    /// Authentication of internal gRPC (`DAISI_INTERNAL_*`, shared by every service): the
    /// edge's credential towards the coordinator, and what `EdgeDelivery` demands of routers.
    pub internal: InternalSecurity,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Raw {
    http_addr: Option<String>,
    grpc_addr: Option<String>,
    pod_id: Option<String>,
    advertise_url: Option<String>,
    coordinator_url: Option<String>,
    token_aes_key: Option<String>,
    admin_token_aes_key: Option<String>,
    secret_token: Option<String>,
    admin_secret_token: Option<String>,
    previous_secret_token: Option<String>,
    previous_admin_secret_token: Option<String>,
    ping_interval: Option<String>,
    pong_wait: Option<String>,
    allowed_origins: Option<String>,
    console: Option<String>,
    shutdown_grace: Option<String>,
    drain_spread_percent: Option<String>,
    coordinator_timeout: Option<String>,
    session_audit_interval: Option<String>,
    tls_cert_path: Option<String>,
    tls_key_path: Option<String>,
    max_connections: Option<String>,
    max_message_size: Option<String>,
    rate_limit_per_second: Option<String>,
    rate_limit_burst: Option<String>,
    rate_limit_close_after: Option<String>,
    handshake_timeout: Option<String>,
    send_queue: Option<String>,
    slow_consumer_policy: Option<String>,
    ws_read_buffer: Option<String>,
    ws_write_buffer: Option<String>,
    write_coalesce: Option<String>,
    token_cache_size: Option<String>,
    dedup_window: Option<String>,
    max_pending_connections: Option<String>,
    address_rate_per_second: Option<String>,
    address_rate_burst: Option<String>,
    trusted_proxies: Option<String>,
    mint_addr: Option<String>,
    mint_api_key: Option<String>,
    admin_mint_api_key: Option<String>,
    public_minting: Option<String>,
    expiry_enforcement: Option<String>,
    nats_url: Option<String>,
    nats_creds: Option<String>,
    nats_nkey_seed: Option<String>,
    nats_tls_ca: Option<String>,
    nats_tls_cert: Option<String>,
    nats_tls_key: Option<String>,
    nats_stream: Option<String>,
    subject_prefix: Option<String>,
    recovery_max_events: Option<String>,
    recovery_max_age: Option<String>,
    recovery_timeout: Option<String>,
    recovery_seam: Option<String>,
}

impl Config {
    /// The keys user sockets are accepted with: the current one and, during a rotation, the
    /// previous one.
    pub fn user_socket_keys(&self) -> Vec<&SecretString> {
        std::iter::once(&self.secret_token)
            .chain(self.previous_secret_token.as_ref())
            .collect()
    }

    /// The keys admin sockets are accepted with.
    pub fn admin_socket_keys(&self) -> Vec<&SecretString> {
        std::iter::once(&self.admin_secret_token)
            .chain(self.previous_admin_secret_token.as_ref())
            .collect()
    }

    /// Reads and checks the edge settings from `env`. Without `DAISI_EDGE_POD_ID` the pod id is
    /// the `HOSTNAME` (the pod name in Kubernetes).
    pub fn from_env(env: &Env) -> Result<Loaded<Self>, ConfigError> {
        let hostname = env.get("HOSTNAME").map(str::to_owned);
        let internal = InternalSecurity::from_env(env);
        let loaded = daisi_config::load::<Raw>(PREFIX, env)
            .and_then(|l| l.try_map(|raw| Self::from_raw(raw, hostname)));
        daisi_config::join(loaded, internal).map(|(mut loaded, internal)| {
            loaded.value.internal = internal;
            loaded
        })
    }

    fn from_raw(raw: Raw, hostname: Option<String>) -> Result<Self, ConfigError> {
        let mut v = Validator::new(PREFIX);
        let http_addr = v.socket_addr("HTTP_ADDR", raw.http_addr.as_deref(), "0.0.0.0:8080");
        let grpc_addr = v.socket_addr("GRPC_ADDR", raw.grpc_addr.as_deref(), "0.0.0.0:50061");
        let pod_id = v.parse_with(
            "POD_ID",
            raw.pod_id
                .as_deref()
                .filter(|s| !s.trim().is_empty())
                .or(hostname.as_deref()),
            None,
            |s| {
                s.parse::<PodId>()
                    .map_err(|e| format!("{e}; set it to the pod name"))
            },
        );
        let default_advertise = grpc_addr.map(|a| format!("http://127.0.0.1:{}", a.port()));
        let advertise_url = v.url(
            "ADVERTISE_URL",
            raw.advertise_url.as_deref(),
            default_advertise.as_deref(),
            &["http", "https"],
        );
        let coordinator_urls = v.url_list(
            "COORDINATOR_URL",
            raw.coordinator_url.as_deref(),
            "http://127.0.0.1:50051",
            &["http", "https"],
        );
        let user_keys = keyring(&mut v, "TOKEN_AES_KEY", raw.token_aes_key.as_deref());
        let admin_keys = keyring(
            &mut v,
            "ADMIN_TOKEN_AES_KEY",
            raw.admin_token_aes_key.as_deref(),
        );
        // Existing deployments keep their API keys, so only emptiness is refused.
        let secret_token = v.secret("SECRET_TOKEN", raw.secret_token.as_deref(), 1);
        let admin_secret_token =
            v.secret("ADMIN_SECRET_TOKEN", raw.admin_secret_token.as_deref(), 1);
        let mut optional_secret = |name: &str, value: Option<&str>| match value.map(str::trim) {
            None | Some("") => Some(None),
            value => v.secret(name, value, 1).map(Some),
        };
        let previous_secret_token = optional_secret(
            "PREVIOUS_SECRET_TOKEN",
            raw.previous_secret_token.as_deref(),
        );
        let previous_admin_secret_token = optional_secret(
            "PREVIOUS_ADMIN_SECRET_TOKEN",
            raw.previous_admin_secret_token.as_deref(),
        );
        let ping_interval = v.duration(
            "PING_INTERVAL",
            raw.ping_interval.as_deref(),
            Duration::from_secs(30),
        );
        let pong_wait = v.duration(
            "PONG_WAIT",
            raw.pong_wait.as_deref(),
            Duration::from_secs(90),
        );
        let origins = door::origins(&mut v, raw.allowed_origins.as_deref());
        let door = door::door(&mut v, &raw);
        let minting = door::minting(
            &mut v,
            &raw,
            &[
                secret_token.as_ref(),
                admin_secret_token.as_ref(),
                previous_secret_token.as_ref().and_then(Option::as_ref),
                previous_admin_secret_token
                    .as_ref()
                    .and_then(Option::as_ref),
            ],
        );
        let console = v.bool("CONSOLE", raw.console.as_deref(), false);
        let shutdown_grace = v.duration(
            "SHUTDOWN_GRACE",
            raw.shutdown_grace.as_deref(),
            Duration::from_secs(30),
        );
        let drain_percent = v.int_in::<u32>(
            "DRAIN_SPREAD_PERCENT",
            raw.drain_spread_percent.as_deref(),
            50,
            0,
            90,
        );
        let coordinator_timeout = v.duration(
            "COORDINATOR_TIMEOUT",
            raw.coordinator_timeout.as_deref(),
            Duration::from_secs(2),
        );
        let session_audit_interval = v.duration(
            "SESSION_AUDIT_INTERVAL",
            raw.session_audit_interval.as_deref(),
            Duration::from_secs(60),
        );
        if let Some(audit) = session_audit_interval {
            v.ensure(
                (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&audit),
                "SESSION_AUDIT_INTERVAL",
                "must be between 1s and 1h (a lost kill is caught within it; the coordinator's tombstone lifetime must outlast it)",
            );
        }
        let tls = tuning::tls(
            &mut v,
            raw.tls_cert_path.as_deref(),
            raw.tls_key_path.as_deref(),
        );
        let limits = tuning::limits(&mut v, &raw);
        let sockets = tuning::sockets(&mut v, &raw);
        let token_cache_size = v.int_in(
            "TOKEN_CACHE_SIZE",
            raw.token_cache_size.as_deref(),
            100_000usize,
            0,
            10_000_000,
        );
        let dedup_window = v.int_in(
            "DEDUP_WINDOW",
            raw.dedup_window.as_deref(),
            65_536usize,
            0,
            10_000_000,
        );
        let recovery = recovery::recovery(&mut v, &raw);
        if let (Some(ping), Some(pong)) = (ping_interval, pong_wait) {
            v.ensure(
                pong > ping,
                "PONG_WAIT",
                format!("must be longer than {PREFIX}PING_INTERVAL, or every socket times out"),
            );
        }
        v.finish(|| {
            Some(Self {
                http_addr: http_addr?,
                grpc_addr: grpc_addr?,
                pod_id: pod_id?,
                advertise_url: advertise_url?,
                coordinator_urls: coordinator_urls?,
                user_keys: user_keys?,
                admin_keys: admin_keys?,
                secret_token: secret_token?,
                admin_secret_token: admin_secret_token?,
                previous_secret_token: previous_secret_token?,
                previous_admin_secret_token: previous_admin_secret_token?,
                ping_interval: ping_interval?,
                pong_wait: pong_wait?,
                origins: origins?,
                door: door?,
                minting: minting?,
                console: console?,
                shutdown_grace: shutdown_grace?,
                drain_spread: shutdown_grace? * drain_percent? / 100,
                coordinator_timeout: coordinator_timeout?,
                session_audit_interval: session_audit_interval?,
                tls: tls?,
                limits: limits?,
                sockets: sockets?,
                token_cache_size: token_cache_size?,
                dedup_window: dedup_window?,
                recovery: recovery?,
                internal: InternalSecurity::off(),
            })
        })
    }
}

/// A comma-separated list of 64-hex-character keys; the first one encrypts.
fn keyring(v: &mut Validator, name: &str, raw: Option<&str>) -> Option<TokenKeyring> {
    let keys = v.list_with(name, raw, |k| {
        TokenKey::from_hex(k).map_err(|e| format!("{e}; generate one with `daisi keygen`"))
    })?;
    match TokenKeyring::new(keys) {
        Ok(ring) => Some(ring),
        Err(e) => {
            v.problem(name, e.to_string());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "3a7bd3e2360a3d29eea436e864a1b8d5f2f5d5e4dba8ac39d465fc3488db3915";

    fn valid() -> Env {
        Env::from_pairs([
            ("DAISI_EDGE_POD_ID", "edge-0"),
            ("DAISI_EDGE_TOKEN_AES_KEY", KEY),
            ("DAISI_EDGE_ADMIN_TOKEN_AES_KEY", KEY),
            ("DAISI_EDGE_SECRET_TOKEN", "user-api-key"),
            ("DAISI_EDGE_ADMIN_SECRET_TOKEN", "admin-api-key"),
        ])
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = Config::from_env(&valid()).expect("valid").value;
        assert_eq!(config.http_addr.port(), 8080);
        assert_eq!(config.advertise_url.as_str(), "http://127.0.0.1:50061/");
        assert_eq!(config.ping_interval, Duration::from_secs(30));
        assert_eq!(config.pong_wait, Duration::from_secs(90));
        assert_eq!(config.origins, Origins::SameHost);
        assert_eq!(config.door.deadline, Duration::from_secs(10));
        assert_eq!(config.session_audit_interval, Duration::from_secs(60));
        assert!(config.door.address_budget.is_some());
        assert!(!config.minting.public && !config.minting.internal());
    }

    #[test]
    fn several_keys_rotate() {
        let mut env = valid();
        env.set(
            "DAISI_EDGE_TOKEN_AES_KEY",
            format!("{KEY}, {}", "ab".repeat(32)),
        );
        let config = Config::from_env(&env).expect("valid").value;
        assert_eq!(config.user_keys.len(), 2);
    }

    #[test]
    fn several_coordinator_replicas_can_be_listed() {
        let mut env = valid();
        env.set(
            "DAISI_EDGE_COORDINATOR_URL",
            "http://c1:50051,http://c2:50051",
        );
        let config = Config::from_env(&env).expect("valid").value;
        assert_eq!(config.coordinator_urls.len(), 2);
        env.set("DAISI_EDGE_COORDINATOR_URL", "http://c1:50051,nats://c2");
        assert!(
            Config::from_env(&env)
                .expect_err("scheme")
                .mentions("DAISI_EDGE_COORDINATOR_URL")
        );
    }

    #[test]
    fn pod_id_falls_back_to_hostname_and_is_validated() {
        let mut env = valid();
        env.set("DAISI_EDGE_POD_ID", "");
        env.set("HOSTNAME", "edge-7");
        assert_eq!(
            Config::from_env(&env).expect("valid").value.pod_id.as_str(),
            "edge-7"
        );
        env.set("HOSTNAME", "bad.pod");
        assert!(
            Config::from_env(&env)
                .expect_err("dot")
                .mentions("DAISI_EDGE_POD_ID")
        );
    }

    #[test]
    fn every_problem_is_named_and_secrets_stay_hidden() {
        let env = Env::from_pairs([
            ("DAISI_EDGE_TOKEN_AES_KEY", "abc123"),
            ("DAISI_EDGE_ADMIN_TOKEN_AES_KEY", &"zz".repeat(32)[..]),
            ("DAISI_EDGE_PING_INTERVAL", "60s"),
            ("DAISI_EDGE_PONG_WAIT", "30s"),
        ]);
        let err = Config::from_env(&env).expect_err("invalid");
        for var in [
            "POD_ID",
            "TOKEN_AES_KEY",
            "ADMIN_TOKEN_AES_KEY",
            "SECRET_TOKEN",
            "ADMIN_SECRET_TOKEN",
            "PONG_WAIT",
        ] {
            assert!(err.mentions(&format!("{PREFIX}{var}")), "{var}: {err}");
        }
        assert!(!err.to_string().contains("abc123"));
        let config = Config::from_env(&valid()).expect("valid").value;
        let shown = format!("{config:?}");
        assert!(
            !shown.contains(KEY) && !shown.contains("user-api-key"),
            "{shown}"
        );
    }

    #[test]
    fn the_session_audit_interval_is_checked() {
        let mut env = valid();
        env.set("DAISI_EDGE_SESSION_AUDIT_INTERVAL", "15s");
        let config = Config::from_env(&env).expect("valid").value;
        assert_eq!(config.session_audit_interval, Duration::from_secs(15));
        for bad in ["500ms", "2h", "often"] {
            let mut env = valid();
            env.set("DAISI_EDGE_SESSION_AUDIT_INTERVAL", bad);
            let err = Config::from_env(&env).expect_err(bad);
            assert!(
                err.mentions("DAISI_EDGE_SESSION_AUDIT_INTERVAL"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_write_coalescing_window_is_off_by_default_and_bounded() {
        let config = Config::from_env(&valid()).expect("valid").value;
        assert_eq!(config.sockets.write_coalesce, Duration::ZERO);
        for (set, want) in [("0ms", 0), ("5ms", 5), ("1s", 1000)] {
            let mut env = valid();
            env.set("DAISI_EDGE_WRITE_COALESCE", set);
            let config = Config::from_env(&env).expect(set).value;
            assert_eq!(config.sockets.write_coalesce, Duration::from_millis(want));
        }
        for bad in ["1001ms", "2s", "soon", "-5ms"] {
            let mut env = valid();
            env.set("DAISI_EDGE_WRITE_COALESCE", bad);
            let err = Config::from_env(&env).expect_err(bad);
            assert!(err.mentions("DAISI_EDGE_WRITE_COALESCE"), "{bad}: {err}");
        }
    }

    #[test]
    fn recovery_settings_are_checked() {
        let config = Config::from_env(&valid()).expect("valid").value;
        assert_eq!(config.recovery.expiry, ExpiryEnforcement::V2);
        assert!(config.recovery.history.is_none());
        let mut env = valid();
        env.set("DAISI_EDGE_NATS_URL", "nats://user:pw@nats:4222");
        env.set("DAISI_EDGE_EXPIRY_ENFORCEMENT", "ALL");
        env.set("DAISI_EDGE_RECOVERY_MAX_EVENTS", "500");
        let config = Config::from_env(&env).expect("valid").value;
        assert_eq!(config.recovery.expiry, ExpiryEnforcement::All);
        assert_eq!(config.recovery.max_events, 500);
        let history = config.recovery.history.as_ref().expect("history");
        assert_eq!(history.stream, "wa_stream");
        assert!(!format!("{config:?}").contains("pw@"));
        // A cluster's seeds, as the chart documents and the routers read them.
        env.set(
            "DAISI_EDGE_NATS_URL",
            "nats://user:pw@n0:4222, nats://n1:4222,nats://n2:4222",
        );
        env.set(
            "DAISI_EDGE_NATS_NKEY_SEED",
            "SUAAVVJSWNPAHW7JMLJJH4HNUQCCPUDXSYMDRQULDXKWDUQSSA4LJ5YGKI",
        );
        let config = Config::from_env(&env).expect("valid").value;
        let history = config.recovery.history.as_ref().expect("history");
        assert_eq!(history.nats_urls.len(), 3);
        assert!(history.auth.nkey_seed.is_some());
        assert!(!format!("{config:?}").contains("SUAAV"));
        env.set("DAISI_EDGE_NATS_NKEY_SEED", "not-a-seed");
        let err = Config::from_env(&env).expect_err("a bad seed");
        assert!(err.mentions("DAISI_EDGE_NATS_NKEY_SEED"), "{err}");
        assert!(!err.to_string().contains("not-a-seed"));
        env.set("DAISI_EDGE_NATS_NKEY_SEED", "");
        env.set("DAISI_EDGE_NATS_URL", "http://nats:4222");
        env.set("DAISI_EDGE_EXPIRY_ENFORCEMENT", "sometimes");
        env.set("DAISI_EDGE_RECOVERY_SEAM", "20s");
        let err = Config::from_env(&env).expect_err("invalid");
        for var in ["NATS_URL", "EXPIRY_ENFORCEMENT", "RECOVERY_TIMEOUT"] {
            assert!(err.mentions(&format!("{PREFIX}{var}")), "{var}: {err}");
        }
    }

    #[test]
    fn door_settings_are_checked() {
        let mut env = valid();
        env.set("DAISI_EDGE_HANDSHAKE_TIMEOUT", "3s");
        env.set("DAISI_EDGE_MAX_PENDING_CONNECTIONS", "100");
        env.set("DAISI_EDGE_ADDRESS_RATE_PER_SECOND", "5");
        env.set("DAISI_EDGE_ADDRESS_RATE_BURST", "7");
        env.set(
            "DAISI_EDGE_TRUSTED_PROXIES",
            "10.0.0.0/8, 192.0.2.7, fd00::/8",
        );
        let door = Config::from_env(&env).expect("valid").value.door;
        assert_eq!(door.deadline, Duration::from_secs(3));
        assert_eq!(door.max_pending, 100);
        assert_eq!(
            door.address_budget,
            Some(AddressBudget {
                per_second: 5,
                burst: 7
            })
        );
        assert_eq!(door.trusted_proxies.len(), 3);
        env.set("DAISI_EDGE_ADDRESS_RATE_PER_SECOND", "0");
        let door = Config::from_env(&env).expect("valid").value.door;
        assert_eq!(door.address_budget, None, "0 turns the budget off");
        env.set("DAISI_EDGE_TRUSTED_PROXIES", "10.0.0.0/8,ingress");
        env.set("DAISI_EDGE_MAX_PENDING_CONNECTIONS", "0");
        let err = Config::from_env(&env).expect_err("invalid");
        assert!(err.mentions("DAISI_EDGE_TRUSTED_PROXIES"), "{err}");
        assert!(err.mentions("DAISI_EDGE_MAX_PENDING_CONNECTIONS"), "{err}");
    }

    #[test]
    fn origins_parse_to_the_same_host_rule_a_list_or_any() {
        let mut env = valid();
        env.set(
            "DAISI_EDGE_ALLOWED_ORIGINS",
            "https://App.example.com/, http://localhost:3000",
        );
        assert_eq!(
            Config::from_env(&env).expect("valid").value.origins,
            Origins::SameHostOr(vec![
                "https://app.example.com".into(),
                "http://localhost:3000".into()
            ])
        );
        env.set("DAISI_EDGE_ALLOWED_ORIGINS", "*");
        assert_eq!(
            Config::from_env(&env).expect("valid").value.origins,
            Origins::Any
        );
        for bad in [
            "*,https://a.example.com",
            "app.example.com",
            "https://a.example.com/path",
        ] {
            env.set("DAISI_EDGE_ALLOWED_ORIGINS", bad);
            assert!(
                Config::from_env(&env)
                    .expect_err(bad)
                    .mentions("DAISI_EDGE_ALLOWED_ORIGINS"),
                "{bad}"
            );
        }
    }

    #[test]
    fn minting_credentials_are_their_own() {
        let mut env = valid();
        env.set("DAISI_EDGE_MINT_API_KEY", "backend-credential-0123");
        let minting = Config::from_env(&env).expect("valid").value.minting;
        assert!(minting.internal() && minting.admin_keys.is_empty() && !minting.public);
        assert_eq!(minting.addr.port(), 8082);
        // A rotation: the new credential and the old one.
        env.set(
            "DAISI_EDGE_MINT_API_KEY",
            "backend-credential-new1, backend-credential-0123",
        );
        let minting = Config::from_env(&env).expect("valid").value.minting;
        assert_eq!(minting.user_keys.len(), 2);
        // Short, or the key browsers hold: refused, without echoing it.
        env.set("DAISI_EDGE_MINT_API_KEY", "short");
        env.set("DAISI_EDGE_ADMIN_MINT_API_KEY", "user-api-key-but-long");
        env.set("DAISI_EDGE_PREVIOUS_SECRET_TOKEN", "user-api-key-but-long");
        env.set("DAISI_EDGE_PUBLIC_MINTING", "maybe");
        let err = Config::from_env(&env).expect_err("invalid");
        for var in ["MINT_API_KEY", "ADMIN_MINT_API_KEY", "PUBLIC_MINTING"] {
            assert!(err.mentions(&format!("{PREFIX}{var}")), "{var}: {err}");
        }
        assert!(!err.to_string().contains("user-api-key-but-long"), "{err}");
    }
}
