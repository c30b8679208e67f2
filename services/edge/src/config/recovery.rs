//! Settings of `json.v2`'s guarantees: token expiry on live sockets, and recovery after a
//! reconnect from the JetStream stream (bounded by a count and an age window).

use super::Raw;
use daisi_config::Validator;
use daisi_domain::subject::SubjectModel;
use daisi_runtime::nats_auth::{NatsAuth, RawNatsAuth};
use std::time::Duration;
use url::Url;

/// Which live sockets are closed when their token expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryEnforcement {
    /// `json.v2` sockets only (`json.v1` behaves as the old service: never closed for it).
    V2,
    /// Every socket.
    All,
    /// None.
    Off,
}

/// Where a reconnecting `json.v2` client's missed events are read from.
#[derive(Clone)]
pub struct History {
    /// NATS server(s) of the stream the routers consume, several for a cluster's seeds (may
    /// carry credentials: not printed).
    pub nats_urls: Vec<Url>,
    /// Credentials and TLS beyond the URLs (`DAISI_EDGE_NATS_CREDS`, `..._NKEY_SEED`,
    /// `..._TLS_*`), as the routers have them.
    pub auth: NatsAuth,
    /// The stream.
    pub stream: String,
    /// The subject model (prefix) of the stream.
    pub subjects: SubjectModel,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("stream", &self.stream)
            .field("subjects", &self.subjects)
            .finish_non_exhaustive()
    }
}

/// The `json.v2` settings.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// Which sockets are closed (4401) when their token expires without a refresh.
    pub expiry: ExpiryEnforcement,
    /// The stream to replay from; without it a recovery answers `resync`.
    pub history: Option<History>,
    /// Most events one recovery replays; a client that missed more gets `resync`.
    pub max_events: usize,
    /// Oldest position a recovery replays from (by the event's stream timestamp).
    pub max_age: Duration,
    /// Upper bound of one recovery, replay and seam included; past it, `resync`.
    pub timeout: Duration,
    /// How long after the socket's interest was registered the replay keeps following the
    /// stream before switching to live delivery: at least the routers' route cache TTL, so an
    /// event published before the routers saw the new interest is replayed, not lost.
    pub seam: Duration,
}

pub(super) fn recovery(v: &mut Validator, raw: &Raw) -> Option<Recovery> {
    let expiry = v.one_of(
        "EXPIRY_ENFORCEMENT",
        raw.expiry_enforcement.as_deref(),
        "json.v2",
        &["json.v2", "all", "off"],
    );
    let nats_urls = match raw.nats_url.as_deref().map(str::trim) {
        None | Some("") => Some(None),
        value => v
            .url_list("NATS_URL", value, "", &["nats", "tls", "ws", "wss"])
            .map(Some),
    };
    let auth = NatsAuth::from_raw(
        v,
        &RawNatsAuth {
            creds: raw.nats_creds.as_deref(),
            nkey_seed: raw.nats_nkey_seed.as_deref(),
            tls_ca: raw.nats_tls_ca.as_deref(),
            tls_cert: raw.nats_tls_cert.as_deref(),
            tls_key: raw.nats_tls_key.as_deref(),
        },
    );
    let stream = v.parse_with(
        "NATS_STREAM",
        raw.nats_stream.as_deref(),
        Some("wa_stream".to_owned()),
        |s| {
            let bad = s
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'));
            if bad {
                Err(format!("`{s}` is not a stream name"))
            } else {
                Ok(s.to_owned())
            }
        },
    );
    let subjects = v.parse_with(
        "SUBJECT_PREFIX",
        raw.subject_prefix.as_deref(),
        SubjectModel::new("websocket").ok(),
        |s| SubjectModel::new(s).map_err(|e| e.to_string()),
    );
    let max_events = v.int_in(
        "RECOVERY_MAX_EVENTS",
        raw.recovery_max_events.as_deref(),
        10_000usize,
        1,
        1_000_000,
    );
    let max_age = v.duration(
        "RECOVERY_MAX_AGE",
        raw.recovery_max_age.as_deref(),
        Duration::from_secs(300),
    );
    let timeout = v.duration(
        "RECOVERY_TIMEOUT",
        raw.recovery_timeout.as_deref(),
        Duration::from_secs(10),
    );
    let seam = v.duration(
        "RECOVERY_SEAM",
        raw.recovery_seam.as_deref(),
        Duration::from_secs(2),
    );
    if let (Some(timeout), Some(seam)) = (timeout, seam) {
        v.ensure(
            timeout > seam,
            "RECOVERY_TIMEOUT",
            "must be longer than DAISI_EDGE_RECOVERY_SEAM, or every recovery times out",
        );
    }
    let expiry = match expiry? {
        "all" => ExpiryEnforcement::All,
        "off" => ExpiryEnforcement::Off,
        _ => ExpiryEnforcement::V2,
    };
    let (stream, subjects) = (stream?, subjects?);
    Some(Recovery {
        expiry,
        history: nats_urls?.map(|nats_urls| History {
            nats_urls,
            auth,
            stream,
            subjects,
        }),
        max_events: max_events?,
        max_age: max_age?,
        timeout: timeout?,
        seam: seam?,
    })
}
