//! History from JetStream: stream info for the epoch and bounds, an ordered consumer for the
//! replay.

use super::{HistoryError, HistoryEvent, StreamState};
use crate::config::History;
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use futures_util::{Stream, StreamExt};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The edge's connection to the stream (optional: without it recoveries answer `resync`).
#[derive(Clone)]
pub struct JetStreamHistory {
    context: jetstream::Context,
    stream: String,
}

impl std::fmt::Debug for JetStreamHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamHistory")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl JetStreamHistory {
    /// Connects in the background (the first connection is retried like any reconnect), so a
    /// NATS outage never stops the edge; recoveries meanwhile answer `resync`.
    pub async fn connect(settings: &History, name: &str) -> Result<Self, HistoryError> {
        let options = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2));
        let options = settings.auth.apply(options).map_err(HistoryError)?;
        // Every seed of a cluster: the client moves to another one when its server goes away.
        let servers: Vec<&str> = settings.nats_urls.iter().map(url::Url::as_str).collect();
        let client = options
            .connect(servers)
            .await
            .map_err(|e| HistoryError(e.to_string()))?;
        let mut context = jetstream::new(client);
        context.set_timeout(Duration::from_secs(3));
        Ok(Self {
            context,
            stream: settings.stream.clone(),
        })
    }

    /// The stream's epoch and bounds now.
    pub async fn state(&self) -> Result<StreamState, HistoryError> {
        let mut stream = self
            .context
            .get_stream(&self.stream)
            .await
            .map_err(|e| HistoryError(e.to_string()))?;
        let info = stream
            .info()
            .await
            .map_err(|e| HistoryError(e.to_string()))?;
        Ok(StreamState {
            epoch: epoch(info.created),
            first_seq: info.state.first_sequence,
            last_seq: info.state.last_sequence,
            transformed: info.config.subject_transform.is_some(),
        })
    }

    /// The stored events on `filter` from sequence `from` on, in stream order; the stream
    /// follows new events until dropped.
    pub async fn replay(
        &self,
        filter: String,
        from: u64,
    ) -> Result<impl Stream<Item = Result<HistoryEvent, HistoryError>> + Send + use<>, HistoryError>
    {
        let stream = self
            .context
            .get_stream(&self.stream)
            .await
            .map_err(|e| HistoryError(e.to_string()))?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: filter,
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from.max(1),
                },
                description: Some("daisi edge: json.v2 recovery".into()),
                ..Default::default()
            })
            .await
            .map_err(|e| HistoryError(e.to_string()))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| HistoryError(e.to_string()))?;
        Ok(messages.map(|message| {
            let message = message.map_err(|e| HistoryError(e.to_string()))?;
            let info = message.info().map_err(|e| HistoryError(e.to_string()))?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            let published_at = system_time(info.published.unix_timestamp_nanos());
            Ok(HistoryEvent {
                seq,
                subject: message.subject.to_string(),
                payload: message.payload.clone(),
                published_at,
                pending,
            })
        }))
    }
}

/// The epoch routers stamp on events: the stream's creation time in Unix nanoseconds (at least
/// 1, 0 meaning unknown).
pub fn epoch(created: async_nats::datetime::DateTime) -> u64 {
    u64::try_from(created.unix_timestamp_nanos())
        .unwrap_or(0)
        .max(1)
}

fn system_time(unix_nanos: i128) -> SystemTime {
    u64::try_from(unix_nanos)
        .ok()
        .and_then(|n| UNIX_EPOCH.checked_add(Duration::from_nanos(n)))
        .unwrap_or(UNIX_EPOCH)
}
