//! The JetStream backend: binds (or creates) the stream, creates or updates the durable pull
//! consumer every replica shares, and keeps pulling across reconnects, server restarts and
//! deleted consumers.
//!
//! A consumer lost while the router runs (deleted, or its stream deleted and recreated) is
//! rebuilt where this router left off, not at the configured start position, which applies
//! only to a consumer created on a first start: on the same stream from the sequence after the
//! last one this router saw, on a recreated stream from its start (all it holds is newer).
//! Such a consumer says so in its description, so routers started later accept it.
//!
//! Wedge detection: pull requests carry an idle heartbeat, so the server sends a heartbeat
//! every `heartbeat` while a pull waits without messages. async-nats reports a missed
//! heartbeat after twice that; the source then reports [`SourceState::Wedged`] and rebinds,
//! which covers the silent failures a TCP-level check misses (lost pull requests, a stalled
//! route in a cluster, a consumer deleted under us).

use super::{
    Acker, AckerImpl, DEAD_LETTER_REASON_HEADER, DEAD_LETTER_SEQUENCE_HEADER,
    DEAD_LETTER_SUBJECT_HEADER, DeadLetter, Delivery, EventSource, LagProbe, Outgoing,
    PublishError, Publisher, SourceState, TraceHeaders, redelivery_backoff,
};
use crate::backoff::Backoff;
use crate::start_position::StartPosition;
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, stream};
use daisi_telemetry::propagation::{NatsExtractor, NatsInjector, request_id_nats};
use futures_util::StreamExt;
use opentelemetry::propagation::Extractor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// How the source binds to JetStream.
#[derive(Clone)]
pub struct JetStreamSettings {
    /// Server URL(s), comma-separated: seeds of a cluster (may carry credentials).
    pub url: String,
    /// Credentials and TLS beyond the URL.
    pub auth: super::nats_auth::NatsAuth,
    /// Stream name.
    pub stream: String,
    /// Subjects of the stream when it has to be created, and the consumer's filter.
    pub subjects: String,
    /// Create the stream when it does not exist.
    pub create_stream: bool,
    /// Replicas of a stream created here.
    pub stream_replicas: usize,
    /// Durable consumer name, shared by every replica.
    pub consumer: String,
    /// Ack wait of the consumer.
    pub ack_wait: Duration,
    /// Max ack pending of the consumer.
    pub max_ack_pending: i64,
    /// Max deliver of the consumer.
    pub max_deliver: i64,
    /// Idle heartbeat of pull requests.
    pub heartbeat: Duration,
    /// Messages asked for per pull request.
    pub pull_batch: usize,
    /// Client name shown by the server.
    pub client_name: String,
    /// Partitioned mode: `(count, index)`.
    pub partition: Option<(u32, u32)>,
    /// The subject prefix (`websocket`), to place and strip the partition token.
    pub prefix: String,
    /// Where the consumer starts when it does not exist yet.
    pub start_position: StartPosition,
}

// The URL may carry credentials: not printed.
impl std::fmt::Debug for JetStreamSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamSettings")
            .field("stream", &self.stream)
            .field("consumer", &self.consumer_name())
            .field("filter", &self.filter())
            .field("start_position", &self.start_position)
            .finish_non_exhaustive()
    }
}

impl JetStreamSettings {
    /// The consumer this replica binds to: the shared one, or its partition's.
    fn consumer_name(&self) -> String {
        match self.partition {
            Some((_, index)) => format!("{}-{index}", self.consumer),
            None => self.consumer.clone(),
        }
    }

    /// The consumer's filter: every event, or its partition's.
    fn filter(&self) -> String {
        match self.partition {
            Some((_, index)) => format!("{}.{index}.>", self.prefix),
            None => self.subjects.clone(),
        }
    }

    /// The stream's subject transform in partitioned mode: a partition token computed from
    /// (company, agent) is inserted after the prefix, so all events of a key land in one
    /// partition, consumed by one replica, in order.
    fn transform(&self) -> Option<stream::SubjectTransform> {
        let (count, _) = self.partition?;
        let p = &self.prefix;
        Some(stream::SubjectTransform {
            source: format!("{p}.*.*.>"),
            destination: format!(
                "{p}.{{{{partition({count},1,2)}}}}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}.>"
            ),
        })
    }

