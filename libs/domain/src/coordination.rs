//! The vocabulary of the session coordinator: who holds a session, with which fencing token,
//! which pods are alive, and the route keys events are delivered by.
//!
//! Data only. The coordinator stores these (in Redis), the edge and router exchange them; the
//! string forms are stable because they end up in keys.

use std::{fmt, str::FromStr, time::Duration};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{
    ids::{AgentId, ChatId, CompanyId, ConnectionId, IdError, PodId},
    session_key::SessionKey,
    subject::{DeliveryTarget, Scope},
};

/// Orders the grants of one session key: every takeover gets a strictly larger token, so a
/// stale holder's writes (carrying a smaller token) can be refused.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct FencingToken(pub u64);

impl FencingToken {
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

/// Lease timing settings that contradict each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// Renewing at or after expiry would let healthy leases lapse.
    #[error("lease renew interval ({renew:?}) must be shorter than the lease ({lease:?})")]
    RenewNotShorter {
        /// The lease duration.
        lease: Duration,
        /// The renew interval.
        renew: Duration,
    },
    /// A zero duration would spin or expire instantly.
    #[error("lease durations must be positive")]
    Zero,
}

/// How long a pod's or session's lease lasts and how often it is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    lease: Duration,
    renew_every: Duration,
}

impl LeaseSettings {
    /// Default lease: 30 s.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
    /// Default renew interval: 10 s, so two renewals can fail before the lease lapses.
    pub const DEFAULT_RENEW: Duration = Duration::from_secs(10);

    /// Settings with `renew_every < lease`, both positive.
    pub fn new(lease: Duration, renew_every: Duration) -> Result<Self, LeaseError> {
        if lease.is_zero() || renew_every.is_zero() {
            return Err(LeaseError::Zero);
        }
        if renew_every >= lease {
            return Err(LeaseError::RenewNotShorter {
                lease,
                renew: renew_every,
            });
        }
        Ok(Self { lease, renew_every })
    }

    /// How long a lease lasts without renewal.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How often the holder renews.
    pub fn renew_every(&self) -> Duration {
        self.renew_every
    }
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self {
            lease: Self::DEFAULT_LEASE,
            renew_every: Self::DEFAULT_RENEW,
        }
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

/// A set of sockets events are delivered to; stable string forms for Redis keys:
/// `agent:{company}:{agent}`, `chat:{company}:{agent}:{chat}`, `admins`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKey {
    /// Every user socket of an agent.
    Agent {
        /// The company.
        company: CompanyId,
        /// The agent.
        agent: AgentId,
    },
    /// User sockets of an agent that selected a chat.
    Chat {
        /// The company.
        company: CompanyId,
        /// The agent.
        agent: AgentId,
        /// The selected chat.
        chat: ChatId,
    },
    /// Every admin socket (filtered per admin by its claims).
    Admins,
}

impl RouteKey {
    /// The route keys whose sockets may receive an event for `target`; admin sockets still
    /// need [`crate::token::AdminClaims::wants_agent_event`].
    pub fn for_target(target: &DeliveryTarget) -> Vec<Self> {
        let agent = || Self::Agent {
            company: target.company.clone(),
            agent: target.agent.clone(),
        };
        match &target.scope {
            Scope::Agent => vec![agent()],
            Scope::AgentAndAdmins => vec![agent(), Self::Admins],
            Scope::Chat(chat) => vec![Self::Chat {
                company: target.company.clone(),
                agent: target.agent.clone(),
                chat: chat.clone(),
            }],
        }
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Agent { company, agent } => write!(f, "agent:{company}:{agent}"),
            Self::Chat {
                company,
                agent,
                chat,
            } => write!(f, "chat:{company}:{agent}:{chat}"),
            Self::Admins => f.write_str("admins"),
        }
    }
}

/// A string that is not a [`RouteKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteKeyError {
    /// Not one of the three forms.
    #[error("route key must look like 'agent:c:a', 'chat:c:a:chat' or 'admins'")]
    Shape,
    /// The shape is right but an id is invalid.
    #[error(transparent)]
    Id(#[from] IdError),
}

impl FromStr for RouteKey {
    type Err = RouteKeyError;

    fn from_str(s: &str) -> Result<Self, RouteKeyError> {
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            ["agent", company, agent] => Ok(Self::Agent {
                company: company.parse()?,
                agent: agent.parse()?,
            }),
            ["chat", company, agent, chat] => Ok(Self::Chat {
                company: company.parse()?,
                agent: agent.parse()?,
                chat: chat.parse()?,
            }),
            ["admins"] => Ok(Self::Admins),
            _ => Err(RouteKeyError::Shape),
        }
    }
}

impl Serialize for RouteKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RouteKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
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
    fn lease_settings_validate() {
        let defaults = LeaseSettings::default();
        assert_eq!(defaults.lease(), Duration::from_secs(30));
        assert_eq!(defaults.renew_every(), Duration::from_secs(10));
        assert!(LeaseSettings::new(Duration::from_secs(5), Duration::from_secs(5)).is_err());
        assert_eq!(
            LeaseSettings::new(Duration::ZERO, Duration::from_secs(1)),
            Err(LeaseError::Zero)
        );
        assert!(LeaseSettings::new(Duration::from_secs(5), Duration::from_secs(4)).is_ok());
    }

    #[test]
    fn route_keys_round_trip() {
        let keys = [
            RouteKey::Agent {
                company: "c1".parse().unwrap(),
                agent: "a1".parse().unwrap(),
            },
            RouteKey::Chat {
                company: "c1".parse().unwrap(),
                agent: "a1".parse().unwrap(),
                chat: "ch".parse().unwrap(),
            },
            RouteKey::Admins,
        ];
        let texts = ["agent:c1:a1", "chat:c1:a1:ch", "admins"];
        for (key, text) in keys.iter().zip(texts) {
            assert_eq!(key.to_string(), text);
            assert_eq!(&text.parse::<RouteKey>().unwrap(), key);
        }
        for bad in [
            "",
            "agent:c1",
            "chat:c1:a1",
            "admins:x",
            "agent:c1:a1:x",
            "user:c1:a1",
        ] {
            assert!(bad.parse::<RouteKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn targets_map_to_route_keys() {
        let model = crate::subject::SubjectModel::default();
        let keys = |s: &str| -> Vec<String> {
            let target = model.parse(s).unwrap().target();
            RouteKey::for_target(&target)
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(keys("websocket.c.a.chats"), ["agent:c:a"]);
        assert_eq!(keys("websocket.c.a.agents"), ["agent:c:a", "admins"]);
        assert_eq!(keys("websocket.c.a.messages.x"), ["chat:c:a:x"]);
    }
}
