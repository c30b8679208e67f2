//! The binary starts, serves health and metrics, stops on SIGTERM, and refuses bad settings.

use daisi_testkit::{assert_refuses_config, assert_serves_and_stops};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_daisi-router");

#[tokio::test]
async fn serves_health_and_stops_on_sigterm() {
    let env = [("DAISI_ROUTER_HTTP_ADDR", "127.0.0.1:0")];
    assert_serves_and_stops(
        BIN,
        &env,
        "router listening",
        "http",
        Duration::from_secs(10),
        |_| async {},
    )
    .await;
}

#[tokio::test]
async fn refuses_bad_settings_naming_each_variable() {
    let env = [
        ("DAISI_ROUTER_NATS_URL", "redis://x"),
        ("DAISI_ROUTER_STREAM", "a b"),
    ];
    assert_refuses_config(BIN, &env, &["DAISI_ROUTER_NATS_URL", "DAISI_ROUTER_STREAM"]).await;
}
