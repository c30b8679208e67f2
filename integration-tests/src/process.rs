//! The stack as local processes: `redis-server` and `nats-server` from `PATH`, the service
//! binaries from the workspace's target directory, each on free loopback ports.

use crate::backend::free_port;
use crate::topology::{Addresses, Component, Port, ports, started_message};
use anyhow::Context;
use daisi_testkit::nats::NatsServer;
use daisi_testkit::{RedisServer, ServiceProcess};
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) struct ProcessBackend {
    ports: HashMap<(Component, Port), u16>,
    redis: Option<RedisServer>,
    nats: Option<NatsServer>,
    services: HashMap<Component, ServiceProcess>,
    /// Output of earlier incarnations (before a kill or restart), for failure reports.
    history: HashMap<Component, String>,
    bin_dir: PathBuf,
}

/// Where `cargo build` put the service binaries (the integration tests' own target dir).
fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/debug/deps/it-xxxx → target/debug
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("cannot locate the target directory")?
        .to_path_buf();
    for bin in ["daisi-edge", "daisi-coordinator", "daisi-router"] {
        anyhow::ensure!(
            dir.join(bin).exists(),
            "{} is missing: run `cargo build --bins` first",
            dir.join(bin).display()
        );
    }
    Ok(dir)
}

impl ProcessBackend {
    pub(crate) fn new() -> anyhow::Result<Self> {
        Ok(Self {
            ports: HashMap::new(),
            redis: None,
            nats: None,
            services: HashMap::new(),
            history: HashMap::new(),
            bin_dir: bin_dir()?,
        })
    }

    fn port(&self, component: Component, port: Port) -> u16 {
        self.ports.get(&(component, port)).copied().unwrap_or(0)
    }

    fn reserve(&mut self, component: Component) -> anyhow::Result<()> {
        // redis-server listens on a unix socket and nats-server picks its own port.
        if matches!(component, Component::Redis | Component::Nats) {
            return Ok(());
        }
        for &port in ports(component) {
            if let std::collections::hash_map::Entry::Vacant(slot) =
                self.ports.entry((component, port))
            {
                slot.insert(free_port()?);
            }
        }
        Ok(())
    }

    fn binary(&self, component: Component) -> PathBuf {
        let name = match component {
            Component::Coordinator(_) => "daisi-coordinator",
            Component::Router(_) => "daisi-router",
            _ => "daisi-edge",
        };
        self.bin_dir.join(name)
    }

    fn archive(&mut self, component: Component) {
        if let Some(old) = self.services.remove(&component) {
            let entry = self.history.entry(component).or_default();
            entry.push_str(&old.logs());
            entry.push_str("\n--- (process ended) ---\n");
        }
    }

    pub(crate) async fn start(
        &mut self,
        component: Component,
        env: &[(String, String)],
    ) -> anyhow::Result<()> {
        match component {
            Component::Redis => match &mut self.redis {
                Some(redis) => redis.restart()?,
                None => self.redis = Some(RedisServer::start()?),
            },
            Component::Nats => match &mut self.nats {
                Some(nats) => nats.restart().await?,
                None => self.nats = Some(NatsServer::start().await?),
            },
            service => {
                self.archive(service);
                let env: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let message = started_message(service).unwrap_or_default();
                let bin = self.binary(service);
                let process = ServiceProcess::spawn(
                    &bin.to_string_lossy(),
                    &env,
                    message,
                    Duration::from_secs(30),
                )
                .await
                .with_context(|| format!("starting {service}"))?;
                self.services.insert(service, process);
            }
        }
        Ok(())
    }

    pub(crate) async fn kill(&mut self, component: Component) -> anyhow::Result<()> {
        match component {
            Component::Redis => {
                if let Some(r) = &mut self.redis {
                    r.stop();
                }
            }
            Component::Nats => {
                if let Some(n) = &mut self.nats {
                    n.stop_with(Signal::SIGKILL).await;
                }
            }
            service => {
                if let Some(p) = self.services.get_mut(&service) {
                    p.signal(Signal::SIGKILL)?;
                    p.wait(Duration::from_secs(10)).await;
                }
                self.archive(service);
            }
        }
        Ok(())
    }

    pub(crate) async fn terminate(
        &mut self,
        component: Component,
        within: Duration,
    ) -> anyhow::Result<Option<i64>> {
        match component {
            Component::Nats => {
                if let Some(n) = &mut self.nats {
                    n.stop().await;
                }
                Ok(Some(0))
            }
            Component::Redis => {
                if let Some(r) = &mut self.redis {
                    r.stop();
                }
                Ok(Some(0))
            }
            service => {
                let Some(p) = self.services.get_mut(&service) else {
                    return Ok(None);
                };
                p.signal(Signal::SIGTERM)?;
                let code = p
                    .wait(within)
                    .await
                    .map(|e| i64::from(e.status.code().unwrap_or(-1)));
                if code.is_none() {
                    p.signal(Signal::SIGKILL)?;
                    p.wait(Duration::from_secs(5)).await;
                }
                self.archive(service);
                Ok(code)
            }
        }
    }

    pub(crate) async fn pause(&mut self, component: Component) -> anyhow::Result<()> {
        match (component, &self.redis) {
            (Component::Redis, Some(r)) => Ok(r.pause()?),
            _ => match self.services.get(&component) {
                Some(p) => Ok(p.signal(Signal::SIGSTOP)?),
                None => anyhow::bail!("{component} is not running"),
            },
        }
    }

    pub(crate) async fn resume(&mut self, component: Component) -> anyhow::Result<()> {
        match (component, &self.redis) {
            (Component::Redis, Some(r)) => Ok(r.resume()?),
            _ => match self.services.get(&component) {
                Some(p) => Ok(p.signal(Signal::SIGCONT)?),
                None => anyhow::bail!("{component} is not running"),
            },
        }
    }

    pub(crate) async fn logs(&self, component: Component) -> String {
        let mut text = self.history.get(&component).cloned().unwrap_or_default();
        match component {
            Component::Nats => {
                if let Some(n) = &self.nats {
                    text.push_str(&n.logs());
                }
            }
            Component::Redis => text.push_str("(redis-server output is not captured)"),
            service => {
                if let Some(p) = self.services.get(&service) {
                    text.push_str(&p.logs());
                }
            }
        }
        text
    }

    pub(crate) fn host_addr(&self, component: Component, port: Port) -> anyhow::Result<SocketAddr> {
        let port = match component {
            Component::Nats => self.nats.as_ref().map(NatsServer::port).unwrap_or(0),
            _ => self.port(component, port),
        };
        anyhow::ensure!(port != 0, "{component} has no such port");
        Ok(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Ports are chosen before the environment is built, so they survive restarts.
    pub(crate) fn prepare(&mut self, component: Component) -> anyhow::Result<()> {
        self.reserve(component)
    }
}

impl Addresses for ProcessBackend {
    fn internal(&self, component: Component, port: Port) -> String {
        match component {
            Component::Nats => format!(
                "127.0.0.1:{}",
                self.nats.as_ref().map(NatsServer::port).unwrap_or(0)
            ),
            _ => format!("127.0.0.1:{}", self.port(component, port)),
        }
    }

    fn bind(&self, component: Component, port: Port) -> String {
        self.internal(component, port)
    }

    fn redis_url(&self) -> String {
        self.redis
            .as_ref()
            .map(RedisServer::url)
            .unwrap_or_default()
    }
}
