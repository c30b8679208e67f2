//! `daisi dev`: the whole system in one process — coordinator, router and edge wired through
//! their real gRPC APIs on loopback — with in-memory backends and throw-away secrets, like
//! Centrifugo's memory engine. `--redis-url` / `--nats-url` switch to the real backends.
//!
//! Every service is configured through its own `DAISI_*` variables, exactly as in production.
//! The flags win over the environment for what they name, their defaults included:
//! `--edge-addr`, `--mint-addr`, `--router-addr` and `--coordinator-addr` always set
//! `DAISI_EDGE_HTTP_ADDR`, `DAISI_EDGE_MINT_ADDR`, `DAISI_ROUTER_HTTP_ADDR` and
//! `DAISI_COORDINATOR_GRPC_ADDR`, and `--redis-url` / `--nats-url` (or their absence: memory)
//! always set `DAISI_COORDINATOR_STORE` / `DAISI_COORDINATOR_REDIS_URL` and
//! `DAISI_ROUTER_SOURCE` / `DAISI_ROUTER_NATS_URL`. Everything else this command fills in (the
//! wiring between the services, the secrets) only where the environment leaves it unset, so
//! any other setting can still be changed from the environment.

use crate::output;
use clap::Args;
use daisi_config::Env;
use daisi_runtime::CancellationToken;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;
use tokio::task::JoinSet;
use url::Url;

/// How long the services may take to answer `/ready`.
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// The running services: each task ends with its name and how it stopped.
type Services = JoinSet<(&'static str, anyhow::Result<()>)>;

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// Use this Redis for sessions and routes instead of memory.
    #[arg(long)]
    redis_url: Option<Url>,
    /// Use this NATS JetStream instead of the in-memory event source.
    #[arg(long)]
    nats_url: Option<Url>,
    /// Edge HTTP (WebSockets, console).
    #[arg(long, default_value = "127.0.0.1:8080")]
    edge_addr: SocketAddr,
    /// Edge minting listener (token minting for backends).
    #[arg(long, default_value = "127.0.0.1:8082")]
    mint_addr: SocketAddr,
    /// Router HTTP (publish API).
    #[arg(long, default_value = "127.0.0.1:8081")]
    router_addr: SocketAddr,
    /// Coordinator gRPC (for `daisi sessions`, `daisi pods`, `daisi routes`).
    #[arg(long, default_value = "127.0.0.1:50051")]
    coordinator_addr: SocketAddr,
    /// Company, agent and user of the printed user token.
    #[arg(long, default_value = "demo-company")]
    company: String,
    #[arg(long, default_value = "demo-agent")]
    agent: String,
    #[arg(long, default_value = "demo-user")]
    user: String,
}

/// Secrets of the dev stack: from the environment when set, otherwise fresh.
struct Secrets {
    user_key: String,
    admin_key: String,
    api_key: String,
    admin_api_key: String,
    mint_key: String,
    admin_mint_key: String,
    publish_key: String,
}

fn take_or_generate(env: &Env, var: &str) -> anyhow::Result<String> {
    match env.get(var).filter(|v| !v.trim().is_empty()) {
        Some(v) => Ok(v.to_owned()),
        None => crate::keygen::random_hex32(),
    }
}

impl Secrets {
    fn from(env: &Env) -> anyhow::Result<Self> {
        Ok(Self {
            user_key: take_or_generate(env, "DAISI_EDGE_TOKEN_AES_KEY")?,
            admin_key: take_or_generate(env, "DAISI_EDGE_ADMIN_TOKEN_AES_KEY")?,
            api_key: take_or_generate(env, "DAISI_EDGE_SECRET_TOKEN")?,
            admin_api_key: take_or_generate(env, "DAISI_EDGE_ADMIN_SECRET_TOKEN")?,
            mint_key: take_or_generate(env, "DAISI_EDGE_MINT_API_KEY")?,
            admin_mint_key: take_or_generate(env, "DAISI_EDGE_ADMIN_MINT_API_KEY")?,
            publish_key: take_or_generate(env, "DAISI_ROUTER_PUBLISH_API_KEY")?,
        })
    }
}

