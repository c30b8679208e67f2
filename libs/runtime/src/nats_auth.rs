//! Credentials and TLS of a NATS connection (`DAISI_ROUTER_NATS_*` for the router's consumer,
//! `DAISI_EDGE_NATS_*` for the edge's recovery reads): a `.creds` file (JWT + NKey seed, NATS
//! decentralised auth) or a bare NKey seed, and TLS with a private CA and an optional client
//! certificate. User and password or a token still go in the URL.

use daisi_config::{ExposeSecret, SecretString, Validator};
use std::path::PathBuf;

/// How a service authenticates to NATS, beyond the URL.
#[derive(Clone, Default)]
pub struct NatsAuth {
    /// Contents of a `.creds` file (read at start-up).
    pub creds: Option<SecretString>,
    /// An NKey user seed (`SU...`).
    pub nkey_seed: Option<SecretString>,
    /// CA certificate(s) of the server (PEM file); TLS is then required.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key (PEM files) for servers that verify clients.
    pub tls_client: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAuth")
            .field("creds", &self.creds.is_some())
            .field("nkey_seed", &self.nkey_seed.is_some())
            .field("tls_ca", &self.tls_ca)
            .field("tls_client", &self.tls_client)
            .finish()
    }
}

/// The raw settings.
#[derive(Debug, Default)]
pub struct RawNatsAuth<'a> {
    /// `NATS_CREDS`: path of a `.creds` file.
    pub creds: Option<&'a str>,
    /// `NATS_NKEY_SEED`.
    pub nkey_seed: Option<&'a str>,
    /// `NATS_TLS_CA`.
    pub tls_ca: Option<&'a str>,
    /// `NATS_TLS_CERT`.
    pub tls_cert: Option<&'a str>,
    /// `NATS_TLS_KEY`.
    pub tls_key: Option<&'a str>,
}

fn present(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

fn readable(v: &mut Validator, name: &str, path: Option<&str>) -> Option<PathBuf> {
    let path = present(path)?;
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Some(PathBuf::from(path)),
        Ok(_) => {
            v.problem(name, format!("`{path}` is not a file"));
            None
        }
        Err(e) => {
            v.problem(name, format!("cannot read `{path}`: {e}"));
            None
        }
    }
}

impl NatsAuth {
    /// Checks the settings: one of creds file and NKey seed, readable files, certificate and
    /// key together. Problems are recorded in `v`; the value is complete only without them.
    pub fn from_raw(v: &mut Validator, raw: &RawNatsAuth<'_>) -> Self {
        let mut auth = Self::default();
        if present(raw.creds).is_some() && present(raw.nkey_seed).is_some() {
            v.problem(
                "NATS_NKEY_SEED",
                "set NATS_CREDS or NATS_NKEY_SEED, not both",
            );
        }
        if let Some(path) = readable(v, "NATS_CREDS", raw.creds) {
            match std::fs::read_to_string(&path) {
                Ok(text)
                    if text.contains("BEGIN NATS USER JWT")
                        && text.contains("BEGIN USER NKEY SEED") =>
                {
                    auth.creds = Some(SecretString::from(text));
                }
                Ok(_) => v.problem(
                    "NATS_CREDS",
                    format!(
                        "`{}` is not a NATS .creds file (JWT and NKey seed)",
                        path.display()
                    ),
                ),
                Err(e) => v.problem(
                    "NATS_CREDS",
                    format!("cannot read `{}`: {e}", path.display()),
                ),
            }
        }
        if let Some(seed) = present(raw.nkey_seed) {
            // A user seed: base32, 58 characters, `SU` prefix. The value is never echoed.
            if seed.len() == 58
                && seed.starts_with("SU")
                && seed
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
            {
                auth.nkey_seed = Some(SecretString::from(seed.to_owned()));
            } else {
                v.problem("NATS_NKEY_SEED", "is not an NKey user seed (58 characters starting with SU, e.g. from `nsc` or `nk -gen user`)");
            }
        }
        auth.tls_ca = readable(v, "NATS_TLS_CA", raw.tls_ca);
        let cert = readable(v, "NATS_TLS_CERT", raw.tls_cert);
        let key = readable(v, "NATS_TLS_KEY", raw.tls_key);
        match (present(raw.tls_cert), present(raw.tls_key)) {
            (Some(_), None) => v.problem("NATS_TLS_KEY", "is required with NATS_TLS_CERT"),
            (None, Some(_)) => v.problem("NATS_TLS_CERT", "is required with NATS_TLS_KEY"),
            _ => {}
        }
        if let (Some(cert), Some(key)) = (cert, key) {
            auth.tls_client = Some((cert, key));
        }
        auth
    }

    /// Whether TLS is asked for by these settings (the URL scheme `tls://` asks too).
    pub fn wants_tls(&self) -> bool {
        self.tls_ca.is_some() || self.tls_client.is_some()
    }

    /// `options` with these credentials.
    pub fn apply(
        &self,
        mut options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, String> {
        if let Some(creds) = &self.creds {
            options = options
                .credentials(creds.expose_secret())
                .map_err(|e| format!("NATS credentials: {e}"))?;
        }
        if let Some(seed) = &self.nkey_seed {
            options = options.nkey(seed.expose_secret().to_owned());
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls_client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.wants_tls() {
            options = options.require_tls(true);
        }
        Ok(options)
    }
}
