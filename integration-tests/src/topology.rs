//! What a stack is made of and how each service is configured: the one place that knows the
//! environment variables of every service, shared by both launchers.

use crate::secrets::Secrets;
use std::fmt;
use std::time::Duration;

/// One process or container of the stack. Replicas are numbered from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// Redis, owned by the coordinators.
    Redis,
    /// NATS with JetStream.
    Nats,
    /// A session coordinator replica.
    Coordinator(u8),
    /// A router replica.
    Router(u8),
    /// An edge pod.
    Edge(u8),
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redis => f.write_str("redis"),
            Self::Nats => f.write_str("nats"),
            Self::Coordinator(i) => write!(f, "coordinator-{i}"),
            Self::Router(i) => write!(f, "router-{i}"),
            Self::Edge(i) => write!(f, "edge-{i}"),
        }
    }
}

/// A port a component listens on, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Port {
    /// Redis protocol.
    Redis,
    /// NATS client protocol.
    Nats,
    /// gRPC (coordinator API, edge delivery).
    Grpc,
    /// HTTP (WebSockets, health, metrics, publish API).
    Http,
}

impl Port {
    /// The port inside a container (fixed: every container has its own network namespace).
    pub fn container_port(self, component: Component) -> u16 {
        match (self, component) {
            (Self::Redis, _) => 6379,
            (Self::Nats, _) => 4222,
            (Self::Grpc, Component::Edge(_)) => 50061,
            (Self::Grpc, _) => 50051,
            (Self::Http, Component::Edge(_)) => 8080,
            (Self::Http, Component::Router(_)) => 8081,
            (Self::Http, _) => 9091,
        }
    }
}

/// The ports a component exposes.
pub fn ports(component: Component) -> &'static [Port] {
    match component {
        Component::Redis => &[Port::Redis],
        Component::Nats => &[Port::Nats],
        Component::Coordinator(_) | Component::Edge(_) => &[Port::Grpc, Port::Http],
        Component::Router(_) => &[Port::Http],
    }
}

/// The log line a service prints once it listens (see each service's `run`).
pub fn started_message(component: Component) -> Option<&'static str> {
    match component {
        Component::Coordinator(_) => Some("coordinator listening"),
        Component::Router(_) => Some("router listening"),
        Component::Edge(_) => Some("edge listening"),
        Component::Redis | Component::Nats => None,
    }
}

/// Timing of the stack: short leases so pod loss is detected within seconds.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Pod lease (sessions live as long as their pod's registration); edges heartbeat every
    /// third of it.
    pub lease: Duration,
    /// Edge session audit interval (`DAISI_EDGE_SESSION_AUDIT_INTERVAL`), the backstop for a
    /// kill lost on the command stream and in the heartbeat's inbox.
    pub audit: Duration,
    /// Edge drain window after SIGTERM.
    pub edge_grace: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(6),
            audit: Duration::from_secs(2),
            edge_grace: Duration::from_secs(4),
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Addresses as one service sees another (container names, or loopback ports).
pub trait Addresses {
    /// `host:port` of `component`'s `port`, as seen from inside the stack.
    fn internal(&self, component: Component, port: Port) -> String;
    /// The address `component` binds `port` on.
    fn bind(&self, component: Component, port: Port) -> String;
    /// The Redis URL services use.
    fn redis_url(&self) -> String;
}

/// The environment of `component` (services only).
pub fn service_env(
    component: Component,
    stack: &dyn Addresses,
    secrets: &Secrets,
    timing: &Timing,
    coordinators: u8,
) -> Vec<(String, String)> {
    let coordinator_urls = (1..=coordinators)
        .map(|i| {
            format!(
                "http://{}",
                stack.internal(Component::Coordinator(i), Port::Grpc)
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    let mut env: Vec<(&str, String)> = vec![
        ("RUST_LOG", "info".into()),
        ("DAISI_LOG_FORMAT", "json".into()),
    ];
    match component {
        Component::Coordinator(_) => env.extend([
            (
                "DAISI_COORDINATOR_GRPC_ADDR",
                stack.bind(component, Port::Grpc),
            ),
            (
                "DAISI_COORDINATOR_HTTP_ADDR",
                stack.bind(component, Port::Http),
            ),
            ("DAISI_COORDINATOR_REDIS_URL", stack.redis_url()),
            ("DAISI_COORDINATOR_POD_LEASE", secs(timing.lease)),
            ("DAISI_COORDINATOR_SHUTDOWN_GRACE", "2s".into()),
        ]),
        Component::Router(i) => env.extend([
            ("DAISI_ROUTER_HTTP_ADDR", stack.bind(component, Port::Http)),
            (
                "DAISI_ROUTER_NATS_URL",
                format!("nats://{}", stack.internal(Component::Nats, Port::Nats)),
            ),
            ("DAISI_ROUTER_COORDINATOR_URL", coordinator_urls),
            ("DAISI_ROUTER_PUBLISH_API_KEY", secrets.publish_key.clone()),
            ("DAISI_ROUTER_ROUTE_CACHE_TTL", "300ms".into()),
            ("DAISI_ROUTER_ACK_WAIT", "5s".into()),
            ("DAISI_ROUTER_SHUTDOWN_GRACE", "2s".into()),
            ("HOSTNAME", format!("router-{i}")),
        ]),
        Component::Edge(i) => env.extend([
            ("DAISI_EDGE_HTTP_ADDR", stack.bind(component, Port::Http)),
            ("DAISI_EDGE_GRPC_ADDR", stack.bind(component, Port::Grpc)),
            ("DAISI_EDGE_POD_ID", format!("edge-{i}")),
            (
                "DAISI_EDGE_ADVERTISE_URL",
                format!("http://{}", stack.internal(component, Port::Grpc)),
            ),
            ("DAISI_EDGE_COORDINATOR_URL", coordinator_urls),
            ("DAISI_EDGE_TOKEN_AES_KEY", secrets.user_key_hex.clone()),
            (
                "DAISI_EDGE_ADMIN_TOKEN_AES_KEY",
                secrets.admin_key_hex.clone(),
            ),
            ("DAISI_EDGE_SECRET_TOKEN", secrets.api_key.clone()),
            (
                "DAISI_EDGE_ADMIN_SECRET_TOKEN",
                secrets.admin_api_key.clone(),
            ),
            ("DAISI_EDGE_SHUTDOWN_GRACE", secs(timing.edge_grace)),
            ("DAISI_EDGE_SESSION_AUDIT_INTERVAL", secs(timing.audit)),
            // Bursts of thousands of events (the router-kill scenario) must not trip the
            // slow-consumer policy of a client that reads as fast as the test can.
            ("DAISI_EDGE_SEND_QUEUE", "8192".into()),
            // json.v2 recovery reads the stream; its count window is small enough for a
            // scenario to overrun it.
            (
                "DAISI_EDGE_NATS_URL",
                format!("nats://{}", stack.internal(Component::Nats, Port::Nats)),
            ),
            ("DAISI_EDGE_RECOVERY_MAX_EVENTS", "3000".into()),
        ]),
        Component::Redis | Component::Nats => {}
    }
    env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}
