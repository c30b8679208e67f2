//! Internal authentication of the coordinator's API (issue 11): every service refuses calls
//! without a valid client certificate or bearer token, a pod acts only as itself, and the
//! admin API needs the admin credential. Both modes: bearer tokens and mutual TLS (a CA made
//! for the test).

use crate::support::{Replica, acquire_request, agent_query, agent_route, instance, user_key};
use daisi_coordinator::Config;
use daisi_proto::coordinator::v1 as pb;
use daisi_proto::coordinator::v1::{
    coordinator_admin_client::CoordinatorAdminClient, pod_service_client::PodServiceClient,
    route_service_client::RouteServiceClient, session_service_client::SessionServiceClient,
};
use daisi_runtime::internal::{ClientAuth, DevCa, InternalSecurity, TlsFiles};
use std::time::Duration;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

const SECRET: &str = "internal-test-secret-0123456789abcdef";
const ADMIN: &str = "internal-admin-token-0123456789abcdef";

type Ch = InterceptedService<Channel, ClientAuth>;

struct Clients {
    pods: PodServiceClient<Ch>,
    sessions: SessionServiceClient<Ch>,
    routes: RouteServiceClient<Ch>,
    admin: CoordinatorAdminClient<Ch>,
}

fn clients(replica: &Replica, auth: &ClientAuth) -> Clients {
    let endpoint = Endpoint::from_shared(format!("http://{}", replica.grpc))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    let channel = auth.connect_lazy(&endpoint);
    Clients {
        pods: PodServiceClient::with_interceptor(channel.clone(), auth.clone()),
        sessions: SessionServiceClient::with_interceptor(channel.clone(), auth.clone()),
        routes: RouteServiceClient::with_interceptor(channel.clone(), auth.clone()),
        admin: CoordinatorAdminClient::with_interceptor(channel, auth.clone()),
    }
}

async fn start(security: InternalSecurity) -> Replica {
    let mut config = Config::for_tests();
    config.internal = security;
    Replica::start(config).await
}

fn heartbeat_request(pod: &str) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        pod_id: pod.to_owned(),
        instance_id: instance(pod),
        delivery_address: "http://10.0.0.1:50061".to_owned(),
        load: None,
        commands_acked: 0,
    }
}

fn deregister_request(pod: &str) -> pb::DeregisterRequest {
    pb::DeregisterRequest {
        pod_id: pod.to_owned(),
        instance_id: instance(pod),
    }
}

fn kill_request() -> pb::KillSessionRequest {
    pb::KillSessionRequest {
        key: Some(user_key("u1")),
        reason: "test".to_owned(),
        connection_id: String::new(),
    }
}

fn code<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// One call of every service; each answer's code, named.
async fn one_call_each(c: &mut Clients, pod: &str) -> Vec<(&'static str, Code)> {
    vec![
        (
            "PodService.Heartbeat",
            code(c.pods.heartbeat(heartbeat_request(pod)).await),
        ),
        (
            "PodService.ResolvePods",
            code(
                c.pods
                    .resolve_pods(pb::ResolvePodsRequest {
                        pod_ids: vec![pod.to_owned()],
                    })
                    .await,
            ),
        ),
        (
            "SessionService.Acquire",
            code(
                c.sessions
                    .acquire(acquire_request("u1", pod, "conn-1"))
                    .await,
            ),
        ),
        (
            "RouteService.LookupRoutes",
            code(
                c.routes
                    .lookup_routes(pb::LookupRoutesRequest {
                        queries: vec![agent_query()],
                    })
                    .await,
            ),
        ),
        (
            "CoordinatorAdmin.ListPods",
            code(c.admin.list_pods(pb::ListPodsRequest::default()).await),
        ),
        (
            "CoordinatorAdmin.KillSession",
            code(c.admin.kill_session(kill_request()).await),
        ),
    ]
}

fn assert_all(answers: &[(&str, Code)], expected: Code, what: &str) {
    for (call, code) in answers {
        assert_eq!(*code, expected, "{call} {what}");
    }
}

