//! Server streaming through the generated code: a `SessionService` whose `WatchPodCommands`
//! sends the documented opening message, a kill and a ping.

use daisi_proto::coordinator::v1::session_service_client::SessionServiceClient;
use daisi_proto::coordinator::v1::session_service_server::{SessionService, SessionServiceServer};
use daisi_proto::coordinator::v1::{
    AcquireRequest, AcquireResponse, KillConnection, Ping, PodCommand, ReleaseRequest,
    ReleaseResponse, RenewRequest, RenewResponse, SelectChatRequest, SelectChatResponse,
    SessionEndReason, SessionKey, UserSessionKey, WatchPodCommandsRequest, WatchSubscribed,
    pod_command, session_key,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

#[derive(Debug)]
struct FakeCoordinator;

fn command(command: pod_command::Command) -> Result<PodCommand, Status> {
    Ok(PodCommand {
        command: Some(command),
        issued_at: None,
    })
}

#[tonic::async_trait]
impl SessionService for FakeCoordinator {
    async fn acquire(
        &self,
        _request: Request<AcquireRequest>,
    ) -> Result<Response<AcquireResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn renew(
        &self,
        _request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn release(
        &self,
        _request: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn select_chat(
        &self,
        _request: Request<SelectChatRequest>,
    ) -> Result<Response<SelectChatResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type WatchPodCommandsStream = ReceiverStream<Result<PodCommand, Status>>;

    async fn watch_pod_commands(
        &self,
        request: Request<WatchPodCommandsRequest>,
    ) -> Result<Response<Self::WatchPodCommandsStream>, Status> {
        let pod_id = request.into_inner().pod_id;
        let (tx, rx) = mpsc::channel(4);
        let commands = [
            pod_command::Command::Subscribed(WatchSubscribed {
                ping_interval: Some(prost_types::Duration {
                    seconds: 5,
                    nanos: 0,
                }),
                replica_id: "coordinator-0".to_owned(),
            }),
            pod_command::Command::Kill(KillConnection {
                key: Some(SessionKey {
                    kind: Some(session_key::Kind::User(UserSessionKey {
                        company_id: "c1".to_owned(),
                        agent_id: "a1".to_owned(),
                        user_id: "u1".to_owned(),
                    })),
                }),
                connection_id: format!("{pod_id}-conn-1"),
                fencing_token: 3,
                reason: SessionEndReason::TakenOver.into(),
                message: String::new(),
            }),
            pod_command::Command::Ping(Ping {}),
        ];
        for c in commands {
            tx.send(command(c))
                .await
                .map_err(|_| Status::internal("closed"))?;
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[tokio::test]
async fn watch_pod_commands_streams_in_order() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SessionServiceServer::new(FakeCoordinator))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let mut client = SessionServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");

    let mut stream = client
        .watch_pod_commands(WatchPodCommandsRequest {
            pod_id: "edge-0".to_owned(),
            instance_id: "i-1".to_owned(),
        })
        .await
        .expect("stream opens")
        .into_inner();

    let mut seen = Vec::new();
    while let Some(command) = stream.message().await.expect("stream healthy") {
        seen.push(command.command.expect("command set"));
    }
    assert!(matches!(seen[0], pod_command::Command::Subscribed(_)));
    let pod_command::Command::Kill(kill) = &seen[1] else {
        panic!("expected a kill, got {:?}", seen[1]);
    };
    assert_eq!(kill.connection_id, "edge-0-conn-1");
    assert_eq!(kill.reason(), SessionEndReason::TakenOver);
    assert!(matches!(seen[2], pod_command::Command::Ping(_)));
    assert_eq!(seen.len(), 3);

    let status = client
        .renew(RenewRequest::default())
        .await
        .expect_err("fake renews nothing");
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}
