//! Client WebSockets: the upgrade handlers, admission (session before upgrade), the per-socket
//! task, its send queue, rate limit and client-frame handling.

pub mod admission;
pub mod client_frames;
pub mod connection;
pub mod handle;
pub mod outbox;
pub mod rate_limit;
pub mod upgrade;
