//! WebSocket edge of daisi: the only service clients reach. It terminates WebSockets,
//! authenticates AES-GCM tokens, mints tokens for backends, holds sockets and delivers the
//! events routers send it over gRPC.
//!
//! [`run`] takes its listeners and a shutdown token so the binary, the dev stack and the tests
//! all start it the same way; [`run_with`] also takes the coordinator client (tests put a fault
//! injector in front of it).
//!
//! Module map: [`http`] (routes, accept loop, TLS), [`auth`] (API keys, tokens, cache), [`ws`]
//! (upgrade, admission, socket task), [`registry`] (local index, route counts), [`delivery`]
//! (gRPC fan-out), [`coordinator`] (trait, gRPC adapter, fault injector), [`lifecycle`]
//! (heartbeat, kill switch, renew, release, drain).

pub mod auth;
pub mod config;
pub mod coordinator;
pub mod delivery;
pub mod history;
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod registry;
pub mod state;
pub mod ws;

pub use config::Config;

use coordinator::{AnyCoordinator, PodIdentity};
use daisi_runtime::{CancellationToken, Readiness};
use daisi_telemetry::Metrics;
use state::{COORDINATOR, Edge, EdgeState, KILL_COMMANDS};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

/// Name used in logs, traces and metrics.
pub const SERVICE: &str = "daisi-edge";

/// On the minting listener, how long a request in progress at the connection's deadline may
/// still take (its body is at most 16 KiB; the answer is computed in microseconds).
const MINT_IN_FLIGHT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The sockets the edge serves on, bound by the caller (port 0 in tests).
#[derive(Debug)]
pub struct Listeners {
    /// Client HTTP and WebSockets, health, readiness, metrics.
    pub http: TcpListener,
    /// gRPC delivery API for routers.
    pub grpc: TcpListener,
    /// Internal token minting for backends; `None` when no minting credential is configured.
    pub mint: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses of `config` (the minting listener only when it has a credential).
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        let mint = match config.minting.internal() {
            true => Some(bind(config.minting.addr).await?),
            false => None,
        };
        Ok(Self {
            http: bind(config.http_addr).await?,
            grpc: bind(config.grpc_addr).await?,
            mint,
        })
    }
}

/// Connections the kernel completes and queues before the edge accepts them. tokio's default
/// is 1,024; a reconnect storm (or a flood) overflows that, and the kernel then drops handshakes
/// silently. The kernel caps it at `net.core.somaxconn` (4,096 on current kernels).
const LISTEN_BACKLOG: u32 = 4_096;

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listen = || {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // As `TcpListener::bind` does: a restarted edge can rebind while old sockets linger.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Why the edge stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(#[from] std::io::Error),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// Metrics, TLS or the coordinator client could not be set up.
    #[error("startup: {0}")]
    Startup(String),
}

/// Runs the edge against the coordinators at `config.coordinator_urls` until `shutdown` is
/// cancelled, then drains.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let coordinator = coordinator::grpc::GrpcCoordinator::with_auth(
        &config.coordinator_urls,
        config.coordinator_timeout,
        &config.internal.pod_client(config.pod_id.as_str()),
    )
    .map_err(|e| Error::Startup(e.to_string()))?;
    run_with(
        config,
        listeners,
        AnyCoordinator::Grpc(coordinator),
        shutdown,
    )
    .await
}

/// Each socket and each pending connection holds a descriptor: caps above the open-file limit
/// mean clients beyond the limit fail at `accept` instead of getting the clear answer of a cap.
fn warn_if_descriptors_run_out(config: &Config) {
    // Listeners, gRPC channels, the coordinator stream, logs: a small fixed overhead.
    const RESERVED: u64 = 64;
    let max_connections = config.limits.max_connections;
    let max_pending = config.door.max_pending;
    let needed = (max_connections as u64)
        .saturating_add(max_pending as u64 * if config.minting.internal() { 2 } else { 1 })
        .saturating_add(RESERVED);
    if let Some(limit) = daisi_runtime::fd_limit::current()
        && needed > limit
    {
        tracing::warn!(
            max_connections,
            max_pending,
            open_file_limit = limit,
            "DAISI_EDGE_MAX_CONNECTIONS plus DAISI_EDGE_MAX_PENDING_CONNECTIONS exceed what the open-file limit allows; lower them, or raise the hard limit (ulimit -n, LimitNOFILE, the container runtime's nofile)"
        );
    }
}

