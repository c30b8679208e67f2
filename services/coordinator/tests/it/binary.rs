//! The binary starts, serves health and metrics, reports Redis as a dependency, stops on
//! SIGTERM, and refuses bad settings.

use daisi_testkit::{assert_refuses_config, assert_serves_and_stops, get_json};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_daisi-coordinator");

#[tokio::test]
async fn serves_health_and_stops_on_sigterm() {
    let env = [
        ("DAISI_COORDINATOR_GRPC_ADDR", "127.0.0.1:0"),
        ("DAISI_COORDINATOR_HTTP_ADDR", "127.0.0.1:0"),
        // Nothing listens on port 1: readiness must say Redis is down, not pretend.
        ("DAISI_COORDINATOR_REDIS_URL", "redis://127.0.0.1:1"),
    ];
    assert_serves_and_stops(
        BIN,
        &env,
        "coordinator listening",
        "http",
        Duration::from_secs(10),
        |http| async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            let (status, body) = get_json(http, "/ready").await.unwrap();
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["status"], "NOT_READY");
            assert_eq!(body["dependencies"]["redis"], "DOWN");
        },
    )
    .await;
}

#[tokio::test]
async fn refuses_bad_settings_naming_each_variable() {
    let env = [
        ("DAISI_COORDINATOR_GRPC_ADDR", "not-an-address"),
        ("DAISI_COORDINATOR_REDIS_URL", "postgres://x"),
        ("DAISI_COORDINATOR_POD_LEASE", "soon"),
    ];
    assert_refuses_config(
        BIN,
        &env,
        &[
            "DAISI_COORDINATOR_GRPC_ADDR",
            "DAISI_COORDINATOR_REDIS_URL",
            "DAISI_COORDINATOR_POD_LEASE",
        ],
    )
    .await;
}
