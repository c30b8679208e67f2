//! Test support: coordinator replicas started in-process with `run` on 127.0.0.1:0, generated
//! tonic clients for them, and small request builders.

use daisi_coordinator::config::RedisUrl;
use daisi_coordinator::{Config, Listeners, StoreKind};
use daisi_proto::coordinator::v1 as pb;
use daisi_proto::coordinator::v1::{
    coordinator_admin_client::CoordinatorAdminClient, pod_service_client::PodServiceClient,
    route_service_client::RouteServiceClient, session_service_client::SessionServiceClient,
};
use daisi_runtime::CancellationToken;
use daisi_testkit::RedisServer;
use std::net::SocketAddr;
use std::time::Duration;
use tonic::transport::Channel;

/// One running coordinator.
pub(crate) struct Replica {
    pub(crate) grpc: SocketAddr,
    pub(crate) http: SocketAddr,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), daisi_coordinator::Error>>>,
}

/// Settings of a Redis-backed replica with test-sized timing.
pub(crate) fn redis_config(server: &RedisServer) -> Config {
    let mut config = Config::for_tests();
    config.store = StoreKind::Redis;
    config.redis_url = RedisUrl(server.url().parse().unwrap());
    config.key_prefix = "it".to_owned();
    config.watch_ping_interval = Duration::from_millis(300);
    config
}

impl Replica {
    pub(crate) async fn start(config: Config) -> Self {
        let listeners = Listeners::bind(&config).await.unwrap();
        let grpc = listeners.grpc.local_addr().unwrap();
        let http = listeners.http.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(daisi_coordinator::run(config, listeners, shutdown.clone()));
        Self {
            grpc,
            http,
            shutdown,
            task: Some(task),
        }
    }

    /// Starts and waits until `/ready` answers 200 (Redis reachable).
    pub(crate) async fn start_ready(config: Config) -> Self {
        let replica = Self::start(config).await;
        eventually(Duration::from_secs(10), || async {
            daisi_testkit::get_json(replica.http, "/ready")
                .await
                .is_ok_and(|(status, _)| status == 200)
        })
        .await;
        replica
    }

    fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect_lazy()
    }

    pub(crate) fn sessions(&self) -> SessionServiceClient<Channel> {
        SessionServiceClient::new(self.channel())
    }

    pub(crate) fn routes(&self) -> RouteServiceClient<Channel> {
        RouteServiceClient::new(self.channel())
    }

    pub(crate) fn pods(&self) -> PodServiceClient<Channel> {
        PodServiceClient::new(self.channel())
    }

    pub(crate) fn admin(&self) -> CoordinatorAdminClient<Channel> {
        CoordinatorAdminClient::new(self.channel())
    }

    pub(crate) fn health(&self) -> tonic_health::pb::health_client::HealthClient<Channel> {
        tonic_health::pb::health_client::HealthClient::new(self.channel())
    }

    /// The overall gRPC health status.
    pub(crate) async fn serving(&self) -> Option<bool> {
        let answer = self
            .health()
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .ok()?;
        Some(answer.into_inner().status == 1)
    }

    /// Cancels the shutdown token; answers how long `run` took to return, and its result.
    pub(crate) async fn stop(mut self) -> (Duration, Result<(), daisi_coordinator::Error>) {
        let started = std::time::Instant::now();
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("run returns after shutdown")
            .unwrap();
        (started.elapsed(), result)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Polls `check` every 20 ms until it holds; panics after `within`.
pub(crate) async fn eventually<F, Fut>(within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not met within {within:?}");
}

pub(crate) fn user_key(user: &str) -> pb::SessionKey {
    pb::SessionKey {
        kind: Some(pb::session_key::Kind::User(pb::UserSessionKey {
            company_id: "c1".to_owned(),
            agent_id: "a1".to_owned(),
            user_id: user.to_owned(),
        })),
    }
}

pub(crate) fn agent_route() -> pb::Route {
    pb::Route {
        kind: Some(pb::route::Kind::Agent(pb::AgentRoute {
            company_id: "c1".to_owned(),
            agent_id: "a1".to_owned(),
        })),
    }
}

pub(crate) fn agent_query() -> pb::RouteQuery {
    pb::RouteQuery {
        target: Some(pb::route_query::Target::Agent(pb::AgentRoute {
            company_id: "c1".to_owned(),
            agent_id: "a1".to_owned(),
        })),
    }
}

pub(crate) fn instance(pod: &str) -> String {
    format!("{pod}-instance")
}

pub(crate) async fn heartbeat(
    replica: &Replica,
    pod: &str,
) -> Result<pb::HeartbeatResponse, tonic::Status> {
    replica
        .pods()
        .heartbeat(pb::HeartbeatRequest {
            pod_id: pod.to_owned(),
            instance_id: instance(pod),
            delivery_address: format!("http://10.0.0.1:{}", 50000 + pod.len()),
            load: None,
            commands_acked: 0,
        })
        .await
        .map(tonic::Response::into_inner)
}

pub(crate) fn acquire_request(user: &str, pod: &str, connection: &str) -> pb::AcquireRequest {
    pb::AcquireRequest {
        key: Some(user_key(user)),
        pod_id: pod.to_owned(),
        connection_id: connection.to_owned(),
        mode: pb::AcquireMode::Takeover as i32,
        routes: vec![agent_route()],
    }
}

pub(crate) async fn acquire(
    replica: &Replica,
    user: &str,
    pod: &str,
    connection: &str,
) -> Result<pb::AcquireGranted, tonic::Status> {
    let answer = replica
        .sessions()
        .acquire(acquire_request(user, pod, connection))
        .await?
        .into_inner();
    match answer.outcome {
        Some(pb::acquire_response::Outcome::Granted(granted)) => Ok(granted),
        other => panic!("takeover not granted: {other:?}"),
    }
}

pub(crate) fn held(user: &str, connection: &str, fencing: u64) -> pb::HeldSession {
    pb::HeldSession {
        key: Some(user_key(user)),
        connection_id: connection.to_owned(),
        fencing_token: fencing,
    }
}

/// Opens a command stream and checks that it starts with `subscribed`.
pub(crate) async fn watch(replica: &Replica, pod: &str) -> tonic::Streaming<pb::PodCommand> {
    let mut stream = replica
        .sessions()
        .watch_pod_commands(pb::WatchPodCommandsRequest {
            pod_id: pod.to_owned(),
            instance_id: instance(pod),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(
        matches!(first.command, Some(pb::pod_command::Command::Subscribed(_))),
        "first message is `subscribed`: {first:?}"
    );
    stream
}

/// The next kill on `stream`, skipping pings.
pub(crate) async fn next_kill(
    stream: &mut tonic::Streaming<pb::PodCommand>,
    within: Duration,
) -> Option<pb::KillConnection> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let message = tokio::time::timeout_at(deadline, stream.message())
            .await
            .ok()?;
        match message.ok()??.command {
            Some(pb::pod_command::Command::Kill(kill)) => return Some(kill),
            _ => continue,
        }
    }
}
