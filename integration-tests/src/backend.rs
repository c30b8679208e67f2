//! The two ways of running a stack behind one interface: Docker containers or local processes.

use crate::docker::DockerBackend;
use crate::process::ProcessBackend;
use crate::topology::{Addresses, Component, Port};
use std::net::SocketAddr;
use std::time::Duration;

/// Which launcher a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LauncherKind {
    /// testcontainers on a Docker network created for the run.
    Docker,
    /// Local processes on free loopback ports.
    Process,
}

impl LauncherKind {
    /// `DAISI_IT_LAUNCHER` (`docker` or `process`); unset means docker when an engine answers.
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var("DAISI_IT_LAUNCHER")
            .ok()
            .as_deref()
            .map(str::trim)
        {
            Some("docker") => Ok(Self::Docker),
            Some("process") => Ok(Self::Process),
            None | Some("") => Ok(if docker_answers() {
                Self::Docker
            } else {
                Self::Process
            }),
            Some(other) => anyhow::bail!("DAISI_IT_LAUNCHER=`{other}`: use docker or process"),
        }
    }
}

fn docker_answers() -> bool {
    std::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A running stack's processes or containers.
pub(crate) enum Backend {
    Docker(DockerBackend),
    Process(Box<ProcessBackend>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Docker(_) => "Backend::Docker",
            Self::Process(_) => "Backend::Process",
        })
    }
}

macro_rules! each {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            Backend::Docker($b) => $e,
            Backend::Process($b) => $e,
        }
    };
}

impl Backend {
    pub(crate) async fn new(kind: LauncherKind) -> anyhow::Result<Self> {
        Ok(match kind {
            LauncherKind::Docker => Self::Docker(DockerBackend::new()?),
            LauncherKind::Process => Self::Process(Box::new(ProcessBackend::new()?)),
        })
    }

    pub(crate) fn addresses(&self) -> &dyn Addresses {
        match self {
            Self::Docker(b) => b,
            Self::Process(b) => b.as_ref(),
        }
    }

    /// Chooses `component`'s host ports; called before its environment is built.
    pub(crate) fn prepare(&mut self, component: Component) -> anyhow::Result<()> {
        each!(self, b => b.prepare(component))
    }

    /// Starts (or restarts) `component` with `env`; for services, returns once it logged that
    /// it listens.
    pub(crate) async fn start(
        &mut self,
        component: Component,
        env: &[(String, String)],
    ) -> anyhow::Result<()> {
        each!(self, b => b.start(component, env).await)
    }

    /// SIGKILL: a crash, no cleanup.
    pub(crate) async fn kill(&mut self, component: Component) -> anyhow::Result<()> {
        each!(self, b => b.kill(component).await)
    }

    /// SIGTERM, then waits up to `within` for the exit; returns the exit code.
    pub(crate) async fn terminate(
        &mut self,
        component: Component,
        within: Duration,
    ) -> anyhow::Result<Option<i64>> {
        each!(self, b => b.terminate(component, within).await)
    }

    /// Freezes `component` (SIGSTOP / docker pause).
    pub(crate) async fn pause(&mut self, component: Component) -> anyhow::Result<()> {
        each!(self, b => b.pause(component).await)
    }

    /// Thaws a paused component.
    pub(crate) async fn resume(&mut self, component: Component) -> anyhow::Result<()> {
        each!(self, b => b.resume(component).await)
    }

    /// Everything `component` printed, previous incarnations included.
    pub(crate) async fn logs(&self, component: Component) -> String {
        each!(self, b => b.logs(component).await)
    }

    /// Where the test process reaches `component`'s `port`.
    pub(crate) fn host_addr(&self, component: Component, port: Port) -> anyhow::Result<SocketAddr> {
        each!(self, b => b.host_addr(component, port))
    }
}

/// A free loopback port, claimed for this test process (see `daisi_testkit::ports`: a port
/// from bind-to-0 can be taken by any outgoing connection before the service binds it).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(daisi_testkit::ports::free_port()?)
}
