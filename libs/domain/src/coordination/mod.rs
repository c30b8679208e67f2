//! The vocabulary of the session coordinator: who holds a session, with which fencing token,
//! which pods are alive, and the routes events are delivered by.
//!
//! Data only. The coordinator stores these (in Redis), the edge and router exchange them; the
//! string forms are stable because they end up in keys.

mod lease;
mod route;

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use lease::{LeaseError, LeaseSettings};
pub use route::{Route, RouteParseError, RouteQuery};

use crate::{
    ids::{ChatId, ConnectionId, PodId},
    session_key::SessionKey,
};

/// Orders the grants of one session key: every takeover gets a strictly larger token, so a
/// stale holder's writes (carrying a smaller token) can be refused.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct FencingToken(pub u64);

impl FencingToken {
    /// Never granted (grants start at 1). Released with it, a connection gives up whatever
    /// grant it holds or is about to be given: the release of an acquire whose answer was lost.
    pub const ABANDONED: Self = Self(0);

    /// The token after this one (saturating; 2^64 grants will not happen).
    #[must_use]
    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The coordinator's answer to "this connection now holds this session".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionGrant {
    /// Whose session.
    pub key: SessionKey,
    /// The pod holding the connection.
    pub pod: PodId,
    /// The connection holding the session.
    pub connection: ConnectionId,
    /// Larger than every earlier grant of the same key.
    pub fencing: FencingToken,
    /// The chat selected by this user, restored across reconnects.
    pub selected_chat: Option<ChatId>,
    /// When this grant was made.
    pub since: Timestamp,
}

/// A live edge pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInfo {
    /// The pod.
    pub pod_id: PodId,
    /// Where the router reaches the pod's gRPC server (`host:port`).
    pub grpc_addr: String,
    /// The pod is considered dead after this instant unless it renews.
    pub lease_expires_at: Timestamp,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fencing_tokens_increase() {
        let first = FencingToken::default();
        assert!(first.next() > first);
        assert_eq!(FencingToken(u64::MAX).next(), FencingToken(u64::MAX));
        assert_eq!(serde_json::to_string(&FencingToken(7)).unwrap(), "7");
    }

    #[test]
    fn grants_survive_a_json_round_trip() {
        let grant = SessionGrant {
            key: "u:c1:a1:u1".parse().unwrap(),
            pod: "edge-0".parse().unwrap(),
            connection: ConnectionId::generate(),
            fencing: FencingToken(42),
            selected_chat: Some("ch".parse().unwrap()),
            since: "2026-11-25T18:00:00.5Z".parse().unwrap(),
        };
        let json = serde_json::to_string(&grant).unwrap();
        assert!(json.contains(r#""key":"u:c1:a1:u1""#), "{json}");
        assert!(json.contains(r#""fencing":42"#), "{json}");
        assert_eq!(serde_json::from_str::<SessionGrant>(&json).unwrap(), grant);
        let tampered = json.replace("edge-0", "edge.0");
        assert!(serde_json::from_str::<SessionGrant>(&tampered).is_err());
    }
}