    /// The deliver policy a consumer created now gets.
    fn deliver_policy(&self) -> DeliverPolicy {
        match self.start_position {
            StartPosition::New => DeliverPolicy::New,
            StartPosition::All => DeliverPolicy::All,
            StartPosition::ByStartSequence(start_sequence) => {
                DeliverPolicy::ByStartSequence { start_sequence }
            }
            StartPosition::ByStartTime(at) => {
                let nanos = at
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
                match async_nats::datetime::from_nanos(nanos) {
                    Ok(start_time) => DeliverPolicy::ByStartTime { start_time },
                    // The configuration parsed it from RFC 3339, so it is in range.
                    Err(_) => DeliverPolicy::All,
                }
            }
        }
    }

    /// Refuses an existing consumer whose deliver policy is not the configured one, unless a
    /// router rebuilt it (its start position then comes from where the lost one stopped).
    fn check_existing(
        &self,
        existing: &DeliverPolicy,
        description: Option<&str>,
    ) -> Result<(), BindError> {
        if is_rebuilt(description) || same_start(existing, &self.deliver_policy()) {
            return Ok(());
        }
        Err(BindError::Refused(self.start_position.refusal(
            &self.stream,
            &self.consumer_name(),
            &describe_policy(existing),
        )))
    }

    /// The subject as published: the partition token removed.
    fn published_subject(&self, stored: &str) -> String {
        if self.partition.is_none() {
            return stored.to_owned();
        }
        let Some(rest) = stored
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('.'))
        else {
            return stored.to_owned();
        };
        match rest.split_once('.') {
            Some((token, tail)) if token.bytes().all(|b| b.is_ascii_digit()) => {
                format!("{}.{tail}", self.prefix)
            }
            _ => stored.to_owned(),
        }
    }
}

/// Binding to the stream failed; the source retries with backoff.
#[derive(Debug, thiserror::Error)]
enum BindError {
    #[error("stream `{0}` does not exist and creating it is disabled")]
    NoStream(String),
    #[error("stream: {0}")]
    Stream(String),
    #[error("consumer: {0}")]
    Consumer(String),
    #[error("pull: {0}")]
    Pull(String),
    #[error(
        "stream `{0}` has no partition transform `{1}`; add it (or source the stream into one that has it)"
    )]
    NotPartitioned(String, String),
    /// The settings contradict the server's state: retrying cannot help.
    #[error("{0}")]
    Refused(String),
}

/// Description of a consumer created from the settings.
const DESCRIPTION: &str = "daisi router: events to edges";

/// Description of a consumer a router rebuilt after losing it while running; routers accept
/// it whatever their start position (see [`is_rebuilt`]).
const REBUILT_DESCRIPTION: &str = "daisi router: events to edges (rebuilt by a router after \
     the consumer or its stream was lost; starts where the lost one stopped)";

/// Whether a consumer's description says a router rebuilt it.
fn is_rebuilt(description: Option<&str>) -> bool {
    description == Some(REBUILT_DESCRIPTION)
}

/// Whether two deliver policies start at the same place (times compared as instants).
fn same_start(a: &DeliverPolicy, b: &DeliverPolicy) -> bool {
    match (a, b) {
        (
            DeliverPolicy::ByStartTime { start_time: x },
            DeliverPolicy::ByStartTime { start_time: y },
        ) => x.unix_timestamp_nanos() == y.unix_timestamp_nanos(),
        _ => a == b,
    }
}

/// A deliver policy in the words of `DAISI_ROUTER_START_POSITION`.
fn describe_policy(policy: &DeliverPolicy) -> String {
    match policy {
        DeliverPolicy::All => "all".into(),
        DeliverPolicy::New => "new".into(),
        DeliverPolicy::Last => "last (not a daisi setting)".into(),
        DeliverPolicy::LastPerSubject => "last_per_subject (not a daisi setting)".into(),
        DeliverPolicy::ByStartSequence { start_sequence } => {
            format!("by_start_sequence ({start_sequence})")
        }
        DeliverPolicy::ByStartTime { start_time } => format!("by_start_time ({start_time})"),
    }
}

