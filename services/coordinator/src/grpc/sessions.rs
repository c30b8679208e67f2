//! `SessionService`: acquire, renew, release, select a chat, and the pod's command stream.

use super::Shared;
use super::convert::{self, id, invalid, within};
use super::status::from_store;
use crate::store::{AcquireMode, AcquireOutcome, AcquireRequest, Holder, SessionStore};
use daisi_domain::{ChatId, PodId, SessionKey};
use daisi_proto::coordinator::v1::{self as pb, session_service_server::SessionService};
use daisi_proto::limits;
use daisi_runtime::internal::Caller;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Messages buffered per command stream towards its edge.
const STREAM_BUFFER: usize = 64;

/// The session service over a store.
#[derive(Debug)]
pub(crate) struct Sessions<S>(pub(crate) Arc<Shared<S>>);

#[tonic::async_trait]
impl<S: SessionStore> SessionService for Sessions<S> {
    async fn acquire(
        &self,
        request: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let key = convert::session_key("key", request.key.as_ref())?;
        let pod: PodId = id("", &request.pod_id)?;
        caller.check_pod(pod.as_str())?;
        let connection = id("", &request.connection_id)?;
        // Unspecified is takeover (proto); a mode this coordinator does not know is refused
        // rather than guessed, since takeover kills the current holder.
        let mode = match pb::AcquireMode::try_from(request.mode) {
            Ok(pb::AcquireMode::Unspecified | pb::AcquireMode::Takeover) => AcquireMode::Takeover,
            Ok(pb::AcquireMode::IfVacant) => AcquireMode::IfVacant,
            Err(_) => {
                return Err(invalid(format!(
                    "mode: unknown acquire mode {} (1 = TAKEOVER, 2 = IF_VACANT)",
                    request.mode
                )));
            }
        };
        within("routes", request.routes.len(), limits::MAX_ACQUIRE_ROUTES)?;
        let routes = convert::routes("routes", &request.routes)?;
        let shared = &self.0;
        let outcome = shared
            .metrics
            .timed(
                "acquire",
                shared.store.acquire(AcquireRequest {
                    key: key.clone(),
                    pod: pod.clone(),
                    connection,
                    mode,
                    routes,
                }),
            )
            .await
            .map_err(from_store)?;
        let outcome = match outcome {
            AcquireOutcome::Granted(grant) => {
                shared.metrics.acquired(true, grant.previous.is_some());
                if let Some(previous) = &grant.previous {
                    tracing::debug!(
                        %key,
                        previous_pod = %previous.pod,
                        previous_connection = %previous.connection,
                        "session taken over"
                    );
                }
                pb::acquire_response::Outcome::Granted(pb::AcquireGranted {
                    fencing_token: grant.fencing.0,
                    previous: grant.previous.as_ref().map(convert::holder_out),
                    selected_chat_id: grant
                        .selected_chat
                        .map(ChatId::into_string)
                        .unwrap_or_default(),
                    lease_ttl: Some(convert::duration(shared.store.settings().pod_lease)),
                })
            }
            AcquireOutcome::Refused(holder) => {
                shared.metrics.acquired(false, false);
                pb::acquire_response::Outcome::Refused(pb::AcquireRefused {
                    holder: Some(holder_for(&pod, &holder)),
                    reason: pb::SessionEndReason::Unspecified.into(),
                })
            }
            AcquireOutcome::Ended { reason, current } => {
                shared.metrics.acquired(false, false);
                tracing::debug!(%key, reason = reason.as_str(), "acquire of an ended connection refused");
                pb::acquire_response::Outcome::Refused(pb::AcquireRefused {
                    holder: current.as_ref().map(|h| holder_for(&pod, h)),
                    reason: convert::reason_out(reason),
                })
            }
        };
        Ok(Response::new(pb::AcquireResponse {
            outcome: Some(outcome),
        }))
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let pod: PodId = id("", &request.pod_id)?;
        caller.check_pod(pod.as_str())?;
        within("sessions", request.sessions.len(), limits::MAX_RENEW_BATCH)?;
        let sessions = convert::held_sessions(request.sessions)?;
        let shared = &self.0;
        let lost = shared
            .metrics
            .timed("renew", shared.store.renew(&pod, &sessions))
            .await
            .map_err(from_store)?;
        shared.metrics.renewed(
            sessions.len().saturating_sub(lost.len()),
            lost.iter().map(|l| l.reason),
        );
        Ok(Response::new(pb::RenewResponse {
            lost: lost
                .iter()
                .map(|l| pb::LostSession {
                    session: Some(convert::held_out(&l.session)),
                    reason: convert::reason_out(l.reason),
                    current_holder: l.current.as_ref().map(|h| holder_for(&pod, h)),
                })
                .collect(),
            lease_ttl: Some(convert::duration(shared.store.settings().pod_lease)),
        }))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let pod: PodId = id("", &request.pod_id)?;
        caller.check_pod(pod.as_str())?;
        within(
            "sessions",
            request.sessions.len(),
            limits::MAX_RELEASE_BATCH,
        )?;
        let sessions = convert::held_sessions(request.sessions)?;
        let shared = &self.0;
        let released = shared
            .metrics
            .timed("release", shared.store.release(&pod, &sessions))
            .await
            .map_err(from_store)?;
        shared.metrics.released(released.count);
        Ok(Response::new(pb::ReleaseResponse {
            released_count: released.count,
            not_held: released.not_held.iter().map(convert::held_out).collect(),
        }))
    }

