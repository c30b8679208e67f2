//! The pod's local index of sockets: by connection (kills, renew results), by (company, agent)
//! and (company, agent, chat) for user deliveries, and the admin sockets. Delivery reads it
//! under a shared lock; sockets come and go under the exclusive one, briefly.
//!
//! Adding and removing sockets also keeps the [`RouteBook`] counts, so the routes registered
//! with the coordinator always cover the sockets in here.

pub mod pending_kills;
pub mod routes;

use crate::coordinator::{HeldSession, Route};
use crate::ws::handle::{SocketHandle, SocketKind};
use daisi_domain::{AgentId, ChatId, CompanyId, ConnectionId, SessionKey};
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use pending_kills::PendingKills;
pub use routes::RouteBook;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

type Sockets = HashMap<u64, Arc<SocketHandle>>;

#[derive(Debug, Default)]
struct Index {
    by_id: Sockets,
    by_connection: HashMap<ConnectionId, u64>,
    agents: HashMap<(CompanyId, AgentId), Sockets>,
    chats: HashMap<(CompanyId, AgentId, ChatId), Sockets>,
    admins: Sockets,
    users: usize,
    /// Kills that named a connection before it was indexed.
    pending_kills: PendingKills,
}

/// Where a kill command landed.
#[derive(Debug)]
pub enum KillTarget {
    /// The socket holding the connection.
    Socket(Arc<SocketHandle>),
    /// Not indexed (yet): remembered, and applied if the socket is indexed soon.
    Remembered,
    /// The connection id is not one this edge issues.
    Invalid,
}

/// A place held for a socket being admitted ([`Registry::reserve`]); given back when dropped.
#[derive(Debug)]
pub struct Reservation<'a>(&'a AtomicUsize);

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The local index and route counts.
#[derive(Debug, Default)]
pub struct Registry {
    index: RwLock<Index>,
    next_id: AtomicU64,
    /// Sockets being admitted, not indexed yet: they count against the capacity.
    admitting: AtomicUsize,
    /// Route counts; see [`routes`].
    pub routes: RouteBook,
}

/// The route every user socket of (company, agent) needs.
pub fn agent_route(company: &CompanyId, agent: &AgentId) -> Route {
    Route::Agent {
        company: company.clone(),
        agent: agent.clone(),
    }
}

/// The route of a selected chat.
pub fn chat_route(company: &CompanyId, agent: &AgentId, chat: &ChatId) -> Route {
    Route::Chat {
        company: company.clone(),
        agent: agent.clone(),
        chat: chat.clone(),
    }
}

/// The admin route covering `kind`'s filter: the subscription or restriction folded into the
/// company filter (the exact per-socket filter is applied at delivery).
pub fn admin_route(claims: &daisi_domain::token::AdminClaims) -> Route {
    Route::Admin {
        company: claims
            .subscribed_company_id
            .clone()
            .or_else(|| claims.company_id_restriction.clone()),
        agent: claims.subscribed_agent_id.clone(),
    }
}

/// Routes a socket needs for its kind (not counting the selected chat).
pub fn base_route(kind: &SocketKind) -> Route {
    match kind {
        SocketKind::User { company, agent } => agent_route(company, agent),
        SocketKind::Admin(claims) => admin_route(claims),
    }
}

