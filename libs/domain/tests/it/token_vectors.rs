//! Every case of `spec/token-vectors.json` (copied to `tests/data/`), made by an independent
//! implementation of the deployed service's token format.

use daisi_domain::token::{TokenError, TokenKey, TokenKeyring};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value;

pub const VECTORS: &str = include_str!("../data/token-vectors.json");

#[derive(Deserialize)]
pub struct Vectors {
    pub user_key_hex: String,
    pub admin_key_hex: String,
    pub cases: Vec<Case>,
}

#[derive(Deserialize)]
pub struct Case {
    pub name: String,
    pub kind: String,
    pub key_hex: String,
    pub nonce_hex: String,
    pub plaintext: String,
    pub token: String,
    pub expect: String,
}

pub fn vectors() -> Vectors {
    serde_json::from_str(VECTORS).unwrap()
}

/// After the expired vectors (2020) and before the valid ones (2099).
pub fn now() -> Timestamp {
    "2026-11-25T18:00:00Z".parse().unwrap()
}

fn ring(hex: &str) -> TokenKeyring {
    TokenKeyring::single(TokenKey::from_hex(hex).unwrap())
}

fn field<'a>(claims: &'a Value, name: &str) -> Option<&'a str> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

#[test]
fn every_vector_decodes_as_expected() {
    let vectors = vectors();
    let users = ring(&vectors.user_key_hex);
    let admins = ring(&vectors.admin_key_hex);
    assert!(vectors.cases.len() >= 14, "vector file truncated");
    for case in &vectors.cases {
        let name = &case.name;
        let result = match case.kind.as_str() {
            "user" => users.decode_user(&case.token, now()).map(|c| {
                let expected: Value = serde_json::from_str(&case.plaintext).unwrap();
                assert_eq!(
                    Some(c.company_id.as_str()),
                    field(&expected, "company_id"),
                    "{name}"
                );
                assert_eq!(
                    Some(c.agent_id.as_str()),
                    field(&expected, "agent_id"),
                    "{name}"
                );
                assert_eq!(
                    Some(c.user_id.as_str()),
                    field(&expected, "user_id"),
                    "{name}"
                );
                let expires: Timestamp = field(&expected, "expires_at").unwrap().parse().unwrap();
                assert_eq!(c.expires_at, expires, "{name}");
            }),
            "admin" => admins.decode_admin(&case.token, now()).map(|c| {
                let expected: Value = serde_json::from_str(&case.plaintext).unwrap();
                assert_eq!(
                    Some(c.admin_id.as_str()),
                    field(&expected, "admin_id"),
                    "{name}"
                );
                let opt =
                    |id: Option<&str>, key| assert_eq!(id, field(&expected, key), "{name} {key}");
                opt(
                    c.company_id_restriction.as_ref().map(|c| c.as_str()),
                    "company_id_restriction",
                );
                opt(
                    c.subscribed_company_id.as_ref().map(|c| c.as_str()),
                    "subscribed_company_id",
                );
                opt(
                    c.subscribed_agent_id.as_ref().map(|a| a.as_str()),
                    "subscribed_agent_id",
                );
                let expires: Timestamp = field(&expected, "expires_at").unwrap().parse().unwrap();
                assert_eq!(c.expires_at, expires, "{name}");
            }),
            other => panic!("unknown kind {other} in {name}"),
        };
        match case.expect.as_str() {
            "valid" => assert_eq!(result, Ok(()), "{name}"),
            "expired" => assert_eq!(result, Err(TokenError::Expired), "{name}"),
            "invalid" => assert!(
                matches!(result, Err(TokenError::Invalid(_))),
                "{name}: {result:?}"
            ),
            other => panic!("unknown expectation {other} in {name}"),
        }
    }
}

#[test]
fn valid_admin_vector_has_all_optional_claims() {
    let vectors = vectors();
    let case = vectors
        .cases
        .iter()
        .find(|c| c.name == "admin_valid_full")
        .unwrap();
    let claims = ring(&vectors.admin_key_hex)
        .decode_admin(&case.token, now())
        .unwrap();
    assert_eq!(claims.company_id_restriction.unwrap().as_str(), "c1");
    assert_eq!(claims.subscribed_company_id.unwrap().as_str(), "c1");
    assert_eq!(claims.subscribed_agent_id.unwrap().as_str(), "a1");
}

#[test]
fn user_keyring_does_not_open_admin_vectors() {
    let vectors = vectors();
    let users = ring(&vectors.user_key_hex);
    for case in vectors.cases.iter().filter(|c| c.kind == "admin") {
        assert!(matches!(
            users.decode_admin(&case.token, now()),
            Err(TokenError::Invalid(_))
        ));
    }
}

#[test]
fn vectors_follow_the_documented_layout() {
    // Re-seal each plain vector with its fixed nonce, by hand, and compare: proves we read the
    // format (nonce || ciphertext || tag, url-safe base64 with padding) the way its author did.
    use aes_gcm::{Aes256Gcm, KeyInit, aead::Aead};
    use base64::{Engine, engine::general_purpose::URL_SAFE};
    for case in vectors()
        .cases
        .iter()
        .filter(|c| c.expect != "invalid" && c.name != "user_unpadded")
    {
        let key: [u8; 32] = hex::decode(&case.key_hex).unwrap().try_into().unwrap();
        let nonce: [u8; 12] = hex::decode(&case.nonce_hex).unwrap().try_into().unwrap();
        let cipher = Aes256Gcm::new(&key.into());
        let mut sealed = nonce.to_vec();
        sealed.extend(
            cipher
                .encrypt(&nonce.into(), case.plaintext.as_bytes())
                .unwrap(),
        );
        assert_eq!(URL_SAFE.encode(sealed), case.token, "{}", case.name);
    }
}