    async fn select_chat(
        &self,
        request: Request<pb::SelectChatRequest>,
    ) -> Result<Response<pb::SelectChatResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let key = convert::session_key("key", request.key.as_ref())?;
        if matches!(key, SessionKey::Admin { .. }) {
            return Err(invalid("key: admin sessions do not select chats"));
        }
        let pod: PodId = id("", &request.pod_id)?;
        caller.check_pod(pod.as_str())?;
        let held = crate::store::HeldSession {
            key,
            connection: id("", &request.connection_id)?,
            fencing: daisi_domain::coordination::FencingToken(request.fencing_token),
        };
        let chat: ChatId = id("", &request.chat_id)?;
        let shared = &self.0;
        let session_held = shared
            .metrics
            .timed("select_chat", shared.store.select_chat(&pod, &held, &chat))
            .await
            .map_err(from_store)?;
        Ok(Response::new(pb::SelectChatResponse { session_held }))
    }

    type WatchPodCommandsStream = ReceiverStream<Result<pb::PodCommand, Status>>;

    async fn watch_pod_commands(
        &self,
        request: Request<pb::WatchPodCommandsRequest>,
    ) -> Result<Response<Self::WatchPodCommandsStream>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let pod: PodId = id("", &request.pod_id)?;
        caller.check_pod(pod.as_str())?;
        let instance = (!request.instance_id.is_empty())
            .then(|| convert::instance_id(&request.instance_id))
            .transpose()?;
        let shared = self.0.clone();
        current_instance(&shared, &pod, instance.as_deref()).await?;
        let commands = shared
            .metrics
            .timed("watch", shared.store.watch_commands(&pod))
            .await
            .map_err(from_store)?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let subscribed = pb::PodCommand {
            command: Some(pb::pod_command::Command::Subscribed(pb::WatchSubscribed {
                ping_interval: Some(convert::duration(shared.watch_ping_interval)),
                replica_id: shared.replica_id.clone(),
            })),
            issued_at: Some(convert::timestamp(jiff::Timestamp::now())),
        };
        // Cannot fail: the channel is empty and its receiver is still here.
        let _ = tx.try_send(Ok(subscribed));
        // Only a stream that opened replaces the pod's older one.
        let watcher = shared.watchers.open(&pod);
        tokio::spawn(super::watch::forward(
            shared, watcher, instance, commands, tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// `holder` as told to the pod `caller`: the connection id and fencing token of another pod's
/// grant are withheld (a pod acts only as itself; the edge needs no more than the pod).
fn holder_for(caller: &PodId, holder: &Holder) -> pb::SessionHolder {
    let mut told = convert::holder_out(holder);
    if &holder.pod != caller {
        told.connection_id.clear();
        told.fencing_token = 0;
    }
    told
}

/// Fails unless `pod` is registered (and `instance`, when given, is its current instance).
pub(super) async fn current_instance<S: SessionStore>(
    shared: &Shared<S>,
    pod: &PodId,
    instance: Option<&str>,
) -> Result<(), Status> {
    let resolved = shared
        .metrics
        .timed(
            "resolve_pods",
            shared.store.resolve_pods(std::slice::from_ref(pod)),
        )
        .await
        .map_err(from_store)?;
    let Some(record) = resolved.pods.first() else {
        return Err(Status::failed_precondition(format!(
            "pod {pod} is not registered; send a heartbeat first"
        )));
    };
    if let Some(instance) = instance
        && record.instance != instance
    {
        return Err(Status::failed_precondition(format!(
            "instance {instance} is no longer the current instance of pod {pod}"
        )));
    }
    Ok(())
}
