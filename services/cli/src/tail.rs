//! `daisi tail`: connect to an edge as a client would and print what arrives — events with their
//! type, time and position, `resync` frames, error frames, and the close code and reason at
//! the end. It speaks `json.v2` (`--v1` for the old protocol); with `--reconnect` it reconnects
//! after a lost connection with its last position, so the edge replays what it missed, and
//! keeps trying (backing off up to 30 s, for about 8 minutes) while the edge cannot be reached,
//! so a tail survives an edge restart.

use crate::output;
use anyhow::{Context, bail};
use clap::Args;
use daisi_domain::{AgentId, ChatId, CompanyId};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::process::ExitCode;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use url::Url;

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// The user or admin token. Tokens are URL-safe base64 and may start with `-`; they are
    /// taken as values, never as flags.
    #[arg(
        long,
        env = "DAISI_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    token: String,
    /// Edge base URL.
    #[arg(long, env = "DAISI_EDGE_URL", default_value = "http://127.0.0.1:8080")]
    edge: Url,
    /// Company of a user token (read from the token when its key is in DAISI_EDGE_TOKEN_AES_KEY).
    #[arg(long)]
    company: Option<CompanyId>,
    /// Agent of a user token (read from the token when its key is in DAISI_EDGE_TOKEN_AES_KEY).
    #[arg(long)]
    agent: Option<AgentId>,
    /// Connect to /ws/admin with an admin token.
    #[arg(long, conflicts_with_all = ["company", "agent", "select_chat"])]
    admin: bool,
    /// API key; defaults to DAISI_EDGE_SECRET_TOKEN (users) or DAISI_EDGE_ADMIN_SECRET_TOKEN (admins).
    #[arg(long, hide_env_values = true, allow_hyphen_values = true)]
    api_key: Option<String>,
    /// Select this chat after `ready`, to receive its `messages` events.
    #[arg(long)]
    select_chat: Option<ChatId>,
    /// Exit after this many events.
    #[arg(long)]
    count: Option<u64>,
    /// Print one JSON object per line.
    #[arg(long)]
    json: bool,
    /// Attempts after a 503 answer (waiting its Retry-After) before giving up.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// Speak `json.v1` (no positions, no recovery) instead of `json.v2`.
    #[arg(long, conflicts_with_all = ["since", "reconnect"])]
    v1: bool,
    /// Recover from this position (`<epoch>:<seq>` as printed after `@`): the edge replays
    /// what the socket missed since then.
    #[arg(long)]
    since: Option<daisi_domain::protocol::Position>,
    /// Reconnect after a lost connection (not after a takeover or a normal close), asking for
    /// the events missed since the last one printed; while the edge is unreachable (refused,
    /// reset, timed out, 502/503/504) retry with backoff.
    #[arg(long)]
    reconnect: bool,
}

/// Where to connect: `/ws/{company}/{agent}` or `/ws/admin`, as a ws(s) URL.
fn socket_url(args: &TailArgs) -> anyhow::Result<Url> {
    let path = if args.admin {
        "ws/admin".to_owned()
    } else {
        let (company, agent) = match (&args.company, &args.agent) {
            (Some(c), Some(a)) => (c.clone(), a.clone()),
            _ => {
                let key = std::env::var("DAISI_EDGE_TOKEN_AES_KEY").ok();
                let ring = crate::token::keyring(key.as_deref(), "--company/--agent", "DAISI_EDGE_TOKEN_AES_KEY")
                    .context("a user socket needs --company and --agent, or the token key to read them from the token")?;
                let claims = ring
                    .decode_user(&args.token, jiff::Timestamp::now())
                    .context("cannot read company and agent from the token")?;
                (claims.company_id, claims.agent_id)
            }
        };
        format!("ws/{company}/{agent}")
    };
    let mut url = args.edge.join(&path).context("edge URL")?;
    let scheme = match url.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => bail!("--edge must be http(s) or ws(s), not {other}"),
    };
    url.set_scheme(scheme)
        .map_err(|()| anyhow::anyhow!("cannot use {scheme} with that URL"))?;
    url.query_pairs_mut().append_pair("token", &args.token);
    Ok(url)
}

/// The position of an event frame, `<epoch>:<seq>` (`json.v2`).
fn position(frame: &Value) -> Option<daisi_domain::protocol::Position> {
    let position = &frame["position"];
    Some(daisi_domain::protocol::Position {
        epoch: position["epoch"].as_str()?.parse().ok()?,
        seq: position["seq"].as_u64()?,
    })
}

fn api_key(args: &TailArgs) -> anyhow::Result<String> {
    let var = if args.admin {
        "DAISI_EDGE_ADMIN_SECRET_TOKEN"
    } else {
        "DAISI_EDGE_SECRET_TOKEN"
    };
    args.api_key
        .clone()
        .or_else(|| std::env::var(var).ok())
        .with_context(|| format!("pass --api-key or set {var}"))
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Why a connection could not be opened.
enum Failure {
    /// The edge answered no (a wrong key, token or URL): retrying cannot help.
    Refused(anyhow::Error),
    /// The edge could not be reached or is restarting (refused, reset, timed out, 502/503/504):
    /// worth another try with `--reconnect`.
    Unreachable(anyhow::Error),
}

impl From<Failure> for anyhow::Error {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Refused(e) | Failure::Unreachable(e) => e,
        }
    }
}

