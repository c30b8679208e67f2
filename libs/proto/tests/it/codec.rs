//! Messages survive an encode/decode round trip, and the descriptor set is complete.

use daisi_proto::coordinator::v1::{
    AcquireGranted, AcquireResponse, AgentRoute, PodCommand, Route, SessionEndReason,
    SessionHolder, acquire_response, pod_command, route,
};
use daisi_proto::edge::v1::{DeliverRequest, DeliveryScope, Event, Target};
use prost::Message;

#[test]
fn deliver_request_round_trips() {
    let request = DeliverRequest {
        pod_id: "edge-0".to_owned(),
        router_id: "router-1".to_owned(),
        events: vec![Event {
            stream_sequence: 42,
            subject: "websocket.c1.a1.messages.chat9".to_owned(),
            target: Some(Target {
                company_id: "c1".to_owned(),
                agent_id: "a1".to_owned(),
                scope: DeliveryScope::ChatUsers.into(),
                chat_id: "chat9".to_owned(),
            }),
            event_type: "message".to_owned(),
            payload: br#"{"event_id":"1:messages:9","row_data":{}}"#.to_vec(),
            request_id: "req-1".to_owned(),
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
            tracestate: String::new(),
            published_at: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 5,
            }),
            stream_epoch: 1_764_441_600_123_456_789,
        }],
    };

    let decoded = DeliverRequest::decode(request.encode_to_vec().as_slice()).expect("decodes");

    assert_eq!(decoded, request);
    let target = decoded.events[0].target.as_ref().expect("target set");
    assert_eq!(target.scope(), DeliveryScope::ChatUsers);
}

#[test]
fn oneofs_round_trip() {
    let response = AcquireResponse {
        outcome: Some(acquire_response::Outcome::Granted(AcquireGranted {
            fencing_token: 7,
            previous: Some(SessionHolder {
                pod_id: "edge-1".to_owned(),
                connection_id: "conn-a".to_owned(),
                fencing_token: 6,
            }),
            selected_chat_id: "chat9".to_owned(),
            lease_ttl: Some(prost_types::Duration {
                seconds: 30,
                nanos: 0,
            }),
        })),
    };
    let route = Route {
        kind: Some(route::Kind::Agent(AgentRoute {
            company_id: "c1".to_owned(),
            agent_id: "a1".to_owned(),
        })),
    };

    assert_eq!(
        AcquireResponse::decode(response.encode_to_vec().as_slice()).expect("decodes"),
        response
    );
    assert_eq!(
        Route::decode(route.encode_to_vec().as_slice()).expect("decodes"),
        route
    );
}

#[test]
fn unknown_enum_values_survive_as_integers() {
    // A newer coordinator may add reasons; an older edge must still decode the command.
    let command = daisi_proto::coordinator::v1::KillConnection {
        reason: 99,
        ..Default::default()
    };
    let wire = PodCommand {
        command: Some(pod_command::Command::Kill(command)),
        issued_at: None,
    }
    .encode_to_vec();

    let decoded = PodCommand::decode(wire.as_slice()).expect("decodes");
    let Some(pod_command::Command::Kill(kill)) = decoded.command else {
        panic!("expected a kill command");
    };
    assert_eq!(kill.reason, 99);
    assert_eq!(kill.reason(), SessionEndReason::Unspecified);
}

#[test]
fn descriptor_set_holds_every_service_and_its_imports() {
    let set = prost_types::FileDescriptorSet::decode(daisi_proto::FILE_DESCRIPTOR_SET)
        .expect("descriptor set decodes");

    let services: Vec<String> = set
        .file
        .iter()
        .flat_map(|file| {
            file.service
                .iter()
                .map(move |service| format!("{}.{}", file.package(), service.name()))
        })
        .collect();
    for expected in [
        "daisi.coordinator.v1.SessionService",
        "daisi.coordinator.v1.RouteService",
        "daisi.coordinator.v1.PodService",
        "daisi.coordinator.v1.CoordinatorAdmin",
        "daisi.edge.v1.EdgeDelivery",
    ] {
        assert!(
            services.iter().any(|s| s == expected),
            "{expected} missing from {services:?}"
        );
    }
    // Reflection clients resolve imports from the same set.
    assert!(
        set.file
            .iter()
            .any(|file| file.name() == "google/protobuf/timestamp.proto")
    );
}
