//! One event to the matching local sockets: the frame is rendered once and the same bytes are
//! queued to every socket (cloning a `Utf8Bytes` only bumps a reference count). The `json.v2`
//! frame (with the event's position) is rendered on the first `json.v2` socket met, so an
//! edge with only `json.v1` sockets never pays for it.

use crate::state::Edge;
use crate::ws::handle::{SocketHandle, SocketKind};
use crate::ws::outbox::Pushed;
use daisi_domain::event::render_event_frame_v2;
use daisi_domain::protocol::{GapCause, Subprotocol};
use daisi_domain::{AgentId, ChatId, CompanyId};
use std::cell::OnceCell;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// The frames of one event: `json.v1` as rendered, `json.v2` on demand.
#[derive(Debug)]
pub struct EventFrames {
    v1: Utf8Bytes,
    v2: OnceCell<Utf8Bytes>,
    /// Stream sequence.
    pub seq: u64,
    /// Stream epoch.
    pub epoch: u64,
}

impl EventFrames {
    /// The frames of the event at (`epoch`, `seq`) whose `json.v1` frame is `v1`.
    pub fn new(v1: Utf8Bytes, seq: u64, epoch: u64) -> Self {
        Self {
            v1,
            v2: OnceCell::new(),
            seq,
            epoch,
        }
    }

    /// The `json.v1` frame.
    pub fn v1(&self) -> &Utf8Bytes {
        &self.v1
    }

    /// The `json.v2` frame, rendered once.
    pub fn v2(&self) -> &Utf8Bytes {
        self.v2.get_or_init(|| {
            Utf8Bytes::from(render_event_frame_v2(
                self.v1.as_str(),
                self.seq,
                self.epoch,
            ))
        })
    }
}

/// Who gets an event.
#[derive(Debug, Clone)]
pub enum Audience {
    /// Every user socket of (company, agent).
    AgentUsers(CompanyId, AgentId),
    /// User sockets of (company, agent) that selected the chat.
    ChatUsers(CompanyId, AgentId, ChatId),
    /// Every user socket of (company, agent) and the admins whose filter matches.
    AgentUsersAndAdmins(CompanyId, AgentId),
}

/// Queues the event to every socket of `audience`; returns how many took it (queued, or held
/// by a recovery that will queue it).
pub fn fan_out(edge: &Edge, audience: &Audience, frames: &EventFrames) -> u32 {
    let mut reached = 0u32;
    let mut drops = 0u64;
    let mut slow = 0u64;
    let mut push = |socket: &SocketHandle| match match socket.protocol {
        Subprotocol::V1 => socket.outbox.push(frames.v1().clone()),
        Subprotocol::V2 => socket
            .outbox
            .push_event(frames.v2().clone(), frames.seq, frames.epoch),
    } {
        // Held: queued when the socket's recovery ends (or written by its replay).
        Pushed::Queued | Pushed::Held => reached += 1,
        Pushed::DroppedOldest => {
            reached += 1;
            drops += 1;
        }
        Pushed::ClosedSlow => slow += 1,
        // Repeat: the socket's recovery wrote it already. HeldOverflow: the recovery ends in a
        // resync instead.
        Pushed::Repeat | Pushed::HeldOverflow | Pushed::Closing => {}
    };
    match audience {
        Audience::AgentUsers(company, agent) => edge.registry.for_agent(company, agent, &mut push),
        Audience::ChatUsers(company, agent, chat) => {
            edge.registry.for_chat(company, agent, chat, &mut push);
        }
        Audience::AgentUsersAndAdmins(company, agent) => {
            edge.registry.for_agent(company, agent, &mut push);
            edge.registry.for_admins(|socket| {
                if let SocketKind::Admin(claims) = &socket.kind
                    && claims.wants_agent_event(company, agent)
                {
                    push(socket);
                }
            });
        }
    }
    if drops > 0 {
        edge.metrics.queue_drops.inc_by(drops);
    }
    if slow > 0 {
        edge.metrics.slow_consumer_closes.inc_by(slow);
    }
    edge.metrics.events_delivered.inc_by(u64::from(reached));
    reached
}

/// Tells the `json.v2` sockets of `audience` (every socket when `None`) that they may have
/// missed events.
pub fn announce_gap(edge: &Edge, audience: Option<&Audience>, cause: GapCause) {
    let mut tell = |socket: &SocketHandle| crate::ws::gap::announce(edge, socket, cause);
    match audience {
        None => {
            for socket in edge.registry.all() {
                tell(&socket);
            }
        }
        Some(Audience::AgentUsers(company, agent)) => {
            edge.registry.for_agent(company, agent, &mut tell);
        }
        Some(Audience::ChatUsers(company, agent, chat)) => {
            edge.registry.for_chat(company, agent, chat, &mut tell);
        }
        Some(Audience::AgentUsersAndAdmins(company, agent)) => {
            edge.registry.for_agent(company, agent, &mut tell);
            edge.registry.for_admins(|socket| {
                if let SocketKind::Admin(claims) = &socket.kind
                    && claims.wants_agent_event(company, agent)
                {
                    tell(socket);
                }
            });
        }
    }
}
