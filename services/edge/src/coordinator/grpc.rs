//! [`Coordinator`] over tonic: lazily connected HTTP/2 channels to the coordinator replicas
//! (failing over between them when one is unreachable) that reconnect by themselves,
//! every unary call bounded by a timeout, and errors folded into [`CoordinatorError`] so the
//! rest of the edge never sees a `tonic::Status`.

use super::convert::{
    command_from_pb, duration_from_pb, held_from_pb, held_to_pb, holder_from_pb, reason_from_pb,
};
use super::{
    AcquireMode, AcquireOutcome, AcquireRequest, CommandStream, Coordinator, CoordinatorError,
    HeartbeatOutcome, HeldSession, Load, LostSession, PodIdentity, Route,
};
use daisi_domain::{ChatId, PodId};
use daisi_proto::coordinator::v1 as pb;
use daisi_proto::limits;
use daisi_runtime::failover::{CallError, FailoverChannel};
use daisi_runtime::internal::ClientAuth;
use futures_util::StreamExt;
use pb::pod_service_client::PodServiceClient;
use pb::route_service_client::RouteServiceClient;
use pb::session_service_client::SessionServiceClient;
use std::future::Future;
use std::time::Duration;
use url::Url;

/// tonic clients of the coordinator's pod, session and route services.
#[derive(Debug, Clone)]
pub struct GrpcCoordinator {
    channel: FailoverChannel,
    /// Bound of each unary call: a coordinator slower than this counts as unavailable, so the
    /// edge answers 503 instead of holding the client's upgrade open.
    timeout: Duration,
}

impl GrpcCoordinator {
    /// A client of the coordinator replicas at `urls`. Connects lazily: the edge starts (and
    /// reports not ready) while the coordinator is down, and reconnects whenever the
    /// connection breaks, moving to the next replica when one is unreachable.
    pub fn new(urls: &[Url], timeout: Duration) -> Result<Self, CoordinatorError> {
        Self::with_auth(urls, timeout, &ClientAuth::none())
    }

    /// Like [`GrpcCoordinator::new`]; calls carry `auth`, the credentials of this pod.
    pub fn with_auth(
        urls: &[Url],
        timeout: Duration,
        auth: &ClientAuth,
    ) -> Result<Self, CoordinatorError> {
        let channel = FailoverChannel::with_auth(urls, auth, |endpoint| {
            endpoint
                .connect_timeout(timeout.min(Duration::from_secs(1)))
                .tcp_nodelay(true)
                // Detects a silently dead coordinator connection (and keeps the command
                // stream's connection open through idle NAT/conntrack timeouts).
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true)
        })
        .map_err(|e| CoordinatorError::Rejected(format!("coordinator url: {e}")))?;
        // A silent replica is left after one attempt, with time left for the next one.
        let attempt = FailoverChannel::attempt_timeout_for(timeout, urls.len());
        let channel = channel.attempt_timeout(attempt);
        Ok(Self { channel, timeout })
    }

    fn sessions(&self) -> SessionServiceClient<FailoverChannel> {
        SessionServiceClient::new(self.channel.clone())
    }

    fn routes(&self) -> RouteServiceClient<FailoverChannel> {
        RouteServiceClient::new(self.channel.clone())
    }

    fn pods(&self) -> PodServiceClient<FailoverChannel> {
        PodServiceClient::new(self.channel.clone())
    }

    /// One call, bounded by the timeout. When its replica does not answer (unreachable, or
    /// silent past the channel's per-attempt deadline; the channel moves on), it is sent again
    /// to the next replica within the same bound: every coordinator call of the edge is
    /// idempotent (acquire by the same connection returns the same grant; renew, release,
    /// registration and heartbeat converge).
    async fn call<T, Fut>(&self, make: impl Fn() -> Fut) -> Result<T, CoordinatorError>
    where
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match self.channel.call_idempotent(self.timeout, make).await {
            Ok(response) => Ok(response.into_inner()),
            Err(CallError::Status(status)) => Err(from_status(&status)),
            Err(CallError::TimedOut(budget)) => Err(CoordinatorError::Unavailable(format!(
                "no answer within {budget:?}"
            ))),
        }
    }
}

