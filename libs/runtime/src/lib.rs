//! Process plumbing shared by the daisi binaries, so each `main` stays a few lines long:
//! configuration before anything binds ([`bootstrap`]), a shutdown token fed by SIGTERM/SIGINT
//! ([`shutdown`]), an HTTP server that drains on that token ([`http`]), and the `/health` and
//! `/ready` endpoints every service exposes ([`health`]), and the open-file limit raised to
//! what the host allows ([`fd_limit`]).

pub mod bootstrap;
pub mod failover;
pub mod fd_limit;
pub mod grpc;
pub mod health;
pub mod http;
pub mod internal;
#[cfg(feature = "nats")]
pub mod nats_auth;
pub mod ratelog;
pub mod shutdown;

pub use bootstrap::main_with;
pub use health::Readiness;
pub use tokio_util::sync::CancellationToken;
