//! Test harness: the real coordinator in-process (memory store), edges started with `run` on
//! 127.0.0.1:0, a WebSocket client speaking json.v1, token minting and gRPC clients.

use daisi_config::Env;
use daisi_domain::token::{AdminClaims, TokenKeyring, UserClaims};
use daisi_edge::coordinator::AnyCoordinator;
use daisi_edge::coordinator::faults::{FaultInjector, Faults};
use daisi_edge::coordinator::grpc::GrpcCoordinator;
use daisi_edge::{Config, Listeners};
use daisi_proto::coordinator::v1 as cpb;
use daisi_proto::edge::v1 as epb;
use daisi_runtime::CancellationToken;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// User token key of the shared token vectors.
pub const USER_KEY: &str = "3a7bd3e2360a3d29eea436e864a1b8d5f2f5d5e4dba8ac39d465fc3488db3915";
/// Admin token key of the shared token vectors.
pub const ADMIN_KEY: &str = "c8b7d5f83e8d4b3c9e2a7b6d5f4e3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f";
/// `secret_token`.
pub const API_KEY: &str = "user-api-key";
/// `admin_secret_token`.
pub const ADMIN_API_KEY: &str = "admin-api-key";
/// Backend credential of `/generate-token` on the minting listener.
pub const MINT_KEY: &str = "backend-mint-key-0123";
/// Backend credential of `/admin/generate-token` on the minting listener.
pub const ADMIN_MINT_KEY: &str = "backend-admin-mint-key-0123";
/// Bound of every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(5);

/// The real coordinator, in-process, with the memory store.
pub struct Coord {
    /// gRPC endpoint.
    pub url: String,
    stop: CancellationToken,
}

impl Coord {
    /// Starts one.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts one with its settings changed by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut daisi_coordinator::Config)) -> Self {
        let mut config = daisi_coordinator::Config::for_tests();
        tweak(&mut config);
        let listeners = daisi_coordinator::Listeners::bind(&config)
            .await
            .expect("bind coordinator");
        let url = format!("http://{}", listeners.grpc.local_addr().unwrap());
        let stop = CancellationToken::new();
        tokio::spawn(daisi_coordinator::run(config, listeners, stop.clone()));
        Self { url, stop }
    }

    /// The operations API.
    pub async fn admin(
        &self,
    ) -> cpb::coordinator_admin_client::CoordinatorAdminClient<tonic::transport::Channel> {
        cpb::coordinator_admin_client::CoordinatorAdminClient::connect(self.url.clone())
            .await
            .expect("coordinator admin client")
    }

    /// Who holds the session of a user, if anyone: (pod, connection).
    pub async fn holder(&self, company: &str, agent: &str, user: &str) -> Option<(String, String)> {
        let key = cpb::SessionKey {
            kind: Some(cpb::session_key::Kind::User(cpb::UserSessionKey {
                company_id: company.into(),
                agent_id: agent.into(),
                user_id: user.into(),
            })),
        };
        let response = self
            .admin()
            .await
            .get_session(cpb::GetSessionRequest { key: Some(key) })
            .await
            .ok()?
            .into_inner();
        let holder = response.session?.holder?;
        Some((holder.pod_id, holder.connection_id))
    }
}

impl Coord {
    /// The routes `pod` has registered, as `Debug` strings (sorted).
    pub async fn routes_of(&self, pod: &str) -> Vec<String> {
        let entries = self
            .admin()
            .await
            .get_routes(cpb::GetRoutesRequest {
                selector: Some(cpb::get_routes_request::Selector::PodId(pod.into())),
                page_size: 1_000,
                page_token: String::new(),
            })
            .await
            .expect("get routes")
            .into_inner()
            .entries;
        let mut routes: Vec<String> = entries
            .into_iter()
            .map(|e| format!("{:?}", e.route))
            .collect();
        routes.sort();
        routes
    }

    /// A client of this coordinator behind a fault injector, for `TestEdge::start_with`.
    pub fn faulty(&self) -> (AnyCoordinator, std::sync::Arc<Faults>) {
        let url = url::Url::parse(&self.url).expect("coordinator url");
        let grpc = GrpcCoordinator::new(&[url], Duration::from_secs(1)).expect("grpc client");
        let (injector, faults) = FaultInjector::new(grpc);
        (AnyCoordinator::Faulty(injector), faults)
    }
}