/// The process environment plus the dev stack's wiring, without overriding what is set.
fn environment(args: &DevArgs, secrets: &Secrets) -> Env {
    let mut env = Env::from_process();
    let coordinator_url = format!("http://{}", args.coordinator_addr);
    let edge_grpc = SocketAddr::new(args.edge_addr.ip(), 0);
    let mut wiring: Vec<(&str, String)> = vec![
        (
            "DAISI_COORDINATOR_GRPC_ADDR",
            args.coordinator_addr.to_string(),
        ),
        (
            "DAISI_COORDINATOR_HTTP_ADDR",
            SocketAddr::new(args.coordinator_addr.ip(), 0).to_string(),
        ),
        ("DAISI_ROUTER_HTTP_ADDR", args.router_addr.to_string()),
        ("DAISI_ROUTER_COORDINATOR_URL", coordinator_url.clone()),
        ("DAISI_ROUTER_PUBLISH_API_KEY", secrets.publish_key.clone()),
        ("DAISI_EDGE_HTTP_ADDR", args.edge_addr.to_string()),
        ("DAISI_EDGE_GRPC_ADDR", edge_grpc.to_string()),
        ("DAISI_EDGE_POD_ID", "dev-edge".to_owned()),
        ("DAISI_EDGE_COORDINATOR_URL", coordinator_url),
        ("DAISI_EDGE_TOKEN_AES_KEY", secrets.user_key.clone()),
        ("DAISI_EDGE_ADMIN_TOKEN_AES_KEY", secrets.admin_key.clone()),
        ("DAISI_EDGE_SECRET_TOKEN", secrets.api_key.clone()),
        (
            "DAISI_EDGE_ADMIN_SECRET_TOKEN",
            secrets.admin_api_key.clone(),
        ),
        ("DAISI_EDGE_MINT_ADDR", args.mint_addr.to_string()),
        ("DAISI_EDGE_MINT_API_KEY", secrets.mint_key.clone()),
        (
            "DAISI_EDGE_ADMIN_MINT_API_KEY",
            secrets.admin_mint_key.clone(),
        ),
        ("DAISI_EDGE_CONSOLE", "true".to_owned()),
        ("DAISI_EDGE_SHUTDOWN_GRACE", "2s".to_owned()),
        ("DAISI_ROUTER_SHUTDOWN_GRACE", "2s".to_owned()),
        ("DAISI_COORDINATOR_SHUTDOWN_GRACE", "2s".to_owned()),
    ];
    match &args.redis_url {
        Some(url) => wiring.extend([
            ("DAISI_COORDINATOR_STORE", "redis".to_owned()),
            ("DAISI_COORDINATOR_REDIS_URL", url.to_string()),
        ]),
        None => wiring.push(("DAISI_COORDINATOR_STORE", "memory".to_owned())),
    }
    match &args.nats_url {
        Some(url) => wiring.extend([
            ("DAISI_ROUTER_SOURCE", "jetstream".to_owned()),
            ("DAISI_ROUTER_NATS_URL", url.to_string()),
        ]),
        None => wiring.push(("DAISI_ROUTER_SOURCE", "memory".to_owned())),
    }
    // Flags win over the environment for what they name; secrets and the rest only fill gaps.
    let flag_vars = [
        "DAISI_COORDINATOR_STORE",
        "DAISI_COORDINATOR_REDIS_URL",
        "DAISI_ROUTER_SOURCE",
        "DAISI_ROUTER_NATS_URL",
        "DAISI_EDGE_HTTP_ADDR",
        "DAISI_EDGE_MINT_ADDR",
        "DAISI_ROUTER_HTTP_ADDR",
        "DAISI_COORDINATOR_GRPC_ADDR",
    ];
    for (k, v) in wiring {
        if flag_vars.contains(&k) || env.get(k).is_none_or(|v| v.trim().is_empty()) {
            env.set(k, v);
        }
    }
    env
}

