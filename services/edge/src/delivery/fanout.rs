//! One event to the matching local sockets: the frame is rendered once and the same bytes are
//! queued to every socket (cloning a `Utf8Bytes` only bumps a reference count).

use crate::state::Edge;
use crate::ws::handle::{SocketHandle, SocketKind};
use crate::ws::outbox::Pushed;
use axum::extract::ws::Utf8Bytes;
use daisi_domain::{AgentId, ChatId, CompanyId};

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

/// Queues `frame` to every socket of `audience`; returns how many took it.
pub fn fan_out(edge: &Edge, audience: &Audience, frame: &Utf8Bytes) -> u32 {
    let mut reached = 0u32;
    let mut drops = 0u64;
    let mut slow = 0u64;
    let mut push = |socket: &SocketHandle| match socket.outbox.push(frame.clone()) {
        Pushed::Queued => reached += 1,
        Pushed::DroppedOldest => {
            reached += 1;
            drops += 1;
        }
        Pushed::ClosedSlow => slow += 1,
        Pushed::Closing => {}
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