/// Whether a handshake error is the network's (or a restarting server's) rather than an answer.
fn transient(error: &WsError) -> bool {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match error {
        WsError::Io(_) | WsError::ConnectionClosed | WsError::AlreadyClosed => true,
        WsError::Protocol(p) => matches!(
            p,
            ProtocolError::HandshakeIncomplete | ProtocolError::ResetWithoutClosingHandshake
        ),
        WsError::Http(response) => matches!(response.status().as_u16(), 502..=504),
        _ => false,
    }
}

/// Opens the socket. A 503 (the edge cannot reach its coordinator, or is full or draining) is
/// temporary by contract: like the browser clients, tail waits the `Retry-After` it was given
/// (1–10 s) and tries again, `--retries` times.
async fn connect(
    args: &TailArgs,
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    shown_url: &Url,
) -> Result<Socket, Failure> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        // An address that swallows packets must not leave the terminal hanging.
        let connecting = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async(request.clone()),
        );
        let Ok(connected) = connecting.await else {
            return Err(Failure::Unreachable(anyhow::anyhow!(
                "no answer from {shown_url} within {CONNECT_TIMEOUT:?}"
            )));
        };
        match connected {
            Ok((socket, _)) => return Ok(socket),
            Err(WsError::Http(response)) => {
                let status = response.status();
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                if status != 503 || attempt > args.retries {
                    let error =
                        anyhow::anyhow!("{shown_url} refused the connection: {status} {body}");
                    return Err(if matches!(status.as_u16(), 502..=504) {
                        Failure::Unreachable(error)
                    } else {
                        Failure::Refused(error)
                    });
                }
                let wait = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(1)
                    .clamp(1, 10);
                show(
                    args.json,
                    json!({"kind": "retrying", "status": 503, "after_seconds": wait, "body": body}),
                    format!(
                        "{} {shown_url} answered 503 {body}; retrying in {wait} s",
                        now()
                    ),
                );
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            Err(e) => {
                let retry = transient(&e);
                let error = anyhow::Error::new(e).context(format!("cannot connect to {shown_url}"));
                return Err(if retry {
                    Failure::Unreachable(error)
                } else {
                    Failure::Refused(error)
                });
            }
        }
    }
}

/// How long the WebSocket handshake (TCP, TLS, upgrade) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect attempts in a row, after a lost connection, before tail gives up (with
/// [`reconnect_backoff`], about 8 minutes: an edge restart, not an outage).
const RECONNECT_ATTEMPTS: u32 = 20;

/// The pause before reconnect attempt `attempt` (1, 2, ...): 1 s doubling up to 30 s.
fn reconnect_backoff(attempt: u32) -> Duration {
    Duration::from_secs((1u64 << attempt.saturating_sub(1).min(5)).min(30))
}

fn now() -> String {
    jiff::Timestamp::now().strftime("%H:%M:%S%.3fZ").to_string()
}

fn show(json_lines: bool, value: Value, text: String) {
    if json_lines {
        output::json(&value, true);
    } else {
        output::line(&text);
    }
}