/// The start-up notes of token minting: where it is served, and the warning of the migration
/// window.
fn log_minting(config: &Config, mint: Option<SocketAddr>) {
    if config.minting.public {
        tracing::warn!(
            "DAISI_EDGE_PUBLIC_MINTING is on: /generate-token and /admin/generate-token are served on the public port behind the API keys browsers hold, so anyone who can open a socket can mint tokens; move backends to the minting listener (DAISI_EDGE_MINT_ADDR, DAISI_EDGE_MINT_API_KEY) and turn it off"
        );
    }
    match mint {
        Some(addr) => tracing::info!(
            mint = %addr,
            user_tokens = !config.minting.user_keys.is_empty(),
            admin_tokens = !config.minting.admin_keys.is_empty(),
            "token minting listener"
        ),
        None if !config.minting.public => tracing::info!(
            "token minting is off: set DAISI_EDGE_MINT_API_KEY and/or DAISI_EDGE_ADMIN_MINT_API_KEY to serve it on DAISI_EDGE_MINT_ADDR"
        ),
        None => {}
    }
}

/// How often the per-address budget forgets addresses whose bucket is full again.
const BUDGET_SWEEP: std::time::Duration = std::time::Duration::from_secs(10);

async fn sweep_budget(budget: Arc<http::budget::AddressBudget>, stop: CancellationToken) {
    let mut every = tokio::time::interval(BUDGET_SWEEP);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => budget.forget_idle(),
        }
    }
}

/// The address routers reach this pod at: the configured one, with the bound port when the
/// configured port is 0 (tests).
fn delivery_address(config: &Config, grpc: SocketAddr) -> String {
    let mut url = config.advertise_url.clone();
    if url.port() == Some(0) {
        let _ = url.set_port(Some(grpc.port()));
    }
    url.as_str().trim_end_matches('/').to_owned()
}

/// The shared state [`run_with`] serves from (with its metrics registry), before any
/// listener, loop or socket exists. Benchmarks and tests drive its parts directly.
pub fn state(
    config: Config,
    coordinator: AnyCoordinator,
    grpc_addr: SocketAddr,
) -> Result<(Edge, Metrics), Error> {
    let registry = Metrics::new("edge").map_err(|e| Error::Startup(e.to_string()))?;
    let metrics =
        metrics::EdgeMetrics::new(&registry).map_err(|e| Error::Startup(e.to_string()))?;
    let pod = PodIdentity {
        pod: config.pod_id.clone(),
        instance: uuid::Uuid::new_v4().simple().to_string(),
        delivery_address: delivery_address(&config, grpc_addr),
    };
    let readiness = Readiness::new(&[COORDINATOR, KILL_COMMANDS]);
    let edge = Arc::new(EdgeState {
        auth: auth::Authenticator::new(&config),
        pod,
        coordinator,
        registry: registry::Registry::default(),
        releases: lifecycle::release::ReleaseQueue::default(),
        metrics,
        readiness,
        heartbeat_now: tokio::sync::Notify::new(),
        audit_now: tokio::sync::Notify::new(),
        heartbeats: lifecycle::pod::Heartbeats::default(),
        socket_tasks: TaskTracker::new(),
        sockets_stop: CancellationToken::new(),
        history: std::sync::OnceLock::new(),
        config,
    });
    Ok((edge, registry))
}