impl Drop for Coord {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A running edge.
pub struct TestEdge {
    /// HTTP address.
    pub http: SocketAddr,
    /// gRPC address.
    pub grpc: SocketAddr,
    /// Minting listener, when it has a credential.
    pub mint: Option<SocketAddr>,
    /// Its pod id.
    pub pod: String,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), daisi_edge::Error>>>,
}

/// Settings of a test edge.
pub fn config(pod: &str, coordinator_url: &str) -> Config {
    let env = Env::from_pairs([
        ("DAISI_EDGE_HTTP_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_GRPC_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_POD_ID", pod),
        ("DAISI_EDGE_COORDINATOR_URL", coordinator_url),
        ("DAISI_EDGE_TOKEN_AES_KEY", USER_KEY),
        ("DAISI_EDGE_ADMIN_TOKEN_AES_KEY", ADMIN_KEY),
        ("DAISI_EDGE_SECRET_TOKEN", API_KEY),
        ("DAISI_EDGE_ADMIN_SECRET_TOKEN", ADMIN_API_KEY),
        ("DAISI_EDGE_SHUTDOWN_GRACE", "3s"),
        ("DAISI_EDGE_COORDINATOR_TIMEOUT", "1s"),
        ("DAISI_EDGE_MINT_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_MINT_API_KEY", MINT_KEY),
        ("DAISI_EDGE_ADMIN_MINT_API_KEY", ADMIN_MINT_KEY),
    ]);
    Config::from_env(&env).expect("test config").value
}

impl TestEdge {
    /// Starts an edge against the coordinator at `url`, waiting until it is ready.
    pub async fn start(url: &str, pod: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        let edge = Self::spawn(url, pod, tweak, None).await;
        edge.wait_ready().await;
        edge
    }

    /// Starts an edge over a given coordinator (the in-memory one), waiting until ready.
    pub async fn start_with(
        coordinator: AnyCoordinator,
        pod: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let edge = Self::spawn("http://127.0.0.1:1", pod, tweak, Some(coordinator)).await;
        edge.wait_ready().await;
        edge
    }

    /// Starts an edge without waiting for readiness.
    pub async fn spawn(
        url: &str,
        pod: &str,
        tweak: impl FnOnce(&mut Config),
        coordinator: Option<AnyCoordinator>,
    ) -> Self {
        let mut config = config(pod, url);
        tweak(&mut config);
        let listeners = Listeners::bind(&config).await.expect("bind edge");
        let http = listeners.http.local_addr().unwrap();
        let grpc = listeners.grpc.local_addr().unwrap();
        let mint = listeners.mint.as_ref().map(|l| l.local_addr().unwrap());
        let stop = CancellationToken::new();
        let task = match coordinator {
            Some(c) => tokio::spawn(daisi_edge::run_with(config, listeners, c, stop.clone())),
            None => tokio::spawn(daisi_edge::run(config, listeners, stop.clone())),
        };
        Self {
            http,
            grpc,
            mint,
            pod: pod.to_owned(),
            stop,
            task: Some(task),
        }
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok((200, _)) = daisi_testkit::get_json(self.http, "/ready").await {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "edge never ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM equivalent: drains and waits for `run` to return.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("edge stops within its grace");
            result.expect("edge task").expect("edge run ok");
        }
    }

    /// Starts the drain without waiting.
    pub fn begin_shutdown(&self) {
        self.stop.cancel();
    }

    /// `EdgeDelivery` client.
    pub async fn delivery(
        &self,
    ) -> epb::edge_delivery_client::EdgeDeliveryClient<tonic::transport::Channel> {
        epb::edge_delivery_client::EdgeDeliveryClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("delivery client")
    }

