//! Internal authentication at the edge (issue 11): the edge registers with the coordinator
//! with its own credential (bearer token or certificate), and `EdgeDelivery` takes events
//! from routers only.

use crate::support::*;
use daisi_proto::edge::v1 as epb;
use daisi_proto::edge::v1::edge_delivery_client::EdgeDeliveryClient;
use daisi_runtime::internal::{ClientAuth, DevCa, InternalSecurity};
use std::time::Duration;
use tonic::Code;

const SECRET: &str = "edge-internal-secret-0123456789abcdef";

async fn deliver(
    edge: &TestEdge,
    auth: &ClientAuth,
) -> Result<Vec<epb::EventResult>, tonic::Status> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", edge.grpc))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    let channel = auth.connect_lazy(&endpoint);
    EdgeDeliveryClient::with_interceptor(channel, auth.clone())
        .deliver(epb::DeliverRequest {
            pod_id: edge.pod.clone(),
            events: vec![event(
                1,
                "c1",
                "a1",
                epb::DeliveryScope::AgentUsers,
                "",
                "chat",
                r#"{"k":1}"#,
            )],
            router_id: "test".into(),
        })
        .await
        .map(|r| r.into_inner().results)
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

    assert_eq!(
        code(deliver(&edge, &ClientAuth::none()).await),
        Code::Unauthenticated
    );
    let other = InternalSecurity::with_tokens("another-secret-0123456789abcdef-xyz", None);
    assert_eq!(
        code(deliver(&edge, &other.router_client()).await),
        Code::Unauthenticated
    );
    // A pod's credential (even this edge's own) cannot push events.
    assert_eq!(
        code(deliver(&edge, &security.pod_client("edge-tok")).await),
        Code::PermissionDenied
    );
    assert_eq!(
        u1.maybe_text(Duration::from_millis(200)).await,
        None,
        "nothing delivered so far"
    );

    let results = deliver(&edge, &security.router_client())
        .await
        .expect("a router delivers");
    assert_eq!(results[0].sockets_reached, 1);
    assert_eq!(u1.next_json().await["payload"]["k"], 1);
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
    assert_eq!(
        code(deliver(&edge, &anonymous).await),
        Code::Unauthenticated
    );
    assert_ne!(
        code(deliver(&edge, &ClientAuth::none()).await),
        Code::Ok,
        "plain TCP to a TLS port"
    );
    let pod = tls(ca.edge("edge-other").unwrap());
    assert_eq!(
        code(deliver(&edge, &pod.pod_client("edge-other")).await),
        Code::PermissionDenied
    );

    let router = tls(ca.router().unwrap());
    let results = deliver(&edge, &router.router_client())
        .await
        .expect("a router delivers");
    assert_eq!(results[0].sockets_reached, 1);
    assert_eq!(u1.next_json().await["payload"]["k"], 1);
    let _ = std::fs::remove_dir_all(&dir);
}
