//! `FILE_DESCRIPTOR_SET` is what grpcurl sees through tonic-reflection: every service listed,
//! and a service's file resolvable with its imports.

use daisi_proto::FILE_DESCRIPTOR_SET;
use prost::Message;
use prost_types::FileDescriptorProto;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

async fn ask(
    client: &mut ServerReflectionClient<tonic::transport::Channel>,
    request: MessageRequest,
) -> MessageResponse {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection call")
        .into_inner();
    let response: ServerReflectionResponse = responses
        .message()
        .await
        .expect("stream healthy")
        .expect("one response");
    response.message_response.expect("response set")
}

#[tokio::test]
async fn reflection_lists_and_resolves_every_service() {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("descriptor set is accepted");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(reflection)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    // tonic-reflection's client is generated without transport helpers: bring a channel.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("connects");
    let mut client = ServerReflectionClient::new(channel);

    let MessageResponse::ListServicesResponse(list) =
        ask(&mut client, MessageRequest::ListServices(String::new())).await
    else {
        panic!("expected a service list");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "daisi.coordinator.v1.SessionService",
        "daisi.coordinator.v1.RouteService",
        "daisi.coordinator.v1.PodService",
        "daisi.coordinator.v1.CoordinatorAdmin",
        "daisi.edge.v1.EdgeDelivery",
    ] {
        assert!(names.contains(&expected), "{expected} not in {names:?}");
    }

    let MessageResponse::FileDescriptorResponse(files) = ask(
        &mut client,
        MessageRequest::FileContainingSymbol("daisi.coordinator.v1.SessionService".to_owned()),
    )
    .await
    else {
        panic!("expected file descriptors");
    };
    let file = FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice())
        .expect("file descriptor decodes");
    assert_eq!(file.name(), "daisi/coordinator/v1/sessions.proto");

    // grpcurl then fetches each import by file name; the well-known types must be there too.
    assert!(
        file.dependency
            .contains(&"google/protobuf/timestamp.proto".to_owned())
    );
    for dependency in &file.dependency {
        let response = ask(
            &mut client,
            MessageRequest::FileByFilename(dependency.clone()),
        )
        .await;
        assert!(
            matches!(response, MessageResponse::FileDescriptorResponse(_)),
            "{dependency} not resolvable: {response:?}"
        );
    }
}
