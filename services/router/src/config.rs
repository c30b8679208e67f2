//! Settings of the router, read from `DAISI_ROUTER_*` variables.

use crate::start_position::StartPosition;
use daisi_config::{ConfigError, Env, Loaded, SecretString, Validator};
use daisi_domain::subject::{DEFAULT_PREFIX, SubjectModel};
use daisi_runtime::internal::InternalSecurity;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;
use url::Url;

/// Prefix of every router variable.
pub const PREFIX: &str = "DAISI_ROUTER_";

/// Checked router settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Publish API, health, readiness and metrics.
    pub http_addr: SocketAddr,
    /// NATS server(s) holding the JetStream stream: one, or several seeds of a NATS cluster
    /// (the client moves to another one when its server goes away). Not printed: they may
    /// carry credentials.
    pub nats_urls: Vec<SecretUrl>,
    /// NATS credentials (`.creds` file or NKey seed) and TLS (CA, client certificate).
    pub nats_auth: crate::source::nats_auth::NatsAuth,
    /// JetStream stream the CDC publisher fills.
    pub stream: String,
    /// Subject model (`{prefix}.{company}.{agent}.{kind}[.{chat}]`).
    pub subjects: SubjectModel,
    /// Create the stream on start when it does not exist.
    pub create_stream: bool,
    /// Replicas of a stream the router creates (3 on a NATS cluster, so losing one node
    /// loses no event and stops no consumer).
    pub stream_replicas: usize,
    /// Durable pull consumer shared by every router replica (work sharing).
    pub consumer: String,
    /// The coordinator gRPC endpoint(s) (route and pod lookups): one Service URL, or several
    /// replicas to fail over between.
    pub coordinator_urls: Vec<Url>,
    /// API key of `POST /api/v1/publish`; the endpoint is off when unset.
    pub publish_api_key: Option<SecretString>,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Unacknowledged messages in flight across all replicas.
    pub max_ack_pending: i64,
    /// Deliveries of one message before it is given up as undeliverable.
    pub max_deliver: i64,
    /// Lifetime of cached route lookups: the bound on how late a new interest can be seen.
    pub route_cache_ttl: Duration,
    /// How long past their lifetime cached routes are still used while the coordinator is
    /// unavailable (0: never).
    pub route_stale_if_error: Duration,
    /// Where undeliverable and malformed messages are republished, when set.
    pub dead_letter_subject: Option<String>,
    /// Time allowed to finish in-flight forwards after SIGTERM.
    pub shutdown_grace: Duration,
    /// Where events come from: the JetStream stream, or an in-memory stream (dev stack).
    pub source: SourceKind,
    /// Idle heartbeat the server sends on a waiting pull; twice this without a message or a
    /// heartbeat means the consumer is wedged and readiness drops.
    pub heartbeat: Duration,
    /// Most events in one `Deliver` call to an edge.
    pub batch_max_events: usize,
    /// How long a batch for an edge may wait to fill before it is sent; zero (the default)
    /// is natural batching: sent at once, what arrives during a call forms the next batch.
    pub batch_delay: Duration,
    /// Ordered lanes per edge: events of one (company, agent) share a lane, lanes run in
    /// parallel.
    pub edge_lanes: usize,
    /// Deadline of one `Deliver` call.
    pub deliver_timeout: Duration,
    /// How long events are held for a registered edge that does not answer before every
    /// queued and new event for it fails fast (dead-lettered, or dropped and counted). Kept
    /// under the coordinator's pod lease so the router, not the purge, ends the wait.
    pub edge_unreachable_grace: Duration,
    /// Events queued or in flight for one edge at most; as many more (fewer if the ack window
    /// is smaller than twice this) may wait in its hold.
    pub edge_max_pending: usize,
    /// Deadline of an edge health probe, and how long a `Deliver` runs before the edge is
    /// probed: a frozen edge is detected after about twice this.
    pub edge_probe_timeout: Duration,
    /// Deadline of one coordinator lookup.
    pub coordinator_timeout: Duration,
    /// Largest payload accepted by the publish API, in bytes.
    pub max_publish_bytes: usize,
    /// Strict per-key order across replicas: the stream partitions subjects by (company,
    /// agent) into this many partitions and each replica consumes one. `None`: every replica
    /// shares one consumer.
    pub partitioning: Option<Partitioning>,
    /// Where the durable consumer starts when it does not exist yet.
    pub start_position: StartPosition,
    /// Authentication of internal gRPC (`DAISI_INTERNAL_*`, shared by every service): the
    /// router's credential towards coordinators and edges.
    pub internal: InternalSecurity,
}