    /// Delivers `events` as a router would; returns the results.
    pub async fn deliver(&self, events: Vec<epb::Event>) -> Vec<epb::EventResult> {
        self.delivery()
            .await
            .deliver(epb::DeliverRequest {
                pod_id: self.pod.clone(),
                events,
                router_id: "test".into(),
            })
            .await
            .expect("deliver")
            .into_inner()
            .results
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// An event for `delivery`.
pub fn event(
    seq: u64,
    company: &str,
    agent: &str,
    scope: epb::DeliveryScope,
    chat: &str,
    event_type: &str,
    payload: &str,
) -> epb::Event {
    epb::Event {
        stream_sequence: seq,
        subject: format!("websocket.{company}.{agent}.{event_type}"),
        target: Some(epb::Target {
            company_id: company.into(),
            agent_id: agent.into(),
            scope: scope as i32,
            chat_id: chat.into(),
        }),
        event_type: event_type.into(),
        payload: payload.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A `chat` event of c1/a1 for every user socket of the agent (`AgentUsers`): the tests' usual
/// event.
pub fn agent_users_event(seq: u64, payload: &str) -> epb::Event {
    event(
        seq,
        "c1",
        "a1",
        epb::DeliveryScope::AgentUsers,
        "",
        "chat",
        payload,
    )
}

/// A user token valid for an hour.
pub fn user_token(company: &str, agent: &str, user: &str) -> String {
    let claims = UserClaims::expiring_in(
        company.parse().unwrap(),
        agent.parse().unwrap(),
        user.parse().unwrap(),
        jiff::Timestamp::now(),
        3600,
    )
    .unwrap();
    TokenKeyring::from_hex(&[USER_KEY])
        .unwrap()
        .encode_user(&claims)
        .unwrap()
}

/// An admin token valid for an hour with the given filters.
pub fn admin_token(
    admin: &str,
    restriction: Option<&str>,
    company: Option<&str>,
    agent: Option<&str>,
) -> String {
    let mut claims =
        AdminClaims::expiring_in(admin.parse().unwrap(), jiff::Timestamp::now(), 3600).unwrap();
    claims.company_id_restriction = restriction.map(|c| c.parse().unwrap());
    claims.subscribed_company_id = company.map(|c| c.parse().unwrap());
    claims.subscribed_agent_id = agent.map(|a| a.parse().unwrap());
    TokenKeyring::from_hex(&[ADMIN_KEY])
        .unwrap()
        .encode_admin(&claims)
        .unwrap()
}

/// Percent-encodes a query value.
pub fn enc(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A refused upgrade: status, headers and body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Value,
}

/// A json.v1 client.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The subprotocol the server chose.
    pub protocol: Option<String>,
}

/// A json.v1 upgrade request for `url` carrying the API key.
pub fn v1_request(url: &str) -> tungstenite::handshake::client::Request {
    let mut request = url.into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("x-api-key", API_KEY.parse().unwrap());
    headers.insert("sec-websocket-protocol", "json.v1".parse().unwrap());
    request
}

/// Opens a `json.v1` socket at `path_and_query` with `api_key` in the header (when given).
pub async fn open(
    http: SocketAddr,
    path_and_query: &str,
    api_key: Option<&str>,
) -> Result<Client, Refused> {
    open_as(http, path_and_query, api_key, "json.v1").await
}

/// [`open`] offering the subprotocols `protocols` (e.g. `"json.v2, json.v1"`); the client
/// knows the one the server chose.
pub async fn open_as(
    http: SocketAddr,
    path_and_query: &str,
    api_key: Option<&str>,
    protocols: &str,
) -> Result<Client, Refused> {
    let mut request = format!("ws://{http}{path_and_query}")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        http::HeaderValue::from_str(protocols).unwrap(),
    );
    if let Some(key) = api_key {
        request
            .headers_mut()
            .insert("x-api-key", http::HeaderValue::from_str(key).unwrap());
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect in time")
    {
        Ok((ws, response)) => Ok(Client {
            ws,
            protocol: response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_owned()),
        }),
        Err(tungstenite::Error::Http(response)) => {
            let (parts, body) = response.into_parts();
            let body = body
                .map(|b| serde_json::from_slice(&b).unwrap_or(Value::Null))
                .unwrap_or(Value::Null);
            Err(Refused {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        }
        Err(e) => panic!("connect failed: {e}"),
    }
}

/// Opens a user socket with a fresh token; expects success and consumes `ready`.
pub async fn user(http: SocketAddr, company: &str, agent: &str, user_id: &str) -> Client {
    let token = user_token(company, agent, user_id);
    let mut client = open(
        http,
        &format!("/ws/{company}/{agent}?token={}", enc(&token)),
        Some(API_KEY),
    )
    .await
    .expect("user socket opens");
    assert_eq!(client.next_text().await, r#"{"type":"ready"}"#);
    client
}

/// Opens an admin socket; expects success and consumes `ready`.
pub async fn admin(http: SocketAddr, token: &str) -> Client {
    let mut client = open(
        http,
        &format!("/ws/admin?token={}", enc(token)),
        Some(ADMIN_API_KEY),
    )
    .await
    .expect("admin socket opens");
    assert_eq!(client.next_text().await, r#"{"type":"ready"}"#);
    client
}

/// What ended a socket.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    /// Text frames received before the close.
    pub frames: Vec<String>,
    /// Close code.
    pub code: Option<u16>,
    /// Close reason.
    pub reason: String,
}

impl Client {
    /// A client over an open WebSocket that negotiated `protocol`.
    pub fn from_parts(
        ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
        protocol: Option<String>,
    ) -> Self {
        Self { ws, protocol }
    }

    /// The WebSocket itself, for tests that read frames the helpers skip.
    pub fn ws(&mut self) -> &mut WebSocketStream<MaybeTlsStream<TcpStream>> {
        &mut self.ws
    }

    /// The next text frame (pings are answered by the client library while reading).
    pub async fn next_text(&mut self) -> String {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("socket open")
                .expect("frame");
            match next {
                Message::Text(t) => return t.to_string(),
                Message::Close(c) => panic!("closed while waiting for text: {c:?}"),
                _ => {}
            }
        }
    }

    /// The next text frame as JSON.
    pub async fn next_json(&mut self) -> Value {
        serde_json::from_str(&self.next_text().await).expect("json frame")
    }

    /// Waits up to `within` for a text frame; `None` when none came.
    pub async fn maybe_text(&mut self, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(Message::Text(t)))) => return Some(t.to_string()),
                Ok(Some(Ok(Message::Close(c)))) => panic!("closed: {c:?}"),
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("socket ended: {other:?}"),
            }
        }
    }

