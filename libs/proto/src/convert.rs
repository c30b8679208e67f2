//! Between the domain vocabulary ([`daisi_domain`]) and the generated messages that carry it on
//! the wire, for the types every service exchanges: session keys, routes and route queries.
//!
//! Rendering cannot fail (`From`). Parsing validates every id with the domain types and takes
//! the `field` the message sits at in its request (`sessions[3].key`), so the error names the
//! field and the rule broken; a server answers it as `INVALID_ARGUMENT` (`From<ConvertError>
//! for tonic::Status`), a client that only needs "valid or not" calls `.ok()`.

use std::str::FromStr;

use daisi_domain::coordination::{Route, RouteQuery};
use daisi_domain::{IdError, SessionKey};

use crate::coordinator::v1 as pb;

/// A message that does not hold a valid domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// An id breaks the id rules.
    #[error("{}", at(field, error))]
    Id {
        /// Where the id sits in the request (empty: the request itself).
        field: String,
        /// The rule it breaks, naming the id.
        error: IdError,
    },
    /// A required message or `oneof` is not set.
    #[error("{field} {expected}")]
    Missing {
        /// Where it is missing.
        field: String,
        /// What should have been there.
        expected: &'static str,
    },
}

fn at(field: &str, error: &IdError) -> String {
    if field.is_empty() {
        error.to_string()
    } else {
        format!("{field}: {error}")
    }
}

impl From<ConvertError> for tonic::Status {
    fn from(error: ConvertError) -> Self {
        Self::invalid_argument(error.to_string())
    }
}

/// Validates one id; `field` locates it in the request.
pub fn id<T: FromStr<Err = IdError>>(field: &str, value: &str) -> Result<T, ConvertError> {
    value.parse().map_err(|error| ConvertError::Id {
        field: field.to_owned(),
        error,
    })
}

/// An id where empty means "any".
fn optional_id<T: FromStr<Err = IdError>>(
    field: &str,
    value: &str,
) -> Result<Option<T>, ConvertError> {
    if value.is_empty() {
        Ok(None)
    } else {
        id(field, value).map(Some)
    }
}

/// The session key at `field`, which is required.
pub fn session_key(field: &str, key: Option<&pb::SessionKey>) -> Result<SessionKey, ConvertError> {
    use pb::session_key::Kind;
    match key.and_then(|k| k.kind.as_ref()) {
        Some(Kind::User(user)) => {
            let field = format!("{field}.user");
            Ok(SessionKey::user(
                id(&field, &user.company_id)?,
                id(&field, &user.agent_id)?,
                id(&field, &user.user_id)?,
            ))
        }
        Some(Kind::Admin(admin)) => Ok(SessionKey::admin(id(
            &format!("{field}.admin"),
            &admin.admin_id,
        )?)),
        None => Err(ConvertError::Missing {
            field: field.to_owned(),
            expected: "is required: a user key (company_id, agent_id, user_id) or an admin key",
        }),
    }
}

/// The route at `field`; empty admin filters mean "any".
pub fn route(field: &str, route: &pb::Route) -> Result<Route, ConvertError> {
    use pb::route::Kind;
    match &route.kind {
        Some(Kind::Agent(r)) => Ok(Route::Agent {
            company: id(field, &r.company_id)?,
            agent: id(field, &r.agent_id)?,
        }),
        Some(Kind::Chat(r)) => Ok(Route::Chat {
            company: id(field, &r.company_id)?,
            agent: id(field, &r.agent_id)?,
            chat: id(field, &r.chat_id)?,
        }),
        Some(Kind::Admin(r)) => Ok(Route::Admin {
            company: optional_id(field, &r.company_id)?,
            agent: optional_id(field, &r.agent_id)?,
        }),
        None => Err(ConvertError::Missing {
            field: field.to_owned(),
            expected: "must be an agent, chat or admin route",
        }),
    }
}

/// The routes of a repeated `field`, each located by its index.
pub fn routes(field: &str, routes: &[pb::Route]) -> Result<Vec<Route>, ConvertError> {
    routes
        .iter()
        .enumerate()
        .map(|(i, r)| route(&format!("{field}[{i}]"), r))
        .collect()
}

/// The route query at `field`.
pub fn route_query(field: &str, query: &pb::RouteQuery) -> Result<RouteQuery, ConvertError> {
    use pb::route_query::Target;
    match &query.target {
        Some(Target::Agent(r)) => Ok(RouteQuery::Agent {
            company: id(field, &r.company_id)?,
            agent: id(field, &r.agent_id)?,
        }),
        Some(Target::Chat(r)) => Ok(RouteQuery::Chat {
            company: id(field, &r.company_id)?,
            agent: id(field, &r.agent_id)?,
            chat: id(field, &r.chat_id)?,
        }),
        Some(Target::Admins(r)) => Ok(RouteQuery::Admins {
            company: id(field, &r.company_id)?,
            agent: id(field, &r.agent_id)?,
        }),
        None => Err(ConvertError::Missing {
            field: field.to_owned(),
            expected: "must be an agent, chat or admins query",
        }),
    }
}