/// Which partition of a partitioned stream this replica consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitioning {
    /// Number of partitions.
    pub count: u32,
    /// This replica's partition, `0..count`.
    pub index: u32,
}

/// Where the router reads events from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// The JetStream stream on `nats_url` (production).
    JetStream,
    /// A stream kept in process memory and filled by the publish API (dev stack, tests).
    Memory,
}

/// A URL whose `Debug` hides credentials.
#[derive(Clone)]
pub struct SecretUrl(pub Url);

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SecretUrl({})",
            daisi_config::url_without_credentials(&self.0)
        )
    }
}

#[derive(Debug, Deserialize)]
struct Raw {
    http_addr: Option<String>,
    nats_url: Option<String>,
    nats_creds: Option<String>,
    nats_nkey_seed: Option<String>,
    nats_tls_ca: Option<String>,
    nats_tls_cert: Option<String>,
    nats_tls_key: Option<String>,
    stream: Option<String>,
    subject_prefix: Option<String>,
    create_stream: Option<String>,
    stream_replicas: Option<String>,
    consumer: Option<String>,
    coordinator_url: Option<String>,
    publish_api_key: Option<String>,
    ack_wait: Option<String>,
    max_ack_pending: Option<String>,
    max_deliver: Option<String>,
    route_cache_ttl: Option<String>,
    route_stale_if_error: Option<String>,
    dead_letter_subject: Option<String>,
    shutdown_grace: Option<String>,
    source: Option<String>,
    heartbeat: Option<String>,
    batch_max_events: Option<String>,
    batch_delay: Option<String>,
    edge_lanes: Option<String>,
    deliver_timeout: Option<String>,
    edge_unreachable_grace: Option<String>,
    edge_max_pending: Option<String>,
    edge_probe_timeout: Option<String>,
    coordinator_timeout: Option<String>,
    max_publish_bytes: Option<String>,
    partitions: Option<String>,
    partition: Option<String>,
    start_position: Option<String>,
    start_time: Option<String>,
    start_sequence: Option<String>,
}

impl Config {
    /// Reads and checks the router settings from `env`.
    pub fn from_env(env: &Env) -> Result<Loaded<Self>, ConfigError> {
        let internal = InternalSecurity::from_env(env);
        let loaded = daisi_config::load::<Raw>(PREFIX, env).and_then(|l| l.try_map(Self::from_raw));
        daisi_config::join(loaded, internal).map(|(mut loaded, internal)| {
            loaded.value.internal = internal;
            loaded
        })
    }