    /// Reads until the close frame (within `within`).
    pub async fn closed_within(&mut self, within: Duration) -> Closed {
        let mut frames = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("not closed within {within:?}; frames so far {frames:?}"),
                Ok(Some(Ok(Message::Text(t)))) => frames.push(t.to_string()),
                Ok(Some(Ok(Message::Close(c)))) => {
                    return Closed {
                        frames,
                        code: c.as_ref().map(|c| u16::from(c.code)),
                        reason: c.map(|c| c.reason.to_string()).unwrap_or_default(),
                    };
                }
                Ok(Some(Ok(_))) => {}
                Ok(None) | Ok(Some(Err(_))) => {
                    return Closed {
                        frames,
                        code: None,
                        reason: String::new(),
                    };
                }
            }
        }
    }

    /// Reads until the close frame.
    pub async fn closed(&mut self) -> Closed {
        self.closed_within(WAIT).await
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, data: &[u8]) {
        self.ws
            .send(Message::binary(data.to_vec()))
            .await
            .expect("send");
    }

    /// Closes politely.
    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
    }
}

/// Polls `check` until it holds (within [`WAIT`]).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// POSTs `body` to `http://{addr}{path}` with an optional header; status, headers and the body
/// as JSON (or as a string when it is not JSON).
pub async fn post(
    addr: SocketAddr,
    path: &str,
    header: Option<(&str, &str)>,
    body: &str,
) -> (u16, http::HeaderMap, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .body(body.to_owned());
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The value of the first sample of `name` whose labels contain all of `labels` (0 when there
/// is none).
pub fn metric(text: &str, name: &str, labels: &[&str]) -> u64 {
    text.lines()
        .find(|l| {
            l.split(['{', ' ']).next() == Some(name) && labels.iter().all(|label| l.contains(label))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Sockets per source address when a test opens thousands of them: one address has only so
/// many ports, so socket `i` comes from `127.0.0.(first_source + i / 2,000)`, on a port the
/// kernel picks for that address. (Fixed client ports collided with servers that test
/// harnesses start on ports below the ephemeral range, `daisi_testkit::ports`, and with the
/// same test running in another checkout: `Address already in use`.)
pub const PER_SOURCE_ADDRESS: usize = 2_000;

/// User socket `i` of c1/a1 (json.v1) from its own source address and port (see
/// [`PER_SOURCE_ADDRESS`]), read up to its `ready`.
pub async fn connect_numbered(
    http: SocketAddr,
    first_source: u8,
    i: usize,
    token: &str,
) -> WebSocketStream<TcpStream> {
    let source = std::net::IpAddr::V4(std::net::Ipv4Addr::new(
        127,
        0,
        0,
        first_source + (i / PER_SOURCE_ADDRESS) as u8,
    ));
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source, 0))
        .unwrap_or_else(|e| panic!("cannot bind a client port on {source}: {e}"));
    let tcp = socket.connect(http).await.unwrap();
    let request = v1_request(&format!("ws://{http}/ws/c1/a1?token={}", enc(token)));
    let (mut ws, _) = tokio_tungstenite::client_async(request, tcp)
        .await
        .unwrap_or_else(|e| panic!("socket {i} refused: {e}"));
    match ws.next().await {
        Some(Ok(Message::Text(text))) if text.as_str().contains("\"ready\"") => ws,
        other => panic!("socket {i}: expected ready, got {other:?}"),
    }
}
