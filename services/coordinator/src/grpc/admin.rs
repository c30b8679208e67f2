//! `CoordinatorAdmin`: the operations API for internal teams (grpcurl with reflection).

use super::Shared;
use super::convert::{self, id, invalid};
use super::status::from_store;
use crate::store::{EndReason, RouteSelector, SessionFilter, SessionStore};
use daisi_domain::ConnectionId;
use daisi_proto::coordinator::v1::{self as pb, coordinator_admin_server::CoordinatorAdmin};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Longest accepted kill reason: it is logged and carried in the kill command.
const MAX_REASON_BYTES: usize = 1024;

/// The admin service over a store.
#[derive(Debug)]
pub(crate) struct Admin<S>(pub(crate) Arc<Shared<S>>);

#[tonic::async_trait]
impl<S: SessionStore> CoordinatorAdmin for Admin<S> {
    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        use pb::list_sessions_request::Filter;
        let request = request.into_inner();
        let filter = match request.filter {
            Some(Filter::CompanyId(company)) => SessionFilter::Company(id("", &company)?),
            Some(Filter::Agent(agent)) => SessionFilter::Agent(
                id("agent", &agent.company_id)?,
                id("agent", &agent.agent_id)?,
            ),
            Some(Filter::Admins(_)) => SessionFilter::Admins,
            None => return Err(invalid("filter is required: company_id, agent or admins")),
        };
        let page = convert::page(request.page_size, request.page_token);
        let shared = &self.0;
        let page = shared
            .metrics
            .timed("list_sessions", shared.store.list_sessions(&filter, &page))
            .await
            .map_err(from_store)?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: page.items.iter().map(convert::session_out).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::GetSessionResponse>, Status> {
        let key = convert::session_key("key", request.into_inner().key.as_ref())?;
        let shared = &self.0;
        let session = shared
            .metrics
            .timed("get_session", shared.store.get_session(&key))
            .await
            .map_err(from_store)?
            .ok_or_else(|| Status::not_found(format!("nobody holds session {key}")))?;
        Ok(Response::new(pb::GetSessionResponse {
            session: Some(convert::session_out(&session)),
        }))
    }

    async fn kill_session(
        &self,
        request: Request<pb::KillSessionRequest>,
    ) -> Result<Response<pb::KillSessionResponse>, Status> {
        let request = request.into_inner();
        let key = convert::session_key("key", request.key.as_ref())?;
        let reason = request.reason.trim();
        if reason.is_empty() {
            return Err(invalid("reason is required (it goes to the audit log)"));
        }
        if reason.len() > MAX_REASON_BYTES {
            return Err(invalid(format!(
                "reason must be at most {MAX_REASON_BYTES} bytes"
            )));
        }
        let connection: Option<ConnectionId> = (!request.connection_id.is_empty())
            .then(|| id("", &request.connection_id))
            .transpose()?;
        let shared = &self.0;
        let killed = shared
            .metrics
            .timed(
                "kill_session",
                shared.store.kill_session(&key, connection.as_ref(), reason),
            )
            .await
            .map_err(from_store)?;
        if let Some(session) = &killed {
            shared.metrics.killed(EndReason::KilledByAdmin);
            tracing::info!(
                %key,
                pod = %session.holder.pod,
                connection = %session.holder.connection,
                reason,
                "session killed by an operator"
            );
        }
        Ok(Response::new(pb::KillSessionResponse {
            killed: killed.is_some(),
            session: killed.as_ref().map(convert::session_out),
        }))
    }

    async fn list_pods(
        &self,
        request: Request<pb::ListPodsRequest>,
    ) -> Result<Response<pb::ListPodsResponse>, Status> {
        let request = request.into_inner();
        let page = convert::page(request.page_size, request.page_token);
        let shared = &self.0;
        let page = shared
            .metrics
            .timed("list_pods", shared.store.list_pods(&page))
            .await
            .map_err(from_store)?;
        Ok(Response::new(pb::ListPodsResponse {
            pods: page.items.iter().map(convert::pod_out).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn get_routes(
        &self,
        request: Request<pb::GetRoutesRequest>,
    ) -> Result<Response<pb::GetRoutesResponse>, Status> {
        use pb::get_routes_request::Selector;
        let request = request.into_inner();
        let selector = match request.selector {
            Some(Selector::Route(route)) => RouteSelector::Route(convert::route("route", &route)?),
            Some(Selector::PodId(pod)) => RouteSelector::Pod(id("", &pod)?),
            None => return Err(invalid("selector is required: route or pod_id")),
        };
        let page = convert::page(request.page_size, request.page_token);
        let shared = &self.0;
        let page = shared
            .metrics
            .timed("list_routes", shared.store.list_routes(&selector, &page))
            .await
            .map_err(from_store)?;
        Ok(Response::new(pb::GetRoutesResponse {
            entries: page
                .items
                .iter()
                .map(|e| pb::RouteEntry {
                    route: Some(pb::Route::from(&e.route)),
                    pod_id: e.pod.to_string(),
                })
                .collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }
}
