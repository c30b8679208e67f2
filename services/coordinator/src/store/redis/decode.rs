//! Turns the flat string arrays the scripts return (and the kill-command lines they publish)
//! into store types. Anything unexpected is [`StoreError::Corrupt`], never a panic.

use crate::store::{
    EndReason, Holder, KillCommand, PodLoad, PodRecord, SessionInfo, StoreError, StoreResult,
};
use daisi_domain::coordination::FencingToken;
use jiff::Timestamp;
use std::str::FromStr;

/// Fields of one session record (`session_record` in `lua/common.lua`).
pub(crate) const SESSION_FIELDS: usize = 7;
/// Fields of one pod record (`pod_record` in `lua/common.lua`).
pub(crate) const POD_FIELDS: usize = 8;

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what}: unexpected value {value:?}"))
}

/// Parses a field with `FromStr`, naming the field on failure.
pub(crate) fn parse<T: FromStr>(what: &str, value: &str) -> StoreResult<T> {
    value.parse().map_err(|_| corrupt(what, value))
}

pub(crate) fn fencing(value: &str) -> StoreResult<FencingToken> {
    parse("fencing token", value).map(FencingToken)
}

pub(crate) fn millis(value: &str) -> StoreResult<Timestamp> {
    let ms: i64 = parse("timestamp", value)?;
    Timestamp::from_millisecond(ms).map_err(|_| corrupt("timestamp", value))
}

/// An [`EndReason`] by its wire name.
pub(crate) fn reason(value: &str) -> StoreResult<EndReason> {
    EndReason::parse(value).ok_or_else(|| corrupt("reason", value))
}

/// A holder from (pod, connection, fencing); `None` when the pod field is empty.
pub(crate) fn holder(pod: &str, connection: &str, fence: &str) -> StoreResult<Option<Holder>> {
    if pod.is_empty() {
        return Ok(None);
    }
    Ok(Some(Holder {
        pod: parse("pod_id", pod)?,
        connection: parse("connection_id", connection)?,
        fencing: fencing(fence)?,
    }))
}

fn required_holder(pod: &str, connection: &str, fence: &str) -> StoreResult<Holder> {
    holder(pod, connection, fence)?.ok_or_else(|| corrupt("holder", pod))
}

pub(crate) fn optional<T: FromStr>(what: &str, value: &str) -> StoreResult<Option<T>> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse(what, value).map(Some)
    }
}

pub(crate) fn sessions(fields: &[String]) -> StoreResult<Vec<SessionInfo>> {
    if !fields.len().is_multiple_of(SESSION_FIELDS) {
        return Err(StoreError::Corrupt("truncated session records".to_owned()));
    }
    fields
        .chunks_exact(SESSION_FIELDS)
        .map(|f| {
            Ok(SessionInfo {
                key: parse("session key", &f[0])?,
                holder: required_holder(&f[1], &f[2], &f[3])?,
                since: millis(&f[4])?,
                lease_expires_at: millis(&f[5])?,
                selected_chat: optional("chat_id", &f[6])?,
            })
        })
        .collect()
}

pub(crate) fn pods(fields: &[String]) -> StoreResult<Vec<PodRecord>> {
    if !fields.len().is_multiple_of(POD_FIELDS) {
        return Err(StoreError::Corrupt("truncated pod records".to_owned()));
    }
    fields
        .chunks_exact(POD_FIELDS)
        .map(|f| {
            let load = match (f[6].parse(), f[7].parse()) {
                (Ok(user_sockets), Ok(admin_sockets)) => Some(PodLoad {
                    user_sockets,
                    admin_sockets,
                }),
                _ => None,
            };
            Ok(PodRecord {
                pod: parse("pod_id", &f[0])?,
                instance: f[1].clone(),
                delivery_address: f[2].clone(),
                registered_at: millis(&f[3])?,
                last_heartbeat_at: millis(&f[4])?,
                lease_expires_at: millis(&f[5])?,
                load,
            })
        })
        .collect()
}

/// Parses a published kill command (format in `lua/common.lua`, `publish_kill`).
pub(crate) fn kill_command(payload: &str) -> StoreResult<KillCommand> {
    let mut parts = payload.splitn(8, '\n');
    let mut next = |what: &str| parts.next().ok_or_else(|| corrupt(what, payload));
    let version = next("version")?;
    if version != "v1" {
        return Err(corrupt("kill command version", version));
    }
    let pod = parse("pod_id", next("pod")?)?;
    let connection = parse("connection_id", next("connection")?)?;
    let fencing = fencing(next("fencing")?)?;
    let reason = reason(next("reason")?)?;
    let key = parse("session key", next("session key")?)?;
    let issued_at = millis(next("issued at")?)?;
    let message = next("message")?.to_owned();
    Ok(KillCommand {
        pod,
        key,
        connection,
        fencing,
        reason,
        message,
        issued_at,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kill_commands_keep_newlines_in_the_message() {
        let cmd = kill_command(
            "v1\nedge-0\nconn1\n42\nkilled_by_admin\nu:c:a:u\n1700000000000\nline1\nline2",
        )
        .unwrap();
        assert_eq!(cmd.fencing, FencingToken(42));
        assert_eq!(cmd.reason, EndReason::KilledByAdmin);
        assert_eq!(cmd.message, "line1\nline2");
        assert!(kill_command("v2\nedge-0").is_err());
        assert!(kill_command("v1\nedge-0\nconn1\nx\ntaken_over\nu:c:a:u\n1\n").is_err());
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        assert!(sessions(&["u:c:a:u".to_owned()]).is_err());
        let bad: Vec<String> = ["edge.0", "i", "a", "1", "1", "1", "", ""]
            .map(str::to_owned)
            .to_vec();
        assert!(pods(&bad).is_err());
    }
}
