//! `POST /api/v1/publish`: publishing into the stream over HTTP, for backends that do not speak
//! NATS and for the dev stack (where it feeds the in-memory stream).
//!
//! Body: one message `{"subject": "...", "payload": {...}}`, or a batch as a JSON array of
//! such messages (or `{"messages": [...]}`), at most [`MAX_BATCH`]. Each subject must follow
//! the subject model, each payload must be a JSON object of at most the configured size; it is
//! stored byte for byte as sent. Every message is published with JetStream acknowledgement, in
//! order; the answer carries the stream sequences. `X-Request-ID` and `traceparent` of the
//! request travel on as NATS headers. The API key is sent in `X-API-Key` and compared in
//! constant time, before any of the body is read: a caller without the key cannot make the
//! router buffer anything. Bodies are read by at most [`MAX_CONCURRENT`] requests at once
//! (others get 503 at once) and within [`BODY_DEADLINE`] (408 after).

use crate::metrics::RouterMetrics;
use crate::source::{Outgoing, PublishError, Publisher, TraceHeaders};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use daisi_config::SecretDigest;
use daisi_domain::event::inspect_payload;
use daisi_domain::subject::SubjectModel;
use daisi_domain::{ErrorBody, ErrorCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Requests whose bodies are read or published at once, at most: with the body limit, this
/// bounds the memory the API can take (16 × 8 MiB by default).
pub const MAX_CONCURRENT: usize = 16;
/// A body not received within this long is refused (408): a slow sender holds its slot no
/// longer.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// Most messages in one request.
pub const MAX_BATCH: usize = 1_000;
/// The route.
pub const PATH: &str = "/api/v1/publish";

/// What the handler needs.
#[derive(Debug)]
pub struct PublishApi<P> {
    /// Writes into the stream.
    pub publisher: P,
    /// Validates subjects.
    pub subjects: SubjectModel,
    /// The expected `X-API-Key`, kept as a digest and compared in constant time.
    pub api_key: SecretDigest,
    /// Largest payload, in bytes.
    pub max_payload_bytes: usize,
    /// Counts outcomes.
    pub metrics: RouterMetrics,
}

struct Shared<P> {
    api: PublishApi<P>,
    body_limit: usize,
    slots: Semaphore,
}

/// The router with `POST /api/v1/publish`.
pub fn router<P: Publisher>(api: PublishApi<P>) -> Router {
    // Bounds the memory one request can take: four maximal payloads or 8 MiB, whichever is
    // larger. That is far less than a full batch of maximal payloads (MAX_BATCH of them): a
    // batch must fit this limit as a whole, and a larger body is refused with 413 before it is
    // parsed.
    let body_limit = api.max_payload_bytes.saturating_mul(4).max(8 * 1024 * 1024);
    Router::new()
        .route(PATH, post(publish::<P>))
        .with_state(Arc::new(Shared {
            api,
            body_limit,
            slots: Semaphore::new(MAX_CONCURRENT),
        }))
}

#[derive(Deserialize)]
struct Message {
    subject: String,
    payload: Box<RawValue>,
}

#[derive(Deserialize)]
struct Wrapped {
    messages: Vec<Message>,
}

/// The messages of a body and whether it was a single one. `RawValue` keeps payloads byte
/// for byte but cannot sit in an untagged enum, so the shape is picked by hand.
fn messages(body: &[u8]) -> Option<(Vec<Message>, bool)> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first == b'[' {
        return serde_json::from_slice::<Vec<Message>>(body)
            .ok()
            .map(|m| (m, false));
    }
    if let Ok(one) = serde_json::from_slice::<Message>(body) {
        return Some((vec![one], true));
    }
    serde_json::from_slice::<Wrapped>(body)
        .ok()
        .map(|w| (w.messages, false))
}

fn error(status: StatusCode, code: ErrorCode, message: &'static str, details: String) -> Response {
    let body = ErrorBody::new(code, message).with_details(details);
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_json(),
    )
        .into_response()
}

fn bad_request(details: String) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest,
        "Invalid publish request",
        details,
    )
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 512)
}