    fn from_raw(raw: Raw) -> Result<Self, ConfigError> {
        let mut v = Validator::new(PREFIX);
        let http_addr = v.socket_addr("HTTP_ADDR", raw.http_addr.as_deref(), "0.0.0.0:8081");
        let nats_urls = v.url_list(
            "NATS_URL",
            raw.nats_url.as_deref(),
            "nats://127.0.0.1:4222",
            &["nats", "tls", "ws", "wss"],
        );
        let nats_auth = crate::source::nats_auth::NatsAuth::from_raw(
            &mut v,
            &crate::source::nats_auth::RawNatsAuth {
                creds: raw.nats_creds.as_deref(),
                nkey_seed: raw.nats_nkey_seed.as_deref(),
                tls_ca: raw.nats_tls_ca.as_deref(),
                tls_cert: raw.nats_tls_cert.as_deref(),
                tls_key: raw.nats_tls_key.as_deref(),
            },
        );
        let stream = v.parse_with(
            "STREAM",
            raw.stream.as_deref(),
            Some("wa_stream".to_owned()),
            |s| jetstream_name(s, "stream"),
        );
        let subjects = v.parse_with(
            "SUBJECT_PREFIX",
            raw.subject_prefix.as_deref(),
            SubjectModel::new(DEFAULT_PREFIX).ok(),
            |s| SubjectModel::new(s).map_err(|e| e.to_string()),
        );
        let create_stream = v.bool("CREATE_STREAM", raw.create_stream.as_deref(), true);
        // JetStream allows 1 to 5 replicas; more than the cluster has nodes fails at creation.
        let stream_replicas = v.int_in(
            "STREAM_REPLICAS",
            raw.stream_replicas.as_deref(),
            1usize,
            1,
            5,
        );
        let consumer = v.parse_with(
            "CONSUMER",
            raw.consumer.as_deref(),
            Some("daisi-router".to_owned()),
            |s| jetstream_name(s, "consumer"),
        );
        let coordinator_urls = v.url_list(
            "COORDINATOR_URL",
            raw.coordinator_url.as_deref(),
            "http://127.0.0.1:50051",
            &["http", "https"],
        );
        let publish_api_key = match raw.publish_api_key.as_deref().map(str::trim) {
            None | Some("") => Some(None),
            value => v.secret("PUBLISH_API_KEY", value, 16).map(Some),
        };
        let ack_wait = v.duration("ACK_WAIT", raw.ack_wait.as_deref(), Duration::from_secs(30));
        let max_ack_pending = v.int_in(
            "MAX_ACK_PENDING",
            raw.max_ack_pending.as_deref(),
            10_000i64,
            1,
            1_000_000,
        );
        let max_deliver = v.int_in("MAX_DELIVER", raw.max_deliver.as_deref(), 10i64, 1, 1_000);
        let route_cache_ttl = v.duration(
            "ROUTE_CACHE_TTL",
            raw.route_cache_ttl.as_deref(),
            Duration::from_secs(1),
        );
        let route_stale_if_error = v.duration_or_zero(
            "ROUTE_STALE_IF_ERROR",
            raw.route_stale_if_error.as_deref(),
            Duration::from_secs(30),
        );
        let dead_letter_subject = match raw.dead_letter_subject.as_deref().map(str::trim) {
            None | Some("") => Some(None),
            Some(s) => v
                .parse_with("DEAD_LETTER_SUBJECT", Some(s), None, nats_subject)
                .map(Some),
        };
        let shutdown_grace = v.duration(
            "SHUTDOWN_GRACE",
            raw.shutdown_grace.as_deref(),
            Duration::from_secs(10),
        );
        let source = v
            .one_of(
                "SOURCE",
                raw.source.as_deref(),
                "jetstream",
                &["jetstream", "memory"],
            )
            .map(|s| {
                if s == "memory" {
                    SourceKind::Memory
                } else {
                    SourceKind::JetStream
                }
            });
        let heartbeat = v.duration(
            "HEARTBEAT",
            raw.heartbeat.as_deref(),
            Duration::from_secs(5),
        );
        let batch_max_events = v.int_in(
            "BATCH_MAX_EVENTS",
            raw.batch_max_events.as_deref(),
            500usize,
            1,
            daisi_proto::limits::MAX_DELIVER_BATCH,
        );
        let batch_delay =
            v.duration_or_zero("BATCH_DELAY", raw.batch_delay.as_deref(), Duration::ZERO);
        let edge_lanes = v.int_in("EDGE_LANES", raw.edge_lanes.as_deref(), 4usize, 1, 64);
        let deliver_timeout = v.duration(
            "DELIVER_TIMEOUT",
            raw.deliver_timeout.as_deref(),
            Duration::from_secs(5),
        );
        let edge_unreachable_grace = v.duration(
            "EDGE_UNREACHABLE_GRACE",
            raw.edge_unreachable_grace.as_deref(),
            Duration::from_secs(10),
        );
        let edge_max_pending = v.int_in(
            "EDGE_MAX_PENDING",
            raw.edge_max_pending.as_deref(),
            1_000usize,
            1,
            1_000_000,
        );
        let edge_probe_timeout = v.duration(
            "EDGE_PROBE_TIMEOUT",
            raw.edge_probe_timeout.as_deref(),
            Duration::from_secs(1),
        );
        let coordinator_timeout = v.duration(
            "COORDINATOR_TIMEOUT",
            raw.coordinator_timeout.as_deref(),
            Duration::from_secs(2),
        );
        let max_publish_bytes = v.int_in(
            "MAX_PUBLISH_BYTES",
            raw.max_publish_bytes.as_deref(),
            1024 * 1024usize,
            1,
            64 * 1024 * 1024,
        );
        let partitions = v.int_in("PARTITIONS", raw.partitions.as_deref(), 0u32, 0, 1024);
        let partitioning = match partitions {
            None => None,
            Some(0) => Some(None),
            Some(count) => v
                .parse_with("PARTITION", raw.partition.as_deref(), None, |s| {
                    partition_index(s, count)
                })
                .map(|index| Some(Partitioning { count, index })),
        };
        let start_position = StartPosition::from_settings(
            &mut v,
            raw.start_position.as_deref(),
            raw.start_time.as_deref(),
            raw.start_sequence.as_deref(),
        );
        if let Some(heartbeat) = heartbeat {
            v.ensure(
                heartbeat >= Duration::from_millis(100),
                "HEARTBEAT",
                "must be at least 100ms; the server refuses shorter idle heartbeats",
            );
        }
        if let (Some(cap), Some(window)) = (edge_max_pending, max_ack_pending) {
            v.ensure(
                i64::try_from(cap).unwrap_or(i64::MAX) < window,
                "EDGE_MAX_PENDING",
                format!(
                    "must be below DAISI_ROUTER_MAX_ACK_PENDING ({window}), well below with several replicas: one edge must not fill the ack window"
                ),
            );
        }
        if let (Some(probe), Some(deliver)) = (edge_probe_timeout, deliver_timeout) {
            v.ensure(
                probe <= deliver,
                "EDGE_PROBE_TIMEOUT",
                format!("must not exceed DAISI_ROUTER_DELIVER_TIMEOUT ({deliver:?})"),
            );
        }
        if let (Some(Some(dlq)), Some(model)) = (&dead_letter_subject, &subjects) {
            v.ensure(
                !dlq.starts_with(&format!("{}.", model.prefix())),
                "DEAD_LETTER_SUBJECT",
                format!(
                    "must not start with the event prefix `{}.` or dead letters would be consumed again",
                    model.prefix()
                ),
            );
        }
        v.finish(|| {
            Some(Self {
                http_addr: http_addr?,
                nats_urls: nats_urls?.into_iter().map(SecretUrl).collect(),
                nats_auth,
                stream: stream?,
                subjects: subjects?,
                create_stream: create_stream?,
                stream_replicas: stream_replicas?,
                consumer: consumer?,
                coordinator_urls: coordinator_urls?,
                publish_api_key: publish_api_key?,
                ack_wait: ack_wait?,
                max_ack_pending: max_ack_pending?,
                max_deliver: max_deliver?,
                route_cache_ttl: route_cache_ttl?,
                route_stale_if_error: route_stale_if_error?,
                dead_letter_subject: dead_letter_subject?,
                shutdown_grace: shutdown_grace?,
                source: source?,
                heartbeat: heartbeat?,
                batch_max_events: batch_max_events?,
                batch_delay: batch_delay?,
                edge_lanes: edge_lanes?,
                deliver_timeout: deliver_timeout?,
                edge_unreachable_grace: edge_unreachable_grace?,
                edge_max_pending: edge_max_pending?,
                edge_probe_timeout: edge_probe_timeout?,
                coordinator_timeout: coordinator_timeout?,
                max_publish_bytes: max_publish_bytes?,
                partitioning: partitioning?,
                start_position: start_position?,
                internal: InternalSecurity::off(),
            })
        })
    }
}

