//! Who wants an event: route queries derived from its subject, answered by the coordinator
//! (which pods hold interested sockets, and where those pods listen), behind a short-lived
//! cache ([`cache`]) that keeps the coordinator off the per-message path.

pub mod cache;
pub mod grpc;

/// One question to the route registry; [`RouteQuery::for_target`] derives them from a subject.
pub use daisi_domain::coordination::RouteQuery;

use daisi_domain::PodId;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

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
