//! Route keys: the sets of sockets an event is delivered to, with stable string forms used in
//! Redis keys (`agent:{company}:{agent}`, `chat:{company}:{agent}:{chat}`, `admins`).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{
    ids::{AgentId, ChatId, CompanyId, IdError},
    subject::{DeliveryTarget, Scope},
};

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
