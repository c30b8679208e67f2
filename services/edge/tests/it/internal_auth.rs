//! Internal authentication at the edge (issue 11): the edge registers with the coordinator
//! with its own credential (bearer token or certificate), and `EdgeDelivery` takes events
//! from routers only, as unary calls and on the delivery stream alike.

use crate::support::*;
use daisi_proto::edge::v1 as epb;
use daisi_proto::edge::v1::edge_delivery_client::EdgeDeliveryClient;
use daisi_runtime::internal::{ClientAuth, DevCa, InternalSecurity};
use std::time::Duration;
use tonic::Code;

const SECRET: &str = "edge-internal-secret-0123456789abcdef";

/// How a test sends its batch.
#[derive(Debug, Clone, Copy)]
enum Via {
    Unary,
    Stream,
}

async fn deliver(
    edge: &TestEdge,
    auth: &ClientAuth,
    via: Via,
    sequence: u64,
) -> Result<Vec<epb::EventResult>, tonic::Status> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", edge.grpc))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    let channel = auth.connect_lazy(&endpoint);
    let mut client = EdgeDeliveryClient::with_interceptor(channel, auth.clone());
    let request = epb::DeliverRequest {
        pod_id: edge.pod.clone(),
        events: vec![event(
            sequence,
            "c1",
            "a1",
            epb::DeliveryScope::AgentUsers,
            "",
            "chat",
            &format!(r#"{{"k":{sequence}}}"#),
        )],
        router_id: "test".into(),
    };
    match via {
        Via::Unary => client
            .deliver(request)
            .await
            .map(|r| r.into_inner().results),
        Via::Stream => {
            let mut answers = client
                .deliver_stream(tokio_stream::iter([request]))
                .await?
                .into_inner();
            let answer = tokio::time::timeout(Duration::from_secs(10), answers.message())
                .await
                .map_err(|_| tonic::Status::deadline_exceeded("no answer on the stream"))??;
            answer
                .map(|a| a.results)
                .ok_or_else(|| tonic::Status::unknown("the stream ended without an answer"))
        }
    }
}

fn code(result: Result<Vec<epb::EventResult>, tonic::Status>) -> Code {
    result.map_or_else(|s| s.code(), |_| Code::Ok)
}

#[tokio::test]
async fn with_bearer_tokens_the_edge_registers_and_only_routers_deliver() {
    let security = InternalSecurity::with_tokens(SECRET, None);
    let coord = Coord::start_with(|c| c.internal = security.clone()).await;
    // Ready means registered with the coordinator: its pod token was accepted.
    let edge = TestEdge::start(&coord.url, "edge-tok", |c| c.internal = security.clone()).await;
    let mut u1 = user(edge.http, "c1", "a1", "u1").await;

    for (via, sequence) in [(Via::Unary, 1), (Via::Stream, 2)] {
        assert_eq!(
            code(deliver(&edge, &ClientAuth::none(), via, sequence).await),
            Code::Unauthenticated,
            "{via:?}"
        );
        let other = InternalSecurity::with_tokens("another-secret-0123456789abcdef-xyz", None);
        assert_eq!(
            code(deliver(&edge, &other.router_client(), via, sequence).await),
            Code::Unauthenticated,
            "{via:?}"
        );
        // A pod's credential (even this edge's own) cannot push events.
        assert_eq!(
            code(deliver(&edge, &security.pod_client("edge-tok"), via, sequence).await),
            Code::PermissionDenied,
            "{via:?}"
        );
        assert_eq!(
            u1.maybe_text(Duration::from_millis(200)).await,
            None,
            "nothing delivered so far"
        );

        let results = deliver(&edge, &security.router_client(), via, sequence)
            .await
            .expect("a router delivers");
        assert_eq!(results[0].sockets_reached, 1);
        assert_eq!(u1.next_json().await["payload"]["k"], sequence);
    }
}

#[tokio::test]
async fn with_mutual_tls_the_edge_registers_and_only_routers_deliver() {
    let dir =
        std::env::temp_dir().join(format!("daisi-edge-auth-{}", uuid::Uuid::new_v4().simple()));
    let ca = DevCa::create(&dir).unwrap();
    let tls = |files| InternalSecurity::off().with_tls(files).unwrap();
    let coord = Coord::start_with(|c| c.internal = tls(ca.coordinator().unwrap())).await;
    let edge_security = tls(ca.edge("edge-tls").unwrap());
    let edge = TestEdge::start(&coord.url, "edge-tls", |c| c.internal = edge_security).await;
    let mut u1 = user(edge.http, "c1", "a1", "u1").await;

    let anonymous = ClientAuth::anonymous_tls(&ca.ca_path()).unwrap();
    let pod = tls(ca.edge("edge-other").unwrap());
    let router = tls(ca.router().unwrap());
    for (via, sequence) in [(Via::Unary, 1), (Via::Stream, 2)] {
        assert_eq!(
            code(deliver(&edge, &anonymous, via, sequence).await),
            Code::Unauthenticated,
            "{via:?}"
        );
        assert_ne!(
            code(deliver(&edge, &ClientAuth::none(), via, sequence).await),
            Code::Ok,
            "plain TCP to a TLS port ({via:?})"
        );
        assert_eq!(
            code(deliver(&edge, &pod.pod_client("edge-other"), via, sequence).await),
            Code::PermissionDenied,
            "{via:?}"
        );

        let results = deliver(&edge, &router.router_client(), via, sequence)
            .await
            .expect("a router delivers");
        assert_eq!(results[0].sockets_reached, 1);
        assert_eq!(u1.next_json().await["payload"]["k"], sequence);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
