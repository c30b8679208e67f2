//! `PodService`: heartbeats (registration and lease), deregistration, and resolution.

use super::Shared;
use super::convert::{self, id, invalid, within};
use super::status::from_store;
use crate::store::{HeartbeatOutcome, PodHeartbeat, SessionStore, StoreError};
use daisi_domain::PodId;
use daisi_proto::coordinator::v1::{self as pb, pod_service_server::PodService};
use daisi_proto::limits;
use daisi_runtime::internal::Caller;
use daisi_runtime::ratelog::RateLimit;
use std::sync::Arc;
use std::sync::LazyLock;
use tonic::{Request, Response, Status};

/// The pod service over a store.
#[derive(Debug)]
pub(crate) struct Pods<S>(pub(crate) Arc<Shared<S>>);

/// Heartbeats per pod lease: three, so one lost heartbeat never costs the lease.
const HEARTBEATS_PER_LEASE: u32 = 3;

/// Routers dial this address: it must be an absolute http(s) URI.
fn delivery_address(value: &str) -> Result<String, Status> {
    let ok = url::Url::parse(value)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if ok && value.len() <= 2048 {
        Ok(value.to_owned())
    } else {
        Err(invalid(
            "delivery_address must be an http:// or https:// URI with a host, e.g. http://10.1.2.3:50061",
        ))
    }
}

#[tonic::async_trait]
impl<S: SessionStore> PodService for Pods<S> {
    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let pod: PodId = id("", &request.pod_id)?;
        caller.check_pod(pod.as_str())?;
        let heartbeat = PodHeartbeat {
            pod,
            instance: convert::instance_id(&request.instance_id)?,
            delivery_address: delivery_address(&request.delivery_address)?,
            load: convert::load_in(request.load),
        };
        let shared = &self.0;
        let outcome = shared
            .metrics
            .timed("heartbeat", shared.store.heartbeat(&heartbeat))
            .await
            .map_err(from_store)?;
        let status = match outcome {
            HeartbeatOutcome::Renewed { .. } => pb::PodLeaseStatus::Renewed,
            HeartbeatOutcome::Registered { purged, .. } => {
                if purged.sessions > 0 || purged.routes > 0 {
                    shared.metrics.purged("new_instance");
                }
                tracing::info!(
                    pod = %heartbeat.pod,
                    instance = %heartbeat.instance,
                    address = %heartbeat.delivery_address,
                    purged_sessions = purged.sessions,
                    purged_routes = purged.routes,
                    "pod registered"
                );
                pb::PodLeaseStatus::Registered
            }
        };
        // The inbox repairs kills the pod's stream missed; failing to read it costs nothing
        // but a delay (the next heartbeat reads it again), so the heartbeat still succeeds.
        let commands = match shared
            .metrics
            .timed(
                "pod_inbox",
                shared
                    .store
                    .pod_inbox(&heartbeat.pod, request.commands_acked),
            )
            .await
        {
            Ok(entries) => entries.iter().map(convert::inbox_out).collect(),
            Err(error @ StoreError::Corrupt(_)) => {
                // A bug or foreign data, read again by every heartbeat: logged, not flooded.
                static LOG: LazyLock<RateLimit> =
                    LazyLock::new(|| RateLimit::new(std::time::Duration::from_secs(60)));
                if let Some(repeats) = LOG.check("inbox") {
                    tracing::error!(pod = %heartbeat.pod, %error, repeats, "pod inbox unreadable");
                }
                Vec::new()
            }
            Err(error) => {
                tracing::debug!(pod = %heartbeat.pod, %error, "pod inbox not read");
                Vec::new()
            }
        };
        let settings = shared.store.settings();
        Ok(Response::new(pb::HeartbeatResponse {
            commands,
            status: status as i32,
            pod_lease_ttl: Some(convert::duration(settings.pod_lease)),
            heartbeat_interval: Some(convert::duration(settings.pod_lease / HEARTBEATS_PER_LEASE)),
            // Sessions live with the pod's registration; edges audit at their own interval.
            session_lease_ttl: Some(convert::duration(settings.pod_lease)),
            renew_interval: None,
            registration: outcome.registration(),
        }))
    }

    async fn deregister(
        &self,
        request: Request<pb::DeregisterRequest>,
    ) -> Result<Response<pb::DeregisterResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let pod: PodId = id("", &request.pod_id)?;
        caller.check_pod(pod.as_str())?;
        let instance = convert::instance_id(&request.instance_id)?;
        let shared = &self.0;
        let purged = shared
            .metrics
            .timed("deregister", shared.store.deregister(&pod, &instance))
            .await
            .map_err(from_store)?;
        shared.metrics.purged("deregistered");
        tracing::info!(
            %pod,
            %instance,
            sessions = purged.sessions,
            routes = purged.routes,
            "pod deregistered"
        );
        Ok(Response::new(pb::DeregisterResponse {
            sessions_purged: purged.sessions,
            routes_purged: purged.routes,
        }))
    }

    async fn resolve_pods(
        &self,
        request: Request<pb::ResolvePodsRequest>,
    ) -> Result<Response<pb::ResolvePodsResponse>, Status> {
        let request = request.into_inner();
        within("pod_ids", request.pod_ids.len(), limits::MAX_RESOLVE_BATCH)?;
        let pods = request
            .pod_ids
            .iter()
            .enumerate()
            .map(|(i, p)| id(&format!("pod_ids[{i}]"), p))
            .collect::<Result<Vec<PodId>, _>>()?;
        let shared = &self.0;
        let resolved = shared
            .metrics
            .timed("resolve_pods", shared.store.resolve_pods(&pods))
            .await
            .map_err(from_store)?;
        Ok(Response::new(pb::ResolvePodsResponse {
            pods: resolved.pods.iter().map(convert::pod_out).collect(),
            unknown_pod_ids: resolved
                .unknown
                .into_iter()
                .map(PodId::into_string)
                .collect(),
        }))
    }
}
