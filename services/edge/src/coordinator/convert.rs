//! Between the edge's coordinator vocabulary and the `daisi.coordinator.v1` messages.

use super::{EndReason, HeldSession, Holder, Kill, PodCommand, Route};
use daisi_domain::SessionKey;
use daisi_proto::coordinator::v1 as pb;
use std::time::Duration;

pub(crate) fn key_to_pb(key: &SessionKey) -> pb::SessionKey {
    let kind = match key {
        SessionKey::User {
            company,
            agent,
            user,
        } => pb::session_key::Kind::User(pb::UserSessionKey {
            company_id: company.to_string(),
            agent_id: agent.to_string(),
            user_id: user.to_string(),
        }),
        SessionKey::Admin { admin } => pb::session_key::Kind::Admin(pb::AdminSessionKey {
            admin_id: admin.to_string(),
        }),
    };
    pb::SessionKey { kind: Some(kind) }
}

pub(crate) fn key_from_pb(key: Option<&pb::SessionKey>) -> Option<SessionKey> {
    match key?.kind.as_ref()? {
        pb::session_key::Kind::User(u) => Some(SessionKey::user(
            u.company_id.parse().ok()?,
            u.agent_id.parse().ok()?,
            u.user_id.parse().ok()?,
        )),
        pb::session_key::Kind::Admin(a) => Some(SessionKey::admin(a.admin_id.parse().ok()?)),
    }
}

pub(crate) fn route_to_pb(route: &Route) -> pb::Route {
    let kind = match route {
        Route::Agent { company, agent } => pb::route::Kind::Agent(pb::AgentRoute {
            company_id: company.to_string(),
            agent_id: agent.to_string(),
        }),
        Route::Chat {
            company,
            agent,
            chat,
        } => pb::route::Kind::Chat(pb::ChatRoute {
            company_id: company.to_string(),
            agent_id: agent.to_string(),
            chat_id: chat.to_string(),
        }),
        Route::Admin { company, agent } => pb::route::Kind::Admin(pb::AdminRoute {
            company_id: company
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            agent_id: agent.as_ref().map(ToString::to_string).unwrap_or_default(),
        }),
    };
    pb::Route { kind: Some(kind) }
}

pub(crate) fn held_to_pb(held: &HeldSession) -> pb::HeldSession {
    pb::HeldSession {
        key: Some(key_to_pb(&held.key)),
        connection_id: held.connection.to_string(),
        fencing_token: held.fencing,
    }
}

pub(crate) fn held_from_pb(held: Option<&pb::HeldSession>) -> Option<HeldSession> {
    let held = held?;
    Some(HeldSession {
        key: key_from_pb(held.key.as_ref())?,
        connection: held.connection_id.parse().ok()?,
        fencing: held.fencing_token,
    })
}

pub(crate) fn holder_from_pb(holder: Option<&pb::SessionHolder>) -> Option<Holder> {
    holder.map(|h| Holder {
        pod: h.pod_id.clone(),
        connection: h.connection_id.clone(),
        fencing: h.fencing_token,
    })
}

pub(crate) fn reason_from_pb(reason: i32) -> EndReason {
    match pb::SessionEndReason::try_from(reason) {
        Ok(pb::SessionEndReason::TakenOver) => EndReason::TakenOver,
        Ok(pb::SessionEndReason::KilledByAdmin) => EndReason::KilledByAdmin,
        Ok(pb::SessionEndReason::Expired) => EndReason::Expired,
        Ok(pb::SessionEndReason::PodPurged) => EndReason::PodPurged,
        _ => EndReason::Other,
    }
}

pub(crate) fn duration_from_pb(d: Option<&prost_types::Duration>, fallback: Duration) -> Duration {
    d.and_then(|d| Duration::try_from(*d).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(fallback)
}

pub(crate) fn command_from_pb(command: pb::PodCommand) -> PodCommand {
    match command.command {
        Some(pb::pod_command::Command::Subscribed(s)) => PodCommand::Subscribed {
            ping_interval: duration_from_pb(s.ping_interval.as_ref(), Duration::from_secs(10)),
        },
        Some(pb::pod_command::Command::Ping(_)) => PodCommand::Ping,
        Some(pb::pod_command::Command::Kill(k)) => match key_from_pb(k.key.as_ref()) {
            Some(key) => PodCommand::Kill(Kill {
                key,
                connection: k.connection_id,
                fencing: k.fencing_token,
                reason: reason_from_pb(k.reason),
            }),
            None => PodCommand::Unknown,
        },
        None => PodCommand::Unknown,
    }
}
