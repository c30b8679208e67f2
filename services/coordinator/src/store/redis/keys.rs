//! Redis key names, sharded by what each call looks up (the layout is documented once, at the
//! top of `lua/common.lua`). Four kinds of hash tag, so on a Redis Cluster the fleet spreads
//! over every master while each script still touches one slot:
//!
//! - `{P:s:<session key>}`: one user's (or admin's) session, its tombstones, its kept
//!   selection and its last fencing token;
//! - `{P:c:<company>}`: the company's route sets and session indexes (`*` for admin routes
//!   without a company);
//! - `{P:p:<pod>}`: the pod's record, its session and route memberships, its inbox and the
//!   sweeps of its ended registrations;
//! - `{P}`: the deployment-wide pod index and the admin session index.
//!
//! Scripts receive every key they touch in `KEYS` (built here), never a name they derive.

use crate::store::{Route, SessionFilter};
use daisi_domain::{PodId, SessionKey};

/// Builds the keys of one deployment.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

/// The keys of one session's slot.
#[derive(Debug, Clone)]
pub(crate) struct SessionKeys {
    /// Session hash: pod, gen, conn, fence, since, chat.
    pub(crate) session: String,
    /// Tombstones of the connections that lost the key.
    pub(crate) tombstones: String,
    /// Selected chat kept after the session.
    pub(crate) selection: String,
    /// The key's last fencing token (outlives every session of it by a day).
    pub(crate) fence: String,
}

/// The keys of one pod's slot.
#[derive(Debug, Clone)]
pub(crate) struct PodKeys {
    pub(crate) pod: String,
    /// Members `"<session key> <connection>"` of the grants the pod took.
    pub(crate) sessions: String,
    /// Routes the pod registered.
    pub(crate) routes: String,
    pub(crate) inbox: String,
    pub(crate) inbox_seq: String,
    /// Registration-number sequence of the pod (never expires).
    pub(crate) gen_seq: String,
    /// Sorted set: registration number of an unfinished sweep -> lock expiry (ms).
    pub(crate) sweeps: String,
}

/// The keys of the sweep of one ended pod registration (in the pod's slot).
#[derive(Debug, Clone)]
pub(crate) struct SweepKeys {
    pub(crate) record: String,
    pub(crate) sessions: String,
    pub(crate) routes: String,
}

impl Keys {
    /// Keys under `prefix` (letters, digits, `-`, `_`; checked by the configuration).
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    fn deployment(&self) -> String {
        format!("{{{}}}", self.prefix)
    }

    fn session_tag(&self, key: &str) -> String {
        format!("{{{}:s:{key}}}", self.prefix)
    }

    fn pod_tag(&self, pod: &str) -> String {
        format!("{{{}:p:{pod}}}", self.prefix)
    }

    fn company_tag(&self, company: &str) -> String {
        format!("{{{}:c:{company}}}", self.prefix)
    }

    /// A key of the deployment slot, for the readiness probe.
    pub(crate) fn probe(&self) -> String {
        self.pods()
    }

    /// Sorted set pod -> when a reaper should look at it next (ms).
    pub(crate) fn pods(&self) -> String {
        format!("{}:pods", self.deployment())
    }

    pub(crate) fn session(&self, key: &SessionKey) -> SessionKeys {
        let tag = self.session_tag(&key.to_string());
        SessionKeys {
            session: format!("{tag}:s"),
            tombstones: format!("{tag}:t"),
            selection: format!("{tag}:sel"),
            fence: format!("{tag}:f"),
        }
    }

    /// The session hash of `key` alone.
    pub(crate) fn session_hash(&self, key: &str) -> String {
        format!("{}:s", self.session_tag(key))
    }

    /// The selection key of `key` alone.
    pub(crate) fn selection(&self, key: &str) -> String {
        format!("{}:sel", self.session_tag(key))
    }

    pub(crate) fn pod(&self, pod: &PodId) -> PodKeys {
        let tag = self.pod_tag(pod.as_str());
        PodKeys {
            pod: format!("{tag}:pod"),
            sessions: format!("{tag}:ps"),
            routes: format!("{tag}:pr"),
            inbox: format!("{tag}:ib"),
            inbox_seq: format!("{tag}:ibseq"),
            gen_seq: format!("{tag}:gen"),
            sweeps: format!("{tag}:sweeps"),
        }
    }

