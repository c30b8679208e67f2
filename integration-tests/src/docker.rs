//! The stack as containers: testcontainers on a Docker network created for the run. Services
//! reach each other by container name; the test process reaches them on host ports Docker
//! publishes. Docker chooses those ports itself (choosing one here and handing it to Docker
//! races with every other process binding ports), and chooses again when a stopped container
//! starts, so the ports are read back after every start.

use crate::topology::{Addresses, Component, Port, ports, started_message};
use anyhow::Context;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use testcontainers::CopyTargetOptions;
use testcontainers::core::{ContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

pub(crate) struct DockerBackend {
    run: String,
    ports: HashMap<(Component, Port), u16>,
    containers: HashMap<Component, ContainerAsync<GenericImage>>,
    /// Output of containers that were removed (killed and started again).
    history: HashMap<Component, String>,
}

/// `repo:tag` from an environment variable or a default.
fn image_ref(var: &str, default: &str) -> (String, String) {
    let text = std::env::var(var)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| default.to_owned());
    match text.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_owned(), tag.to_owned()),
        _ => (text, "latest".to_owned()),
    }
}

fn image_of(component: Component) -> (String, String) {
    let prefix = std::env::var("DAISI_IT_IMAGE_PREFIX").unwrap_or_else(|_| "daisi".into());
    let tag = std::env::var("DAISI_IT_IMAGE_TAG").unwrap_or_else(|_| "dev".into());
    match component {
        Component::Redis => image_ref("DAISI_IT_REDIS_IMAGE", "redis:7"),
        Component::Nats => image_ref("DAISI_IT_NATS_IMAGE", "nats:2.10"),
        Component::Coordinator(_) => (format!("{prefix}/coordinator"), tag),
        Component::Router(_) => (format!("{prefix}/router"), tag),
        Component::Edge(_) => (format!("{prefix}/edge"), tag),
    }
}

impl DockerBackend {
    pub(crate) fn new() -> anyhow::Result<Self> {
        Ok(Self {
            run: uuid::Uuid::new_v4().simple().to_string()[..10].to_owned(),
            ports: HashMap::new(),
            containers: HashMap::new(),
            history: HashMap::new(),
        })
    }

    fn name(&self, component: Component) -> String {
        format!("daisi-it-{}-{component}", self.run)
    }

    /// Nothing to choose in advance: services reach each other by container name, and host
    /// ports are read back once a container runs.
    pub(crate) fn prepare(&mut self, _component: Component) -> anyhow::Result<()> {
        Ok(())
    }

    /// Reads the host ports Docker published for `component`'s container.
    async fn read_ports(&mut self, component: Component) -> anyhow::Result<()> {
        let container = self.container(component)?;
        let mut found = Vec::new();
        for &port in ports(component) {
            let inside = port.container_port(component);
            let host = container
                .get_host_port_ipv4(ContainerPort::Tcp(inside))
                .await
                .with_context(|| format!("{component} publishes no host port for {inside}"))?;
            found.push(((component, port), host));
        }
        self.ports.extend(found);
        Ok(())
    }

    async fn archive(&mut self, component: Component) {
        if let Some(old) = self.containers.remove(&component) {
            let logs = container_logs(&old).await;
            let entry = self.history.entry(component).or_default();
            entry.push_str(&logs);
            entry.push_str("\n--- (container removed) ---\n");
            let _ = old.rm().await;
        }
    }