impl Registry {
    fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read()
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write()
    }

    /// A place for one more socket when the sockets indexed and those being admitted stay
    /// within `max`; held until the socket is indexed or its admission fails. Checking the
    /// index alone let every admission in flight (up to the door's pending limit) pass the
    /// same last free place.
    pub fn reserve(&self, max: usize) -> Option<Reservation<'_>> {
        let admitting = self.admitting.fetch_add(1, Ordering::AcqRel) + 1;
        let reservation = Reservation(&self.admitting);
        // A socket is indexed before its reservation ends, so in between it is counted twice:
        // a refusal may be early by that window, an admission is never over `max`.
        (self.len() + admitting <= max).then_some(reservation)
    }

    /// A fresh local socket id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a socket whose routes were registered (and counted) by its acquire. `true` when a
    /// kill of its grant arrived before it was indexed: the caller closes it.
    pub fn insert(&self, socket: Arc<SocketHandle>) -> bool {
        let mut index = self.write();
        let killed = index.pending_kills.take(
            &socket.connection,
            &socket.key,
            socket.fencing(),
            std::time::Instant::now(),
        );
        index
            .by_connection
            .insert(socket.connection.clone(), socket.id);
        match &socket.kind {
            SocketKind::User { company, agent } => {
                index.users += 1;
                index
                    .agents
                    .entry((company.clone(), agent.clone()))
                    .or_default()
                    .insert(socket.id, socket.clone());
                if let Some(chat) = socket.selected_chat() {
                    index
                        .chats
                        .entry((company.clone(), agent.clone(), chat))
                        .or_default()
                        .insert(socket.id, socket.clone());
                }
            }
            SocketKind::Admin(_) => {
                index.admins.insert(socket.id, socket.clone());
            }
        }
        index.by_id.insert(socket.id, socket);
        killed
    }

    /// The socket a kill of `connection` (holding `key`, grant up to `fencing`) is for; when it
    /// is not indexed, the kill is remembered for [`Registry::insert`] (under the same lock, so
    /// a socket indexed concurrently either is found here or finds the kill there).
    pub fn kill_target(&self, connection: &str, key: &SessionKey, fencing: u64) -> KillTarget {
        let Ok(connection) = connection.parse::<ConnectionId>() else {
            return KillTarget::Invalid;
        };
        let mut index = self.write();
        if let Some(socket) = index
            .by_connection
            .get(&connection)
            .and_then(|id| index.by_id.get(id))
        {
            return KillTarget::Socket(socket.clone());
        }
        index
            .pending_kills
            .remember(connection, key.clone(), fencing, std::time::Instant::now());
        KillTarget::Remembered
    }

    /// Removes a socket and releases its route counts; `false` if it was not there.
    pub fn remove(&self, socket: &SocketHandle) -> bool {
        let mut index = self.write();
        if index.by_id.remove(&socket.id).is_none() {
            return false;
        }
        if index.by_connection.get(&socket.connection) == Some(&socket.id) {
            index.by_connection.remove(&socket.connection);
        }
        let chat = socket.selected_chat();
        match &socket.kind {
            SocketKind::User { company, agent } => {
                index.users -= 1;
                remove_from(
                    &mut index.agents,
                    &(company.clone(), agent.clone()),
                    socket.id,
                );
                if let Some(chat) = &chat {
                    let key = (company.clone(), agent.clone(), chat.clone());
                    remove_from(&mut index.chats, &key, socket.id);
                    self.routes.release(&chat_route(company, agent, chat));
                }
            }
            SocketKind::Admin(_) => {
                index.admins.remove(&socket.id);
            }
        }
        drop(index);
        self.routes.release(&base_route(&socket.kind));
        true
    }

    /// Moves a user socket from its selected chat to `chat`; the caller registered the new
    /// chat route and counted it in (`RouteBook::count_in`). `false`, changing nothing, when
    /// the socket is no longer indexed: its removal already released the chat it had, and the
    /// caller releases the count it took for the new one.
    pub fn select_chat(&self, socket: &Arc<SocketHandle>, chat: ChatId) -> bool {
        let Some((company, agent)) = socket.user_agent() else {
            return false;
        };
        let mut index = self.write();
        if !index.by_id.contains_key(&socket.id) {
            return false;
        }
        let previous = socket.swap_selected_chat(Some(chat.clone()));
        if let Some(previous) = &previous {
            let key = (company.clone(), agent.clone(), previous.clone());
            remove_from(&mut index.chats, &key, socket.id);
        }
        index
            .chats
            .entry((company.clone(), agent.clone(), chat))
            .or_default()
            .insert(socket.id, socket.clone());
        drop(index);
        if let Some(previous) = previous {
            self.routes.release(&chat_route(company, agent, &previous));
        }
        true
    }

    /// The socket holding `connection`.
    pub fn by_connection(&self, connection: &str) -> Option<Arc<SocketHandle>> {
        let connection: ConnectionId = connection.parse().ok()?;
        let index = self.read();
        let id = index.by_connection.get(&connection)?;
        index.by_id.get(id).cloned()
    }

    /// Calls `f` for every user socket of (company, agent).
    pub fn for_agent(
        &self,
        company: &CompanyId,
        agent: &AgentId,
        mut f: impl FnMut(&SocketHandle),
    ) {
        let index = self.read();
        if let Some(sockets) = index.agents.get(&(company.clone(), agent.clone())) {
            sockets.values().for_each(|s| f(s));
        }
    }

    /// Calls `f` for every user socket of (company, agent) that selected `chat`.
    pub fn for_chat(
        &self,
        company: &CompanyId,
        agent: &AgentId,
        chat: &ChatId,
        mut f: impl FnMut(&SocketHandle),
    ) {
        let index = self.read();
        let key = (company.clone(), agent.clone(), chat.clone());
        if let Some(sockets) = index.chats.get(&key) {
            sockets.values().for_each(|s| f(s));
        }
    }

    /// Calls `f` for every admin socket.
    pub fn for_admins(&self, mut f: impl FnMut(&SocketHandle)) {
        self.read().admins.values().for_each(|s| f(s));
    }

    /// Every socket.
    pub fn all(&self) -> Vec<Arc<SocketHandle>> {
        self.read().by_id.values().cloned().collect()
    }

    /// Sessions of the sockets that still hold theirs.
    pub fn held_sessions(&self) -> Vec<HeldSession> {
        self.read()
            .by_id
            .values()
            .filter(|s| !s.session_lost())
            .map(|s| s.held())
            .collect()
    }

    /// (user sockets, admin sockets).
    pub fn counts(&self) -> (usize, usize) {
        let index = self.read();
        (index.users, index.admins.len())
    }

    /// All sockets.
    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    /// No socket at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn remove_from<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Sockets>, key: &K, id: u64) {
    if let Some(sockets) = map.get_mut(key) {
        sockets.remove(&id);
        if sockets.is_empty() {
            map.remove(key);
        }
    }
}