pub(crate) async fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    // Before anything else: a Ctrl-C during start-up must stop the stack cleanly, not kill it.
    let signals = daisi_runtime::shutdown::Signals::install();
    let process_env = Env::from_process();
    let secrets = Secrets::from(&process_env)?;
    let env = environment(&args, &secrets);

    let mut coordinator = daisi_coordinator::Config::from_env(&env)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .value;
    let mut router = daisi_router::Config::from_env(&env)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .value;
    let mut edge = daisi_edge::Config::from_env(&env)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .value;

    let telemetry = daisi_telemetry::TelemetryConfig::from_lookup("daisi-dev", |k| {
        match (k, env.get(k)) {
            // People read these logs: pretty by default.
            ("DAISI_LOG_FORMAT", None) => Some("pretty".to_owned()),
            (_, v) => v.map(str::to_owned),
        }
    })?;
    let _guard = daisi_telemetry::init(&telemetry)?;
    daisi_runtime::fd_limit::raise_and_log();

    let busy = |e: std::io::Error| {
        anyhow::anyhow!(
            "{e}; is another daisi (or anything else) using it? pick other ports with --edge-addr, --mint-addr, --router-addr or --coordinator-addr"
        )
    };
    let coordinator_listeners = daisi_coordinator::Listeners::bind(&coordinator)
        .await
        .map_err(busy)?;
    let router_listeners = daisi_router::Listeners::bind(&router).await.map_err(busy)?;
    let edge_listeners = daisi_edge::Listeners::bind(&edge).await.map_err(busy)?;
    let pki = if process_env_sets_internal(&process_env) {
        None
    } else {
        Some(DevPki::install(&mut coordinator, &mut router, &mut edge)?)
    };
    // The edge's gRPC port is chosen by the OS; routers must be told the real one.
    let edge_grpc = edge_listeners.grpc.local_addr()?;
    edge.advertise_url = Url::parse(&format!("http://{edge_grpc}"))?;

    let shutdown = CancellationToken::new();
    let mut services = Services::new();
    {
        let token = shutdown.child_token();
        services.spawn(async move {
            (
                "coordinator",
                daisi_coordinator::run(coordinator, coordinator_listeners, token)
                    .await
                    .map_err(anyhow::Error::from),
            )
        });
        let token = shutdown.child_token();
        services.spawn(async move {
            (
                "router",
                daisi_router::run(router, router_listeners, token)
                    .await
                    .map_err(anyhow::Error::from),
            )
        });
        let token = shutdown.child_token();
        services.spawn(async move {
            (
                "edge",
                daisi_edge::run(edge, edge_listeners, token)
                    .await
                    .map_err(anyhow::Error::from),
            )
        });
    }

    let interrupted = signals.wait();
    tokio::pin!(interrupted);
    let started = wait_ready(&args, &mut services, interrupted.as_mut()).await;
    let code = match started {
        Started::Ready => {
            banner(&args, &secrets, pki.as_ref())?;
            tokio::select! {
                _ = &mut interrupted => {
                    output::line("\nstopping…");
                    ExitCode::SUCCESS
                }
                Some(done) = services.join_next() => service_ended(done),
            }
        }
        Started::Stopped(code) => code,
    };
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(done) = services.join_next().await {
            if let Ok((name, Err(e))) = done {
                output::fail(&format!("{name} stopped with an error: {e:#}"));
            }
        }
    })
    .await;
    if stopped.is_err() {
        output::fail("services did not stop within 10 s");
        return Ok(ExitCode::FAILURE);
    }
    Ok(code)
}

