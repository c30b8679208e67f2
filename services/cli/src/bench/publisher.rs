//! Publishing a load run's events open-loop: event `i` is due at `start + i / rate`, whatever
//! happened to the events before it, so a slow system shows up as latency rather than as a
//! politely slowed publisher (no coordinated omission). Each event carries its scheduled and
//! its actual send time. Acknowledgements are awaited in a bounded window: JetStream caps the
//! acks a client may have pending, and keeping them all would stall the run.
//!
//! Two sinks: JetStream (what the CDC publisher does) and the router's publish API (the dev
//! stack's in-memory stream), where the events due together go as one batch request.

use super::latency::Latency;
use super::payload::{self, Phase, Stamp};
use super::plan::Plan;
use super::worker::now_ns;
use anyhow::Context;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;
use std::time::{Duration, Instant};
use url::Url;

/// Most messages in one publish API request (the router's limit).
const MAX_API_BATCH: usize = 1_000;
/// How long outstanding acknowledgements may take once everything is sent.
const ACK_DEADLINE: Duration = Duration::from_secs(30);
/// Distinct publish errors kept for the report.
const MAX_ERRORS: usize = 5;

/// Where events go.
#[derive(Debug, Clone)]
pub(crate) enum Sink {
    /// Straight into JetStream.
    JetStream(async_nats::jetstream::Context),
    /// Through a router's `POST /api/v1/publish`.
    Router {
        /// HTTP client (bounded timeouts).
        client: reqwest::Client,
        /// The publish URL.
        url: Url,
        /// `X-API-Key`.
        key: String,
    },
}

impl Sink {
    /// Connects to NATS at `url`.
    pub(crate) async fn jetstream(url: &Url) -> anyhow::Result<Self> {
        let shown = crate::redact::url(url);
        let client =
            tokio::time::timeout(Duration::from_secs(10), async_nats::connect(url.as_str()))
                .await
                .with_context(|| format!("no answer from NATS at {shown} within 10 s"))?
                .with_context(|| format!("cannot connect to NATS at {shown}"))?;
        Ok(Self::JetStream(async_nats::jetstream::new(client)))
    }

    /// The publish API of the router at `base`.
    pub(crate) fn router(base: &Url, key: String) -> anyhow::Result<Self> {
        Ok(Self::Router {
            client: crate::http::client()?,
            url: base.join("api/v1/publish").context("router URL")?,
            key,
        })
    }
}

/// What to publish.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    /// Run id stamped on every event.
    pub(crate) run: u32,
    /// Warm-up or measured.
    pub(crate) phase: Phase,
    /// Events per second.
    pub(crate) rate: f64,
    /// Events in total.
    pub(crate) count: u64,
    /// Acknowledgements (or API requests) outstanding at most.
    pub(crate) window: usize,
    /// Subject prefix.
    pub(crate) prefix: String,
    /// Approximate payload size in bytes.
    pub(crate) payload_bytes: usize,
}

/// How publishing went.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct Published {
    /// Events handed to the sink (acknowledged or not).
    pub(crate) sent: u64,
    /// Sequence numbers whose publish or acknowledgement failed (sorted).
    pub(crate) failed: Vec<u64>,
    /// From the first event's due time until the last was sent.
    pub(crate) seconds: f64,
    /// A few distinct errors.
    pub(crate) errors: Vec<String>,
    /// How far behind its schedule the publisher sent, in milliseconds (p99 and max).
    pub(crate) behind_p99_ms: f64,
    /// See `behind_p99_ms`.
    pub(crate) behind_max_ms: f64,
}

type Pending = BoxFuture<'static, (Vec<u64>, Result<(), String>)>;

struct Outcome {
    failed: Vec<u64>,
    errors: Vec<String>,
}

impl Outcome {
    fn settle(&mut self, (seqs, result): (Vec<u64>, Result<(), String>)) {
        if let Err(e) = result {
            self.failed.extend(seqs);
            if self.errors.len() < MAX_ERRORS && !self.errors.contains(&e) {
                self.errors.push(e);
            }
        }
    }
}

