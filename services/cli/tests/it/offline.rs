//! Subcommands that need no running stack: keygen and local token minting, checked by
//! decoding what they print with the same keys.

use daisi_domain::token::TokenKeyring;
use daisi_testkit::run_with_args;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_daisi");
const KEY: &str = "3a7bd3e2360a3d29eea436e864a1b8d5f2f5d5e4dba8ac39d465fc3488db3915";

async fn daisi(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let exited = run_with_args(BIN, args, env, Duration::from_secs(20))
        .await
        .unwrap();
    (exited.status.code().unwrap_or(-1), exited.output)
}

#[tokio::test]
async fn keygen_prints_valid_keys_in_env_format() {
    let (code, out) = daisi(&["keygen"], &[]).await;
    assert_eq!(code, 0, "{out}");
    let keys: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(_, v)| v))
        .collect();
    assert_eq!(keys.len(), 5, "{out}");
    for key in keys {
        TokenKeyring::from_hex(&[key]).unwrap();
    }
    let (code, json) = daisi(&["keygen", "--json"], &[]).await;
    assert_eq!(code, 0);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        value["DAISI_EDGE_TOKEN_AES_KEY"].as_str().map(str::len),
        Some(64)
    );
}

#[tokio::test]
async fn token_user_mints_a_token_the_edge_keys_accept() {
    let (code, out) = daisi(
        &[
            "token",
            "user",
            "--company",
            "c1",
            "--agent",
            "a1",
            "--user",
            "u1",
            "--expires-in",
            "1h",
        ],
        &[("DAISI_EDGE_TOKEN_AES_KEY", KEY)],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let ring = TokenKeyring::from_hex(&[KEY]).unwrap();
    let claims = ring
        .decode_user(out.trim(), jiff::Timestamp::now())
        .unwrap();
    assert_eq!(
        (claims.company_id.as_str(), claims.user_id.as_str()),
        ("c1", "u1")
    );
    let left = claims
        .expires_at
        .duration_since(jiff::Timestamp::now())
        .as_secs();
    assert!((3500..=3600).contains(&left), "{left}");
}

#[tokio::test]
async fn token_admin_carries_its_filters() {
    let (code, out) = daisi(
        &[
            "token",
            "admin",
            "--admin",
            "ad1",
            "--subscribed-company",
            "c1",
            "--json",
        ],
        &[("DAISI_EDGE_ADMIN_TOKEN_AES_KEY", KEY)],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let token: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ring = TokenKeyring::from_hex(&[KEY]).unwrap();
    let claims = ring
        .decode_admin(token["token"].as_str().unwrap(), jiff::Timestamp::now())
        .unwrap();
    assert_eq!(
        claims
            .subscribed_company_id
            .map(|c| c.to_string())
            .as_deref(),
        Some("c1")
    );
    assert!(claims.subscribed_agent_id.is_none());
}

#[tokio::test]
async fn bad_input_is_refused_with_a_reason() {
    let (code, out) = daisi(
        &[
            "token",
            "user",
            "--company",
            "c.1",
            "--agent",
            "a",
            "--user",
            "u",
        ],
        &[("DAISI_EDGE_TOKEN_AES_KEY", KEY)],
    )
    .await;
    assert_ne!(code, 0);
    assert!(out.contains("company_id must not contain '.'"), "{out}");
    let (code, out) = daisi(
        &[
            "token",
            "user",
            "--company",
            "c",
            "--agent",
            "a",
            "--user",
            "u",
        ],
        &[],
    )
    .await;
    assert_ne!(code, 0);
    assert!(out.contains("DAISI_EDGE_TOKEN_AES_KEY"), "{out}");
    let (code, out) = daisi(&["publish", "websocket.c1", "{}"], &[]).await;
    assert_ne!(code, 0);
    assert!(out.contains("not a daisi subject"), "{out}");
}