fn from_status(status: &tonic::Status) -> CoordinatorError {
    use tonic::Code;
    match status.code() {
        Code::FailedPrecondition => CoordinatorError::UnknownPod,
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Unknown
        | Code::Internal => {
            CoordinatorError::Unavailable(format!("{:?}: {}", status.code(), status.message()))
        }
        code => CoordinatorError::Rejected(format!("{code:?}: {}", status.message())),
    }
}

impl Coordinator for GrpcCoordinator {
    async fn heartbeat(
        &self,
        pod: &PodIdentity,
        load: Load,
        acked: u64,
    ) -> Result<HeartbeatOutcome, CoordinatorError> {
        let request = pb::HeartbeatRequest {
            commands_acked: acked,
            pod_id: pod.pod.to_string(),
            instance_id: pod.instance.clone(),
            delivery_address: pod.delivery_address.clone(),
            load: Some(pb::PodLoad {
                user_sockets: load.user_sockets,
                admin_sockets: load.admin_sockets,
            }),
        };
        let response = self
            .call(|| {
                let (mut client, request) = (self.pods(), request.clone());
                async move { client.heartbeat(request).await }
            })
            .await?;
        Ok(HeartbeatOutcome {
            registered: response.status == pb::PodLeaseStatus::Registered as i32,
            registration: response.registration,
            heartbeat_interval: duration_from_pb(
                response.heartbeat_interval.as_ref(),
                Duration::from_secs(10),
            ),
            commands_through: response
                .commands
                .iter()
                .map(|c| c.sequence)
                .max()
                .unwrap_or(0),
            commands: response
                .commands
                .into_iter()
                .filter_map(super::convert::inbox_from_pb)
                .collect(),
        })
    }

    async fn deregister(&self, pod: &PodIdentity) -> Result<(), CoordinatorError> {
        let request = pb::DeregisterRequest {
            pod_id: pod.pod.to_string(),
            instance_id: pod.instance.clone(),
        };
        self.call(|| {
            let (mut client, request) = (self.pods(), request.clone());
            async move { client.deregister(request).await }
        })
        .await
        .map(drop)
    }

    async fn acquire(
        &self,
        pod: &PodId,
        request: AcquireRequest,
    ) -> Result<AcquireOutcome, CoordinatorError> {
        let mode = match request.mode {
            AcquireMode::Takeover => pb::AcquireMode::Takeover,
            AcquireMode::IfVacant => pb::AcquireMode::IfVacant,
        };
        let request = pb::AcquireRequest {
            key: Some(pb::SessionKey::from(&request.key)),
            pod_id: pod.to_string(),
            connection_id: request.connection.to_string(),
            mode: mode as i32,
            routes: request
                .routes
                .iter()
                .take(limits::MAX_ACQUIRE_ROUTES)
                .map(pb::Route::from)
                .collect(),
        };
        let response = self
            .call(|| {
                let (mut client, request) = (self.sessions(), request.clone());
                async move { client.acquire(request).await }
            })
            .await?;
        match response.outcome {
            Some(pb::acquire_response::Outcome::Granted(granted)) => Ok(AcquireOutcome::Granted {
                fencing: granted.fencing_token,
                previous: holder_from_pb(granted.previous.as_ref()),
                selected_chat: granted.selected_chat_id.parse().ok(),
            }),
            Some(pb::acquire_response::Outcome::Refused(refused)) => Ok(match refused.reason {
                0 => AcquireOutcome::Refused,
                reason => AcquireOutcome::Ended {
                    reason: reason_from_pb(reason),
                },
            }),
            None => Err(CoordinatorError::Rejected(
                "acquire answered without an outcome".to_owned(),
            )),
        }
    }

    async fn renew(
        &self,
        pod: &PodId,
        sessions: Vec<HeldSession>,
    ) -> Result<Vec<LostSession>, CoordinatorError> {
        let mut lost = Vec::new();
        for chunk in sessions.chunks(limits::MAX_RENEW_BATCH) {
            let request = pb::RenewRequest {
                pod_id: pod.to_string(),
                sessions: chunk.iter().map(held_to_pb).collect(),
            };
            let response = self
                .call(|| {
                    let (mut client, request) = (self.sessions(), request.clone());
                    async move { client.renew(request).await }
                })
                .await?;
            lost.extend(response.lost.iter().filter_map(|l| {
                Some(LostSession {
                    session: held_from_pb(l.session.as_ref())?,
                    reason: reason_from_pb(l.reason),
                })
            }));
        }
        Ok(lost)
    }

