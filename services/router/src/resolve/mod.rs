//! Who wants an event: route queries derived from its subject, answered by the coordinator
//! (which pods hold interested sockets, and where those pods listen), behind a short-lived
//! cache ([`cache`]) that keeps the coordinator off the per-message path.

pub mod cache;
pub mod grpc;

use daisi_domain::subject::{DeliveryTarget, Scope};
use daisi_domain::{AgentId, ChatId, CompanyId, PodId};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

/// One question to the route registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteQuery {
    /// Pods with user sockets of the agent.
    Agent(CompanyId, AgentId),
    /// Pods with a user socket of the agent that selected the chat.
    Chat(CompanyId, AgentId, ChatId),
    /// Pods with admin sockets whose filter matches the agent.
    Admins(CompanyId, AgentId),
}

impl RouteQuery {
    /// The queries whose pods together receive an event for `target`.
    pub fn for_target(target: &DeliveryTarget) -> Vec<Self> {
        let (c, a) = (target.company.clone(), target.agent.clone());
        match &target.scope {
            Scope::Agent => vec![Self::Agent(c, a)],
            Scope::Chat(chat) => vec![Self::Chat(c, a, chat.clone())],
            Scope::AgentAndAdmins => vec![Self::Agent(c.clone(), a.clone()), Self::Admins(c, a)],
        }
    }
}

/// A pod and the address of its delivery endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pod {
    /// Pod id in the coordinator's registry.
    pub id: PodId,
    /// URI of its `EdgeDelivery` endpoint.
    pub address: Arc<str>,
}

/// The answer to a batch of queries: the pods of each, in query order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    /// One list per query.
    pub results: Vec<Vec<Pod>>,
}

/// What the pod registry says about one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodStatus {
    /// Registered and within its lease, at this address.
    Alive(Arc<str>),
    /// Not registered: its sockets are closed, events held for it can be given up.
    Gone,
}

/// The coordinator could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    /// Unreachable, timed out or overloaded: retry later.
    #[error("coordinator unavailable: {0}")]
    Unavailable(String),
    /// It refused the request (a bug on one side): retrying will not help.
    #[error("coordinator refused the lookup: {0}")]
    Refused(String),
}

/// The coordinator's route and pod registry, as the router needs it.
pub trait RouteResolver: Send + Sync + 'static {
    /// Pods interested in each query (any batch size; adapters split to the API's limits).
    fn lookup(
        &self,
        queries: &[RouteQuery],
    ) -> impl Future<Output = Result<Lookup, ResolveError>> + Send;

    /// Whether each pod is still registered, and where.
    fn resolve_pods(
        &self,
        pods: &[PodId],
    ) -> impl Future<Output = Result<HashMap<PodId, PodStatus>, ResolveError>> + Send;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use daisi_domain::subject::SubjectModel;

    #[test]
    fn queries_follow_the_delivery_rules() {
        let model = SubjectModel::default();
        let q = |s: &str| RouteQuery::for_target(&model.parse(s).unwrap().target());
        let (c, a) = ("c".parse().unwrap(), "a".parse().unwrap());
        assert_eq!(q("websocket.c.a.chats"), [RouteQuery::Agent(c, a)]);
        assert!(matches!(
            q("websocket.c.a.agents").as_slice(),
            [RouteQuery::Agent(..), RouteQuery::Admins(..)]
        ));
        assert!(matches!(
            q("websocket.c.a.messages.x").as_slice(),
            [RouteQuery::Chat(_, _, chat)] if chat.as_str() == "x"
        ));
        assert!(matches!(
            q("websocket.c.a.labels").as_slice(),
            [RouteQuery::Agent(..)]
        ));
    }
}
