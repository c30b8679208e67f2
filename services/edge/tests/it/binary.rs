//! The binary starts, serves health and metrics, drains on SIGTERM, and refuses bad settings.

use daisi_testkit::{assert_refuses_config, assert_serves_and_stops, get_json};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_daisi-edge");
const KEY: &str = "3a7bd3e2360a3d29eea436e864a1b8d5f2f5d5e4dba8ac39d465fc3488db3915";

#[tokio::test]
async fn serves_health_and_stops_on_sigterm() {
    let env = [
        ("DAISI_EDGE_HTTP_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_GRPC_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_POD_ID", "edge-test-0"),
        ("DAISI_EDGE_TOKEN_AES_KEY", KEY),
        ("DAISI_EDGE_ADMIN_TOKEN_AES_KEY", KEY),
        ("DAISI_EDGE_SECRET_TOKEN", "user-api-key"),
        ("DAISI_EDGE_ADMIN_SECRET_TOKEN", "admin-api-key"),
        ("DAISI_EDGE_COORDINATOR_URL", "http://127.0.0.1:1"),
        ("DAISI_EDGE_SHUTDOWN_GRACE", "2s"),
    ];
    assert_serves_and_stops(
        BIN,
        &env,
        "edge listening",
        "http",
        Duration::from_secs(10),
        |http| async move {
            // No coordinator runs: the edge serves but is not ready.
            let (status, body) = get_json(http, "/ready").await.unwrap();
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["dependencies"]["coordinator"], "DOWN");
        },
    )
    .await;
}

#[tokio::test]
async fn refuses_bad_settings_naming_each_variable() {
    let env = [
        ("DAISI_EDGE_POD_ID", "edge.0"),
        ("DAISI_EDGE_TOKEN_AES_KEY", "too-short"),
        ("DAISI_EDGE_ADMIN_TOKEN_AES_KEY", KEY),
        ("DAISI_EDGE_ADMIN_SECRET_TOKEN", "admin-api-key"),
    ];
    assert_refuses_config(
        BIN,
        &env,
        &[
            "DAISI_EDGE_POD_ID",
            "DAISI_EDGE_TOKEN_AES_KEY",
            "DAISI_EDGE_SECRET_TOKEN",
        ],
    )
    .await;
}
