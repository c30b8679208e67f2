//! The Lua scripts behind every multi-key operation, each prefixed with the shared prelude
//! (`lua/common.lua`: key layout, clock, pod claims). `redis::Script` sends EVALSHA and loads the
//! script on NOSCRIPT, so a restarted Redis (which forgot its scripts) is handled transparently.

use redis::Script;

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("lua/common.lua"),
            include_str!(concat!("lua/", $file))
        ))
    };
}

/// One compiled (hashed) instance of every script.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) acquire: Script,
    pub(crate) renew: Script,
    pub(crate) release: Script,
    pub(crate) select: Script,
    pub(crate) kill: Script,
    pub(crate) sessions: Script,
    pub(crate) list_sessions: Script,
    pub(crate) heartbeat: Script,
    pub(crate) deregister: Script,
    pub(crate) reap: Script,
    pub(crate) sweep: Script,
    pub(crate) inbox: Script,
    pub(crate) routes: Script,
    pub(crate) lookup: Script,
    pub(crate) pods: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            acquire: script!("acquire.lua"),
            renew: script!("renew.lua"),
            release: script!("release.lua"),
            select: script!("select.lua"),
            kill: script!("kill.lua"),
            sessions: script!("sessions.lua"),
            list_sessions: script!("list_sessions.lua"),
            heartbeat: script!("heartbeat.lua"),
            deregister: script!("deregister.lua"),
            reap: script!("reap.lua"),
            sweep: script!("sweep.lua"),
            inbox: script!("inbox.lua"),
            routes: script!("routes.lua"),
            lookup: script!("lookup.lua"),
            pods: script!("pods.lua"),
        }
    }
}
