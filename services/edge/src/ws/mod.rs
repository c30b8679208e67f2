//! Client WebSockets: the upgrade handlers, admission (session before upgrade), the per-socket
//! task with its heartbeat, send queue, rate limit, client-frame handling and closing
//! handshake, the chat selection that runs beside it, and the connection under it.

pub mod admission;
pub mod client_frames;
pub mod closing;
pub mod connection;
pub mod gap;
pub mod handle;
pub mod heartbeat;
pub mod in_frames;
pub mod outbox;
pub mod rate_limit;
pub mod recovery;
pub mod refresh;
pub mod selection;
pub mod stream;
pub mod upgrade;
