//! A whole daisi deployment for one scenario, and the helpers scenarios are written with.

use crate::backend::{Backend, LauncherKind};
use crate::client::{Refused, WsClient};
use crate::pki::StackPki;
use crate::secrets::{Secrets, User};
use crate::topology::{Component, Port, Timing, service_env};
use crate::trail::step;
use anyhow::Context;
use daisi_proto::coordinator::v1 as pb;
use daisi_runtime::internal::ClientAuth;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

/// Shape of a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Coordinator replicas.
    pub coordinators: u8,
    /// Router replicas.
    pub routers: u8,
    /// Edge pods.
    pub edges: u8,
    /// Leases and grace periods.
    pub timing: Timing,
    /// Router settings that replace or add to the defaults of `topology.rs`.
    pub router_env: Vec<(String, String)>,
    /// Edge settings that replace or add to the defaults of `topology.rs`.
    pub edge_env: Vec<(String, String)>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            coordinators: 2,
            routers: 2,
            edges: 2,
            timing: Timing::default(),
            router_env: Vec::new(),
            edge_env: Vec::new(),
        }
    }
}

impl StackOptions {
    /// Sets a router variable for every router of the stack.
    #[must_use]
    pub fn router(mut self, name: &str, value: impl Into<String>) -> Self {
        self.router_env.push((name.to_owned(), value.into()));
        self
    }

    /// Sets an edge variable for every edge of the stack.
    #[must_use]
    pub fn edge(mut self, name: &str, value: impl Into<String>) -> Self {
        self.edge_env.push((name.to_owned(), value.into()));
        self
    }
}

/// A running stack. Dropping it stops and removes everything.
#[derive(Debug)]
pub struct Stack {
    backend: Backend,
    secrets: Secrets,
    /// The run's CA and certificates (mutual TLS between services).
    pki: StackPki,
    options: StackOptions,
    nats: Option<async_nats::Client>,
}

/// One edge pod as clients see it.
#[derive(Debug, Clone)]
pub struct Edge {
    /// Client-facing HTTP address.
    pub addr: SocketAddr,
    secrets: Secrets,
}

impl Edge {
    /// Connects `user` (user or admin socket) and waits for `ready`.
    pub async fn connect(&self, user: &User) -> anyhow::Result<WsClient> {
        WsClient::connect(self.addr, user, self.key(user)).await
    }

    /// Connects `user` speaking `json.v2` (recovering from `since`, `<epoch>:<seq>`, when
    /// given) and waits for `ready`.
    pub async fn connect_v2(&self, user: &User, since: Option<&str>) -> anyhow::Result<WsClient> {
        WsClient::connect_v2(self.addr, user, self.key(user), since).await
    }

    /// Connects without waiting for `ready`, reporting a refusal instead of failing.
    pub async fn try_connect(&self, user: &User) -> anyhow::Result<Result<WsClient, Refused>> {
        WsClient::try_connect(self.addr, user, self.key(user)).await
    }

    /// Connects with an explicit API key (for bad-input scenarios).
    pub async fn try_connect_with_key(
        &self,
        user: &User,
        key: &str,
    ) -> anyhow::Result<Result<WsClient, Refused>> {
        WsClient::try_connect(self.addr, user, key).await
    }

    fn key(&self, user: &User) -> &str {
        if user.admin {
            &self.secrets.admin_api_key
        } else {
            &self.secrets.api_key
        }
    }
}

impl Stack {
    /// Starts Redis, NATS, the coordinators, routers and edges, in that order, each ready
    /// before the next starts. The launcher comes from `DAISI_IT_LAUNCHER`.
    pub async fn start(options: StackOptions) -> anyhow::Result<Self> {
        let kind = LauncherKind::from_env()?;
        step(format_args!("starting a stack on {kind:?}: {options:?}"));
        let pki = StackPki::generate(options.coordinators, options.routers, options.edges)?;
        let mut stack = Self {
            backend: Backend::new(kind).await?,
            secrets: Secrets::generate(),
            pki,
            options,
            nats: None,
        };
        stack.launch(Component::Redis).await?;
        stack.launch(Component::Nats).await?;
        for i in 1..=stack.options.coordinators {
            stack.launch(Component::Coordinator(i)).await?;
        }
        for i in 1..=stack.options.routers {
            stack.launch(Component::Router(i)).await?;
        }
        for i in 1..=stack.options.edges {
            stack.launch(Component::Edge(i)).await?;
        }
        Ok(stack)
    }

