//! What every daisi binary promises, as reusable assertions: it starts with valid settings,
//! answers `/health` and `/metrics`, stops cleanly on SIGTERM, and refuses bad settings with
//! exit code 64 and a message naming the variable.

use crate::process::{ServiceProcess, run_to_exit};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

/// `GET http://{addr}{path}`: status and body (JSON, or the text as a JSON string). Gives up
/// after 5 s, so a peer that accepts the connection and never answers (a frozen process, a
/// container port proxy without its container) fails a poll instead of hanging it.
pub async fn get_json(addr: SocketAddr, path: &str) -> Result<(u16, Value), reqwest::Error> {
    let response = http_client()
        .get(format!("http://{addr}{path}"))
        .send()
        .await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, body))
}

/// An HTTP client for tests: connect within 2 s, whole request within 5 s. A new one per
/// call site: a pooled client must not outlive the runtime of the test that made it.
///
/// # Panics
/// Only when the TLS backend cannot initialise, which no test can survive.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_else(|e| panic!("cannot build an HTTP client: {e}"))
}

/// Starts `bin` with `env`, waits for `started_message`, checks `/health` and `/metrics` on the
/// address logged in field `http_field`, runs `more` against the running process, then sends
/// SIGTERM and expects a clean exit (status 0) within `stop_within`.
///
/// # Panics
/// When any promise is broken; the message carries the process output.
pub async fn assert_serves_and_stops<F, Fut>(
    bin: &str,
    env: &[(&str, &str)],
    started_message: &str,
    http_field: &str,
    stop_within: Duration,
    more: F,
) where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut process =
        match ServiceProcess::spawn(bin, env, started_message, Duration::from_secs(20)).await {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
    let Some(http) = process.addr(http_field) else {
        panic!(
            "start line has no `{http_field}` address; logs:\n{}",
            process.logs()
        );
    };
    let health = get_json(http, "/health").await;
    assert!(
        matches!(&health, Ok((200, body)) if body == &serde_json::json!({"status": "OK"})),
        "/health answered {health:?}; logs:\n{}",
        process.logs()
    );
    let metrics = get_json(http, "/metrics").await;
    assert!(
        matches!(&metrics, Ok((200, Value::String(text))) if text.contains("# TYPE") || text.is_empty()),
        "/metrics answered {metrics:?}"
    );
    more(http).await;
    if let Err(e) = process.signal(Signal::SIGTERM) {
        panic!("cannot send SIGTERM: {e}");
    }
    let Some(exited) = process.wait(stop_within).await else {
        panic!(
            "still running {stop_within:?} after SIGTERM; logs:\n{}",
            process.logs()
        );
    };
    assert!(
        exited.status.success(),
        "exit after SIGTERM was {:?}; output:\n{}",
        exited.status,
        exited.output
    );
    assert!(
        exited.output.contains("shutdown requested"),
        "no shutdown log line; output:\n{}",
        exited.output
    );
}

/// Runs `bin` with `env` and expects it to refuse to start: exit code 64 and every variable of
/// `named` in its output, before binding anything.
///
/// # Panics
/// When the binary starts, exits otherwise, or does not name a variable.
pub async fn assert_refuses_config(bin: &str, env: &[(&str, &str)], named: &[&str]) {
    let Some(exited) = run_to_exit(bin, env, Duration::from_secs(20)).await else {
        panic!("{bin} did not exit on bad configuration");
    };
    assert_eq!(
        exited.status.code(),
        Some(64),
        "bad configuration must exit with 64; output:\n{}",
        exited.output
    );
    for var in named {
        assert!(
            exited.output.contains(var),
            "output does not name {var}:\n{}",
            exited.output
        );
    }
}