async fn publish<P: Publisher>(State(shared): State<Arc<Shared<P>>>, request: Request) -> Response {
    let api = &shared.api;
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let Some(key) = header(&headers, "x-api-key") else {
        api.metrics
            .published
            .with_label_values(&["unauthorized"])
            .inc();
        let body = ErrorBody::api_key_missing();
        return (StatusCode::UNAUTHORIZED, body.to_json()).into_response();
    };
    if !api.api_key.matches(key.as_bytes()) {
        api.metrics
            .published
            .with_label_values(&["unauthorized"])
            .inc();
        let body = ErrorBody::api_key_invalid();
        return (StatusCode::UNAUTHORIZED, body.to_json()).into_response();
    }
    let Ok(_slot) = shared.slots.try_acquire() else {
        api.metrics.published.with_label_values(&["busy"]).inc();
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::InternalServerError,
            "Too many publish requests at once",
            format!("at most {MAX_CONCURRENT} are served at once; retry"),
        );
    };
    let body =
        match tokio::time::timeout(BODY_DEADLINE, axum::body::to_bytes(body, shared.body_limit))
            .await
        {
            Ok(Ok(body)) => body,
            Ok(Err(_too_large_or_broken)) => {
                api.metrics
                    .published
                    .with_label_values(&["too_large"])
                    .inc();
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::BadRequest,
                    "Request body too large",
                    format!("at most {} bytes", shared.body_limit),
                );
            }
            Err(_late) => {
                api.metrics.published.with_label_values(&["invalid"]).inc();
                return error(
                    StatusCode::REQUEST_TIMEOUT,
                    ErrorCode::BadRequest,
                    "Request body too slow",
                    format!("the body must arrive within {BODY_DEADLINE:?}"),
                );
            }
        };
    let (messages, single) = match messages(&body) {
        Some(parsed) => parsed,
        None => {
            api.metrics.published.with_label_values(&["invalid"]).inc();
            return bad_request(
                "body must be {\"subject\": string, \"payload\": object} or an array of them"
                    .into(),
            );
        }
    };
    if messages.is_empty() || messages.len() > MAX_BATCH {
        api.metrics.published.with_label_values(&["invalid"]).inc();
        return bad_request(format!("a batch holds 1 to {MAX_BATCH} messages"));
    }
    for (i, m) in messages.iter().enumerate() {
        let at = if single {
            String::new()
        } else {
            format!("messages[{i}].")
        };
        if let Err(e) = api.subjects.parse(&m.subject) {
            api.metrics.published.with_label_values(&["invalid"]).inc();
            return bad_request(format!(
                "{at}subject: {e}; expected {}.{{company}}.{{agent}}.{{kind}}[.{{chat}}]",
                api.subjects.prefix()
            ));
        }
        let payload = m.payload.get().as_bytes();
        if payload.len() > api.max_payload_bytes {
            api.metrics
                .published
                .with_label_values(&["too_large"])
                .inc();
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::BadRequest,
                "Payload too large",
                format!(
                    "{at}payload: {} bytes, at most {} allowed",
                    payload.len(),
                    api.max_payload_bytes
                ),
            );
        }
        if let Err(e) = inspect_payload(payload) {
            api.metrics.published.with_label_values(&["invalid"]).inc();
            return bad_request(format!("{at}payload: {e}"));
        }
    }
    let trace = TraceHeaders {
        request_id: header(&headers, "x-request-id").map(str::to_owned),
        traceparent: header(&headers, "traceparent").map(str::to_owned),
        tracestate: header(&headers, "tracestate").map(str::to_owned),
    };
    let mut published: Vec<Value> = Vec::with_capacity(messages.len());
    let total = messages.len();
    for m in messages {
        let subject = m.subject;
        let outgoing = Outgoing {
            subject: subject.clone(),
            payload: Bytes::copy_from_slice(m.payload.get().as_bytes()),
            trace: trace.clone(),
        };
        match api.publisher.publish(outgoing).await {
            Ok(sequence) => {
                api.metrics.published.with_label_values(&["ok"]).inc();
                published.push(json!({"subject": subject, "sequence": sequence}));
            }
            Err(e) => {
                api.metrics.published.with_label_values(&["failed"]).inc();
                let done = published.len();
                let details = format!(
                    "{done} of {total} messages were published (in order) before: {e}; retry the rest"
                );
                tracing::warn!(error = %e, published = done, total, "publish failed");
                return match e {
                    PublishError::Unavailable(_) => error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ErrorCode::InternalServerError,
                        "Stream unavailable",
                        details,
                    ),
                    PublishError::Refused(_) => error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        ErrorCode::InternalServerError,
                        "Stream refused the message",
                        details,
                    ),
                };
            }
        }
    }
    let body = if single {
        published.pop().unwrap_or(Value::Null)
    } else {
        json!({ "published": published })
    };
    (StatusCode::OK, axum::Json(body)).into_response()
}