    /// The sweep of registration `generation` of `pod`.
    pub(crate) fn sweep(&self, pod: &PodId, generation: &str) -> SweepKeys {
        let base = format!("{}:sw:{generation}", self.pod_tag(pod.as_str()));
        SweepKeys {
            sessions: format!("{base}:s"),
            routes: format!("{base}:r"),
            record: base,
        }
    }

    /// The set of `"<pod> <registration>"` members registered for `route`, in the slot of the
    /// route's company.
    pub(crate) fn route(&self, route: &Route) -> String {
        let company = match route {
            Route::Agent { company, .. } | Route::Chat { company, .. } => company.as_str(),
            Route::Admin { company, .. } => company.as_ref().map_or("*", |c| c.as_str()),
        };
        format!("{}:r:{route}", self.company_tag(company))
    }

    /// An index of `"<session key> <connection>"` members.
    pub(crate) fn session_index(&self, filter: &SessionFilter) -> String {
        match filter {
            SessionFilter::Company(c) => format!("{}:ix", self.company_tag(c.as_str())),
            SessionFilter::Agent(c, a) => format!("{}:ix:a:{a}", self.company_tag(c.as_str())),
            SessionFilter::Admins => format!("{}:ix:adm", self.deployment()),
        }
    }

    /// The indexes a session of `key` is listed in.
    pub(crate) fn indexes_of(&self, key: &SessionKey) -> Vec<String> {
        match key {
            SessionKey::User { company, agent, .. } => vec![
                self.session_index(&SessionFilter::Company(company.clone())),
                self.session_index(&SessionFilter::Agent(company.clone(), agent.clone())),
            ],
            SessionKey::Admin { .. } => vec![self.session_index(&SessionFilter::Admins)],
        }
    }

    /// Pub/sub channel of kill commands (one per deployment; every replica subscribes). A
    /// channel is no key: any master's `PUBLISH` reaches every node of a cluster.
    pub(crate) fn commands_channel(&self) -> String {
        format!("{}:cmd", self.deployment())
    }
}

/// A membership member: `"<a> <b>"` (ids never contain whitespace).
pub(crate) fn member(a: &str, b: &str) -> String {
    format!("{a} {b}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use redis::cluster_routing::Slot;

    fn slot(key: &str) -> Slot {
        Slot::for_key(key)
    }

    #[test]
    fn each_lookup_has_one_slot() {
        let keys = Keys::new("daisi-test");
        let user: SessionKey = "u:c1:a1:u1".parse().unwrap();
        let s = keys.session(&user);
        for k in [&s.tombstones, &s.selection, &s.fence] {
            assert_eq!(slot(k), slot(&s.session), "{k}");
        }
        assert_eq!(s.session, "{daisi-test:s:u:c1:a1:u1}:s");
        let pod: PodId = "edge-0".parse().unwrap();
        let p = keys.pod(&pod);
        let sw = keys.sweep(&pod, "7");
        for k in [
            &p.sessions,
            &p.routes,
            &p.inbox,
            &p.inbox_seq,
            &p.gen_seq,
            &p.sweeps,
            &sw.record,
            &sw.sessions,
            &sw.routes,
        ] {
            assert_eq!(slot(k), slot(&p.pod), "{k}");
        }
        let agent = keys.route(&"agent:c1:a1".parse().unwrap());
        let chat = keys.route(&"chat:c1:a1:x".parse().unwrap());
        let admin = keys.route(&"admin:c1:*".parse().unwrap());
        for k in keys.indexes_of(&user).iter().chain([&chat, &admin]) {
            assert_eq!(slot(k), slot(&agent), "{k}");
        }
        // Users, pods and companies are spread: 100 users land on many slots.
        let slots: std::collections::HashSet<Slot> = (0..100)
            .map(|i| {
                slot(
                    &keys
                        .session(&format!("u:c:a:u{i}").parse().unwrap())
                        .session,
                )
            })
            .collect();
        assert!(slots.len() > 90, "{}", slots.len());
    }
}
