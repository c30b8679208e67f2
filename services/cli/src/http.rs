//! The HTTP client every subcommand uses: an unreachable or frozen server fails the command
//! with a message instead of hanging the terminal.

use anyhow::Context;
use std::time::Duration;

/// Connect within 5 s, whole request within 30 s.
pub(crate) fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot build an HTTP client")
}
