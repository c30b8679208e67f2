//! Routes: the interests an edge pod registers (agent, chat, admin filter) and the queries
//! routers look them up with. The string forms are stable because they are Redis key parts:
//! `agent:{c}:{a}`, `chat:{c}:{a}:{chat}`, `admin:{c|*}:{a|*}` (`*` is never a valid id, so the
//! admin wildcard cannot collide with one).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{
    ids::{AgentId, ChatId, CompanyId, IdError},
    subject::{DeliveryTarget, Scope},
};

/// One interest of a pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    /// User sockets of an agent: agent-wide events.
    Agent {
        /// The company.
        company: CompanyId,
        /// The agent.
        agent: AgentId,
    },
    /// A user socket selected this chat: its `messages` events.
    Chat {
        /// The company.
        company: CompanyId,
        /// The agent.
        agent: AgentId,
        /// The chat.
        chat: ChatId,
    },
    /// Admin sockets with this filter; `None` matches any value.
    Admin {
        /// Company filter.
        company: Option<CompanyId>,
        /// Agent filter.
        agent: Option<AgentId>,
    },
}

/// What a router asks for one event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteQuery {
    /// Pods with exactly this agent route.
    Agent {
        /// The company.
        company: CompanyId,
        /// The agent.
        agent: AgentId,
    },
    /// Pods with exactly this chat route.
    Chat {
        /// The company.
        company: CompanyId,
        /// The agent.
        agent: AgentId,
        /// The chat.
        chat: ChatId,
    },
    /// Pods with an admin route whose filter matches (company, agent), wildcards included.
    Admins {
        /// The company of the event.
        company: CompanyId,
        /// The agent of the event.
        agent: AgentId,
    },
}

impl RouteQuery {
    /// The queries whose pods together receive an event for `target`; admin sockets still
    /// need [`crate::token::AdminClaims::wants_agent_event`].
    pub fn for_target(target: &DeliveryTarget) -> Vec<Self> {
        let (company, agent) = (target.company.clone(), target.agent.clone());
        match &target.scope {
            Scope::Agent => vec![Self::Agent { company, agent }],
            Scope::Chat(chat) => vec![Self::Chat {
                company,
                agent,
                chat: chat.clone(),
            }],
            Scope::AgentAndAdmins => vec![
                Self::Agent {
                    company: company.clone(),
                    agent: agent.clone(),
                },
                Self::Admins { company, agent },
            ],
        }
    }

    /// The registered routes that answer this query: one exact route, or the four admin
    /// filters (exact, company-only, agent-only, any) that match an event of (company, agent).
    pub fn matching_routes(&self) -> Vec<Route> {
        match self {
            Self::Agent { company, agent } => vec![Route::Agent {
                company: company.clone(),
                agent: agent.clone(),
            }],
            Self::Chat {
                company,
                agent,
                chat,
            } => vec![Route::Chat {
                company: company.clone(),
                agent: agent.clone(),
                chat: chat.clone(),
            }],
            Self::Admins { company, agent } => {
                let companies = [Some(company.clone()), None];
                let agents = [Some(agent.clone()), None];
                companies
                    .iter()
                    .flat_map(|c| {
                        agents.iter().map(move |a| Route::Admin {
                            company: c.clone(),
                            agent: a.clone(),
                        })
                    })
                    .collect()
            }
        }
    }
}

/// Wildcard marker of admin routes.
const ANY: &str = "*";

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Agent { company, agent } => write!(f, "agent:{company}:{agent}"),
            Self::Chat {
                company,
                agent,
                chat,
            } => write!(f, "chat:{company}:{agent}:{chat}"),
            Self::Admin { company, agent } => write!(
                f,
                "admin:{}:{}",
                company.as_ref().map_or(ANY, CompanyId::as_str),
                agent.as_ref().map_or(ANY, AgentId::as_str)
            ),
        }
    }
}

/// A string that is not a [`Route`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteParseError {
    /// Not one of the three forms.
    #[error("route must look like 'agent:c:a', 'chat:c:a:chat' or 'admin:c|*:a|*'")]
    Shape,
    /// An id is invalid.
    #[error(transparent)]
    Id(#[from] IdError),
}

impl FromStr for Route {
    type Err = RouteParseError;