    async fn release(
        &self,
        pod: &PodId,
        sessions: Vec<HeldSession>,
    ) -> Result<(), CoordinatorError> {
        for chunk in sessions.chunks(limits::MAX_RELEASE_BATCH) {
            let request = pb::ReleaseRequest {
                pod_id: pod.to_string(),
                sessions: chunk.iter().map(held_to_pb).collect(),
            };
            self.call(|| {
                let (mut client, request) = (self.sessions(), request.clone());
                async move { client.release(request).await }
            })
            .await?;
        }
        Ok(())
    }

    async fn select_chat(
        &self,
        pod: &PodId,
        session: &HeldSession,
        chat: &ChatId,
    ) -> Result<bool, CoordinatorError> {
        let request = pb::SelectChatRequest {
            key: Some(pb::SessionKey::from(&session.key)),
            pod_id: pod.to_string(),
            connection_id: session.connection.to_string(),
            fencing_token: session.fencing,
            chat_id: chat.to_string(),
        };
        let response = self
            .call(|| {
                let (mut client, request) = (self.sessions(), request.clone());
                async move { client.select_chat(request).await }
            })
            .await?;
        Ok(response.session_held)
    }

    async fn register_routes(
        &self,
        pod: &PodId,
        routes: Vec<Route>,
    ) -> Result<(), CoordinatorError> {
        for chunk in routes.chunks(limits::MAX_ROUTE_BATCH) {
            let request = pb::RegisterRoutesRequest {
                pod_id: pod.to_string(),
                routes: chunk.iter().map(pb::Route::from).collect(),
            };
            self.call(|| {
                let (mut client, request) = (self.routes(), request.clone());
                async move { client.register_routes(request).await }
            })
            .await?;
        }
        Ok(())
    }

    async fn unregister_routes(
        &self,
        pod: &PodId,
        routes: Vec<Route>,
    ) -> Result<(), CoordinatorError> {
        for chunk in routes.chunks(limits::MAX_ROUTE_BATCH) {
            let request = pb::UnregisterRoutesRequest {
                pod_id: pod.to_string(),
                routes: chunk.iter().map(pb::Route::from).collect(),
            };
            self.call(|| {
                let (mut client, request) = (self.routes(), request.clone());
                async move { client.unregister_routes(request).await }
            })
            .await?;
        }
        Ok(())
    }

    async fn list_routes(&self, pod: &PodId) -> Result<Vec<Route>, CoordinatorError> {
        let mut routes = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListPodRoutesRequest {
                pod_id: pod.to_string(),
                page_size: limits::MAX_PAGE_SIZE,
                page_token,
            };
            let page = self
                .call(|| {
                    let (mut client, request) = (self.routes(), request.clone());
                    async move { client.list_pod_routes(request).await }
                })
                .await?;
            // A route this edge cannot parse is not one it registered.
            routes.extend(
                page.routes
                    .iter()
                    .filter_map(|r| daisi_proto::convert::route("routes", r).ok()),
            );
            if page.next_page_token.is_empty() {
                return Ok(routes);
            }
            page_token = page.next_page_token;
        }
    }

    async fn watch(&self, pod: &PodIdentity) -> Result<CommandStream, CoordinatorError> {
        let request = pb::WatchPodCommandsRequest {
            pod_id: pod.pod.to_string(),
            instance_id: pod.instance.clone(),
        };
        // Only opening the stream is bounded; the stream itself lives as long as it is healthy.
        let stream = self
            .call(|| {
                let (mut client, request) = (self.sessions(), request.clone());
                async move { client.watch_pod_commands(request).await }
            })
            .await?;
        Ok(stream
            .map(|item| item.map(command_from_pb).map_err(|s| from_status(&s)))
            .boxed())
    }
}
