//! Redis key names. The layout is documented once, in `lua/common.lua`, which builds the same
//! names inside the scripts; this module builds the ones Rust needs directly (the key a script
//! is routed by, listings, the command channel).
//!
//! Every key starts with the hash tag `{prefix}`: all of a deployment's keys share one Redis
//! Cluster slot, so no script or command ever spans slots (see the crate README for the
//! trade-off).

use crate::store::{Route, SessionFilter};
use daisi_domain::{PodId, SessionKey};

/// Builds the keys of one deployment.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    tag: String,
}

impl Keys {
    /// Keys under `prefix` (letters, digits, `-`, `_`; checked by the configuration).
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            tag: format!("{{{prefix}}}"),
        }
    }

    /// The hash tag `{prefix}`, passed to every script as `ARGV[1]`.
    pub(crate) fn tag(&self) -> &str {
        &self.tag
    }

    pub(crate) fn sequence(&self) -> String {
        format!("{}:seq", self.tag)
    }

    pub(crate) fn session(&self, key: &SessionKey) -> String {
        format!("{}:s:{key}", self.tag)
    }

    /// Tombstones of the connections that lost `key` (taken over, killed).
    pub(crate) fn tombstones(&self, key: &SessionKey) -> String {
        format!("{}:t:{key}", self.tag)
    }

    pub(crate) fn pod(&self, pod: &PodId) -> String {
        format!("{}:pod:{pod}", self.tag)
    }

    pub(crate) fn pods(&self) -> String {
        format!("{}:pods", self.tag)
    }

    pub(crate) fn pod_sessions(&self, pod: &PodId) -> String {
        format!("{}:ps:{pod}", self.tag)
    }

    pub(crate) fn pod_routes(&self, pod: &PodId) -> String {
        format!("{}:pr:{pod}", self.tag)
    }

    pub(crate) fn route(&self, route: &Route) -> String {
        format!("{}:r:{route}", self.tag)
    }

    /// The inbox of `pod` (kill commands its heartbeats read).
    pub(crate) fn inbox(&self, pod: &PodId) -> String {
        format!("{}:ib:{pod}", self.tag)
    }

    /// The record of sweep `id` (its session and route sets are `<record>:s` and `:r`).
    pub(crate) fn sweep(&self, id: &str) -> String {
        format!("{}:sw:{id}", self.tag)
    }

    pub(crate) fn session_index(&self, filter: &SessionFilter) -> String {
        match filter {
            SessionFilter::Company(c) => format!("{}:ix:c:{c}", self.tag),
            SessionFilter::Agent(c, a) => format!("{}:ix:a:{c}:{a}", self.tag),
            SessionFilter::Admins => format!("{}:ix:adm", self.tag),
        }
    }

    /// Pub/sub channel of kill commands (one per deployment; every replica subscribes).
    pub(crate) fn commands_channel(&self) -> String {
        format!("{}:cmd", self.tag)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_key_carries_the_hash_tag() {
        let keys = Keys::new("daisi-test");
        let user: SessionKey = "u:c1:a1:u1".parse().unwrap();
        let pod: PodId = "edge-0".parse().unwrap();
        let names = [
            keys.sequence(),
            keys.session(&user),
            keys.tombstones(&user),
            keys.pod(&pod),
            keys.pods(),
            keys.pod_sessions(&pod),
            keys.pod_routes(&pod),
            keys.route(&"agent:c1:a1".parse().unwrap()),
            keys.session_index(&SessionFilter::Admins),
            keys.sweep("7"),
            keys.inbox(&pod),
            keys.commands_channel(),
        ];
        for name in names {
            assert!(name.starts_with("{daisi-test}:"), "{name}");
            assert_eq!(name.matches('{').count(), 1, "{name}");
        }
        assert_eq!(keys.session(&user), "{daisi-test}:s:u:c1:a1:u1");
    }
}
