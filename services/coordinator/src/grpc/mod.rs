//! The coordinator's gRPC API over a [`SessionStore`]: tonic is only the transport. Each
//! service validates its request (ids through the domain types, batch sizes against
//! `daisi_proto::limits`), calls the store, records metrics and renders the answer.

mod admin;
mod convert;
pub(crate) mod health;
mod pods;
mod routes;
mod sessions;
mod status;
mod watch;

pub(crate) use watch::Watchers;

use crate::metrics::CoordinatorMetrics;
use crate::store::SessionStore;
use daisi_proto::coordinator::v1::{
    coordinator_admin_server::CoordinatorAdminServer, pod_service_server::PodServiceServer,
    route_service_server::RouteServiceServer, session_service_server::SessionServiceServer,
};
use daisi_runtime::CancellationToken;
use daisi_runtime::internal::{Authenticate, InternalSecurity, Need};
use std::sync::Arc;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;

/// What every service shares.
#[derive(Debug)]
pub(crate) struct Shared<S> {
    pub(crate) store: Arc<S>,
    pub(crate) metrics: CoordinatorMetrics,
    /// Keep-alive period of command streams.
    pub(crate) watch_ping_interval: Duration,
    /// Named in `WatchSubscribed`, for the edge's logs.
    pub(crate) replica_id: String,
    /// Cancelled when the servers stop: command streams end cleanly.
    pub(crate) stop: CancellationToken,
    /// The command stream of each pod on this replica (one per pod).
    pub(crate) watchers: watch::Watchers,
}

type Guarded<T> = InterceptedService<T, Authenticate>;

/// The four services, each behind internal authentication, ready for `Server::add_service`.
/// Pod, session and route calls need any internal credential here and the right pod's in
/// the handlers (`Caller::check_pod`); the admin API needs the admin credential.
#[derive(Debug)]
pub(crate) struct Services<S: SessionStore> {
    pub(crate) sessions: Guarded<SessionServiceServer<sessions::Sessions<S>>>,
    pub(crate) routes: Guarded<RouteServiceServer<routes::Routes<S>>>,
    pub(crate) pods: Guarded<PodServiceServer<pods::Pods<S>>>,
    pub(crate) admin: Guarded<CoordinatorAdminServer<admin::Admin<S>>>,
}

pub(crate) fn services<S: SessionStore>(
    shared: Arc<Shared<S>>,
    security: &InternalSecurity,
) -> Services<S> {
    let any = security.authenticate(Need::Authenticated);
    Services {
        sessions: InterceptedService::new(
            SessionServiceServer::new(sessions::Sessions(shared.clone())),
            any.clone(),
        ),
        routes: InterceptedService::new(
            RouteServiceServer::new(routes::Routes(shared.clone())),
            any.clone(),
        ),
        pods: InterceptedService::new(PodServiceServer::new(pods::Pods(shared.clone())), any),
        admin: InterceptedService::new(
            CoordinatorAdminServer::new(admin::Admin(shared)),
            security.authenticate(Need::Admin),
        ),
    }
}
