//! The state every part of the edge shares: settings, coordinator client, authenticator, local
//! socket index, release queue, metrics and readiness.

use crate::auth::Authenticator;
use crate::config::Config;
use crate::coordinator::{AnyCoordinator, PodIdentity};
use crate::lifecycle::release::ReleaseQueue;
use crate::metrics::EdgeMetrics;
use crate::registry::Registry;
use daisi_runtime::Readiness;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Readiness dependency name of the coordinator.
pub const COORDINATOR: &str = "coordinator";
/// Readiness dependency name of the kill-command stream. Up once the first stream is
/// subscribed: an edge that admitted sockets before that would miss the kills of their
/// takeovers until the next heartbeat brought its inbox. It stays up when a later stream
/// breaks: the heartbeat asked for on every resubscription brings the inbox, and the audit
/// closes the rest, so a blip of one coordinator replica does not take the edge out of its
/// load balancer.
pub const KILL_COMMANDS: &str = "kill_commands";

/// Shared edge state; cheap to clone.
pub type Edge = Arc<EdgeState>;

/// See the module docs.
#[derive(Debug)]
pub struct EdgeState {
    /// Settings.
    pub config: Config,
    /// This pod in the pod registry.
    pub pod: PodIdentity,
    /// The coordinator.
    pub coordinator: AnyCoordinator,
    /// API keys and tokens.
    pub auth: Authenticator,
    /// Local sockets and route counts.
    pub registry: Registry,
    /// Sessions of closed sockets waiting to be released in a batch.
    pub releases: ReleaseQueue,
    /// Metrics.
    pub metrics: EdgeMetrics,
    /// `/ready` and gRPC health.
    pub readiness: Readiness,
    /// Asks the heartbeat loop for an immediate heartbeat (the coordinator forgot the pod).
    pub heartbeat_now: Notify,
    /// Asks the session audit for an immediate run (kill commands may have been missed).
    pub audit_now: Notify,
    /// The heartbeat in flight (shared by concurrent callers) and the restore it started.
    pub heartbeats: crate::lifecycle::pod::Heartbeats,
    /// Every socket task holds a token of it, so the drain can wait for them.
    pub socket_tasks: TaskTracker,
    /// Cancelled when the drain is over: socket tasks still running stop at once.
    pub sockets_stop: CancellationToken,
    /// The stream's history for `json.v2` recoveries, when a NATS URL is configured.
    pub history: std::sync::OnceLock<crate::history::jetstream::JetStreamHistory>,
}

impl EdgeState {
    /// Whether new sockets are refused (SIGTERM received).
    pub fn draining(&self) -> bool {
        self.readiness.is_draining()
    }

    /// Updates the socket gauges from the index.
    pub fn refresh_socket_gauges(&self) {
        let (users, admins) = self.registry.counts();
        let set = |kind: &str, n: usize| {
            self.metrics
                .sockets
                .with_label_values(&[kind])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        };
        set("user", users);
        set("admin", admins);
    }
}
