//! The stack's own CA and certificates: every stack runs with mutual TLS between its
//! services (issue 11), so the secure path is the tested one.

use crate::topology::Component;
use daisi_runtime::internal::{ClientAuth, DevCa, InternalSecurity, TlsFiles};
use std::collections::HashMap;
use std::path::PathBuf;

/// Certificates of every service of a stack, and the operator's (admin) credentials.
#[derive(Debug)]
pub struct StackPki {
    dir: PathBuf,
    files: HashMap<Component, TlsFiles>,
    admin: ClientAuth,
    /// Whether `dir` is ours to remove.
    owned: bool,
}

impl StackPki {
    /// A fresh CA and a certificate per service: coordinators are servers, edges are servers
    /// and their own pod as clients, routers are routers.
    /// `DAISI_IT_INTERNAL_TLS=off` runs the stack without it (to compare measurements).
    pub fn generate(coordinators: u8, routers: u8, edges: u8) -> anyhow::Result<Self> {
        if std::env::var("DAISI_IT_INTERNAL_TLS").is_ok_and(|v| v == "off") {
            return Ok(Self {
                dir: std::env::temp_dir(),
                files: HashMap::new(),
                admin: ClientAuth::none(),
                owned: false,
            });
        }
        let dir =
            std::env::temp_dir().join(format!("daisi-it-pki-{}", uuid::Uuid::new_v4().simple()));
        let ca = DevCa::create(&dir)?;
        let mut files = HashMap::new();
        for i in 1..=coordinators {
            files.insert(Component::Coordinator(i), ca.coordinator()?);
        }
        for i in 1..=routers {
            files.insert(Component::Router(i), ca.router()?);
        }
        for i in 1..=edges {
            files.insert(Component::Edge(i), ca.edge(&format!("edge-{i}"))?);
        }
        let admin = InternalSecurity::off()
            .with_tls(ca.admin()?)?
            .admin_client();
        Ok(Self {
            dir,
            files,
            admin,
            owned: true,
        })
    }

    /// `DAISI_INTERNAL_TLS_*` of `component` (host paths; the Docker launcher copies the
    /// files into the container).
    pub fn env(&self, component: Component) -> Vec<(String, String)> {
        self.files
            .get(&component)
            .map(TlsFiles::env)
            .unwrap_or_default()
    }

    /// Credentials of the test's admin calls.
    pub fn admin(&self) -> &ClientAuth {
        &self.admin
    }
}

impl Drop for StackPki {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
