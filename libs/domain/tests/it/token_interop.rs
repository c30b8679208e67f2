//! Tokens we mint must open with the vectors' algorithm, done by hand here; and key rotation.

use aes_gcm::{Aes256Gcm, KeyInit, aead::Aead};
use base64::{Engine, engine::general_purpose::URL_SAFE};
use daisi_domain::token::{AdminClaims, TokenError, TokenKey, TokenKeyring, UserClaims};
use jiff::Timestamp;
use serde_json::Value;

use crate::token_vectors::{now, vectors};

/// Independent decryption: strict padded url-safe base64, nonce(12) || ct || tag, no AAD.
fn open_by_hand(key_hex: &str, token: &str) -> Value {
    let sealed = URL_SAFE.decode(token).unwrap();
    let (nonce, ciphertext) = sealed.split_at(12);
    let key: [u8; 32] = hex::decode(key_hex).unwrap().try_into().unwrap();
    let nonce: [u8; 12] = nonce.try_into().unwrap();
    let plaintext = Aes256Gcm::new(&key.into())
        .decrypt(&nonce.into(), ciphertext)
        .unwrap();
    serde_json::from_slice(&plaintext).unwrap()
}

fn ring(hex: &str) -> TokenKeyring {
    TokenKeyring::single(TokenKey::from_hex(hex).unwrap())
}

#[test]
fn minted_user_token_opens_by_hand() {
    let key_hex = vectors().user_key_hex;
    let expires_at: Timestamp = "2026-11-25T18:00:00.123456789+07:00".parse().unwrap();
    let claims = UserClaims {
        company_id: "comp-9".parse().unwrap(),
        agent_id: "agent_7".parse().unwrap(),
        user_id: "user-42".parse().unwrap(),
        expires_at,
    };
    let token = ring(&key_hex).encode_user(&claims).unwrap();
    let json = open_by_hand(&key_hex, &token);
    assert_eq!(
        json,
        serde_json::json!({
            "company_id": "comp-9",
            "agent_id": "agent_7",
            "user_id": "user-42",
            "expires_at": "2026-11-25T11:00:00.123456789Z",
        })
    );
}

#[test]
fn minted_admin_token_omits_empty_optionals() {
    let key_hex = vectors().admin_key_hex;
    let mut claims = AdminClaims::expiring_in("ad1".parse().unwrap(), now(), 3600).unwrap();
    let json = open_by_hand(&key_hex, &ring(&key_hex).encode_admin(&claims).unwrap());
    assert_eq!(
        json,
        serde_json::json!({"admin_id": "ad1", "expires_at": "2026-11-25T19:00:00Z"})
    );
    claims.subscribed_agent_id = Some("a1".parse().unwrap());
    claims.company_id_restriction = Some("c1".parse().unwrap());
    let json = open_by_hand(&key_hex, &ring(&key_hex).encode_admin(&claims).unwrap());
    assert_eq!(json["company_id_restriction"], "c1");
    assert_eq!(json["subscribed_agent_id"], "a1");
    assert!(json.get("subscribed_company_id").is_none());
}

#[test]
fn rotation_old_key_decodes_new_key_encodes() {
    let old_hex = vectors().user_key_hex;
    let new_hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let claims = UserClaims::expiring_in(
        "c1".parse().unwrap(),
        "a1".parse().unwrap(),
        "u1".parse().unwrap(),
        now(),
        60,
    )
    .unwrap();
    let old_token = ring(&old_hex).encode_user(&claims).unwrap();
    let rotated = TokenKeyring::from_hex(&[new_hex, old_hex.as_str()]).unwrap();
    assert_eq!(rotated.len(), 2);
    assert_eq!(rotated.decode_user(&old_token, now()).unwrap(), claims);

    let new_token = rotated.encode_user(&claims).unwrap();
    assert_eq!(
        ring(new_hex).decode_user(&new_token, now()).unwrap(),
        claims
    );
    assert!(matches!(
        ring(&old_hex).decode_user(&new_token, now()),
        Err(TokenError::Invalid(_))
    ));
}

#[test]
fn token_errors_map_to_compat_messages() {
    let cases = [
        (TokenError::Missing, "Company token is required"),
        (TokenError::Expired, "Company token has expired."),
    ];
    for (error, message) in cases {
        let body = error.error_body();
        assert_eq!(body.code.as_str(), "InvalidToken");
        assert_eq!(body.message, message);
    }
    let invalid = ring(&vectors().user_key_hex)
        .decode_user("!!", now())
        .unwrap_err();
    assert_eq!(
        invalid.error_body().message,
        "Company token is invalid or malformed."
    );
}

#[test]
fn admin_filter_follows_compat_delivery_rule() {
    let mut claims = AdminClaims::expiring_in("ad".parse().unwrap(), now(), 60).unwrap();
    let (c1, c2) = ("c1".parse().unwrap(), "c2".parse().unwrap());
    let (a1, a2) = ("a1".parse().unwrap(), "a2".parse().unwrap());
    assert!(
        claims.wants_agent_event(&c1, &a1),
        "empty subscription means any"
    );
    claims.subscribed_agent_id = Some(a1.clone());
    assert!(claims.wants_agent_event(&c2, &a1));
    assert!(!claims.wants_agent_event(&c1, &a2));
    claims.company_id_restriction = Some(c1.clone());
    assert!(claims.wants_agent_event(&c1, &a1));
    assert!(!claims.wants_agent_event(&c2, &a1));
    claims.company_id_restriction = None;
    claims.subscribed_company_id = Some(c2.clone());
    assert!(!claims.wants_agent_event(&c1, &a1));
}