/// The comma-separated server list as the client takes it: every seed is tried at connect and
/// on every reconnect (the client also learns the cluster's other servers from them).
fn server_urls(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// A JetStream durable pull consumer.
pub struct JetStreamSource {
    settings: JetStreamSettings,
    client: async_nats::Client,
    context: jetstream::Context,
    messages: Option<pull::Stream>,
    consumer: Option<PullConsumer>,
    state: Arc<watch::Sender<SourceState>>,
    backoff: Backoff,
    /// Consumer lag (`num_pending`) as last reported by the server.
    lag: Arc<AtomicU64>,
    /// Why binding was refused for good, once it was.
    failure: Option<String>,
    /// The bound stream's incarnation (creation time in Unix nanoseconds), read at bind; 0
    /// before the first bind.
    epoch: u64,
    /// Where a consumer lost on the bound stream is rebuilt: from the sequence after the last
    /// one this router saw; before any, where the bound consumer started.
    resume: DeliverPolicy,
}

impl std::fmt::Debug for JetStreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamSource")
            .field("stream", &self.settings.stream)
            .field("consumer", &self.settings.consumer)
            .field("bound", &self.messages.is_some())
            .finish_non_exhaustive()
    }
}

impl JetStreamSource {
    /// Connects in the background (the first connection is retried like any reconnect) and
    /// returns at once; binding happens on the first [`EventSource::next`].
    pub async fn connect(settings: JetStreamSettings) -> Result<Self, String> {
        let state = Arc::new(watch::Sender::new(SourceState::Connecting));
        let events = state.clone();
        let options = settings.auth.apply(async_nats::ConnectOptions::new())?;
        let client = options
            .name(&settings.client_name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .ping_interval(Duration::from_secs(10))
            .reconnect_delay_callback(|attempt| {
                Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).delay(attempt)
            })
            .event_callback(move |event| {
                let events = events.clone();
                async move {
                    match event {
                        async_nats::Event::Disconnected => {
                            tracing::warn!("nats disconnected");
                            events.send_replace(SourceState::Disconnected);
                        }
                        async_nats::Event::Connected => {
                            tracing::info!("nats connected");
                            // Consuming is declared by the pull loop once it is bound again.
                            events.send_if_modified(|s| {
                                let changed = *s == SourceState::Disconnected;
                                if changed {
                                    *s = SourceState::Connecting;
                                }
                                changed
                            });
                        }
                        other => tracing::debug!(event = %other, "nats event"),
                    }
                }
            })
            .connect(server_urls(&settings.url))
            .await
            .map_err(|e| e.to_string())?;
        let mut context = jetstream::new(client.clone());
        context.set_timeout(Duration::from_secs(5));
        Ok(Self {
            settings,
            client,
            context,
            messages: None,
            consumer: None,
            state,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            lag: Arc::new(AtomicU64::new(0)),
            failure: None,
            epoch: 0,
            resume: DeliverPolicy::All,
        })
    }

    /// The writer over this connection.
    pub fn jetstream_publisher(&self) -> JetStreamPublisher {
        JetStreamPublisher {
            client: self.client.clone(),
            context: self.context.clone(),
        }
    }

