//! Between the edge's coordinator vocabulary and the `daisi.coordinator.v1` messages. Session
//! keys and routes convert in [`daisi_proto::convert`] (shared with the coordinator); what the
//! coordinator sends that does not parse is dropped here rather than failing the call.

use super::{EndReason, HeldSession, Holder, Kill, PodCommand};
use daisi_domain::SessionKey;
use daisi_proto::coordinator::v1 as pb;
use std::time::Duration;

/// A session key the coordinator sent, if it is a valid one.
fn key_from_pb(key: Option<&pb::SessionKey>) -> Option<SessionKey> {
    daisi_proto::convert::session_key("key", key).ok()
}

pub(crate) fn held_to_pb(held: &HeldSession) -> pb::HeldSession {
    pb::HeldSession {
        key: Some(pb::SessionKey::from(&held.key)),
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

fn kill_from_pb(kill: pb::KillConnection) -> Option<Kill> {
    Some(Kill {
        key: key_from_pb(kill.key.as_ref())?,
        connection: kill.connection_id,
        fencing: kill.fencing_token,
        reason: reason_from_pb(kill.reason),
    })
}

/// The kill of an inbox entry; `None` when it names no valid session.
pub(crate) fn inbox_from_pb(entry: pb::InboxCommand) -> Option<Kill> {
    kill_from_pb(entry.kill?)
}

pub(crate) fn command_from_pb(command: pb::PodCommand) -> PodCommand {
    match command.command {
        Some(pb::pod_command::Command::Subscribed(s)) => PodCommand::Subscribed {
            ping_interval: duration_from_pb(s.ping_interval.as_ref(), Duration::from_secs(10)),
        },
        Some(pb::pod_command::Command::Ping(_)) => PodCommand::Ping,
        Some(pb::pod_command::Command::Kill(k)) => {
            kill_from_pb(k).map_or(PodCommand::Unknown, PodCommand::Kill)
        }
        None => PodCommand::Unknown,
    }
}
