//! The Lua scripts, each prefixed with the shared prelude (`lua/common.lua`: key layout, clock,
//! pod claims). Each touches the keys of one slot, all passed in `KEYS`. `redis::Script` sends
//! EVALSHA and loads the script on NOSCRIPT, so a restarted Redis (which forgot its scripts)
//! is handled transparently; on a cluster the node that answers NOSCRIPT is the one loaded.

use redis::Script;

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("lua/common.lua"),
            include_str!(concat!("lua/", $file))
        ))
    };
}

/// One compiled (hashed) instance of every script, by the slot it runs in.
#[derive(Debug)]
pub(crate) struct Scripts {
    // Session slot.
    pub(crate) acquire: Script,
    pub(crate) renew: Script,
    pub(crate) release: Script,
    pub(crate) select: Script,
    pub(crate) session: Script,
    pub(crate) kill: Script,
    pub(crate) sweep_drop: Script,
    // Pod slot.
    pub(crate) pod_gen: Script,
    pub(crate) pod_grant: Script,
    pub(crate) pod_kill: Script,
    pub(crate) pod_record: Script,
    pub(crate) inbox: Script,
    pub(crate) heartbeat: Script,
    pub(crate) deregister: Script,
    pub(crate) reap_pod: Script,
    pub(crate) sweep: Script,
    // Deployment slot.
    pub(crate) pods_touch: Script,
    pub(crate) reap_due: Script,
    pub(crate) reap_done: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            acquire: script!("acquire.lua"),
            renew: script!("renew.lua"),
            release: script!("release.lua"),
            select: script!("select.lua"),
            session: script!("session.lua"),
            kill: script!("kill.lua"),
            sweep_drop: script!("sweep_drop.lua"),
            pod_gen: script!("pod_gen.lua"),
            pod_grant: script!("pod_grant.lua"),
            pod_kill: script!("pod_kill.lua"),
            pod_record: script!("pod_record.lua"),
            inbox: script!("inbox.lua"),
            heartbeat: script!("heartbeat.lua"),
            deregister: script!("deregister.lua"),
            reap_pod: script!("reap_pod.lua"),
            sweep: script!("sweep.lua"),
            pods_touch: script!("pods_touch.lua"),
            reap_due: script!("reap_due.lua"),
            reap_done: script!("reap_done.lua"),
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every script's source, the prelude included.
    const SOURCES: [(&str, &str); 20] = [
        ("common.lua", include_str!("lua/common.lua")),
        ("acquire.lua", include_str!("lua/acquire.lua")),
        ("renew.lua", include_str!("lua/renew.lua")),
        ("release.lua", include_str!("lua/release.lua")),
        ("select.lua", include_str!("lua/select.lua")),
        ("session.lua", include_str!("lua/session.lua")),
        ("kill.lua", include_str!("lua/kill.lua")),
        ("sweep_drop.lua", include_str!("lua/sweep_drop.lua")),
        ("pod_gen.lua", include_str!("lua/pod_gen.lua")),
        ("pod_grant.lua", include_str!("lua/pod_grant.lua")),
        ("pod_kill.lua", include_str!("lua/pod_kill.lua")),
        ("pod_record.lua", include_str!("lua/pod_record.lua")),
        ("inbox.lua", include_str!("lua/inbox.lua")),
        ("heartbeat.lua", include_str!("lua/heartbeat.lua")),
        ("deregister.lua", include_str!("lua/deregister.lua")),
        ("reap_pod.lua", include_str!("lua/reap_pod.lua")),
        ("sweep.lua", include_str!("lua/sweep.lua")),
        ("pods_touch.lua", include_str!("lua/pods_touch.lua")),
        ("reap_due.lua", include_str!("lua/reap_due.lua")),
        ("reap_done.lua", include_str!("lua/reap_done.lua")),
    ];

    /// Redis Cluster itself rejects a script that touches two slots (the contract suite runs
    /// on one); this guards the other half of the rule, that scripts never build a key name
    /// (an undeclared key of the same slot would go unnoticed there).
    #[test]
    fn scripts_only_touch_keys_they_receive() {
        for (name, source) in SOURCES {
            let code: String = source
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            for pattern in [".. ':", "':' ..", "'{'", "ARGV[1] .."] {
                assert!(!code.contains(pattern), "{name} builds a key: {pattern}");
            }
        }
    }
}