/// [`run`] with a given coordinator.
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    coordinator: AnyCoordinator,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let tls = config
        .tls
        .as_ref()
        .map(http::tls::acceptor)
        .transpose()
        .map_err(|e| Error::Startup(e.to_string()))?;
    let http_addr = listeners.http.local_addr()?;
    let grpc_addr = listeners.grpc.local_addr()?;
    let mint_addr = listeners
        .mint
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let (edge, registry) = state(config, coordinator, grpc_addr)?;
    let readiness = edge.readiness.clone();

    // Series exist from the start, so dashboards see zeros rather than gaps.
    edge.refresh_socket_gauges();
    for kind in ["user", "admin"] {
        edge.metrics.connects.with_label_values(&[kind]);
        edge.metrics.auth_successes.with_label_values(&[kind]);
        edge.metrics.connection_seconds.with_label_values(&[kind]);
    }
    for reason in ws::upgrade::REFUSAL_LABELS {
        edge.metrics.rejected.with_label_values(&[reason]);
    }
    for outcome in ws::refresh::OUTCOMES {
        edge.metrics.token_refreshes.with_label_values(&[outcome]);
    }
    for outcome in ws::recovery::OUTCOMES {
        edge.metrics.recoveries.with_label_values(&[outcome]);
    }
    if let Some(settings) = &edge.config.recovery.history {
        // Connects in the background: a NATS outage only turns recoveries into resyncs.
        let name = format!("daisi-edge {}", edge.pod.pod);
        match history::jetstream::JetStreamHistory::connect(settings, &name).await {
            Ok(history) => {
                let _ = edge.history.set(history);
                tracing::info!(stream = %settings.stream, "json.v2 recovery reads the stream");
            }
            Err(error) => tracing::warn!(%error, "json.v2 recovery unavailable: answering resync"),
        }
    }

    // Stopped in this order at shutdown: loops that talk to the coordinator after the drain,
    // servers last so health and metrics answer during the drain.
    let releases_stop = CancellationToken::new();
    let loops_stop = CancellationToken::new();
    let servers_stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(lifecycle::pod::run(edge.clone(), loops_stop.clone()));
    tasks.spawn(lifecycle::kill_watch::run(edge.clone(), loops_stop.clone()));
    tasks.spawn(lifecycle::audit::run(edge.clone(), loops_stop.clone()));
    tasks.spawn(lifecycle::routes::run(edge.clone(), loops_stop.clone()));
    tasks.spawn(lifecycle::release::run(edge.clone(), releases_stop.clone()));

    let (reporter, health_service) = tonic_health::server::health_reporter();
    tasks.spawn(daisi_runtime::grpc::mirror_health(
        readiness.clone(),
        reporter,
        vec!["daisi.edge.v1.EdgeDelivery".to_owned()],
        servers_stop.clone(),
    ));
    let internal = &edge.config.internal;
    internal.log_posture(SERVICE);
    if let Some(reloader) = internal.spawn_reloader(servers_stop.clone()) {
        tasks.spawn(async move {
            let _ = reloader.await;
        });
    }
    let grpc = tokio::spawn(
        daisi_runtime::grpc::server()
            .add_service(health_service)
            // Only routers push events into sockets.
            .add_service(tonic::service::interceptor::InterceptedService::new(
                delivery::Delivery::server(edge.clone()),
                internal.authenticate(daisi_runtime::internal::Need::Router),
            ))
            .serve_with_incoming_shutdown(
                internal.incoming(listeners.grpc),
                servers_stop.clone().cancelled_owned(),
            ),
    );
    let door = &edge.config.door;
    let budget = door.address_budget.map(|settings| {
        http::budget::AddressBudget::new(
            settings,
            door.trusted_proxies.clone(),
            edge.metrics.address_budget_refusals.clone(),
        )
    });
    if let Some(budget) = &budget {
        tasks.spawn(sweep_budget(budget.clone(), loops_stop.clone()));
    }
    let router = http::router(edge.clone(), &registry, budget);
    let public = http::serve::Policy {
        tls,
        door: http::door::Door::new(door.max_pending, edge.metrics.door("public")),
        deadline: door.deadline,
        // The deadline covers admission: a request still in progress is cut with the rest.
        in_flight_grace: std::time::Duration::ZERO,
    };
    let http = tokio::spawn(http::serve::serve(
        listeners.http,
        router,
        public,
        servers_stop.clone(),
    ));
    let mint = listeners.mint.map(|listener| {
        let policy = http::serve::Policy {
            // Internal traffic: no public certificate here (docs/security.md).
            tls: None,
            door: http::door::Door::new(door.max_pending, edge.metrics.door("mint")),
            deadline: door.deadline,
            // Backends reuse connections; one cut mid-request would fail a login.
            in_flight_grace: MINT_IN_FLIGHT_GRACE,
        };
        tokio::spawn(http::serve::serve(
            listener,
            http::mint_router(edge.clone()),
            policy,
            servers_stop.clone(),
        ))
    });
    tracing::info!(
        pod_id = %edge.config.pod_id,
        http = %http_addr,
        grpc = %grpc_addr,
        mint = mint_addr.map(|a| a.to_string()),
        tls = edge.config.tls.is_some(),
        "edge listening"
    );
    log_minting(&edge.config, mint_addr);
    warn_if_descriptors_run_out(&edge.config);

    shutdown.cancelled().await;
    releases_stop.cancel();
    let grace = edge.config.shutdown_grace;
    if tokio::time::timeout(grace, lifecycle::drain::drain(&edge))
        .await
        .is_err()
    {
        tracing::warn!("drain did not finish within the shutdown grace");
    }
    loops_stop.cancel();
    edge.sockets_stop.cancel();
    servers_stop.cancel();
    tasks.close();
    tasks.wait().await;
    let _ = http.await;
    if let Some(mint) = mint {
        let _ = mint.await;
    }
    match grpc.await {
        Ok(result) => result.map_err(Error::from),
        Err(join) => Err(Error::Startup(format!("grpc server task: {join}"))),
    }
}
