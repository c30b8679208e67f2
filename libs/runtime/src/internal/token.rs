//! Bearer tokens derived from the shared secret (`DAISI_INTERNAL_TOKEN`), for deployments
//! without a PKI.
//!
//! A token names who holds it and carries an HMAC-SHA256 of that name under the secret:
//! `pod.<pod-id>.<mac>` for an edge, `router.<mac>` for a router. A token is therefore good
//! for one identity only: a workload that holds pod A's token cannot act as pod B. Whoever
//! holds the secret itself can derive every token (the coordinator needs it to check them).

use daisi_config::{SecretString, secrets_equal};
use ring::hmac;
use secrecy::ExposeSecret;

/// Who a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenIdentity {
    /// The edge pod with this id.
    Pod(String),
    /// A router.
    Router,
}

/// Longest pod id (the id rules' limit).
const MAX_POD_ID: usize = 128;

/// Domain separation: a MAC made for something else under the same secret never matches.
const CONTEXT: &[u8] = b"daisi-internal-token-v1\0";

/// The shared secret as an HMAC key.
#[derive(Clone)]
pub struct TokenKey(hmac::Key);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

impl TokenKey {
    /// The key of `secret`.
    pub fn new(secret: &SecretString) -> Self {
        Self(hmac::Key::new(
            hmac::HMAC_SHA256,
            secret.expose_secret().as_bytes(),
        ))
    }

    fn mac(&self, claim: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(CONTEXT);
        ctx.update(claim.as_bytes());
        hex::encode(ctx.sign().as_ref())
    }

    fn token(&self, claim: &str) -> SecretString {
        SecretString::from(format!("{claim}.{}", self.mac(claim)))
    }

    /// The token of the edge pod `pod_id`.
    pub fn pod_token(&self, pod_id: &str) -> SecretString {
        self.token(&format!("pod.{pod_id}"))
    }

    /// The token of routers.
    pub fn router_token(&self) -> SecretString {
        self.token("router")
    }

    /// Whose token `presented` is, if it is a valid one. The MAC is compared in constant time.
    pub fn verify(&self, presented: &str) -> Option<TokenIdentity> {
        let (claim, mac) = presented.rsplit_once('.')?;
        let identity = match claim.split_once('.') {
            None if claim == "router" => TokenIdentity::Router,
            Some(("pod", id)) if valid_pod_id(id) => TokenIdentity::Pod(id.to_owned()),
            _ => return None,
        };
        secrets_equal(mac.as_bytes(), self.mac(claim).as_bytes()).then_some(identity)
    }
}

fn valid_pod_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_POD_ID
        && !id.chars().any(|c| {
            matches!(c, '.' | '*' | '>' | ':' | '{' | '}') || c.is_whitespace() || c.is_control()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &str) -> TokenKey {
        TokenKey::new(&SecretString::from(secret.to_owned()))
    }

    #[test]
    fn a_token_names_exactly_one_identity() {
        let k = key("0123456789abcdef0123456789abcdef");
        let a = k.pod_token("edge-a");
        assert_eq!(
            k.verify(a.expose_secret()),
            Some(TokenIdentity::Pod("edge-a".into()))
        );
        assert_eq!(
            k.verify(k.router_token().expose_secret()),
            Some(TokenIdentity::Router)
        );
        // Pod A's MAC under pod B's name.
        let (_, mac) = a.expose_secret().rsplit_once('.').expect("mac");
        assert_eq!(k.verify(&format!("pod.edge-b.{mac}")), None);
        assert_eq!(k.verify(&format!("router.{mac}")), None);
    }

    #[test]
    fn tokens_of_another_secret_or_malformed_ones_are_refused() {
        let k = key("0123456789abcdef0123456789abcdef");
        let other = key("fedcba9876543210fedcba9876543210");
        assert_eq!(k.verify(other.pod_token("edge-a").expose_secret()), None);
        for bad in [
            "",
            ".",
            "pod..",
            "router",
            "pod.edge-a",
            "admin.00",
            "pod.a b.00",
        ] {
            assert_eq!(k.verify(bad), None, "{bad:?}");
        }
    }
}