    async fn bind(&mut self) -> Result<(), BindError> {
        let s = &self.settings;
        let stream = if s.create_stream {
            self.context
                .get_or_create_stream(stream::Config {
                    name: s.stream.clone(),
                    subjects: vec![s.subjects.clone()],
                    storage: stream::StorageType::File,
                    num_replicas: s.stream_replicas,
                    retention: stream::RetentionPolicy::Limits,
                    // The CDC side normally provisions the stream; one we create keeps a day.
                    max_age: Duration::from_secs(24 * 3600),
                    subject_transform: s.transform(),
                    ..Default::default()
                })
                .await
                .map_err(|e| BindError::Stream(e.to_string()))?
        } else {
            match self.context.get_stream(&s.stream).await {
                Ok(stream) => stream,
                Err(e)
                    if matches!(
                        e.kind(),
                        jetstream::context::GetStreamErrorKind::JetStream(ref j)
                            if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                    ) =>
                {
                    return Err(BindError::NoStream(s.stream.clone()));
                }
                Err(e) => return Err(BindError::Stream(e.to_string())),
            }
        };
        let epoch = stream_epoch(stream.cached_info().created);
        if let Some(transform) = s.transform() {
            let actual = stream.cached_info().config.subject_transform.as_ref();
            if actual.is_none_or(|t| t.destination != transform.destination) {
                return Err(BindError::NotPartitioned(
                    s.stream.clone(),
                    transform.destination,
                ));
            }
        }
        // The start position applies only to a consumer created on a first start; an existing
        // one must already start where the settings say (JetStream cannot change it) or be one
        // a router rebuilt, and one lost while running is rebuilt where this router left off.
        let (deliver_policy, description, resume) = match stream
            .consumer_info(s.consumer_name())
            .await
        {
            Ok(info) => {
                let config = &info.config;
                s.check_existing(&config.deliver_policy, config.description.as_deref())?;
                let description = if is_rebuilt(config.description.as_deref()) {
                    REBUILT_DESCRIPTION
                } else {
                    DESCRIPTION
                };
                let resume = if epoch == self.epoch {
                    self.resume
                } else {
                    // Nothing seen on it yet: everything up to its ack floor was
                    // acknowledged by someone.
                    DeliverPolicy::ByStartSequence {
                        start_sequence: info.ack_floor.stream_sequence.saturating_add(1),
                    }
                };
                (config.deliver_policy, description, resume)
            }
            Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {
                let last = stream.cached_info().state.last_sequence;
                let (policy, description) = if self.epoch == 0 {
                    tracing::info!(
                        consumer = %s.consumer_name(),
                        start_position = %s.start_position.describe(),
                        "creating the durable consumer"
                    );
                    (s.deliver_policy(), DESCRIPTION)
                } else {
                    let policy = if epoch == self.epoch {
                        self.resume
                    } else {
                        // A new stream: everything it holds is newer than what we saw.
                        DeliverPolicy::All
                    };
                    tracing::warn!(
                        consumer = %s.consumer_name(),
                        stream_recreated = epoch != self.epoch,
                        start = %describe_policy(&policy),
                        "the consumer was lost while running; rebuilding it where this router left off"
                    );
                    (policy, REBUILT_DESCRIPTION)
                };
                let resume = match policy {
                    // It starts after what the stream holds now.
                    DeliverPolicy::New => DeliverPolicy::ByStartSequence {
                        start_sequence: last.saturating_add(1),
                    },
                    other => other,
                };
                (policy, description, resume)
            }
            Err(e) => return Err(BindError::Consumer(e.to_string())),
        };
        // Create-or-update: every replica declares the same config, so the last one to start
        // wins nothing and settings changes roll out with the replicas. The deliver policy is
        // the existing consumer's: a rebuilt one keeps where it starts.
        let consumer: PullConsumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(s.consumer_name()),
                description: Some(description.into()),
                deliver_policy,
                ack_policy: AckPolicy::Explicit,
                ack_wait: s.ack_wait,
                max_deliver: s.max_deliver,
                backoff: redelivery_backoff(s.ack_wait, s.max_deliver),
                max_ack_pending: s.max_ack_pending,
                filter_subject: s.filter(),
                ..Default::default()
            })
            .await
            .map_err(|e| BindError::Consumer(e.to_string()))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(s.pull_batch)
            .heartbeat(s.heartbeat)
            .expires(s.heartbeat.saturating_mul(6))
            .messages()
            .await
            .map_err(|e| BindError::Pull(e.to_string()))?;
        self.messages = Some(messages);
        self.consumer = Some(consumer);
        self.epoch = epoch;
        self.resume = resume;
        Ok(())
    }

    /// Asks the server for the consumer's lag (while idle, messages do not carry it).
    async fn refresh_lag(&mut self) {
        if let Some(consumer) = self.consumer.as_mut()
            && let Ok(info) = consumer.info().await
        {
            self.lag.store(info.num_pending, Ordering::Relaxed);
        }
    }

    fn set_state(&self, state: SourceState) {
        self.state.send_if_modified(|s| {
            let changed = *s != state;
            if changed {
                match state {
                    SourceState::Consuming => tracing::info!("consuming the stream"),
                    SourceState::Wedged => {
                        tracing::warn!("no message and no heartbeat within the heartbeat window");
                    }
                    SourceState::Connecting | SourceState::Disconnected => {}
                }
                *s = state;
            }
            changed
        });
    }
}

