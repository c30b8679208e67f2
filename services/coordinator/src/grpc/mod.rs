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

use crate::metrics::CoordinatorMetrics;
use crate::store::SessionStore;
use daisi_proto::coordinator::v1::{
    coordinator_admin_server::CoordinatorAdminServer, pod_service_server::PodServiceServer,
    route_service_server::RouteServiceServer, session_service_server::SessionServiceServer,
};
use daisi_runtime::CancellationToken;
use std::sync::Arc;
use std::time::Duration;

/// What every service shares.
#[derive(Debug)]
pub(crate) struct Shared<S> {
    pub(crate) store: Arc<S>,
    pub(crate) metrics: CoordinatorMetrics,
    /// Edges renew this often (told in heartbeat answers).
    pub(crate) renew_interval: Duration,
    /// Keep-alive period of command streams.
    pub(crate) watch_ping_interval: Duration,
    /// Named in `WatchSubscribed`, for the edge's logs.
    pub(crate) replica_id: String,
    /// Cancelled when the servers stop: command streams end cleanly.
    pub(crate) stop: CancellationToken,
}

/// The four services, ready for `Server::add_service`.
#[derive(Debug)]
pub(crate) struct Services<S: SessionStore> {
    pub(crate) sessions: SessionServiceServer<sessions::Sessions<S>>,
    pub(crate) routes: RouteServiceServer<routes::Routes<S>>,
    pub(crate) pods: PodServiceServer<pods::Pods<S>>,
    pub(crate) admin: CoordinatorAdminServer<admin::Admin<S>>,
}

pub(crate) fn services<S: SessionStore>(shared: Arc<Shared<S>>) -> Services<S> {
    Services {
        sessions: SessionServiceServer::new(sessions::Sessions(shared.clone())),
        routes: RouteServiceServer::new(routes::Routes(shared.clone())),
        pods: PodServiceServer::new(pods::Pods(shared.clone())),
        admin: CoordinatorAdminServer::new(admin::Admin(shared)),
    }
}