/// JetStream stream and consumer names may not contain whitespace, `.`, `*`, `>`, path
/// separators or control characters.
fn jetstream_name(value: &str, what: &str) -> Result<String, String> {
    let ok = value.len() <= 255
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>' | b'/' | b'\\'));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "`{value}` is not a valid JetStream {what} name (no spaces, '.', '*', '>', '/' or '\\')"
        ))
    }
}

/// A partition index, given as a number or as a StatefulSet pod name ending in `-{number}`
/// (so `$(POD_NAME)` can be passed as is).
fn partition_index(value: &str, count: u32) -> Result<u32, String> {
    let digits = value.rsplit('-').next().unwrap_or(value);
    let index: u32 = digits.parse().map_err(|_| {
        format!("`{value}` is neither a partition number nor a pod name ending in -<number>")
    })?;
    if index >= count {
        return Err(format!(
            "partition {index} does not exist; DAISI_ROUTER_PARTITIONS is {count} (use 0..{count})"
        ));
    }
    Ok(index)
}

/// A literal NATS subject: dot-separated non-empty tokens without wildcards or whitespace.
fn nats_subject(value: &str) -> Result<String, String> {
    let ok = value.split('.').all(|t| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>')
    });
    if ok {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "`{value}` is not a literal NATS subject (dot-separated tokens, no wildcards or spaces)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_old_service() {
        let config = Config::from_env(&Env::default()).expect("defaults").value;
        assert_eq!(config.stream, "wa_stream");
        assert_eq!(config.subjects.stream_subjects(), "websocket.>");
        assert!(config.publish_api_key.is_none());
        assert!(config.dead_letter_subject.is_none());
        assert_eq!(config.http_addr.port(), 8081);
    }

    #[test]
    fn nats_cluster_seeds_and_stream_replicas() {
        let config = Config::from_env(&Env::default()).expect("defaults").value;
        assert_eq!(config.nats_urls.len(), 1);
        assert_eq!(config.stream_replicas, 1);
        let env = Env::from_pairs([
            (
                "DAISI_ROUTER_NATS_URL",
                "nats://n0:4222, nats://n1:4222,nats://n2:4222",
            ),
            ("DAISI_ROUTER_STREAM_REPLICAS", "3"),
        ]);
        let config = Config::from_env(&env).expect("valid").value;
        assert_eq!(config.nats_urls.len(), 3);
        assert_eq!(config.stream_replicas, 3);
        assert_eq!(
            crate::jetstream_settings(&config).url,
            "nats://n0:4222,nats://n1:4222,nats://n2:4222"
        );
        for (var, bad) in [
            ("DAISI_ROUTER_STREAM_REPLICAS", "6"),
            ("DAISI_ROUTER_STREAM_REPLICAS", "0"),
            ("DAISI_ROUTER_NATS_URL", "nats://n0:4222,,nats://n1:4222"),
        ] {
            let err = Config::from_env(&Env::from_pairs([(var, bad)])).expect_err(bad);
            assert!(err.mentions(var), "{bad}: {err}");
        }
    }

    #[test]
    fn older_prefix_is_accepted() {
        let env = Env::from_pairs([("DAISI_ROUTER_SUBJECT_PREFIX", "wa")]);
        let config = Config::from_env(&env).expect("valid").value;
        assert_eq!(config.subjects.stream_subjects(), "wa.>");
    }

    #[test]
    fn bad_values_are_all_reported() {
        let env = Env::from_pairs([
            ("DAISI_ROUTER_NATS_URL", "http://nats:4222"),
            ("DAISI_ROUTER_STREAM", "wa.stream"),
            ("DAISI_ROUTER_SUBJECT_PREFIX", "web*"),
            ("DAISI_ROUTER_PUBLISH_API_KEY", "short"),
            ("DAISI_ROUTER_MAX_DELIVER", "0"),
            ("DAISI_ROUTER_DEAD_LETTER_SUBJECT", "dead.>"),
        ]);
        let err = Config::from_env(&env).expect_err("invalid");
        for var in [
            "NATS_URL",
            "STREAM",
            "SUBJECT_PREFIX",
            "PUBLISH_API_KEY",
            "MAX_DELIVER",
            "DEAD_LETTER_SUBJECT",
        ] {
            assert!(err.mentions(&format!("{PREFIX}{var}")), "{var}: {err}");
        }
    }

    #[test]
    fn partitions_take_a_number_or_a_pod_name() {
        let config = Config::from_env(&Env::default()).expect("defaults").value;
        assert_eq!(config.partitioning, None);
        for (value, index) in [("2", 2), ("daisi-router-1", 1)] {
            let env = Env::from_pairs([
                ("DAISI_ROUTER_PARTITIONS", "3"),
                ("DAISI_ROUTER_PARTITION", value),
            ]);
            let config = Config::from_env(&env).expect("valid").value;
            assert_eq!(config.partitioning, Some(Partitioning { count: 3, index }));
        }
        for bad in [None, Some("3"), Some("router")] {
            let mut env = Env::from_pairs([("DAISI_ROUTER_PARTITIONS", "3")]);
            if let Some(bad) = bad {
                env.set("DAISI_ROUTER_PARTITION", bad);
            }
            let err = Config::from_env(&env).expect_err("invalid");
            assert!(err.mentions("DAISI_ROUTER_PARTITION"), "{err}");
        }
    }

    #[test]
    fn one_edge_cannot_take_the_whole_ack_window() {
        let config = Config::from_env(&Env::default()).expect("defaults").value;
        assert!(config.edge_max_pending as i64 * 4 <= config.max_ack_pending);
        assert!(config.edge_probe_timeout <= config.deliver_timeout);
        let env = Env::from_pairs([
            ("DAISI_ROUTER_MAX_ACK_PENDING", "500"),
            ("DAISI_ROUTER_EDGE_MAX_PENDING", "500"),
            ("DAISI_ROUTER_DELIVER_TIMEOUT", "1s"),
            ("DAISI_ROUTER_EDGE_PROBE_TIMEOUT", "2s"),
        ]);
        let err = Config::from_env(&env).expect_err("invalid");
        assert!(err.mentions("DAISI_ROUTER_EDGE_MAX_PENDING"), "{err}");
        assert!(err.mentions("DAISI_ROUTER_EDGE_PROBE_TIMEOUT"), "{err}");
    }

    #[test]
    fn dead_letters_cannot_loop_back_into_the_stream() {
        let env = Env::from_pairs([("DAISI_ROUTER_DEAD_LETTER_SUBJECT", "websocket.dead")]);
        let err = Config::from_env(&env).expect_err("loop");
        assert!(err.mentions("DAISI_ROUTER_DEAD_LETTER_SUBJECT"), "{err}");
    }
}
