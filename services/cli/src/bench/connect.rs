//! Opening one load-test socket as a browser would: TCP from a chosen loopback source
//! address, the WebSocket upgrade with the API key, token and `json.v1`, then the `ready`
//! frame. A 503 or 429 is retried after its `Retry-After` (at most 2 s here, so a storm measures the
//! edge and not the clients' patience), any other failure after a short pause.

use futures_util::StreamExt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// A client socket.
pub(crate) type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub(crate) struct Target<'a> {
    /// The edge's client port.
    pub(crate) edge: SocketAddr,
    /// The socket URL (`ws://host/ws/{company}/{agent}?token=...`).
    pub(crate) url: &'a str,
    /// `X-API-Key`.
    pub(crate) api_key: &'a str,
    /// Local address to connect from.
    pub(crate) source: IpAddr,
}

/// Why an attempt failed, and whether to wait before the next.
#[derive(Debug)]
pub(crate) struct Failure {
    /// What happened.
    pub(crate) reason: String,
    /// Retry-After of a 503.
    pub(crate) retry_after: Option<Duration>,
}

/// Small buffers: a worker holds up to 15,000 sockets, and tungstenite's 128 KiB defaults
/// would cost it 2 GB of memory the machine under test also needs.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
}

/// One attempt, bounded by `timeout` up to the `ready` frame.
pub(crate) async fn attempt(target: &Target<'_>, timeout: Duration) -> Result<Socket, Failure> {
    let fail = |reason: String| Failure {
        reason,
        retry_after: None,
    };
    let run = async {
        let socket = match target.source {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .map_err(|e| fail(format!("socket: {e}")))?;
        socket
            .bind(SocketAddr::new(target.source, 0))
            .map_err(|e| fail(format!("bind {}: {e}", target.source)))?;
        let tcp = socket
            .connect(target.edge)
            .await
            .map_err(|e| fail(format!("connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let mut request = target
            .url
            .into_client_request()
            .map_err(|e| fail(format!("url: {e}")))?;
        let headers = request.headers_mut();
        headers.insert(
            "X-API-Key",
            HeaderValue::from_str(target.api_key).map_err(|e| fail(format!("api key: {e}")))?,
        );
        headers.insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("json.v1"),
        );
        let (mut ws, _) =
            match tokio_tungstenite::client_async_with_config(request, tcp, Some(client_config()))
                .await
            {
                Ok(ok) => ok,
                Err(WsError::Http(response)) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.clamp(1, 2)));
                    return Err(Failure {
                        reason: format!("http {status}"),
                        // 503: full, draining or coordinator down; 429: the edge's per-address
                        // budget. Both say when to come back.
                        retry_after: if status == 503 || status == 429 {
                            retry_after.or(Some(Duration::from_secs(1)))
                        } else {
                            None
                        },
                    });
                }
                Err(e) => return Err(fail(format!("handshake: {e}"))),
            };
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.as_str().contains("\"ready\"") => Ok(ws),
            Some(Ok(Message::Close(frame))) => Err(fail(format!(
                "closed before ready: {}",
                frame.map_or(1005, |f| u16::from(f.code))
            ))),
            Some(Ok(other)) => Err(fail(format!("expected ready, got {other}"))),
            Some(Err(e)) => Err(fail(format!("read: {e}"))),
            None => Err(fail("closed before ready".to_owned())),
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| Err(fail(format!("no ready within {timeout:?}"))))
}

/// [`attempt`] up to `1 + retries` times; the socket and the retries it took, or the last
/// failure.
pub(crate) async fn open(
    target: &Target<'_>,
    timeout: Duration,
    retries: u32,
) -> (Result<Socket, String>, u32) {
    let mut tries = 0;
    loop {
        match attempt(target, timeout).await {
            Ok(ws) => return (Ok(ws), tries),
            Err(failure) if tries >= retries => return (Err(failure.reason), tries),
            Err(failure) => {
                tries += 1;
                let pause = failure
                    .retry_after
                    .unwrap_or(Duration::from_millis(100 * u64::from(tries)));
                tokio::time::sleep(pause).await;
            }
        }
    }
}
