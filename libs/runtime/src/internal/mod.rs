//! Authenticated internal gRPC: mutual TLS (rustls) and, where there is no PKI, bearer
//! tokens derived from a shared secret; the same settings (`DAISI_INTERNAL_*`) for every
//! service. See docs/security.md.
//!
//! Servers accept through [`InternalSecurity::incoming`] and put [`InternalSecurity::authenticate`]
//! in front of each service; clients dial with the [`ClientAuth`] of their identity
//! ([`InternalSecurity::pod_client`], [`InternalSecurity::router_client`],
//! [`InternalSecurity::admin_client`]).

mod auth;
mod config;
mod conn;
#[cfg(feature = "dev-ca")]
mod dev_ca;
mod tls;
mod token;

pub use auth::{
    Authenticate, Caller, ClientAuth, IDENTITY_DOMAIN, Need, admin_name, pod_name, router_name,
};
pub use config::{MIN_SECRET_LEN, PREFIX};
pub use conn::{ClientConn, Connector, ServerConn};
#[cfg(feature = "dev-ca")]
pub use dev_ca::DevCa;
pub use tls::{PeerCertificate, PeerInfo, SERVER_NAME, TlsError, TlsFiles, TlsMaterial};
pub use token::{TokenIdentity, TokenKey};

use config::AdminToken;
use daisi_config::{ConfigError, Env, SecretDigest, SecretString};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The internal-security settings, loaded (certificates read, secrets kept).
#[derive(Debug, Clone)]
pub struct InternalSecurity {
    tls: Option<Arc<TlsMaterial>>,
    token: Option<TokenKey>,
    admin: Option<AdminToken>,
    reload_interval: Duration,
}

impl InternalSecurity {
    pub(crate) fn new(
        tls: Option<Arc<TlsMaterial>>,
        token: Option<TokenKey>,
        admin_token: Option<SecretString>,
        reload_interval: Duration,
    ) -> Self {
        Self {
            tls,
            token,
            admin: admin_token.map(|value| AdminToken {
                digest: SecretDigest::new(&value),
                value,
            }),
            reload_interval,
        }
    }

    /// Reads and checks `DAISI_INTERNAL_*`: all three TLS paths or none, secrets of at least
    /// [`MIN_SECRET_LEN`] characters, files that load.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        config::from_env(env)
    }

    /// Nothing configured: internal calls are not authenticated.
    pub fn off() -> Self {
        Self::new(None, None, None, Duration::from_secs(30))
    }

    /// Bearer tokens only, from `secret` (tests and the dev stack), with an admin token.
    pub fn with_tokens(secret: &str, admin_token: Option<&str>) -> Self {
        Self::new(
            None,
            Some(TokenKey::new(&SecretString::from(secret.to_owned()))),
            admin_token.map(|t| SecretString::from(t.to_owned())),
            Duration::from_secs(30),
        )
    }

    /// Mutual TLS with `files` (and the tokens of `self`, if any).
    pub fn with_tls(mut self, files: TlsFiles) -> Result<Self, TlsError> {
        self.tls = Some(Arc::new(TlsMaterial::load(files)?));
        Ok(self)
    }

    /// Whether anything is configured (certificates or the shared secret).
    pub fn is_on(&self) -> bool {
        self.tls.is_some() || self.token.is_some()
    }

    /// Whether mutual TLS is configured.
    pub fn tls(&self) -> Option<&Arc<TlsMaterial>> {
        self.tls.as_ref()
    }

    /// What is configured, for the start-up log line.
    pub fn describe(&self) -> &'static str {
        match (self.tls.is_some(), self.token.is_some()) {
            (true, true) => "mtls+token",
            (true, false) => "mtls",
            (false, true) => "token",
            (false, false) => "off",
        }
    }

    /// Logs what protects internal gRPC; loudly when nothing does.
    pub fn log_posture(&self, service: &str) {
        if self.is_on() {
            tracing::info!(
                service,
                internal_auth = self.describe(),
                admin_token = self.admin.is_some(),
                "internal gRPC is authenticated"
            );
        } else {
            tracing::warn!(
                service,
                "INTERNAL gRPC IS NOT AUTHENTICATED: anyone who reaches the gRPC ports can register pods, \
                 push events into sockets and kill sessions. Set DAISI_INTERNAL_TLS_CERT/_KEY/_CA \
                 (mutual TLS) or DAISI_INTERNAL_TOKEN (see docs/security.md)"
            );
        }
    }

    /// Accepted connections of `listener` for `Server::serve_with_incoming`.
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> std::pin::Pin<Box<dyn futures_util::Stream<Item = std::io::Result<ServerConn>> + Send>>
    {
        conn::incoming(listener, self.tls.clone())
    }

    /// The interceptor of a service that demands `need`.
    pub fn authenticate(&self, need: Need) -> Authenticate {
        Authenticate {
            on: self.is_on(),
            token: self.token.clone(),
            admin: self.admin.clone(),
            need,
        }
    }

    /// Credentials of edge pod `pod_id`.
    pub fn pod_client(&self, pod_id: &str) -> ClientAuth {
        let token = self.token.as_ref().map(|k| k.pod_token(pod_id));
        ClientAuth::with_token(self.tls.clone(), token.as_ref())
    }

    /// Credentials of a router.
    pub fn router_client(&self) -> ClientAuth {
        let token = self.token.as_ref().map(TokenKey::router_token);
        ClientAuth::with_token(self.tls.clone(), token.as_ref())
    }

    /// Credentials of an operator (the CLI's admin commands): the admin token, and the
    /// certificate (which carries `admin.daisi.internal` when it is an admin's).
    pub fn admin_client(&self) -> ClientAuth {
        ClientAuth::with_token(self.tls.clone(), self.admin.as_ref().map(|a| &a.value))
    }

    /// Reloads the certificates on change or SIGHUP until `stop` (nothing without TLS).
    pub fn spawn_reloader(&self, stop: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
        self.tls
            .clone()
            .map(|tls| tokio::spawn(tls.watch(self.reload_interval, stop)))
    }
}
