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
