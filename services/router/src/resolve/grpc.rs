//! The coordinator's `RouteService.LookupRoutes` and `PodService.ResolvePods` over gRPC, split
//! into calls of at most the API's batch limits.

use super::{Lookup, Pod, PodStatus, ResolveError, RouteQuery, RouteResolver};
use daisi_domain::PodId;
use daisi_proto::coordinator::v1 as pb;
use daisi_proto::coordinator::v1::pod_service_client::PodServiceClient;
use daisi_proto::coordinator::v1::route_service_client::RouteServiceClient;
use daisi_proto::limits::{MAX_LOOKUP_BATCH, MAX_RESOLVE_BATCH};
use daisi_runtime::failover::{CallError, FailoverChannel};
use daisi_runtime::internal::ClientAuth;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The coordinator as a [`RouteResolver`].
#[derive(Debug, Clone)]
pub struct GrpcResolver {
    channel: FailoverChannel,
    /// Budget of one lookup, retries on the next replica included.
    timeout: Duration,
}

impl GrpcResolver {
    /// A resolver for the coordinator replicas at `urls` (one Service URL, or several to fail
    /// over between); connects lazily and reconnects by itself. Every call is bounded by
    /// `timeout`; a replica that does not answer within the per-attempt deadline (half of it
    /// with several replicas) is left and the lookup sent to the next one.
    /// Calls carry `auth`, the router's credentials.
    pub fn new(urls: &[Url], timeout: Duration, auth: &ClientAuth) -> Result<Self, String> {
        let attempt = FailoverChannel::attempt_timeout_for(timeout, urls.len());
        let channel = FailoverChannel::with_auth(urls, auth, |endpoint| {
            endpoint
                .connect_timeout(attempt)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(timeout)
                .keep_alive_while_idle(true)
        })
        .map_err(|e| format!("invalid coordinator url: {e}"))?
        .attempt_timeout(attempt);
        Ok(Self { channel, timeout })
    }

    /// One idempotent call within the budget, retried on the next replica when its replica
    /// did not answer.
    async fn call<T, Fut>(&self, make: impl FnMut() -> Fut) -> Result<T, ResolveError>
    where
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match self.channel.call_idempotent(self.timeout, make).await {
            Ok(response) => Ok(response.into_inner()),
            Err(CallError::Status(status)) => Err(error(&status)),
            Err(CallError::TimedOut(budget)) => Err(ResolveError::Unavailable(format!(
                "no answer within {budget:?}"
            ))),
        }
    }
}

fn error(status: &tonic::Status) -> ResolveError {
    use tonic::Code;
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Cancelled
        | Code::Unknown
        | Code::Internal => ResolveError::Unavailable(status.message().to_owned()),
        // A credential the coordinator does not accept, or a coordinator without the method:
        // configuration or version skew, not the events' fault. Refusing would acknowledge
        // every event of the chunk as undeliverable (lost) while readiness stays up; waiting,
        // not ready, until it is fixed loses nothing.
        Code::Unauthenticated | Code::PermissionDenied | Code::Unimplemented => {
            ResolveError::Unavailable(format!(
                "{:?} from the coordinator (check the router's internal credential and versions): {}",
                status.code(),
                status.message()
            ))
        }
        code => ResolveError::Refused(format!("{code:?}: {}", status.message())),
    }
}

impl RouteResolver for GrpcResolver {
    async fn lookup(&self, queries: &[RouteQuery]) -> Result<Lookup, ResolveError> {
        let mut results = Vec::with_capacity(queries.len());
        // No queries still makes one (empty) call: it doubles as the readiness probe.
        let mut chunks: Vec<&[RouteQuery]> = queries.chunks(MAX_LOOKUP_BATCH).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for chunk in chunks {
            let request = pb::LookupRoutesRequest {
                queries: chunk.iter().map(pb::RouteQuery::from).collect(),
            };
            let response = self
                .call(|| {
                    let mut client = RouteServiceClient::new(self.channel.clone());
                    let request = request.clone();
                    async move { client.lookup_routes(request).await }
                })
                .await?;
            if response.results.len() != chunk.len() {
                return Err(ResolveError::Refused(format!(
                    "{} results for {} queries",
                    response.results.len(),
                    chunk.len()
                )));
            }
            let addresses: HashMap<String, Arc<str>> = response
                .pods
                .into_iter()
                .map(|p| (p.pod_id, Arc::from(p.delivery_address)))
                .collect();
            for result in response.results {
                // A pod without an address (lease lapsed between the two reads of the
                // coordinator) or with an invalid id cannot be delivered to: skip it.
                let pods = result
                    .pod_ids
                    .into_iter()
                    .filter_map(|id| {
                        let address = addresses.get(&id)?.clone();
                        Some(Pod {
                            id: id.parse().ok()?,
                            address,
                        })
                    })
                    .collect();
                results.push(pods);
            }
        }
        Ok(Lookup { results })
    }

    async fn resolve_pods(
        &self,
        pods: &[PodId],
    ) -> Result<HashMap<PodId, PodStatus>, ResolveError> {
        let mut statuses = HashMap::with_capacity(pods.len());
        for chunk in pods.chunks(MAX_RESOLVE_BATCH) {
            let request = pb::ResolvePodsRequest {
                pod_ids: chunk.iter().map(|p| p.as_str().to_owned()).collect(),
            };
            let response = self
                .call(|| {
                    let mut client = PodServiceClient::new(self.channel.clone());
                    let request = request.clone();
                    async move { client.resolve_pods(request).await }
                })
                .await?;
            for info in response.pods {
                if let Ok(id) = info.pod_id.parse() {
                    statuses.insert(id, PodStatus::Alive(Arc::from(info.delivery_address)));
                }
            }
            for id in response.unknown_pod_ids {
                if let Ok(id) = id.parse() {
                    statuses.insert(id, PodStatus::Gone);
                }
            }
        }
        Ok(statuses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_and_version_failures_wait_rather_than_refuse_the_events() {
        for status in [
            tonic::Status::unauthenticated("no credential"),
            tonic::Status::permission_denied("not a router"),
            tonic::Status::unimplemented("older coordinator"),
            tonic::Status::unavailable("down"),
        ] {
            assert!(
                matches!(error(&status), ResolveError::Unavailable(_)),
                "{status:?}"
            );
        }
        assert!(matches!(
            error(&tonic::Status::invalid_argument("too many queries")),
            ResolveError::Refused(_)
        ));
    }
}
