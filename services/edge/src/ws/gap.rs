//! Announcing gaps to `json.v2` sockets: whoever learns that a socket may have missed events
//! (delivery, the pod lifecycle, recovery) calls [`announce`]; the socket's queue folds the
//! announcements into one rate-limited `resync` frame, which the socket task sends and counts
//! (`edge_resyncs_total{cause}`), or closes the socket with 4008 under the close policy
//! (counted here).

use super::handle::SocketHandle;
use super::outbox::Announced;
use crate::state::Edge;
use daisi_domain::protocol::GapCause;

/// Tells `socket` it may have missed events; a no-op for `json.v1` sockets.
pub fn announce(edge: &Edge, socket: &SocketHandle, cause: GapCause) {
    if socket.outbox.announce_gap(cause) == Announced::Closed {
        edge.metrics.gaps.of(cause).inc();
    }
}