    fn from_str(s: &str) -> Result<Self, RouteParseError> {
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
            ["admin", company, agent] => Ok(Self::Admin {
                company: wildcard(company)?,
                agent: wildcard(agent)?,
            }),
            _ => Err(RouteParseError::Shape),
        }
    }
}

fn wildcard<T: FromStr<Err = IdError>>(text: &str) -> Result<Option<T>, IdError> {
    if text == ANY {
        Ok(None)
    } else {
        text.parse().map(Some)
    }
}

impl Serialize for Route {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Route {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::subject::SubjectModel;

    #[test]
    fn routes_round_trip_through_their_key_form() {
        for text in [
            "agent:c1:a1",
            "chat:c1:a1:ch1",
            "admin:c1:a1",
            "admin:*:a1",
            "admin:c1:*",
            "admin:*:*",
        ] {
            let route: Route = text.parse().unwrap();
            assert_eq!(route.to_string(), text);
            let json = serde_json::to_string(&route).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<Route>(&json).unwrap(), route);
        }
        assert!("agent:c1".parse::<Route>().is_err());
        assert!("chat:c1:a1:c.h".parse::<Route>().is_err());
    }

    #[test]
    fn routes_are_built_from_their_parts() {
        let routes = [
            Route::Agent {
                company: "c1".parse().unwrap(),
                agent: "a1".parse().unwrap(),
            },
            Route::Chat {
                company: "c1".parse().unwrap(),
                agent: "a1".parse().unwrap(),
                chat: "ch".parse().unwrap(),
            },
            Route::Admin {
                company: None,
                agent: Some("a1".parse().unwrap()),
            },
        ];
        let texts = ["agent:c1:a1", "chat:c1:a1:ch", "admin:*:a1"];
        for (route, text) in routes.iter().zip(texts) {
            assert_eq!(route.to_string(), text);
            assert_eq!(&text.parse::<Route>().unwrap(), route);
        }
    }

    #[test]
    fn malformed_routes_are_rejected() {
        for bad in [
            "",
            "agent:c1",
            "chat:c1:a1",
            "admins",
            "admins:x",
            "admin:c1",
            "admin:c.1:*",
            "agent:c1:a1:x",
            "user:c1:a1",
        ] {
            assert!(bad.parse::<Route>().is_err(), "{bad}");
        }
    }

    #[test]
    fn admin_queries_match_every_wildcard_combination() {
        let query = RouteQuery::Admins {
            company: "c1".parse().unwrap(),
            agent: "a1".parse().unwrap(),
        };
        let routes: Vec<String> = query
            .matching_routes()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            routes,
            ["admin:c1:a1", "admin:c1:*", "admin:*:a1", "admin:*:*"]
        );
    }

    #[test]
    fn queries_follow_the_delivery_rules() {
        let model = SubjectModel::default();
        let q = |s: &str| RouteQuery::for_target(&model.parse(s).unwrap().target());
        let (company, agent) = ("c".parse().unwrap(), "a".parse().unwrap());
        assert_eq!(
            q("websocket.c.a.chats"),
            [RouteQuery::Agent { company, agent }]
        );
        assert!(matches!(
            q("websocket.c.a.agents").as_slice(),
            [RouteQuery::Agent { .. }, RouteQuery::Admins { .. }]
        ));
        assert!(matches!(
            q("websocket.c.a.messages.x").as_slice(),
            [RouteQuery::Chat { chat, .. }] if chat.as_str() == "x"
        ));
        assert!(matches!(
            q("websocket.c.a.labels").as_slice(),
            [RouteQuery::Agent { .. }]
        ));
    }

    #[test]
    fn targets_map_to_the_routes_of_their_sockets() {
        let model = SubjectModel::default();
        let routes = |s: &str| -> Vec<String> {
            let target = model.parse(s).unwrap().target();
            RouteQuery::for_target(&target)
                .iter()
                .flat_map(RouteQuery::matching_routes)
                .map(|r| r.to_string())
                .collect()
        };
        assert_eq!(routes("websocket.c.a.chats"), ["agent:c:a"]);
        assert_eq!(
            routes("websocket.c.a.agents"),
            [
                "agent:c:a",
                "admin:c:a",
                "admin:c:*",
                "admin:*:a",
                "admin:*:*"
            ]
        );
        assert_eq!(routes("websocket.c.a.messages.x"), ["chat:c:a:x"]);
    }
}
