//! A real `EdgeDelivery` server on 127.0.0.1:0, called through the generated client.

use std::net::SocketAddr;

use daisi_proto::edge::v1::edge_delivery_client::EdgeDeliveryClient;
use daisi_proto::edge::v1::edge_delivery_server::{EdgeDelivery, EdgeDeliveryServer};
use daisi_proto::edge::v1::{
    DeliverRequest, DeliverResponse, DeliveryScope, Event, EventOutcome, EventResult, Target,
};
use daisi_proto::limits;
use std::pin::Pin;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// Pretends every agent-wide event reaches 3 sockets and every other scope 1; rejects
/// unspecified scopes, as a real edge would.
#[derive(Debug)]
struct FakeEdge {
    pod_id: String,
}

#[tonic::async_trait]
impl EdgeDelivery for FakeEdge {
    async fn notice_gap(
        &self,
        _request: Request<daisi_proto::edge::v1::NoticeGapRequest>,
    ) -> Result<Response<daisi_proto::edge::v1::NoticeGapResponse>, Status> {
        Ok(Response::new(daisi_proto::edge::v1::NoticeGapResponse {}))
    }

    async fn deliver(
        &self,
        request: Request<DeliverRequest>,
    ) -> Result<Response<DeliverResponse>, Status> {
        self.answer(&request.into_inner()).map(Response::new)
    }

    type DeliverStreamStream = Pin<Box<dyn Stream<Item = Result<DeliverResponse, Status>> + Send>>;

    async fn deliver_stream(
        &self,
        request: Request<Streaming<DeliverRequest>>,
    ) -> Result<Response<Self::DeliverStreamStream>, Status> {
        let pod_id = self.pod_id.clone();
        let mut requests = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let edge = FakeEdge { pod_id };
            while let Ok(Some(request)) = requests.message().await {
                let answer = edge.answer(&request);
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl FakeEdge {
    fn answer(&self, request: &DeliverRequest) -> Result<DeliverResponse, Status> {
        if request.pod_id != self.pod_id {
            return Err(Status::failed_precondition("not this pod"));
        }
        if request.events.len() > limits::MAX_DELIVER_BATCH {
            return Err(Status::invalid_argument("too many events"));
        }
        let results = request
            .events
            .iter()
            .map(|event| {
                let scope = event
                    .target
                    .as_ref()
                    .map_or(DeliveryScope::Unspecified, Target::scope);
                let (outcome, sockets_reached, reject_reason) = match scope {
                    DeliveryScope::Unspecified => {
                        (EventOutcome::Rejected, 0, "scope unspecified".to_owned())
                    }
                    DeliveryScope::AgentUsers | DeliveryScope::AgentUsersAndAdmins => {
                        (EventOutcome::Delivered, 3, String::new())
                    }
                    DeliveryScope::ChatUsers => (EventOutcome::Delivered, 1, String::new()),
                };
                EventResult {
                    stream_sequence: event.stream_sequence,
                    outcome: outcome.into(),
                    sockets_reached,
                    reject_reason,
                }
            })
            .collect();
        Ok(DeliverResponse { results })
    }
}

async fn spawn_edge(pod_id: &str) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let service = EdgeDeliveryServer::new(FakeEdge {
        pod_id: pod_id.to_owned(),
    })
    .max_decoding_message_size(limits::EDGE_MAX_DECODING_BYTES);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
    });
    (addr, stop)
}

fn event(sequence: u64, scope: DeliveryScope) -> Event {
    Event {
        stream_sequence: sequence,
        subject: "websocket.c1.a1.chats".to_owned(),
        target: Some(Target {
            company_id: "c1".to_owned(),
            agent_id: "a1".to_owned(),
            scope: scope.into(),
            chat_id: String::new(),
        }),
        event_type: "chat".to_owned(),
        payload: br#"{"event_id":"1:chats:1"}"#.to_vec(),
        ..Default::default()
    }
}

#[tokio::test]
async fn deliver_reaches_the_server_and_answers_per_event() {
    let (addr, stop) = spawn_edge("edge-0").await;
    let mut client = EdgeDeliveryClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");

    let response = client
        .deliver(DeliverRequest {
            pod_id: "edge-0".to_owned(),
            router_id: "router-test".to_owned(),
            events: vec![
                event(10, DeliveryScope::AgentUsers),
                event(11, DeliveryScope::ChatUsers),
                event(12, DeliveryScope::Unspecified),
            ],
        })
        .await
        .expect("deliver succeeds")
        .into_inner();

    let summary: Vec<(u64, EventOutcome, u32)> = response
        .results
        .iter()
        .map(|r| (r.stream_sequence, r.outcome(), r.sockets_reached))
        .collect();
    assert_eq!(
        summary,
        vec![
            (10, EventOutcome::Delivered, 3),
            (11, EventOutcome::Delivered, 1),
            (12, EventOutcome::Rejected, 0),
        ]
    );
    let _ = stop.send(());
}

#[tokio::test]
async fn call_errors_carry_their_grpc_code() {
    let (addr, stop) = spawn_edge("edge-0").await;
    let mut client = EdgeDeliveryClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");

    let status = client
        .deliver(DeliverRequest {
            pod_id: "edge-other".to_owned(),
            ..Default::default()
        })
        .await
        .expect_err("wrong pod is refused");

    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let _ = stop.send(());
}

#[tokio::test]
async fn a_delivery_stream_answers_each_request_in_order_and_ends_on_a_refusal() {
    let (addr, stop) = spawn_edge("edge-0").await;
    let mut client = EdgeDeliveryClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    let batch = |pod: &str, first: u64| DeliverRequest {
        pod_id: pod.to_owned(),
        router_id: "router-test".to_owned(),
        events: vec![
            event(first, DeliveryScope::AgentUsers),
            event(first + 1, DeliveryScope::ChatUsers),
        ],
    };
    let requests = tokio_stream::iter(vec![
        batch("edge-0", 1),
        batch("edge-0", 3),
        batch("edge-other", 5),
        batch("edge-0", 7),
    ]);
    let mut answers = client
        .deliver_stream(requests)
        .await
        .expect("stream opens")
        .into_inner();
    for first in [1, 3] {
        let answer = answers
            .message()
            .await
            .expect("answered")
            .expect("not ended");
        let sequences: Vec<u64> = answer.results.iter().map(|r| r.stream_sequence).collect();
        assert_eq!(sequences, [first, first + 1], "answers in request order");
    }
    let refused = answers
        .message()
        .await
        .expect_err("wrong pod ends the stream");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let _ = stop.send(());
}