impl EventSource for JetStreamSource {
    type Publisher = JetStreamPublisher;

    fn take_buffered(&mut self) -> Vec<Delivery> {
        use futures_util::FutureExt as _;
        let mut taken = Vec::new();
        let Some(mut messages) = self.messages.take() else {
            return taken;
        };
        // What the pull already brought sits in the subscription: polled once each, no wait.
        // Bounded by the pull batch (the server sends no more than was asked for); the cap
        // only guards against a stream that keeps being ready.
        for _ in 0..self.settings.pull_batch.saturating_mul(2).max(1) {
            match messages.next().now_or_never() {
                Some(Some(Ok(message))) => {
                    if let Some(delivery) = self.convert(message) {
                        taken.push(delivery);
                    }
                }
                _ => break,
            }
        }
        self.messages = Some(messages);
        taken
    }

    async fn next(&mut self) -> Option<Delivery> {
        // A window a little longer than the client's missed-heartbeat timer (2 heartbeats):
        // a pull that stays quiet this long without an error did get its heartbeats.
        let window = self.settings.heartbeat.saturating_mul(3);
        loop {
            if self.messages.is_none() {
                if let Err(error) = self.bind().await {
                    if let BindError::Refused(reason) = error {
                        tracing::error!(%reason, "refusing to consume the stream");
                        self.failure = Some(reason);
                        return None;
                    }
                    let delay = self.backoff.next_delay();
                    if self.backoff.attempts() == 1 || self.backoff.attempts().is_multiple_of(20) {
                        tracing::warn!(%error, retry_in = ?delay, "cannot bind to the stream");
                    }
                    if !matches!(*self.state.borrow(), SourceState::Disconnected) {
                        self.set_state(SourceState::Connecting);
                    }
                    tokio::time::sleep(delay).await;
                    continue;
                }
                self.backoff.reset();
                self.set_state(SourceState::Consuming);
            }
            let Some(messages) = self.messages.as_mut() else {
                continue;
            };
            match tokio::time::timeout(window, messages.next()).await {
                Err(_quiet) => {
                    self.set_state(SourceState::Consuming);
                    self.refresh_lag().await;
                }
                Ok(None) => {
                    // The pull ended (terminated by the client); rebind, without spinning.
                    self.messages = None;
                    tokio::time::sleep(self.backoff.next_delay()).await;
                }
                Ok(Some(Ok(message))) => {
                    self.set_state(SourceState::Consuming);
                    if let Some(delivery) = self.convert(message) {
                        return Some(delivery);
                    }
                }
                Ok(Some(Err(error))) => {
                    use pull::MessagesErrorKind as K;
                    match error.kind() {
                        K::MissingHeartbeat => self.set_state(SourceState::Wedged),
                        _ => tracing::warn!(%error, "pull failed; rebinding"),
                    }
                    // Rebinding is cheap and recovers from lost pull requests and deleted
                    // consumers alike.
                    self.messages = None;
                    self.consumer = None;
                    tokio::time::sleep(self.backoff.next_delay()).await;
                }
            }
        }
    }

    fn publisher(&self) -> JetStreamPublisher {
        self.jetstream_publisher()
    }

    fn failure(&self) -> Option<String> {
        self.failure.clone()
    }

    fn state(&self) -> watch::Receiver<SourceState> {
        self.state.subscribe()
    }

    fn lag_probe(&self) -> LagProbe {
        let lag = self.lag.clone();
        Arc::new(move || lag.load(Ordering::Relaxed))
    }
}

