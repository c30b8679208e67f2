//! `RouteService`: register, unregister and list a pod's routes, and the routers' batched
//! lookup.

use super::Shared;
use super::convert::{self, id, within};
use super::status::from_store;
use crate::store::{RouteSelector, SessionStore};
use daisi_domain::PodId;
use daisi_proto::coordinator::v1::{self as pb, route_service_server::RouteService};
use daisi_proto::limits;
use daisi_runtime::internal::Caller;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The route service over a store.
#[derive(Debug)]
pub(crate) struct Routes<S>(pub(crate) Arc<Shared<S>>);

#[tonic::async_trait]
impl<S: SessionStore> RouteService for Routes<S> {
    async fn register_routes(
        &self,
        request: Request<pb::RegisterRoutesRequest>,
    ) -> Result<Response<pb::RegisterRoutesResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let pod: PodId = id("", &request.pod_id)?;
        caller.check_pod(pod.as_str())?;
        within("routes", request.routes.len(), limits::MAX_ROUTE_BATCH)?;
        let routes = convert::routes("routes", &request.routes)?;
        let shared = &self.0;
        shared
            .metrics
            .timed(
                "register_routes",
                shared.store.register_routes(&pod, &routes),
            )
            .await
            .map_err(from_store)?;
        Ok(Response::new(pb::RegisterRoutesResponse {}))
    }

    async fn unregister_routes(
        &self,
        request: Request<pb::UnregisterRoutesRequest>,
    ) -> Result<Response<pb::UnregisterRoutesResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let pod: PodId = id("", &request.pod_id)?;
        caller.check_pod(pod.as_str())?;
        within("routes", request.routes.len(), limits::MAX_ROUTE_BATCH)?;
        let routes = convert::routes("routes", &request.routes)?;
        let shared = &self.0;
        shared
            .metrics
            .timed(
                "unregister_routes",
                shared.store.unregister_routes(&pod, &routes),
            )
            .await
            .map_err(from_store)?;
        Ok(Response::new(pb::UnregisterRoutesResponse {}))
    }

    async fn lookup_routes(
        &self,
        request: Request<pb::LookupRoutesRequest>,
    ) -> Result<Response<pb::LookupRoutesResponse>, Status> {
        let request = request.into_inner();
        within("queries", request.queries.len(), limits::MAX_LOOKUP_BATCH)?;
        let queries = request
            .queries
            .iter()
            .enumerate()
            .map(|(i, q)| convert::route_query(&format!("queries[{i}]"), q))
            .collect::<Result<Vec<_>, _>>()?;
        let shared = &self.0;
        let lookup = shared
            .metrics
            .timed("lookup_routes", shared.store.lookup_routes(&queries))
            .await
            .map_err(from_store)?;
        Ok(Response::new(pb::LookupRoutesResponse {
            results: lookup
                .results
                .into_iter()
                .map(|pods| pb::RouteLookupResult {
                    pod_ids: pods.into_iter().map(PodId::into_string).collect(),
                })
                .collect(),
            pods: lookup.pods.iter().map(convert::pod_out).collect(),
        }))
    }

    async fn list_pod_routes(
        &self,
        request: Request<pb::ListPodRoutesRequest>,
    ) -> Result<Response<pb::ListPodRoutesResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let pod: PodId = id("", &request.pod_id)?;
        caller.check_pod(pod.as_str())?;
        let page = convert::page(request.page_size, request.page_token);
        let shared = &self.0;
        let page = shared
            .metrics
            .timed(
                "list_routes",
                shared.store.list_routes(&RouteSelector::Pod(pod), &page),
            )
            .await
            .map_err(from_store)?;
        Ok(Response::new(pb::ListPodRoutesResponse {
            routes: page
                .items
                .iter()
                .map(|e| pb::Route::from(&e.route))
                .collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }
}
