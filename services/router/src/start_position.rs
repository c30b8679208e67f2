//! Where a new durable consumer starts reading the stream (`DAISI_ROUTER_START_POSITION`).
//!
//! It matters once: when the consumer is created. A production stream that the old service (or
//! the CDC publisher) filled holds days of events, and a consumer that starts at the oldest one
//! replays all of them to connected clients; so the default is `new`. JetStream cannot change
//! the deliver policy of an existing consumer, and silently running with a policy other than
//! the configured one would hide a cutover mistake, so the router refuses to start when the
//! consumer exists with a different one (see [`StartPosition::refusal`]). A consumer lost while
//! the routers run is rebuilt where they left off instead, and accepted by routers started
//! later whatever their position (`source/jetstream.rs`).

use daisi_config::Validator;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where a consumer that does not exist yet starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// Only messages stored after the consumer is created (the default).
    New,
    /// Every message the stream still holds.
    All,
    /// The first message stored at or after this instant.
    ByStartTime(SystemTime),
    /// The message with this stream sequence and every later one.
    ByStartSequence(u64),
}

impl StartPosition {
    /// The word of `DAISI_ROUTER_START_POSITION` for this position.
    pub fn name(&self) -> &'static str {
        match self {
            Self::New => "new",
            Self::All => "all",
            Self::ByStartTime(_) => "by_start_time",
            Self::ByStartSequence(_) => "by_start_sequence",
        }
    }

    /// The position with its argument, as an operator would write it in settings.
    pub fn describe(&self) -> String {
        match self {
            Self::ByStartTime(at) => format!("by_start_time ({})", rfc3339(*at)),
            Self::ByStartSequence(seq) => format!("by_start_sequence ({seq})"),
            other => other.name().to_owned(),
        }
    }

    /// The message refusing to run when consumer `consumer` of stream `stream` exists with
    /// deliver policy `existing` while this position is configured.
    pub fn refusal(&self, stream: &str, consumer: &str, existing: &str) -> String {
        format!(
            "consumer `{consumer}` of stream `{stream}` already exists with start position \
             {existing}, but DAISI_ROUTER_START_POSITION asks for {}; JetStream cannot change \
             the start position of an existing consumer. Set DAISI_ROUTER_START_POSITION (and \
             DAISI_ROUTER_START_TIME / DAISI_ROUTER_START_SEQUENCE) to match it, or stop every \
             router and delete the consumer (`nats consumer rm {stream} {consumer}`) so the \
             routers create it anew (routers still running rebuild it where they left off; \
             docs/migrating.md)",
            self.describe()
        )
    }

    /// Reads the position from its three settings, reporting problems to `v`.
    pub(crate) fn from_settings(
        v: &mut Validator,
        position: Option<&str>,
        time: Option<&str>,
        sequence: Option<&str>,
    ) -> Option<Self> {
        let word = v.one_of(
            "START_POSITION",
            position,
            "new",
            &["new", "all", "by_start_time", "by_start_sequence"],
        )?;
        let time = time.map(str::trim).filter(|s| !s.is_empty());
        let sequence = sequence.map(str::trim).filter(|s| !s.is_empty());
        if word != "by_start_time" && time.is_some() {
            v.problem(
                "START_TIME",
                "applies only with DAISI_ROUTER_START_POSITION=by_start_time; unset it",
            );
        }
        if word != "by_start_sequence" && sequence.is_some() {
            v.problem(
                "START_SEQUENCE",
                "applies only with DAISI_ROUTER_START_POSITION=by_start_sequence; unset it",
            );
        }
        match word {
            "all" => Some(Self::All),
            "by_start_time" => v
                .parse_with("START_TIME", time, None, parse_time)
                .map(Self::ByStartTime),
            "by_start_sequence" => v
                .parse_with("START_SEQUENCE", sequence, None, |s| {
                    s.parse::<u64>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| format!("`{s}` is not a stream sequence (1 or more)"))
                })
                .map(Self::ByStartSequence),
            _ => Some(Self::New),
        }
    }
}