/// Prints how a service ended before it was asked to: always a failure.
fn service_ended(
    done: Result<(&'static str, anyhow::Result<()>), tokio::task::JoinError>,
) -> ExitCode {
    match done {
        Ok((name, Ok(()))) => output::fail(&format!("{name} stopped unexpectedly")),
        Ok((name, Err(e))) => output::fail(&format!("{name} failed: {e:#}")),
        Err(e) => output::fail(&format!("a service task failed: {e}")),
    }
    ExitCode::FAILURE
}

/// How start-up ended.
enum Started {
    /// The edge and the router answer `/ready`.
    Ready,
    /// A service failed, the stack never became ready, or Ctrl-C: stop with this code.
    Stopped(ExitCode),
}

/// Waits until the edge and the router answer `/ready`, at most [`READY_DEADLINE`]; a service
/// that fails meanwhile (a bad `--redis-url`, say) or a Ctrl-C ends the wait at once.
async fn wait_ready(
    args: &DevArgs,
    services: &mut Services,
    mut interrupted: Pin<&mut impl Future<Output = &'static str>>,
) -> Started {
    let probing = async {
        let client = crate::http::client()?;
        let deadline = tokio::time::Instant::now() + READY_DEADLINE;
        for addr in [args.router_addr, args.edge_addr] {
            loop {
                // Each probe within what is left of the deadline.
                let probe = client.get(format!("http://{addr}/ready")).send();
                let ready = tokio::time::timeout_at(deadline, probe)
                    .await
                    .is_ok_and(|r| r.is_ok_and(|r| r.status().is_success()));
                if ready {
                    break;
                }
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "the stack did not become ready within {READY_DEADLINE:?} (see the logs above)"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        anyhow::Ok(())
    };
    tokio::select! {
        ready = probing => match ready {
            Ok(()) => Started::Ready,
            Err(e) => {
                output::fail(&output::describe(&e));
                Started::Stopped(ExitCode::FAILURE)
            }
        },
        Some(done) = services.join_next() => Started::Stopped(service_ended(done)),
        _ = interrupted.as_mut() => {
            output::line("\nstopping…");
            Started::Stopped(ExitCode::SUCCESS)
        }
    }
}

/// Whether the user configured internal authentication themselves (`DAISI_INTERNAL_*`).
fn process_env_sets_internal(env: &Env) -> bool {
    ["TLS_CERT", "TLS_KEY", "TLS_CA", "TOKEN"]
        .iter()
        .any(|name| {
            env.get(&format!("DAISI_INTERNAL_{name}"))
                .is_some_and(|v| !v.trim().is_empty())
        })
}

/// The dev stack's own CA: each service gets its certificate (mutual TLS, as in production),
/// and the operator's admin certificate is printed for `daisi sessions` and friends.
struct DevPki {
    dir: std::path::PathBuf,
    admin: daisi_runtime::internal::TlsFiles,
}

impl DevPki {
    fn install(
        coordinator: &mut daisi_coordinator::Config,
        router: &mut daisi_router::Config,
        edge: &mut daisi_edge::Config,
    ) -> anyhow::Result<Self> {
        use daisi_runtime::internal::{DevCa, InternalSecurity};
        let dir = std::env::temp_dir().join(format!("daisi-dev-pki-{}", std::process::id()));
        let ca = DevCa::create(&dir)?;
        coordinator.internal = InternalSecurity::off().with_tls(ca.coordinator()?)?;
        router.internal = InternalSecurity::off().with_tls(ca.router()?)?;
        edge.internal = InternalSecurity::off().with_tls(ca.edge(edge.pod_id.as_str())?)?;
        Ok(Self {
            dir,
            admin: ca.admin()?,
        })
    }
}

impl Drop for DevPki {
    fn drop(&mut self) {
        // Throw-away keys: gone with the stack.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn banner(args: &DevArgs, s: &Secrets, pki: Option<&DevPki>) -> anyhow::Result<()> {
    let ring = crate::token::keyring(Some(&s.user_key), "", "")?;
    let claims = daisi_domain::token::UserClaims::expiring_in(
        args.company.parse()?,
        args.agent.parse()?,
        args.user.parse()?,
        jiff::Timestamp::now(),
        7 * 24 * 3600,
    )?;
    let user_token = ring.encode_user(&claims)?;
    let admin_ring = crate::token::keyring(Some(&s.admin_key), "", "")?;
    let admin_claims = daisi_domain::token::AdminClaims::expiring_in(
        "demo-admin".parse()?,
        jiff::Timestamp::now(),
        7 * 24 * 3600,
    )?;
    let admin_token = admin_ring.encode_admin(&admin_claims)?;

    let edge = args.edge_addr;
    // The commands below must paste as they are: name this binary the way it was started.
    let me = std::env::args()
        .next()
        .unwrap_or_else(|| "daisi".to_owned());
    let mint = format!(
        "{me} token user --edge http://{} --api-key {} --company {} --agent {} --user {}",
        args.mint_addr, s.mint_key, args.company, args.agent, args.user
    );
    let subject = format!("websocket.{}.{}.chats", args.company, args.agent);
    let payload = format!(
        r#"{{"event_id":"1:chats:1","event_time":"{}","company_id":"{}","agent_id":"{}","row_data":{{"name":"hello from daisi dev"}}}}"#,
        jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_else(|_| jiff::Timestamp::now()),
        args.company,
        args.agent
    );
    let publish = format!(
        "{me} publish {subject} '{payload}' --router http://{} --api-key {}",
        args.router_addr, s.publish_key
    );
    let curl = format!(
        "curl -s -X POST http://{}/api/v1/publish -H 'X-API-Key: {}' -H 'Content-Type: application/json' -d '{{\"subject\":\"{subject}\",\"payload\":{payload}}}'",
        args.router_addr, s.publish_key
    );
    let mut console = Url::parse(&format!("http://{edge}/console"))?;
    let fragment = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("company", &args.company)
        .append_pair("agent", &args.agent)
        .append_pair("token", &user_token)
        .append_pair("key", &s.api_key)
        .append_pair("publish", &publish)
        .append_pair("autoconnect", "1")
        .finish();
    console.set_fragment(Some(&fragment));
    let backends = format!(
        "{} sessions, {} events",
        args.redis_url.as_ref().map_or("in-memory", |_| "Redis"),
        args.nats_url
            .as_ref()
            .map_or("in-memory", |_| "NATS JetStream"),
    );
    let internal = match pki {
        Some(pki) => format!(
            "Internal gRPC uses mutual TLS with a CA made for this run ({dir}). The admin commands\n\
             ({me} sessions|pods|routes) need the operator certificate:\n{exports}",
            dir = pki.dir.display(),
            exports = pki
                .admin
                .env()
                .iter()
                .map(|(k, v)| format!("  export {k}={v}"))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        None => "Internal gRPC uses the DAISI_INTERNAL_* settings from the environment.".to_owned(),
    };
    output::line(&format!(
        r#"
daisi dev is running ({backends}). Ctrl-C stops it.

{internal}

  console      {console}
  websocket    ws://{edge}/ws/{company}/{agent}?token=<user token>   (header X-API-Key or query x-api-key)
  admin socket ws://{edge}/ws/admin?token=<admin token>
  token minting http://{mint_addr} (backends: POST /generate-token, /admin/generate-token with X-API-Key)
  coordinator  http://{coordinator} (gRPC: {me} sessions list --company {company})

  user token   {user_token}
  admin token  {admin_token}
  user API key {api_key}
  admin key    {admin_api_key}
  mint key     {mint_key}   (admin: {admin_mint_key})

Browser pages on other origins (a front-end dev server) need
  DAISI_EDGE_ALLOWED_ORIGINS=http://localhost:3000 {me} dev

Mint a token as a backend does:
  {mint}

Watch a socket:
  {me} tail --edge http://{edge} --company {company} --agent {agent} --api-key {api_key} --token {user_token}

Publish an event that socket receives:
  {publish}
or with curl:
  {curl}
"#,
        company = args.company,
        agent = args.agent,
        coordinator = args.coordinator_addr,
        api_key = s.api_key,
        admin_api_key = s.admin_api_key,
        mint_addr = args.mint_addr,
        mint_key = s.mint_key,
        admin_mint_key = s.admin_mint_key,
    ));
    Ok(())
}
