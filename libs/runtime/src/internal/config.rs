//! Settings of internal authentication, shared by every service: `DAISI_INTERNAL_*`.
//!
//! One set of names for edge, router, coordinator and the CLI, because they share one PKI and
//! one secret: a deployment sets them once (a Secret mounted into every pod).

use super::tls::{TlsFiles, TlsMaterial};
use super::{InternalSecurity, token::TokenKey};
use daisi_config::{ConfigError, Env, SecretDigest, SecretString, Validator};
use secrecy::ExposeSecret;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// Prefix of every internal-security variable.
pub const PREFIX: &str = "DAISI_INTERNAL_";

/// Shortest accepted shared secret or admin token (`daisi keygen` prints 43-character keys).
pub const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, Deserialize)]
struct Raw {
    tls_cert: Option<String>,
    tls_key: Option<String>,
    tls_ca: Option<String>,
    tls_reload_interval: Option<String>,
    token: Option<String>,
    admin_token: Option<String>,
}

/// Reads and checks `DAISI_INTERNAL_*` from `env`, loading the certificate files so a bad
/// file is a configuration error (exit 64) and not a failure at the first call. Variables of
/// this prefix that are not settings are errors too: they are shared by every service, so a
/// typo would silently turn security off.
pub fn from_env(env: &Env) -> Result<InternalSecurity, ConfigError> {
    let loaded = daisi_config::load::<Raw>(PREFIX, env)?;
    let mut v = Validator::new(PREFIX);
    for unknown in &loaded.unknown {
        v.problem(
            &unknown[PREFIX.len()..],
            "is not a setting (expected TLS_CERT, TLS_KEY, TLS_CA, TLS_RELOAD_INTERVAL, TOKEN, ADMIN_TOKEN)",
        );
    }
    let raw = loaded.value;
    let present = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.trim().is_empty());
    let tls_parts = [
        ("TLS_CERT", present(&raw.tls_cert)),
        ("TLS_KEY", present(&raw.tls_key)),
        ("TLS_CA", present(&raw.tls_ca)),
    ];
    let set = tls_parts.iter().filter(|(_, p)| *p).count();
    let mut tls = None;
    if set == 3 {
        let files = TlsFiles {
            cert: raw.tls_cert.as_deref().unwrap_or_default().trim().into(),
            key: raw.tls_key.as_deref().unwrap_or_default().trim().into(),
            ca: raw.tls_ca.as_deref().unwrap_or_default().trim().into(),
        };
        match TlsMaterial::load(files) {
            Ok(material) => tls = Some(Arc::new(material)),
            Err(error) => v.problem(error.setting(), error.to_string()),
        }
    } else if set > 0 {
        for (name, _) in tls_parts.iter().filter(|(_, p)| !*p) {
            v.problem(
                name,
                "is required with the other TLS_* settings (certificate, key and CA come together)",
            );
        }
    }
    let reload_interval = v.duration(
        "TLS_RELOAD_INTERVAL",
        raw.tls_reload_interval.as_deref(),
        Duration::from_secs(30),
    );
    let token = present(&raw.token)
        .then(|| v.secret("TOKEN", raw.token.as_deref(), MIN_SECRET_LEN))
        .flatten();
    let admin_token = present(&raw.admin_token)
        .then(|| v.secret("ADMIN_TOKEN", raw.admin_token.as_deref(), MIN_SECRET_LEN))
        .flatten();
    if let (Some(token), Some(admin)) = (&token, &admin_token) {
        v.ensure(
            token.expose_secret() != admin.expose_secret(),
            "ADMIN_TOKEN",
            "must differ from DAISI_INTERNAL_TOKEN (the admin credential is a credential of its own)",
        );
    }
    v.ensure(
        admin_token.is_none() || tls.is_some() || token.is_some(),
        "ADMIN_TOKEN",
        "needs DAISI_INTERNAL_TOKEN or the TLS_* settings: without them internal traffic is not authenticated at all",
    );
    v.finish(|| {
        Some(InternalSecurity::new(
            tls,
            token.as_ref().map(TokenKey::new),
            admin_token,
            reload_interval?,
        ))
    })
}

/// The admin credential as the server keeps it (a digest) and as a client sends it.
#[derive(Clone)]
pub(crate) struct AdminToken {
    pub(crate) digest: SecretDigest,
    pub(crate) value: SecretString,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-x";
    const OTHER: &str = "fedcba9876543210fedcba9876543210-y";

    fn load(pairs: &[(&str, &str)]) -> Result<InternalSecurity, ConfigError> {
        from_env(&Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn nothing_configured_is_off_and_a_secret_turns_tokens_on() {
        let off = load(&[]).expect("valid");
        assert!(!off.is_on());
        assert_eq!(off.describe(), "off");
        let on = load(&[("DAISI_INTERNAL_TOKEN", SECRET)]).expect("valid");
        assert!(on.is_on());
        assert_eq!(on.describe(), "token");
    }

    #[test]
    fn half_configurations_and_bad_values_are_refused() {
        let half = load(&[("DAISI_INTERNAL_TLS_CERT", "/x.crt")]).expect_err("half TLS");
        assert!(
            half.mentions("DAISI_INTERNAL_TLS_KEY") && half.mentions("DAISI_INTERNAL_TLS_CA"),
            "{half}"
        );
        let missing = load(&[
            ("DAISI_INTERNAL_TLS_CERT", "/nonexistent/tls.crt"),
            ("DAISI_INTERNAL_TLS_KEY", "/nonexistent/tls.key"),
            ("DAISI_INTERNAL_TLS_CA", "/nonexistent/ca.crt"),
        ])
        .expect_err("missing files");
        assert!(missing.mentions("DAISI_INTERNAL_TLS_CERT"), "{missing}");
        let short = load(&[("DAISI_INTERNAL_TOKEN", "short")]).expect_err("short");
        assert!(short.mentions("DAISI_INTERNAL_TOKEN"), "{short}");
        assert!(
            !short.to_string().contains("short\""),
            "the value is not echoed: {short}"
        );
        let typo = load(&[("DAISI_INTERNAL_TOKN", SECRET)]).expect_err("typo");
        assert!(typo.mentions("DAISI_INTERNAL_TOKN"), "{typo}");
        let admin_alone = load(&[("DAISI_INTERNAL_ADMIN_TOKEN", OTHER)]).expect_err("alone");
        assert!(
            admin_alone.mentions("DAISI_INTERNAL_ADMIN_TOKEN"),
            "{admin_alone}"
        );
        let same = load(&[
            ("DAISI_INTERNAL_TOKEN", SECRET),
            ("DAISI_INTERNAL_ADMIN_TOKEN", SECRET),
        ])
        .expect_err("same");
        assert!(same.mentions("DAISI_INTERNAL_ADMIN_TOKEN"), "{same}");
        assert!(!same.to_string().contains(SECRET), "{same}");
    }
}