#[tokio::test]
async fn bearer_tokens_authenticate_and_a_pod_acts_only_as_itself() {
    let security = InternalSecurity::with_tokens(SECRET, Some(ADMIN));
    let replica = start(security.clone()).await;

    // No credential, a malformed one, another secret's token: refused by every service.
    let mut nobody = clients(&replica, &ClientAuth::none());
    assert_all(
        &one_call_each(&mut nobody, "pod-a").await,
        Code::Unauthenticated,
        "without a token",
    );
    let forged = InternalSecurity::with_tokens("another-secret-0123456789abcdef-xyz", None);
    let mut forged = clients(&replica, &forged.pod_client("pod-a"));
    assert_all(
        &one_call_each(&mut forged, "pod-a").await,
        Code::Unauthenticated,
        "with another secret's token",
    );

    // Pod A's token: A's own calls pass.
    let mut a = clients(&replica, &security.pod_client("pod-a"));
    a.pods
        .heartbeat(heartbeat_request("pod-a"))
        .await
        .expect("own heartbeat");
    a.sessions
        .acquire(acquire_request("u1", "pod-a", "conn-1"))
        .await
        .expect("own acquire");
    // ... but never as pod B.
    let mut b = clients(&replica, &security.pod_client("pod-b"));
    b.pods
        .heartbeat(heartbeat_request("pod-b"))
        .await
        .expect("B registers");
    assert_eq!(
        code(a.pods.heartbeat(heartbeat_request("pod-b")).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(a.pods.deregister(deregister_request("pod-b")).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            a.sessions
                .acquire(acquire_request("u2", "pod-b", "conn-2"))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            a.routes
                .register_routes(pb::RegisterRoutesRequest {
                    pod_id: "pod-b".to_owned(),
                    routes: vec![agent_route()],
                })
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            a.sessions
                .watch_pod_commands(pb::WatchPodCommandsRequest {
                    pod_id: "pod-b".to_owned(),
                    instance_id: instance("pod-b"),
                })
                .await
        ),
        Code::PermissionDenied
    );
    // B is still registered: A's refused calls changed nothing.
    let resolved = a
        .pods
        .resolve_pods(pb::ResolvePodsRequest {
            pod_ids: vec!["pod-b".to_owned()],
        })
        .await
        .expect("resolve")
        .into_inner();
    assert!(resolved.unknown_pod_ids.is_empty(), "{resolved:?}");

    // The admin API: not with a pod's or a router's token, only with the admin token.
    assert_eq!(
        code(a.admin.kill_session(kill_request()).await),
        Code::PermissionDenied
    );
    let mut router = clients(&replica, &security.router_client());
    assert_eq!(
        code(router.admin.kill_session(kill_request()).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(router.admin.list_pods(pb::ListPodsRequest::default()).await),
        Code::PermissionDenied
    );
    router
        .routes
        .lookup_routes(pb::LookupRoutesRequest {
            queries: vec![agent_query()],
        })
        .await
        .expect("a router looks routes up");
    let mut admin = clients(&replica, &security.admin_client());
    admin
        .admin
        .kill_session(kill_request())
        .await
        .expect("the admin kills");
    // The admin credential is not a pod's.
    assert_eq!(
        code(admin.pods.heartbeat(heartbeat_request("pod-c")).await),
        Code::PermissionDenied
    );
}

fn tls(files: TlsFiles) -> InternalSecurity {
    InternalSecurity::off()
        .with_tls(files)
        .expect("certificates load")
}

#[tokio::test]
async fn mutual_tls_identifies_pods_routers_and_admins_by_certificate() {
    let dir = tempdir();
    let ca = DevCa::create(&dir.join("ca")).unwrap();
    let replica = start(tls(ca.coordinator().unwrap())).await;

    // A TLS client without a certificate: refused by every service.
    let mut anonymous = clients(&replica, &anonymous_tls(&ca.ca_path()));
    assert_all(
        &one_call_each(&mut anonymous, "pod-a").await,
        Code::Unauthenticated,
        "without a client certificate",
    );
    // A plain client cannot even talk to the TLS port.
    let mut plain = clients(&replica, &ClientAuth::none());
    for (call, code) in one_call_each(&mut plain, "pod-a").await {
        assert_ne!(code, Code::Ok, "{call} over plain TCP");
    }
    // A certificate of another CA: the handshake fails.
    let stranger = DevCa::create(&dir.join("stranger")).unwrap();
    let mut stranger = clients(
        &replica,
        &tls(stranger.edge("pod-a").unwrap()).pod_client("pod-a"),
    );
    for (call, code) in one_call_each(&mut stranger, "pod-a").await {
        assert_ne!(code, Code::Ok, "{call} with another CA's certificate");
    }

    let pod_a = tls(ca.edge("pod-a").unwrap());
    let mut a = clients(&replica, &pod_a.pod_client("pod-a"));
    a.pods
        .heartbeat(heartbeat_request("pod-a"))
        .await
        .expect("own heartbeat");
    let pod_b = tls(ca.edge("pod-b").unwrap());
    let mut b = clients(&replica, &pod_b.pod_client("pod-b"));
    b.pods
        .heartbeat(heartbeat_request("pod-b"))
        .await
        .expect("B registers");
    assert_eq!(
        code(a.pods.heartbeat(heartbeat_request("pod-b")).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(a.pods.deregister(deregister_request("pod-b")).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(a.admin.kill_session(kill_request()).await),
        Code::PermissionDenied
    );

    let router = tls(ca.router().unwrap());
    let mut router = clients(&replica, &router.router_client());
    router
        .routes
        .lookup_routes(pb::LookupRoutesRequest {
            queries: vec![agent_query()],
        })
        .await
        .expect("a router looks routes up");
    assert_eq!(
        code(router.pods.heartbeat(heartbeat_request("pod-a")).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(router.admin.kill_session(kill_request()).await),
        Code::PermissionDenied
    );

    let admin = tls(ca.admin().unwrap());
    let mut admin = clients(&replica, &admin.admin_client());
    admin
        .admin
        .kill_session(kill_request())
        .await
        .expect("the admin kills");
    let pods = admin
        .admin
        .list_pods(pb::ListPodsRequest::default())
        .await
        .expect("the admin lists pods")
        .into_inner();
    assert_eq!(pods.pods.len(), 2, "{pods:?}");
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "daisi-auth-{}-{}",
        std::process::id(),
        daisi_domain::ConnectionId::generate().into_string()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// TLS that trusts the CA but presents no client certificate.
fn anonymous_tls(ca: &std::path::Path) -> ClientAuth {
    ClientAuth::anonymous_tls(ca).expect("CA loads")
}