    pub(crate) async fn start(
        &mut self,
        component: Component,
        env: &[(String, String)],
    ) -> anyhow::Result<()> {
        // A stopped container is started again in place (same name, ports, Redis/NATS data).
        if let Some(container) = self.containers.get(&component) {
            if !container.is_running().await.unwrap_or(false) {
                container
                    .start()
                    .await
                    .with_context(|| format!("restarting {component}"))?;
                return self.read_ports(component).await;
            }
            self.archive(component).await;
        }
        let (repo, tag) = image_of(component);
        let mut image = GenericImage::new(repo.clone(), tag.clone());
        for &port in ports(component) {
            image = image.with_exposed_port(ContainerPort::Tcp(port.container_port(component)));
        }
        let image = match component {
            Component::Redis => {
                image.with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
            }
            Component::Nats => image.with_wait_for(WaitFor::message_on_stderr("Server is ready")),
            service => image.with_wait_for(WaitFor::message_on_stdout(
                started_message(service).unwrap_or_default(),
            )),
        };
        let mut request = image
            .with_network(format!("daisi-it-{}", self.run))
            .with_container_name(self.name(component))
            .with_startup_timeout(Duration::from_secs(60));
        for (k, v) in env {
            // Certificate files live on the host: copied into the container, the setting
            // points at the copy (readable by the image's non-root user).
            if let Some(setting) = k.strip_prefix("DAISI_INTERNAL_TLS_") {
                let target = format!("/etc/daisi/internal/{}.pem", setting.to_ascii_lowercase());
                request = request.with_copy_to(
                    CopyTargetOptions::new(target.clone()).with_mode(0o644),
                    std::path::PathBuf::from(v),
                );
                request = request.with_env_var(k.clone(), target);
                continue;
            }
            request = request.with_env_var(k.clone(), v.clone());
        }
        request = match component {
            Component::Nats => request.with_cmd(["-js", "-sd", "/data"]),
            Component::Redis => request.with_cmd([
                "redis-server",
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ]),
            _ => request,
        };
        let container = request.start().await.with_context(|| {
            format!("starting {component} from image {repo}:{tag} (built by `make test-images IMAGE_TAG=<tag>`?)")
        })?;
        self.containers.insert(component, container);
        self.read_ports(component).await
    }

    fn container(&self, component: Component) -> anyhow::Result<&ContainerAsync<GenericImage>> {
        self.containers
            .get(&component)
            .with_context(|| format!("{component} has no container"))
    }

    pub(crate) async fn kill(&mut self, component: Component) -> anyhow::Result<()> {
        // `docker stop -t 0`: SIGKILL without a grace period, the container stays for restart.
        self.container(component)?
            .stop_with_timeout(Some(0))
            .await?;
        Ok(())
    }

    pub(crate) async fn terminate(
        &mut self,
        component: Component,
        within: Duration,
    ) -> anyhow::Result<Option<i64>> {
        let container = self.container(component)?;
        let secs = i32::try_from(within.as_secs()).unwrap_or(i32::MAX).max(1);
        container.stop_with_timeout(Some(secs)).await?;
        Ok(container.exit_code().await?)
    }

    pub(crate) async fn pause(&mut self, component: Component) -> anyhow::Result<()> {
        Ok(self.container(component)?.pause().await?)
    }

    pub(crate) async fn resume(&mut self, component: Component) -> anyhow::Result<()> {
        Ok(self.container(component)?.unpause().await?)
    }

    pub(crate) async fn logs(&self, component: Component) -> String {
        let mut text = self.history.get(&component).cloned().unwrap_or_default();
        if let Some(container) = self.containers.get(&component) {
            text.push_str(&container_logs(container).await);
        }
        text
    }

    pub(crate) fn host_addr(&self, component: Component, port: Port) -> anyhow::Result<SocketAddr> {
        let host = self
            .ports
            .get(&(component, port))
            .copied()
            .with_context(|| format!("{component} has no such port"))?;
        Ok(SocketAddr::from(([127, 0, 0, 1], host)))
    }
}

async fn container_logs(container: &ContainerAsync<GenericImage>) -> String {
    let out = container.stdout_to_vec().await.unwrap_or_default();
    let err = container.stderr_to_vec().await.unwrap_or_default();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&err)
    )
}

impl Addresses for DockerBackend {
    fn internal(&self, component: Component, port: Port) -> String {
        format!(
            "{}:{}",
            self.name(component),
            port.container_port(component)
        )
    }

    fn bind(&self, component: Component, port: Port) -> String {
        format!("0.0.0.0:{}", port.container_port(component))
    }

    fn redis_url(&self) -> String {
        format!("redis://{}", self.internal(Component::Redis, Port::Redis))
    }
}