impl JetStreamSource {
    fn convert(&mut self, message: jetstream::Message) -> Option<Delivery> {
        let (info_sequence, delivered, pending, published_at) = match message.info() {
            Ok(info) => (
                info.stream_sequence,
                u64::try_from(info.delivered).unwrap_or(1),
                info.pending,
                system_time(info.published.unix_timestamp_nanos()),
            ),
            Err(error) => {
                // Not a JetStream delivery (no ack subject): nothing to settle.
                tracing::debug!(%error, "message without jetstream metadata skipped");
                return None;
            }
        };
        self.lag.store(pending, Ordering::Relaxed);
        self.saw(info_sequence);
        let (message, acker) = message.split();
        let trace = message
            .headers
            .as_ref()
            .map(trace_headers)
            .unwrap_or_default();
        Some(Delivery {
            subject: self.settings.published_subject(message.subject.as_str()),
            payload: message.payload,
            trace,
            stream_sequence: info_sequence,
            delivered,
            pending,
            published_at,
            stream_epoch: self.epoch,
            acker: Acker(AckerImpl::JetStream(Box::new(acker))),
        })
    }

    /// Notes a delivered sequence: a consumer lost on this stream is rebuilt after the last
    /// one seen (a redelivery of an older one does not move it back).
    fn saw(&mut self, sequence: u64) {
        let next = sequence.saturating_add(1);
        match &mut self.resume {
            DeliverPolicy::ByStartSequence { start_sequence } if *start_sequence > next => {}
            resume => {
                *resume = DeliverPolicy::ByStartSequence {
                    start_sequence: next,
                }
            }
        }
    }
}

/// A stream's incarnation from its creation time: Unix nanoseconds (at least 1, so a known
/// epoch is never the "unknown" 0). Edges compute the same value for recovery.
pub fn stream_epoch(created: async_nats::datetime::DateTime) -> u64 {
    u64::try_from(created.unix_timestamp_nanos())
        .unwrap_or(0)
        .max(1)
}

fn system_time(unix_nanos: i128) -> Option<SystemTime> {
    let nanos = u64::try_from(unix_nanos).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_nanos(nanos))
}

fn trace_headers(headers: &HeaderMap) -> TraceHeaders {
    let extractor = NatsExtractor(headers);
    TraceHeaders {
        request_id: request_id_nats(headers).map(str::to_owned),
        traceparent: extractor.get("traceparent").map(str::to_owned),
        tracestate: extractor.get("tracestate").map(str::to_owned),
    }
}

fn headers_of(trace: &TraceHeaders) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("X-Request-ID", &trace.request_id),
        ("traceparent", &trace.traceparent),
        ("tracestate", &trace.tracestate),
    ] {
        if let Some(value) = value {
            set_header(&mut headers, name, value);
        }
    }
    headers
}

/// Sets a header through the telemetry injector, which checks names and values instead of
/// panicking like async-nats does on invalid ones. Line breaks become spaces: reasons come
/// from error messages.
fn set_header(headers: &mut HeaderMap, name: &str, value: &str) {
    use opentelemetry::propagation::Injector;
    let value: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    NatsInjector(headers).set(name, value);
}

/// Writes into the stream with JetStream acknowledgement, and dead letters with a plain publish.
#[derive(Debug, Clone)]
pub struct JetStreamPublisher {
    client: async_nats::Client,
    context: jetstream::Context,
}

impl Publisher for JetStreamPublisher {
    async fn publish(&self, message: Outgoing) -> Result<u64, PublishError> {
        let headers = headers_of(&message.trace);
        let ack = self
            .context
            .publish_with_headers(message.subject, headers, message.payload)
            .await
            .map_err(|e| PublishError::Unavailable(e.to_string()))?
            .await
            .map_err(|e| {
                use async_nats::jetstream::context::PublishErrorKind as K;
                match e.kind() {
                    K::TimedOut | K::BrokenPipe | K::StreamNotFound => {
                        PublishError::Unavailable(e.to_string())
                    }
                    _ => PublishError::Refused(e.to_string()),
                }
            })?;
        Ok(ack.sequence)
    }