    async fn launch(&mut self, component: Component) -> anyhow::Result<()> {
        for i in 1..=self.options.coordinators {
            self.backend.prepare(Component::Coordinator(i))?;
        }
        self.backend.prepare(component)?;
        let mut env = service_env(
            component,
            self.backend.addresses(),
            &self.secrets,
            &self.options.timing,
            self.options.coordinators,
        );
        env.extend(self.pki.env(component));
        let overrides = match component {
            Component::Router(_) => &self.options.router_env[..],
            Component::Edge(_) => &self.options.edge_env[..],
            _ => &[],
        };
        for (name, value) in overrides {
            env.retain(|(k, _)| k != name);
            env.push((name.clone(), value.clone()));
        }
        step(format_args!("start {component}"));
        self.backend.start(component, &env).await?;
        self.wait_ready(component, Duration::from_secs(30)).await?;
        step(format_args!("{component} ready"));
        Ok(())
    }

    /// Waits until a service's `/ready` answers 200 (Redis and NATS: until they accept TCP).
    pub async fn wait_ready(&self, component: Component, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            match component {
                Component::Redis | Component::Nats => {
                    let port = if component == Component::Redis {
                        Port::Redis
                    } else {
                        Port::Nats
                    };
                    // Redis may listen on a unix socket only (process launcher).
                    let Ok(addr) = self.backend.host_addr(component, port) else {
                        return Ok(());
                    };
                    if tokio::net::TcpStream::connect(addr).await.is_ok() {
                        return Ok(());
                    }
                }
                _ => {
                    let addr = self.backend.host_addr(component, Port::Http)?;
                    match daisi_testkit::get_json(addr, "/ready").await {
                        Ok((200, _)) => return Ok(()),
                        Ok((status, body)) => last = format!("{status} {body}"),
                        Err(e) => last = e.to_string(),
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("{component} not ready within {within:?} (last answer: {last})")
    }

    /// The stack's secrets.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// Host address of coordinator replica `i`'s gRPC API (admin API included).
    pub fn coordinator_addr(&self, i: u8) -> anyhow::Result<SocketAddr> {
        self.backend
            .host_addr(Component::Coordinator(i), Port::Grpc)
    }

    /// A user with a valid token.
    pub fn user(&self, company: &str, agent: &str, user: &str) -> User {
        self.secrets
            .user(company, agent, user)
            .unwrap_or_else(|e| panic!("bad test user: {e}"))
    }

    /// An admin with a valid token and optional subscription filters.
    pub fn admin(&self, admin: &str, company: Option<&str>, agent: Option<&str>) -> User {
        self.secrets
            .admin(admin, company, agent)
            .unwrap_or_else(|e| panic!("bad test admin: {e}"))
    }

    /// Edge pod `i` (from 1).
    pub fn edge(&self, i: u8) -> Edge {
        let addr = self
            .backend
            .host_addr(Component::Edge(i), Port::Http)
            .unwrap_or_else(|e| panic!("edge {i}: {e}"));
        Edge {
            addr,
            secrets: self.secrets.clone(),
        }
    }

    /// Router `i`'s HTTP address (publish API).
    pub fn router_addr(&self, i: u8) -> anyhow::Result<SocketAddr> {
        self.backend.host_addr(Component::Router(i), Port::Http)
    }

    /// The `/metrics` page of a daisi service (edge, coordinator or router).
    pub async fn metrics(&self, component: Component) -> anyhow::Result<String> {
        let addr = self.backend.host_addr(component, Port::Http)?;
        let response = daisi_testkit::http_client()
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .with_context(|| format!("{component} /metrics"))?;
        Ok(response.text().await?)
    }

    /// Messages router `i` has taken from the stream so far (its Prometheus counter).
    pub async fn router_consumed(&self, i: u8) -> anyhow::Result<u64> {
        Ok(self.router_metric(i, "daisi_router_consumed_total").await? as u64)
    }

    async fn nats(&mut self) -> anyhow::Result<async_nats::Client> {
        if let Some(client) = &self.nats {
            return Ok(client.clone());
        }
        let addr = self.backend.host_addr(Component::Nats, Port::Nats)?;
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .retry_on_initial_connect()
            .connect(format!("nats://{addr}"));
        let client = tokio::time::timeout(Duration::from_secs(15), client)
            .await
            .with_context(|| format!("no NATS connection to {addr} within 15 s"))??;
        self.nats = Some(client.clone());
        Ok(client)
    }

    /// Publishes `payload` to `subject` through JetStream and waits for the stream's ack.
    pub async fn publish(&mut self, subject: &str, payload: &Value) -> anyhow::Result<u64> {
        step(format_args!("publish to {subject}"));
        let js = async_nats::jetstream::new(self.nats().await?);
        let ack = js
            .publish(subject.to_owned(), serde_json::to_vec(payload)?.into())
            .await?
            .await
            .with_context(|| format!("publishing to {subject}"))?;
        Ok(ack.sequence)
    }

    /// Publishes raw bytes (malformed payloads).
    pub async fn publish_raw(&mut self, subject: &str, payload: &[u8]) -> anyhow::Result<u64> {
        step(format_args!(
            "publish {} raw bytes to {subject}",
            payload.len()
        ));
        let js = async_nats::jetstream::new(self.nats().await?);
        let ack = js
            .publish(subject.to_owned(), payload.to_vec().into())
            .await?
            .await?;
        Ok(ack.sequence)
    }

    /// SIGKILL (or container kill) of edge `i`.
    pub async fn kill_edge(&mut self, i: u8) -> anyhow::Result<()> {
        self.kill(Component::Edge(i)).await
    }

    /// SIGKILL of router `i`.
    pub async fn kill_router(&mut self, i: u8) -> anyhow::Result<()> {
        self.kill(Component::Router(i)).await
    }

    /// SIGKILL of coordinator `i`.
    pub async fn kill_coordinator(&mut self, i: u8) -> anyhow::Result<()> {
        self.kill(Component::Coordinator(i)).await
    }

    async fn kill(&mut self, component: Component) -> anyhow::Result<()> {
        step(format_args!("kill {component}"));
        self.backend.kill(component).await?;
        step(format_args!("{component} killed"));
        Ok(())
    }

    /// SIGTERM to `component`; waits for it to exit and returns its exit code.
    pub async fn terminate(&mut self, component: Component) -> anyhow::Result<Option<i64>> {
        let within = self.options.timing.edge_grace + Duration::from_secs(10);
        step(format_args!(
            "terminate {component} (SIGTERM, {within:?} to exit)"
        ));
        let code = self.backend.terminate(component, within).await?;
        step(format_args!("{component} exited with {code:?}"));
        Ok(code)
    }

    /// Starts `component` again (same ports, same settings) and waits until it is ready.
    pub async fn restart(&mut self, component: Component) -> anyhow::Result<()> {
        self.launch(component).await
    }

    /// Freezes `component` (SIGSTOP / docker pause): it stays registered and its TCP ports
    /// still accept connections, but nothing answers.
    pub async fn freeze(&mut self, component: Component) -> anyhow::Result<()> {
        step(format_args!("freeze {component}"));
        self.backend.pause(component).await
    }

    /// Thaws a frozen component (SIGCONT / docker unpause).
    pub async fn thaw(&mut self, component: Component) -> anyhow::Result<()> {
        step(format_args!("thaw {component}"));
        self.backend.resume(component).await
    }

    /// Publishes `messages` through JetStream at about `per_second`, acknowledgements awaited
    /// in windows (so the client's cap on acks in flight never stalls it). Calls `tick` with
    /// the number published so far after every window (a scenario freezes something midway).
    pub async fn publish_paced(
        &mut self,
        messages: impl IntoIterator<Item = (String, Value)>,
        per_second: u32,
        mut tick: impl AsyncFnMut(&mut Self, usize) -> anyhow::Result<()>,
    ) -> anyhow::Result<usize> {
        const WINDOW: usize = 100;
        let js = async_nats::jetstream::new(self.nats().await?);
        let started = tokio::time::Instant::now();
        let per_second = f64::from(per_second.max(1));
        let mut published = 0usize;
        let mut acks = Vec::with_capacity(WINDOW);
        let mut messages = messages.into_iter().peekable();
        while messages.peek().is_some() {
            for (subject, payload) in messages.by_ref().take(WINDOW) {
                acks.push(
                    js.publish(subject, serde_json::to_vec(&payload)?.into())
                        .await?,
                );
            }
            for ack in acks.drain(..) {
                ack.await.context("stream ack")?;
                published += 1;
            }
            let due = started + Duration::from_secs_f64(published as f64 / per_second);
            tokio::time::sleep_until(due).await;
            tick(self, published).await?;
        }
        step(format_args!(
            "published {published} events in {:?}",
            started.elapsed()
        ));
        Ok(published)
    }

    /// [`Stack::publish_paced`], handing `tick` the stream sequences acknowledged in each
    /// window, in publication order.
    pub async fn publish_paced_seq(
        &mut self,
        messages: impl IntoIterator<Item = (String, Value)>,
        per_second: u32,
        mut tick: impl AsyncFnMut(&mut Self, &[u64]) -> anyhow::Result<()>,
    ) -> anyhow::Result<usize> {
        const WINDOW: usize = 50;
        let js = async_nats::jetstream::new(self.nats().await?);
        let started = tokio::time::Instant::now();
        let per_second = f64::from(per_second.max(1));
        let mut published = 0usize;
        let mut acks = Vec::with_capacity(WINDOW);
        let mut seqs = Vec::with_capacity(WINDOW);
        let mut messages = messages.into_iter().peekable();
        while messages.peek().is_some() {
            for (subject, payload) in messages.by_ref().take(WINDOW) {
                acks.push(
                    js.publish(subject, serde_json::to_vec(&payload)?.into())
                        .await?,
                );
            }
            seqs.clear();
            for ack in acks.drain(..) {
                seqs.push(ack.await.context("stream ack")?.sequence);
                published += 1;
            }
            tick(self, &seqs).await?;
            let due = started + Duration::from_secs_f64(published as f64 / per_second);
            tokio::time::sleep_until(due).await;
        }
        step(format_args!(
            "published {published} events in {:?}",
            started.elapsed()
        ));
        Ok(published)
    }

    /// A core NATS subscription (dead letters are plain publishes).
    pub async fn subscribe(&mut self, subject: &str) -> anyhow::Result<async_nats::Subscriber> {
        let client = self.nats().await?;
        let subscriber = client.subscribe(subject.to_owned()).await?;
        client.flush().await?;
        Ok(subscriber)
    }

    /// Sum of the samples of router `i`'s metric lines that start with `prefix` (name and
    /// labels), histograms' buckets aside.
    pub async fn router_metric(&self, i: u8, prefix: &str) -> anyhow::Result<f64> {
        let addr = self.router_addr(i)?;
        let text = daisi_testkit::http_client()
            .get(format!("http://{addr}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// Freezes Redis (SIGSTOP / docker pause).
    pub async fn pause_redis(&mut self) -> anyhow::Result<()> {
        step("pause redis");
        self.backend.pause(Component::Redis).await
    }

    /// Thaws Redis.
    pub async fn resume_redis(&mut self) -> anyhow::Result<()> {
        step("resume redis");
        self.backend.resume(Component::Redis).await
    }

    /// Stops NATS and starts it again (same port and store).
    pub async fn restart_nats(&mut self) -> anyhow::Result<()> {
        step("restart nats");
        self.backend
            .terminate(Component::Nats, Duration::from_secs(10))
            .await?;
        self.backend.start(Component::Nats, &[]).await?;
        // The host port may have changed (Docker publishes anew on start): reconnect.
        self.nats = None;
        self.wait_ready(Component::Nats, Duration::from_secs(30))
            .await
    }

    /// A client of coordinator `i`'s admin API with the stack's operator credential (the
    /// internal gRPC of the stack is authenticated), with connect and call deadlines.
    pub async fn admin_client(&self, i: u8) -> anyhow::Result<AdminClient> {
        let addr = self
            .backend
            .host_addr(Component::Coordinator(i), Port::Grpc)?;
        admin_client(addr, self.pki.admin()).await
    }

    /// Sessions the coordinator knows for `company`, as (session key text, holder pod).
    pub async fn sessions(&self, company: &str) -> anyhow::Result<Vec<(String, String)>> {
        let mut last = None;
        for i in 1..=self.options.coordinators {
            let addr = self
                .backend
                .host_addr(Component::Coordinator(i), Port::Grpc)?;
            match list_sessions(addr, self.pki.admin(), company).await {
                Ok(sessions) => return Ok(sessions),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no coordinator")))
    }

    /// An operator's KillSession of a user's session through coordinator `via` (whoever holds
    /// it); `true` when a session was killed.
    pub async fn kill_session(
        &self,
        via: u8,
        company: &str,
        agent: &str,
        user: &str,
    ) -> anyhow::Result<bool> {
        step(format_args!(
            "kill session {company}/{agent}/{user} through coordinator-{via}"
        ));
        let addr = self
            .backend
            .host_addr(Component::Coordinator(via), Port::Grpc)?;
        let mut client = admin_client(addr, self.pki.admin()).await?;
        let answer = client
            .kill_session(pb::KillSessionRequest {
                key: Some(pb::SessionKey {
                    kind: Some(pb::session_key::Kind::User(pb::UserSessionKey {
                        company_id: company.to_owned(),
                        agent_id: agent.to_owned(),
                        user_id: user.to_owned(),
                    })),
                }),
                reason: "integration test".to_owned(),
                connection_id: String::new(),
            })
            .await?
            .into_inner();
        Ok(answer.killed)
    }

    /// The pods the coordinator lists for the (company, agent) route.
    pub async fn agent_route(&self, company: &str, agent: &str) -> anyhow::Result<Vec<String>> {
        let mut last = None;
        for i in 1..=self.options.coordinators {
            let addr = self
                .backend
                .host_addr(Component::Coordinator(i), Port::Grpc)?;
            match agent_route_pods(addr, self.pki.admin(), company, agent).await {
                Ok(pods) => return Ok(pods),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no coordinator")))
    }

    /// Logs of every component, labelled.
    pub async fn all_logs(&self) -> String {
        let mut components = vec![Component::Redis, Component::Nats];
        components.extend((1..=self.options.coordinators).map(Component::Coordinator));
        components.extend((1..=self.options.routers).map(Component::Router));
        components.extend((1..=self.options.edges).map(Component::Edge));
        let mut text = String::new();
        for c in components {
            text.push_str(&format!(
                "\n===== {c} =====\n{}\n",
                self.backend.logs(c).await
            ));
            // The counters often tell what the logs do not (held, dropped, forwarded...).
            if matches!(c, Component::Router(_) | Component::Edge(_)) {
                text.push_str(&format!(
                    "--- {c} metrics ---\n{}\n",
                    self.counters(c).await
                ));
            }
        }
        text
    }

    /// The non-zero counters and gauges of a service's `/metrics`, histograms left out.
    async fn counters(&self, component: Component) -> String {
        let Ok(addr) = self.backend.host_addr(component, Port::Http) else {
            return String::new();
        };
        let fetch = async {
            daisi_testkit::http_client()
                .get(format!("http://{addr}/metrics"))
                .send()
                .await?
                .text()
                .await
        };
        match tokio::time::timeout(Duration::from_secs(2), fetch).await {
            Ok(Ok(body)) => body
                .lines()
                .filter(|l| !l.starts_with('#') && !l.ends_with(" 0") && !l.contains("_bucket"))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => "(unreachable)".to_owned(),
        }
    }
}

/// A coordinator admin API client carrying the stack's operator credential.
pub type AdminClient = pb::coordinator_admin_client::CoordinatorAdminClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, ClientAuth>,
>;

/// A channel to a coordinator's admin API that cannot hang a scenario.
async fn admin_client(addr: SocketAddr, auth: &ClientAuth) -> anyhow::Result<AdminClient> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    let channel = auth.connect(&endpoint).await?;
    Ok(
        pb::coordinator_admin_client::CoordinatorAdminClient::with_interceptor(
            channel,
            auth.clone(),
        ),
    )
}

async fn agent_route_pods(
    addr: SocketAddr,
    auth: &ClientAuth,
    company: &str,
    agent: &str,
) -> anyhow::Result<Vec<String>> {
    let mut client = admin_client(addr, auth).await?;
    let route = pb::Route {
        kind: Some(pb::route::Kind::Agent(pb::AgentRoute {
            company_id: company.to_owned(),
            agent_id: agent.to_owned(),
        })),
    };
    let entries = client
        .get_routes(pb::GetRoutesRequest {
            selector: Some(pb::get_routes_request::Selector::Route(route)),
            page_size: 1000,
            page_token: String::new(),
        })
        .await?
        .into_inner()
        .entries;
    Ok(entries.into_iter().map(|e| e.pod_id).collect())
}

async fn list_sessions(
    addr: SocketAddr,
    auth: &ClientAuth,
    company: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut client = admin_client(addr, auth).await?;
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_sessions(pb::ListSessionsRequest {
                filter: Some(pb::list_sessions_request::Filter::CompanyId(
                    company.to_owned(),
                )),
                page_size: 1000,
                page_token: page_token.clone(),
            })
            .await?
            .into_inner();
        for s in page.sessions {
            let key = match s.key.and_then(|k| k.kind) {
                Some(pb::session_key::Kind::User(u)) => {
                    format!("{}/{}/{}", u.company_id, u.agent_id, u.user_id)
                }
                Some(pb::session_key::Kind::Admin(a)) => format!("admin/{}", a.admin_id),
                None => String::new(),
            };
            out.push((key, s.holder.map(|h| h.pod_id).unwrap_or_default()));
        }
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = page.next_page_token;
    }
}

/// How long a scenario may run, stack start-up included. Scenarios take 5–15 s; the bound
/// sits below the test runner's own limit (see `.config/nextest.toml`), so an overrun
/// reports the step it hung in and the services' logs instead of being killed silently.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(150);

/// Runs `scenario` on a fresh stack; on failure (or an overrun of 150 s) prints every
/// service's logs, then panics.
pub async fn scenario<F>(options: StackOptions, scenario: F)
where
    F: AsyncFnOnce(&mut Stack) -> anyhow::Result<()>,
{
    let deadline = tokio::time::Instant::now() + SCENARIO_DEADLINE;
    let mut stack = match tokio::time::timeout_at(deadline, Stack::start(options)).await {
        Ok(Ok(stack)) => stack,
        Ok(Err(e)) => panic!("the stack did not start: {e:#}"),
        Err(_) => panic!("the stack did not start within {SCENARIO_DEADLINE:?}"),
    };
    step("stack up, scenario starts");
    let outcome = match tokio::time::timeout_at(deadline, scenario(&mut stack)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(anyhow::anyhow!(
            "the scenario overran {SCENARIO_DEADLINE:?}; the last step above is where it hung"
        )),
    };
    if let Err(e) = outcome {
        step(format_args!("scenario failed: {e:#}"));
        let logs = stack.all_logs().await;
        #[allow(clippy::print_stderr)] // the whole point: show the logs of the failed run
        {
            eprintln!("scenario failed: {e:#}\nservice logs:{logs}");
        }
        panic!("scenario failed: {e:#}");
    }
    step("scenario passed, tearing the stack down");
    drop(stack);
    step("stack torn down");
}