/// Publishes `schedule` on `plan`'s subjects; `progress` is told the count sent so far.
pub(crate) async fn publish(
    sink: &Sink,
    plan: &Plan,
    schedule: &Schedule,
    mut progress: impl FnMut(u64),
) -> Published {
    let rate = schedule.rate.max(0.001);
    let window = schedule.window.max(1);
    let pad = payload::pad_for(schedule.payload_bytes, &plan.company, "a0");
    let mut inflight: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut outcome = Outcome {
        failed: Vec::new(),
        errors: Vec::new(),
    };
    let mut behind = Latency::default();
    let start = Instant::now();
    let wall0 = now_ns();
    let due_at = |i: u64| Duration::from_secs_f64(i as f64 / rate);
    let mut next = 0u64;
    while next < schedule.count {
        let due = ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(schedule.count);
        if due <= next {
            let at = tokio::time::Instant::from_std(start + due_at(next));
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                Some(done) = inflight.next(), if !inflight.is_empty() => outcome.settle(done),
            }
            continue;
        }
        let mut batch: Vec<(u64, String, String)> = Vec::new();
        for seq in next..due {
            while inflight.len() >= window {
                if let Some(done) = inflight.next().await {
                    outcome.settle(done);
                }
            }
            let scheduled_ns = wall0 + u64::try_from(due_at(seq).as_nanos()).unwrap_or(u64::MAX);
            let sent_ns = now_ns();
            behind.record(sent_ns.saturating_sub(scheduled_ns));
            let stamp = Stamp {
                run: schedule.run,
                phase: schedule.phase,
                seq,
                scheduled_ns,
                sent_ns,
            };
            let agent = Plan::agent_id(plan.agent_of_event(seq));
            let body = payload::render(&plan.company, &agent, &stamp, pad);
            let subject = plan.subject(&schedule.prefix, seq);
            match sink {
                Sink::JetStream(js) => match js.publish(subject, body.into()).await {
                    Ok(ack) => inflight.push(Box::pin(async move {
                        let acked = tokio::time::timeout(ACK_DEADLINE, ack.into_future()).await;
                        let result = match acked {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err(e)) => Err(format!("ack: {e}")),
                            Err(_) => Err("no ack within 30 s".to_owned()),
                        };
                        (vec![seq], result)
                    })),
                    Err(e) => outcome.settle((vec![seq], Err(format!("publish: {e}")))),
                },
                Sink::Router { .. } => batch.push((seq, subject, body)),
            }
        }
        if let Sink::Router { client, url, key } = sink {
            for chunk in batch.chunks(MAX_API_BATCH) {
                while inflight.len() >= window {
                    if let Some(done) = inflight.next().await {
                        outcome.settle(done);
                    }
                }
                inflight.push(api_request(client, url, key, chunk));
            }
        }
        next = due;
        progress(next);
    }
    let seconds = start.elapsed().as_secs_f64();
    let drained = tokio::time::timeout(ACK_DEADLINE, async {
        while let Some(done) = inflight.next().await {
            outcome.settle(done);
        }
    })
    .await;
    if drained.is_err() {
        outcome
            .errors
            .push("acknowledgements still missing after 30 s".to_owned());
    }
    outcome.failed.sort_unstable();
    let b = behind.summary();
    Published {
        sent: next,
        failed: outcome.failed,
        seconds,
        errors: outcome.errors,
        behind_p99_ms: b.p99_ms,
        behind_max_ms: b.max_ms,
    }
}

/// One publish API request for `chunk`: (seq, subject, payload) in order.
fn api_request(
    client: &reqwest::Client,
    url: &Url,
    key: &str,
    chunk: &[(u64, String, String)],
) -> Pending {
    let seqs: Vec<u64> = chunk.iter().map(|(s, _, _)| *s).collect();
    let mut body =
        String::with_capacity(chunk.iter().map(|(_, s, p)| s.len() + p.len() + 32).sum());
    body.push('[');
    for (i, (_, subject, payload)) in chunk.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(r#"{"subject":""#);
        body.push_str(subject);
        body.push_str(r#"","payload":"#);
        body.push_str(payload);
        body.push('}');
    }
    body.push(']');
    let request = client
        .post(url.clone())
        .header("X-API-Key", key)
        .header("Content-Type", "application/json")
        .body(body);
    Box::pin(async move {
        let result = match request.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("publish API answered {}", r.status())),
            Err(e) => Err(format!("publish API: {e}")),
        };
        (seqs, result)
    })
}