    async fn dead_letter(&self, subject: &str, letter: DeadLetter) -> Result<(), PublishError> {
        let mut headers = headers_of(&letter.trace);
        set_header(&mut headers, DEAD_LETTER_REASON_HEADER, &letter.reason);
        set_header(
            &mut headers,
            DEAD_LETTER_SUBJECT_HEADER,
            &letter.original_subject,
        );
        set_header(
            &mut headers,
            DEAD_LETTER_SEQUENCE_HEADER,
            &letter.stream_sequence.to_string(),
        );
        self.client
            .publish_with_headers(subject.to_owned(), headers, letter.payload)
            .await
            .map_err(|e| PublishError::Unavailable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(partition: Option<(u32, u32)>) -> JetStreamSettings {
        JetStreamSettings {
            auth: Default::default(),
            url: String::new(),
            stream: "s".into(),
            subjects: "websocket.>".into(),
            create_stream: true,
            stream_replicas: 1,
            consumer: "daisi-router".into(),
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 10,
            max_deliver: 3,
            heartbeat: Duration::from_secs(5),
            pull_batch: 10,
            client_name: String::new(),
            partition,
            prefix: "websocket".into(),
            start_position: StartPosition::New,
        }
    }

    #[test]
    fn an_existing_consumer_must_start_where_the_settings_say() {
        let mut s = settings(None);
        assert_eq!(s.deliver_policy(), DeliverPolicy::New);
        assert!(s.check_existing(&DeliverPolicy::New, None).is_ok());
        let refused = s
            .check_existing(&DeliverPolicy::All, None)
            .expect_err("all vs new");
        assert!(
            refused.to_string().contains("DAISI_ROUTER_START_POSITION"),
            "{refused}"
        );
        s.start_position = StartPosition::ByStartSequence(7);
        assert!(
            s.check_existing(&DeliverPolicy::ByStartSequence { start_sequence: 7 }, None)
                .is_ok()
        );
        assert!(
            s.check_existing(&DeliverPolicy::ByStartSequence { start_sequence: 8 }, None)
                .is_err()
        );
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        s.start_position = StartPosition::ByStartTime(at);
        let same = async_nats::datetime::from_nanos(1_700_000_000_000_000_000).expect("time");
        assert!(
            s.check_existing(&DeliverPolicy::ByStartTime { start_time: same }, None)
                .is_ok()
        );
        let later = async_nats::datetime::from_nanos(1_700_000_001_000_000_000).expect("time");
        assert!(
            s.check_existing(&DeliverPolicy::ByStartTime { start_time: later }, None)
                .is_err()
        );
        assert!(
            s.check_existing(&DeliverPolicy::All, Some(DESCRIPTION))
                .is_err()
        );
    }

    #[test]
    fn a_consumer_a_router_rebuilt_is_accepted_whatever_the_start_position() {
        let mut s = settings(None);
        for position in [
            StartPosition::New,
            StartPosition::All,
            StartPosition::ByStartSequence(3),
        ] {
            s.start_position = position;
            for existing in [
                DeliverPolicy::All,
                DeliverPolicy::ByStartSequence { start_sequence: 42 },
            ] {
                assert!(
                    s.check_existing(&existing, Some(REBUILT_DESCRIPTION))
                        .is_ok(),
                    "{position:?} {existing:?}"
                );
            }
        }
    }

    #[test]
    fn partitioned_mode_names_filters_and_strips() {
        let shared = settings(None);
        assert_eq!(shared.consumer_name(), "daisi-router");
        assert_eq!(shared.filter(), "websocket.>");
        assert!(shared.transform().is_none());
        assert_eq!(
            shared.published_subject("websocket.3.c.a.chats"),
            "websocket.3.c.a.chats"
        );
        let p = settings(Some((4, 1)));
        assert_eq!(p.consumer_name(), "daisi-router-1");
        assert_eq!(p.filter(), "websocket.1.>");
        let t = p.transform().expect("transform");
        assert_eq!(t.source, "websocket.*.*.>");
        assert_eq!(
            t.destination,
            "websocket.{{partition(4,1,2)}}.{{wildcard(1)}}.{{wildcard(2)}}.>"
        );
        assert_eq!(
            p.published_subject("websocket.1.c.a.chats"),
            "websocket.c.a.chats"
        );
        assert_eq!(
            p.published_subject("websocket.c.a.chats"),
            "websocket.c.a.chats"
        );
    }
}
