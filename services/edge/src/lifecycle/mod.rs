//! The pod's background duties: registration and heartbeat ([`pod`]), the kill switch stream
//! ([`kill_watch`]), the slow batched session audit ([`audit`]) and release ([`release`]), route
//! unregistration ([`routes`]), and the SIGTERM drain ([`drain`]).

pub mod audit;
pub mod drain;
pub mod kill_watch;
pub mod pod;
pub mod release;
pub mod routes;

use crate::ws::handle::SocketHandle;
use crate::ws::outbox::{CloseCause, CloseRequest};

/// Closes `socket` with the compat takeover frame and 4402, marking its session gone so it is
/// neither renewed nor released. `false` when it was already closing.
pub fn close_lost(socket: &SocketHandle, cause: CloseCause) -> bool {
    socket.mark_session_lost();
    let closed = socket.outbox.close(CloseRequest::session_conflict(cause));
    if closed {
        tracing::debug!(connection = %socket.connection, cause = cause.as_str(), "closing socket whose session ended");
    }
    closed
}