/// An RFC 3339 instant such as `2026-11-25T18:00:00Z` or `2026-11-25T18:00:00+07:00`.
fn parse_time(value: &str) -> Result<SystemTime, String> {
    let invalid = || {
        format!("`{value}` is not an RFC 3339 time such as 2026-11-25T18:00:00Z (with an offset)")
    };
    let parsed = async_nats::datetime::parse_rfc3339(value).map_err(|_| invalid())?;
    let nanos = u64::try_from(parsed.unix_timestamp_nanos()).map_err(|_| invalid())?;
    UNIX_EPOCH
        .checked_add(Duration::from_nanos(nanos))
        .ok_or_else(invalid)
}

/// `at` as RFC 3339 in UTC, for messages.
pub(crate) fn rfc3339(at: SystemTime) -> String {
    let nanos = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
    match async_nats::datetime::from_nanos(nanos) {
        Ok(t) => t.to_string(),
        Err(_) => format!("{nanos} ns after the epoch"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(
        position: Option<&str>,
        time: Option<&str>,
        seq: Option<&str>,
    ) -> Result<StartPosition, String> {
        let mut v = Validator::new("DAISI_ROUTER_");
        let got = StartPosition::from_settings(&mut v, position, time, seq);
        v.finish(|| got).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_to_new_and_reads_each_position() {
        assert_eq!(read(None, None, None), Ok(StartPosition::New));
        assert_eq!(read(Some("ALL"), None, None), Ok(StartPosition::All));
        assert_eq!(
            read(Some("by_start_sequence"), None, Some("901")),
            Ok(StartPosition::ByStartSequence(901))
        );
        let at = read(
            Some("by_start_time"),
            Some("1970-01-01T00:01:40+00:00"),
            None,
        );
        assert_eq!(
            at,
            Ok(StartPosition::ByStartTime(
                UNIX_EPOCH + Duration::from_secs(100)
            ))
        );
        let offset = read(
            Some("by_start_time"),
            Some("1970-01-01T07:01:40+07:00"),
            None,
        );
        assert_eq!(offset, at, "offsets are honoured");
    }

    #[test]
    fn missing_stray_and_bad_arguments_name_their_variable() {
        for (position, time, seq, var) in [
            (Some("by_start_time"), None, None, "DAISI_ROUTER_START_TIME"),
            (
                Some("by_start_time"),
                Some("yesterday"),
                None,
                "DAISI_ROUTER_START_TIME",
            ),
            (
                Some("by_start_time"),
                Some("2026-11-25T18:00:00"),
                None,
                "DAISI_ROUTER_START_TIME",
            ),
            (
                Some("by_start_sequence"),
                None,
                None,
                "DAISI_ROUTER_START_SEQUENCE",
            ),
            (
                Some("by_start_sequence"),
                None,
                Some("0"),
                "DAISI_ROUTER_START_SEQUENCE",
            ),
            (Some("new"), None, Some("5"), "DAISI_ROUTER_START_SEQUENCE"),
            (
                Some("all"),
                Some("2026-11-25T18:00:00Z"),
                None,
                "DAISI_ROUTER_START_TIME",
            ),
            (Some("oldest"), None, None, "DAISI_ROUTER_START_POSITION"),
        ] {
            let err = read(position, time, seq).expect_err("refused");
            assert!(err.contains(var), "{position:?} {time:?} {seq:?}: {err}");
        }
    }

    #[test]
    fn refusal_names_the_setting_and_the_way_out() {
        let text = StartPosition::New.refusal("wa_stream", "daisi-router", "all");
        for part in [
            "DAISI_ROUTER_START_POSITION",
            "`daisi-router`",
            "`wa_stream`",
            "start position all",
            "asks for new",
            "nats consumer rm wa_stream daisi-router",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        let at = StartPosition::ByStartTime(UNIX_EPOCH + Duration::from_secs(100));
        assert!(at.describe().contains("1970-01-01"), "{}", at.describe());
    }
}