pub(crate) async fn run(args: TailArgs) -> anyhow::Result<ExitCode> {
    let mut since = args.since;
    let mut events = 0u64;
    // Reconnect attempts in a row that could not reach the edge.
    let mut failed = 0u32;
    // The first connection fails at once (a wrong URL should not keep the terminal waiting);
    // after a lost connection, with --reconnect, an unreachable edge is retried.
    let mut reconnecting = false;
    loop {
        match session(&args, since, &mut events, reconnecting).await? {
            Ended::Done(code) => return Ok(code),
            Ended::Unreachable(error) => {
                failed += 1;
                if failed >= RECONNECT_ATTEMPTS {
                    return Err(error.context(format!(
                        "gave up reconnecting after {RECONNECT_ATTEMPTS} attempts"
                    )));
                }
                let wait = reconnect_backoff(failed);
                let reason = output::describe(&error);
                show(
                    args.json,
                    json!({"kind": "retrying", "error": reason, "attempt": failed, "after_seconds": wait.as_secs()}),
                    format!(
                        "{} {reason}; retrying in {} s (attempt {failed} of {RECONNECT_ATTEMPTS})",
                        now(),
                        wait.as_secs()
                    ),
                );
                tokio::time::sleep(wait).await;
            }
            Ended::Lost(last) => {
                failed = 0;
                since = last.or(since);
                if !args.reconnect {
                    return Ok(ExitCode::from(2));
                }
                reconnecting = true;
                let shown = since.map(|p| p.to_string()).unwrap_or_default();
                show(
                    args.json,
                    json!({"kind": "reconnecting", "since": shown}),
                    format!("{} reconnecting since {shown}", now()),
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// How one connection ended.
enum Ended {
    /// Exit with this code.
    Done(ExitCode),
    /// The connection was lost; the last position seen, if any.
    Lost(Option<daisi_domain::protocol::Position>),
    /// Reconnecting, the edge could not be reached (the position stays as it was).
    Unreachable(anyhow::Error),
}

/// One connection: prints frames until it ends. `reconnecting`: an unreachable edge is
/// [`Ended::Unreachable`] rather than an error.
async fn session(
    args: &TailArgs,
    since: Option<daisi_domain::protocol::Position>,
    events: &mut u64,
    reconnecting: bool,
) -> anyhow::Result<Ended> {
    let mut url = socket_url(args)?;
    if let Some(since) = since {
        url.query_pairs_mut()
            .append_pair("since", &since.to_string());
    }
    let mut request = url.as_str().into_client_request().context("socket URL")?;
    let headers = request.headers_mut();
    headers.insert(
        "X-API-Key",
        HeaderValue::from_str(&api_key(args)?).context("API key")?,
    );
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(if args.v1 { "json.v1" } else { "json.v2" }),
    );
    let mut shown_url = url.clone();
    shown_url.set_query(Some("token=***"));
    let mut socket = match connect(args, request, &shown_url).await {
        Ok(socket) => socket,
        Err(Failure::Unreachable(error)) if reconnecting => return Ok(Ended::Unreachable(error)),
        Err(failure) => return Err(failure.into()),
    };
    show(
        args.json,
        json!({"kind": "connected", "url": shown_url.as_str()}),
        format!("{} connected to {shown_url}", now()),
    );

    let mut last = since;
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(24 * 3600), socket.next())
        .await
        .ok()
        .flatten()
    {
        let Ok(frame) = frame else {
            break;
        };
        match frame {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                let kind = value["type"].as_str().unwrap_or("?").to_owned();
                if let (true, Some(chat)) = (kind == "ready", &args.select_chat) {
                    let select = json!({"type": "select_chat", "payload": {"chat_id": chat}});
                    socket
                        .send(Message::text(select.to_string()))
                        .await
                        .context("select_chat")?;
                }
                let at = position(&value);
                let label = match kind.as_str() {
                    "event" => format!(
                        "event {}{}",
                        value["payload"]["event_type"].as_str().unwrap_or("?"),
                        at.map(|p| format!(" @{p}")).unwrap_or_default()
                    ),
                    "error" => {
                        format!("error {}", value["payload"]["code"].as_str().unwrap_or("?"))
                    }
                    "resync" => format!(
                        "resync {}",
                        value["payload"]["reason"].as_str().unwrap_or("?")
                    ),
                    other => other.to_owned(),
                };
                show(
                    args.json,
                    json!({"kind": "frame", "at": now(), "frame": value}),
                    format!("{} {label} {text}", now()),
                );
                if kind == "event" {
                    if at.is_some() {
                        last = at;
                    }
                    *events += 1;
                    if args.count.is_some_and(|n| *events >= n) {
                        let _ = socket.close(None).await;
                        return Ok(Ended::Done(ExitCode::SUCCESS));
                    }
                }
            }
            Message::Close(frame) => {
                let code = frame.as_ref().map(|f| u16::from(f.code));
                let exit = closed(args.json, frame);
                // Normal closes, takeovers and refusals end the tail; anything else (a server
                // going away included) is worth a reconnect when asked for.
                return Ok(match code {
                    Some(1000 | 4400 | 4401 | 4402 | 4403) => Ended::Done(exit),
                    _ if args.reconnect => Ended::Lost(last),
                    _ => Ended::Done(exit),
                });
            }
            _ => {}
        }
    }
    show(
        args.json,
        json!({"kind": "disconnected"}),
        format!("{} connection dropped without a close frame", now()),
    );
    Ok(Ended::Lost(last))
}

/// Prints the close code and reason; exit 0 for a normal close, 2 otherwise.
fn closed(json_lines: bool, frame: Option<CloseFrame>) -> ExitCode {
    let (code, reason) = frame
        .map(|f| (u16::from(f.code), f.reason.to_string()))
        .unwrap_or((1005, String::new()));
    show(
        json_lines,
        json!({"kind": "closed", "at": now(), "code": code, "reason": reason}),
        format!("{} closed {code} {reason}", now()),
    );
    if code == 1000 || code == 1001 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_backoff_doubles_up_to_30_s() {
        let waits: Vec<u64> = (1..=8).map(|n| reconnect_backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        let total: u64 = (1..RECONNECT_ATTEMPTS)
            .map(|n| reconnect_backoff(n).as_secs())
            .sum();
        assert!((300..=600).contains(&total), "{total} s");
    }

    #[test]
    fn refusals_are_not_retried_but_network_errors_are() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(transient(&WsError::Io(refused)));
        assert!(transient(&WsError::ConnectionClosed));
        let answer = |status: u16| {
            let response = tokio_tungstenite::tungstenite::http::Response::builder()
                .status(status)
                .body(None)
                .expect("a response");
            WsError::Http(Box::new(response))
        };
        assert!(transient(&answer(502)));
        assert!(!transient(&answer(401)));
        assert!(!transient(&answer(404)));
    }
}
