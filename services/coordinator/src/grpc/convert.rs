//! Between the wire (generated proto types) and the store's vocabulary. Parsing validates every
//! id with the domain types and answers `INVALID_ARGUMENT` naming the field and the rule broken;
//! rendering cannot fail. Session keys, routes and route queries convert in
//! [`daisi_proto::convert`] (shared with the edge and router); this module adds the
//! coordinator's own messages.

use crate::store::{
    EndReason, HeldSession, Holder, KillCommand, PageRequest, PodLoad, PodRecord, SessionInfo,
};
use daisi_domain::IdError;
use daisi_domain::coordination::FencingToken;
use daisi_proto::coordinator::v1 as pb;
use daisi_proto::limits;
use jiff::Timestamp;
use std::str::FromStr;
use std::time::Duration;
use tonic::Status;

pub(crate) use daisi_proto::convert::{route, route_query, routes, session_key};

/// `INVALID_ARGUMENT` with `message`.
pub(crate) fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

/// Validates one id; `field` locates it in the request (`sessions[3].key.user`).
pub(crate) fn id<T: FromStr<Err = IdError>>(field: &str, value: &str) -> Result<T, Status> {
    Ok(daisi_proto::convert::id(field, value)?)
}

/// Rejects a batch larger than `max`.
pub(crate) fn within(field: &str, len: usize, max: usize) -> Result<(), Status> {
    if len > max {
        return Err(invalid(format!(
            "{field}: at most {max} items per call (got {len}); split the batch"
        )));
    }
    Ok(())
}

/// A process instance id: opaque, but bounded and printable since it ends up in keys and logs.
pub(crate) fn instance_id(value: &str) -> Result<String, Status> {
    if value.is_empty() {
        return Err(invalid("instance_id must not be empty"));
    }
    if value.len() > limits::MAX_ID_BYTES {
        return Err(invalid(format!(
            "instance_id must be at most {} bytes (got {})",
            limits::MAX_ID_BYTES,
            value.len()
        )));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "instance_id must not contain whitespace or control characters",
        ));
    }
    Ok(value.to_owned())
}

pub(crate) fn held_session(field: &str, held: pb::HeldSession) -> Result<HeldSession, Status> {
    Ok(HeldSession {
        key: session_key(&format!("{field}.key"), held.key.as_ref())?,
        connection: id(field, &held.connection_id)?,
        fencing: FencingToken(held.fencing_token),
    })
}

pub(crate) fn held_sessions(sessions: Vec<pb::HeldSession>) -> Result<Vec<HeldSession>, Status> {
    sessions
        .into_iter()
        .enumerate()
        .map(|(i, s)| held_session(&format!("sessions[{i}]"), s))
        .collect()
}

/// `page_size` 0 means the default; larger than the maximum is clamped (admin.proto).
pub(crate) fn page(size: u32, token: String) -> PageRequest {
    let size = match size {
        0 => limits::DEFAULT_PAGE_SIZE,
        n => n.min(limits::MAX_PAGE_SIZE),
    };
    PageRequest {
        size: size as usize,
        token: (!token.is_empty()).then_some(token),
    }
}

pub(crate) fn timestamp(at: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.as_second(),
        nanos: at.subsec_nanosecond(),
    }
}

pub(crate) fn duration(span: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(span).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 0,
    })
}

pub(crate) fn holder_out(holder: &Holder) -> pb::SessionHolder {
    pb::SessionHolder {
        pod_id: holder.pod.to_string(),
        connection_id: holder.connection.to_string(),
        fencing_token: holder.fencing.0,
    }
}

pub(crate) fn held_out(held: &HeldSession) -> pb::HeldSession {
    pb::HeldSession {
        key: Some(pb::SessionKey::from(&held.key)),
        connection_id: held.connection.to_string(),
        fencing_token: held.fencing.0,
    }
}

pub(crate) fn reason_out(reason: EndReason) -> i32 {
    let reason = match reason {
        EndReason::TakenOver => pb::SessionEndReason::TakenOver,
        EndReason::KilledByAdmin => pb::SessionEndReason::KilledByAdmin,
        EndReason::Expired => pb::SessionEndReason::Expired,
        EndReason::PodPurged => pb::SessionEndReason::PodPurged,
    };
    reason as i32
}

pub(crate) fn load_in(load: Option<pb::PodLoad>) -> Option<PodLoad> {
    load.map(|l| PodLoad {
        user_sockets: l.user_sockets,
        admin_sockets: l.admin_sockets,
    })
}

pub(crate) fn pod_out(pod: &PodRecord) -> pb::PodInfo {
    pb::PodInfo {
        pod_id: pod.pod.to_string(),
        instance_id: pod.instance.clone(),
        delivery_address: pod.delivery_address.clone(),
        registered_at: Some(timestamp(pod.registered_at)),
        last_heartbeat_at: Some(timestamp(pod.last_heartbeat_at)),
        lease_expires_at: Some(timestamp(pod.lease_expires_at)),
        load: pod.load.map(|l| pb::PodLoad {
            user_sockets: l.user_sockets,
            admin_sockets: l.admin_sockets,
        }),
    }
}

pub(crate) fn session_out(session: &SessionInfo) -> pb::SessionInfo {
    pb::SessionInfo {
        key: Some(pb::SessionKey::from(&session.key)),
        holder: Some(holder_out(&session.holder)),
        since: Some(timestamp(session.since)),
        lease_expires_at: Some(timestamp(session.lease_expires_at)),
        selected_chat_id: session
            .selected_chat
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    }
}

fn kill_connection(command: &KillCommand) -> pb::KillConnection {
    pb::KillConnection {
        key: Some(pb::SessionKey::from(&command.key)),
        connection_id: command.connection.to_string(),
        fencing_token: command.fencing.0,
        reason: reason_out(command.reason),
        message: command.message.clone(),
    }
}

pub(crate) fn kill_out(command: &KillCommand) -> pb::PodCommand {
    pb::PodCommand {
        command: Some(pb::pod_command::Command::Kill(kill_connection(command))),
        issued_at: Some(timestamp(command.issued_at)),
    }
}

pub(crate) fn inbox_out(entry: &crate::store::InboxEntry) -> pb::InboxCommand {
    pb::InboxCommand {
        sequence: entry.sequence,
        kill: Some(kill_connection(&entry.command)),
        issued_at: Some(timestamp(entry.command.issued_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_ids_name_the_field_and_the_rule() {
        let key = pb::SessionKey {
            kind: Some(pb::session_key::Kind::User(pb::UserSessionKey {
                company_id: "c.1".to_owned(),
                agent_id: "a".to_owned(),
                user_id: "u".to_owned(),
            })),
        };
        let err = Status::from(session_key("key", Some(&key)).expect_err("invalid"));
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(err.message(), "key.user: company_id must not contain '.'");
        let err = Status::from(session_key("key", None).expect_err("missing"));
        assert!(
            err.message().starts_with("key is required"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn page_sizes_default_and_clamp() {
        assert_eq!(page(0, String::new()).size, 100);
        assert_eq!(page(5_000, String::new()).size, 1_000);
        assert_eq!(page(7, "x".to_owned()).token.as_deref(), Some("x"));
    }
}
