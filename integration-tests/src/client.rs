//! A WebSocket client speaking the compat protocol, with expectations that fail with a clear
//! message instead of hanging.

use crate::secrets::User;
use crate::trail::step;
use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long an expectation waits by default.
pub const WAIT: Duration = Duration::from_secs(10);

/// How a socket was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Close code (1006 when the connection dropped without a close frame).
    pub code: u16,
    /// Close reason.
    pub reason: String,
    /// Error frames received just before the close.
    pub errors: Vec<Value>,
}

/// A connected client.
#[derive(Debug)]
pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    label: String,
}

/// Why a connection attempt failed: the HTTP status and body, or a transport error.
#[derive(Debug)]
pub enum Refused {
    /// The edge answered the upgrade with an HTTP error.
    Http {
        /// Status code.
        status: u16,
        /// `Retry-After` header, if any.
        retry_after: Option<String>,
        /// Body.
        body: String,
    },
    /// Could not connect at all.
    Transport(String),
}

impl WsClient {
    /// Connects `user` to the edge at `addr` and waits for `ready`.
    pub async fn connect(addr: SocketAddr, user: &User, api_key: &str) -> anyhow::Result<Self> {
        let mut client = match Self::try_connect(addr, user, api_key).await? {
            Ok(client) => client,
            Err(refused) => bail!("{addr} refused {}: {refused:?}", label(user)),
        };
        let ready = client.next_frame(WAIT).await?;
        anyhow::ensure!(
            ready == json!({"type": "ready"}),
            "{}: expected ready, got {ready}",
            client.label
        );
        Ok(client)
    }

    /// Connects `user` speaking `json.v2`, recovering from `since` (`<epoch>:<seq>`) when
    /// given, and waits for `ready`.
    pub async fn connect_v2(
        addr: SocketAddr,
        user: &User,
        api_key: &str,
        since: Option<&str>,
    ) -> anyhow::Result<Self> {
        let query = since.map(|s| format!("&since={s}")).unwrap_or_default();
        let mut client = match Self::open(addr, user, api_key, "json.v2", &query).await? {
            Ok(client) => client,
            Err(refused) => bail!("{addr} refused {}: {refused:?}", label(user)),
        };
        let ready = client.next_frame(WAIT).await?;
        anyhow::ensure!(
            ready == json!({"type": "ready"}),
            "{}: expected ready, got {ready}",
            client.label
        );
        Ok(client)
    }

    /// Connects without waiting for `ready`; `Err(Refused)` when the edge says no.
    pub async fn try_connect(
        addr: SocketAddr,
        user: &User,
        api_key: &str,
    ) -> anyhow::Result<Result<Self, Refused>> {
        Self::open(addr, user, api_key, "json.v1", "").await
    }

    async fn open(
        addr: SocketAddr,
        user: &User,
        api_key: &str,
        protocol: &'static str,
        query: &str,
    ) -> anyhow::Result<Result<Self, Refused>> {
        let path = if user.admin {
            "/ws/admin".to_owned()
        } else {
            format!("/ws/{}/{}", user.company, user.agent)
        };
        step(format_args!("connect {} to {addr}", label(user)));
        let url = format!("ws://{addr}{path}?token={}{query}", user.token);
        let mut request = url.into_client_request()?;
        request
            .headers_mut()
            .insert("X-API-Key", HeaderValue::from_str(api_key)?);
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await {
            Err(_) => Ok(Err(Refused::Transport("connect timed out".into()))),
            Ok(Ok((socket, _))) => Ok(Ok(Self {
                socket,
                label: label(user),
            })),
            Ok(Err(WsError::Http(response))) => Ok(Err(Refused::Http {
                status: response.status().as_u16(),
                retry_after: response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body: response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            })),
            Ok(Err(e)) => Ok(Err(Refused::Transport(e.to_string()))),
        }
    }

    /// The next JSON text frame (pings are answered by the library underneath).
    pub async fn next_frame(&mut self, within: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .with_context(|| format!("{}: no frame within {within:?}", self.label))?;
            match frame {
                Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(text.as_str())?),
                Some(Ok(Message::Close(close))) => {
                    bail!(
                        "{}: closed while waiting for a frame: {close:?}",
                        self.label
                    )
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("{}: socket error: {e}", self.label),
                None => bail!("{}: socket ended", self.label),
            }
        }
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        Ok(self.socket.send(Message::text(text.to_owned())).await?)
    }

    /// Sends `select_chat`. The edge answers nothing; the selection takes effect at once.
    pub async fn select_chat(&mut self, chat: &str) -> anyhow::Result<()> {
        self.send_text(&json!({"type": "select_chat", "payload": {"chat_id": chat}}).to_string())
            .await
    }

    /// The next `event` frame's payload; fails on anything else.
    pub async fn expect_event(&mut self, within: Duration) -> anyhow::Result<Value> {
        let frame = self.next_frame(within).await?;
        anyhow::ensure!(
            frame["type"] == "event",
            "{}: expected an event, got {frame}",
            self.label
        );
        Ok(frame["payload"].clone())
    }

    /// Collects `n` event payloads.
    pub async fn expect_events(
        &mut self,
        n: usize,
        within: Duration,
    ) -> anyhow::Result<Vec<Value>> {
        step(format_args!(
            "{}: expect {n} events within {within:?}",
            self.label
        ));
        let deadline = tokio::time::Instant::now() + within;
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            events.push(
                self.expect_event(left)
                    .await
                    .with_context(|| format!("after {} of {n} events", events.len()))?,
            );
        }
        Ok(events)
    }

    /// Fails if any frame arrives within `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) -> anyhow::Result<()> {
        step(format_args!("{}: expect silence for {quiet:?}", self.label));
        match tokio::time::timeout(quiet, self.socket.next()).await {
            Err(_) => Ok(()),
            Ok(Some(Ok(Message::Text(text)))) => {
                bail!("{}: expected nothing, got {text}", self.label)
            }
            Ok(other) => bail!("{}: expected nothing, got {other:?}", self.label),
        }
    }

    /// Reads until the close frame; error frames seen on the way are returned with it.
    pub async fn expect_close(&mut self, within: Duration) -> anyhow::Result<Closed> {
        step(format_args!(
            "{}: expect a close within {within:?}",
            self.label
        ));
        let deadline = tokio::time::Instant::now() + within;
        let mut errors = Vec::new();
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .with_context(|| format!("{}: not closed within {within:?}", self.label))?;
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                    if value["type"] == "error" {
                        errors.push(value["payload"].clone());
                    }
                }
                Some(Ok(Message::Close(close))) => {
                    let (code, reason) = close
                        .map(|c| (u16::from(c.code), c.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return Ok(Closed {
                        code,
                        reason,
                        errors,
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    return Ok(Closed {
                        code: 1006,
                        reason: String::new(),
                        errors,
                    });
                }
            }
        }
    }

    /// Closes politely.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

fn label(user: &User) -> String {
    if user.admin {
        "admin socket".into()
    } else {
        format!("socket {}/{}", user.company, user.agent)
    }
}