impl From<&SessionKey> for pb::SessionKey {
    fn from(key: &SessionKey) -> Self {
        use pb::session_key::Kind;
        let kind = match key {
            SessionKey::User {
                company,
                agent,
                user,
            } => Kind::User(pb::UserSessionKey {
                company_id: company.to_string(),
                agent_id: agent.to_string(),
                user_id: user.to_string(),
            }),
            SessionKey::Admin { admin } => Kind::Admin(pb::AdminSessionKey {
                admin_id: admin.to_string(),
            }),
        };
        Self { kind: Some(kind) }
    }
}

impl From<&Route> for pb::Route {
    fn from(route: &Route) -> Self {
        use pb::route::Kind;
        let kind = match route {
            Route::Agent { company, agent } => Kind::Agent(pb::AgentRoute {
                company_id: company.to_string(),
                agent_id: agent.to_string(),
            }),
            Route::Chat {
                company,
                agent,
                chat,
            } => Kind::Chat(pb::ChatRoute {
                company_id: company.to_string(),
                agent_id: agent.to_string(),
                chat_id: chat.to_string(),
            }),
            Route::Admin { company, agent } => Kind::Admin(pb::AdminRoute {
                company_id: company
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                agent_id: agent.as_ref().map(ToString::to_string).unwrap_or_default(),
            }),
        };
        Self { kind: Some(kind) }
    }
}

impl From<&RouteQuery> for pb::RouteQuery {
    fn from(query: &RouteQuery) -> Self {
        use pb::route_query::Target;
        let agent =
            |company: &daisi_domain::CompanyId, agent: &daisi_domain::AgentId| pb::AgentRoute {
                company_id: company.to_string(),
                agent_id: agent.to_string(),
            };
        let target = match query {
            RouteQuery::Agent { company, agent: a } => Target::Agent(agent(company, a)),
            RouteQuery::Admins { company, agent: a } => Target::Admins(agent(company, a)),
            RouteQuery::Chat {
                company,
                agent,
                chat,
            } => Target::Chat(pb::ChatRoute {
                company_id: company.to_string(),
                agent_id: agent.to_string(),
                chat_id: chat.to_string(),
            }),
        };
        Self {
            target: Some(target),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn invalid_ids_name_the_field_and_the_rule() {
        let key = pb::SessionKey {
            kind: Some(pb::session_key::Kind::User(pb::UserSessionKey {
                company_id: "c.1".to_owned(),
                agent_id: "a".to_owned(),
                user_id: "u".to_owned(),
            })),
        };
        let err = session_key("key", Some(&key)).unwrap_err();
        assert_eq!(err.to_string(), "key.user: company_id must not contain '.'");
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let err = session_key("key", None).unwrap_err();
        assert!(err.to_string().starts_with("key is required"), "{err}");
        let rule = "".parse::<daisi_domain::AgentId>().unwrap_err().to_string();
        let err = id::<daisi_domain::AgentId>("", "").unwrap_err();
        assert_eq!(err.to_string(), rule);
        let err = route_query("queries[0]", &pb::RouteQuery { target: None }).unwrap_err();
        assert_eq!(
            err.to_string(),
            "queries[0] must be an agent, chat or admins query"
        );
    }

    #[test]
    fn domain_values_survive_the_wire() {
        for text in ["u:c1:a1:u1", "a:root"] {
            let key: SessionKey = text.parse().unwrap();
            let wire = pb::SessionKey::from(&key);
            assert_eq!(session_key("key", Some(&wire)).unwrap(), key);
        }
        let texts = [
            "agent:c1:a1",
            "chat:c1:a1:ch1",
            "admin:c1:a1",
            "admin:*:a1",
            "admin:*:*",
        ];
        let domain: Vec<Route> = texts.iter().map(|t| t.parse().unwrap()).collect();
        let wire: Vec<pb::Route> = domain.iter().map(pb::Route::from).collect();
        assert_eq!(routes("routes", &wire).unwrap(), domain);
        let (company, agent): (daisi_domain::CompanyId, daisi_domain::AgentId) =
            ("c1".parse().unwrap(), "a1".parse().unwrap());
        for query in [
            RouteQuery::Admins {
                company: company.clone(),
                agent: agent.clone(),
            },
            RouteQuery::Chat {
                company,
                agent,
                chat: "ch".parse().unwrap(),
            },
        ] {
            let wire = pb::RouteQuery::from(&query);
            assert_eq!(route_query("query", &wire).unwrap(), query);
        }
    }

    #[test]
    fn empty_admin_filters_mean_any_but_other_routes_need_ids() {
        let admin = pb::Route {
            kind: Some(pb::route::Kind::Admin(pb::AdminRoute::default())),
        };
        assert_eq!(
            route("route", &admin).unwrap(),
            Route::Admin {
                company: None,
                agent: None
            }
        );
        let agent = pb::Route {
            kind: Some(pb::route::Kind::Agent(pb::AgentRoute::default())),
        };
        let err = routes("routes", &[admin, agent]).unwrap_err();
        assert!(err.to_string().starts_with("routes[1]: "), "{err}");
    }
}
