//! Mutual TLS for internal gRPC with rustls (ring provider): certificate, key and CA read
//! from files, reloaded when they change (polled) or on SIGHUP, without a restart.
//!
//! tonic's own `ServerTlsConfig`/`ClientTlsConfig` take fixed certificates, so TLS is done
//! here with tokio-rustls: servers hand tonic already-accepted TLS streams
//! (`serve_with_incoming`), clients dial through [`Connector`]. Each new handshake uses the
//! configuration current at that moment; established connections keep theirs.
//!
//! Servers ask for a client certificate but do not require one at the TLS level: a client
//! may authenticate with a bearer token instead, and a call with neither is refused with
//! `UNAUTHENTICATED` by the interceptor (`super::auth`), which can say why.

use parking_lot::{Mutex, RwLock};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The name every internal server's certificate must carry (a DNS SAN) and every client
/// checks. Clients dial edges by pod IP and coordinators by Service name; one fixed name
/// spares per-pod server certificates.
pub const SERVER_NAME: &str = "server.daisi.internal";

/// Paths of the certificate chain, its key and the CA that signs every internal peer.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain (leaf first). Also the client certificate.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificate(s) trusted for peers.
    pub ca: PathBuf,
}

impl TlsFiles {
    /// The three files as `DAISI_INTERNAL_TLS_*` settings.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("TLS_CERT", &self.cert),
            ("TLS_KEY", &self.key),
            ("TLS_CA", &self.ca),
        ]
        .into_iter()
        .map(|(name, path)| {
            (
                format!("{}{name}", super::PREFIX),
                path.display().to_string(),
            )
        })
        .collect()
    }
}

/// A file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate chain.
    #[error("cannot use certificate {path}: {reason}")]
    Cert {
        /// File.
        path: String,
        /// Why.
        reason: String,
    },
    /// The key.
    #[error("cannot use private key {path}: {reason}")]
    Key {
        /// File.
        path: String,
        /// Why.
        reason: String,
    },
    /// The CA.
    #[error("cannot use CA {path}: {reason}")]
    Ca {
        /// File.
        path: String,
        /// Why.
        reason: String,
    },
}

impl TlsError {
    /// The setting (without prefix) the error is about.
    pub fn setting(&self) -> &'static str {
        match self {
            Self::Cert { .. } => "TLS_CERT",
            Self::Key { .. } => "TLS_KEY",
            Self::Ca { .. } => "TLS_CA",
        }
    }
}

struct Configs {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

/// The loaded certificate material and the rustls configurations made of it.
pub struct TlsMaterial {
    files: TlsFiles,
    configs: RwLock<Configs>,
    /// Modification times of the three files at the last load, to notice a change.
    stamp: Mutex<[Option<SystemTime>; 3]>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn stamp(files: &TlsFiles) -> [Option<SystemTime>; 3] {
    let m = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    [m(&files.cert), m(&files.key), m(&files.ca)]
}

fn build(files: &TlsFiles) -> Result<Configs, TlsError> {
    let path = |p: &PathBuf| p.display().to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(Iterator::collect)
        .map_err(|e| TlsError::Cert {
            path: path(&files.cert),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: path(&files.cert),
            reason: "no certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: path(&files.key),
        reason: e.to_string(),
    })?;
    let ca_error = |reason: String| TlsError::Ca {
        path: path(&files.ca),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&files.ca).map_err(|e| ca_error(e.to_string()))? {
        roots
            .add(ca.map_err(|e| ca_error(e.to_string()))?)
            .map_err(|e| ca_error(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ca_error("no certificate in the file".into()));
    }
    let roots = Arc::new(roots);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| ca_error(e.to_string()))?;
    let cert_error = |e: tokio_rustls::rustls::Error| TlsError::Cert {
        path: path(&files.cert),
        reason: e.to_string(),
    };
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(cert_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(cert_error)?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let mut client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(cert_error)?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(cert_error)?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Configs {
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

impl TlsMaterial {
    /// Loads `files` (all three must be usable).
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let stamp_now = stamp(&files);
        let configs = build(&files)?;
        Ok(Self {
            files,
            configs: RwLock::new(configs),
            stamp: Mutex::new(stamp_now),
        })
    }

    /// The server configuration for the next handshake.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.configs.read().server.clone()
    }

    /// The client configuration for the next connection.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.configs.read().client.clone()
    }

    /// Loads the files again. On an error the previous material stays in use (a half-written
    /// file during a rotation must not break new connections).
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamp_now = stamp(&self.files);
        let configs = build(&self.files)?;
        *self.configs.write() = configs;
        *self.stamp.lock() = stamp_now;
        Ok(())
    }

    /// Whether a file changed since the last (re)load.
    fn changed(&self) -> bool {
        *self.stamp.lock() != stamp(&self.files)
    }

    /// Reloads on SIGHUP and whenever a file's modification time changes (checked every
    /// `interval`; Kubernetes updates mounted Secrets in place), until `stop`.
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            let trigger = tokio::select! {
                () = stop.cancelled() => return,
                () = hangup => "SIGHUP",
                _ = tick.tick() => if self.changed() { "file change" } else { continue },
            };
            match self.reload() {
                Ok(()) => {
                    tracing::info!(trigger, cert = %self.files.cert.display(), "internal TLS certificates reloaded")
                }
                Err(error) => {
                    tracing::error!(trigger, %error, "internal TLS certificates not reloaded; keeping the previous ones")
                }
            }
        }
    }
}

/// A client configuration trusting the CA(s) in `ca`, without a client certificate.
pub(crate) fn anonymous_client_config(ca: &std::path::Path) -> Result<Arc<ClientConfig>, TlsError> {
    let ca_error = |reason: String| TlsError::Ca {
        path: ca.display().to_string(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| ca_error(e.to_string()))? {
        roots
            .add(cert.map_err(|e| ca_error(e.to_string()))?)
            .map_err(|e| ca_error(e.to_string()))?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ca_error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A certificate presented by a peer, verified against the CA during the handshake.
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Arc<CertificateDer<'static>>);

/// What tonic puts in each request's extensions for connections accepted by
/// [`super::InternalSecurity::incoming`].
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The client's address.
    pub remote_addr: Option<std::net::SocketAddr>,
    /// The client's leaf certificate, when it presented one.
    pub certificate: Option<PeerCertificate>,
}
