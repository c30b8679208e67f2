//! `daisi publish SUBJECT JSON`: put an event into the stream, either through a router's publish
//! API (what the dev stack offers) or straight into NATS JetStream (what the CDC publisher does).

use crate::output;
use anyhow::{Context, bail};
use clap::Args;
use daisi_domain::subject::SubjectModel;
use serde_json::{Value, json};
use std::io::Read;
use std::process::ExitCode;
use url::Url;

#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// Subject, e.g. websocket.c1.a1.chats or websocket.c1.a1.messages.chat-9.
    subject: String,
    /// The JSON payload (an object), or `-` to read it from stdin.
    payload: String,
    /// Publish straight to NATS JetStream at this URL instead of the router API.
    #[arg(long, env = "DAISI_NATS_URL")]
    nats: Option<Url>,
    /// Router base URL (publish API).
    #[arg(
        long,
        env = "DAISI_ROUTER_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    router: Url,
    /// Router publish API key.
    #[arg(
        long,
        env = "DAISI_ROUTER_PUBLISH_API_KEY",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    api_key: Option<String>,
    /// Subject prefix the subject must use.
    #[arg(long, env = "DAISI_ROUTER_SUBJECT_PREFIX", default_value = "websocket")]
    prefix: String,
    /// X-Request-ID carried into the services' logs and traces.
    #[arg(long)]
    request_id: Option<String>,
    /// Print JSON instead of a sentence.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let model = SubjectModel::new(&args.prefix).context("--prefix")?;
    model
        .parse(&args.subject)
        .with_context(|| format!("`{}` is not a daisi subject", args.subject))?;
    let text = if args.payload == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the payload from stdin")?;
        text
    } else {
        args.payload.clone()
    };
    let payload: Value = serde_json::from_str(&text).context("the payload is not valid JSON")?;
    // Only checked here: the text itself is sent, so key order and formatting arrive as typed.
    if !payload.is_object() {
        bail!("the payload must be a JSON object");
    }
    let answer = match &args.nats {
        Some(url) => to_nats(url, &args, text.into_bytes()).await?,
        None => to_router(&args, &text).await?,
    };
    if args.json {
        output::json(&answer, false);
    } else {
        output::line(&format!("published to {}: {answer}", args.subject));
    }
    Ok(ExitCode::SUCCESS)
}

async fn to_nats(url: &Url, args: &PublishArgs, payload: Vec<u8>) -> anyhow::Result<Value> {
    let client = async_nats::connect(url.as_str())
        .await
        .with_context(|| format!("cannot connect to NATS at {}", crate::redact::url(url)))?;
    let js = async_nats::jetstream::new(client);
    let mut headers = async_nats::HeaderMap::new();
    if let Some(id) = &args.request_id {
        headers.insert("X-Request-ID", id.as_str());
    }
    let ack = js
        .publish_with_headers(args.subject.clone(), headers, payload.into())
        .await
        .context("publish")?
        .await
        .context("JetStream did not acknowledge the message (is a stream bound to the subject?)")?;
    Ok(json!({ "stream": ack.stream, "sequence": ack.sequence, "duplicate": ack.duplicate }))
}

async fn to_router(args: &PublishArgs, payload: &str) -> anyhow::Result<Value> {
    let url = args.router.join("api/v1/publish").context("router URL")?;
    let Some(key) = args.api_key.as_deref() else {
        bail!(
            "the router publish API needs a key: pass --api-key or set DAISI_ROUTER_PUBLISH_API_KEY (or use --nats)"
        );
    };
    let mut request = crate::http::client()?
        .post(url.clone())
        .header("X-API-Key", key)
        .header("Content-Type", "application/json")
        .body(format!(
            r#"{{"subject":{},"payload":{}}}"#,
            Value::from(args.subject.as_str()),
            payload.trim()
        ));
    if let Some(id) = &args.request_id {
        request = request.header("X-Request-ID", id);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{url} answered {status}: {answer}");
    }
    Ok(answer)
}
