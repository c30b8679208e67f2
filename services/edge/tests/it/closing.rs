//! The WebSocket closing handshake, seen from a real client (tokio-tungstenite) that records
//! the close frame it got and whether the connection then ended cleanly: what a browser
//! reports as `code` and `wasClean`. A client's `close(1000)` is answered with 1000, and every
//! close the server starts (4402, 1001, 4008, 4429, 1011, 1009) arrives as a close frame with
//! its code before the TCP connection ends (cleanly, except 1009: see its test).

use crate::support::*;
use futures_util::{SinkExt, StreamExt};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// How a socket ended, as its client saw it.
#[derive(Debug)]
pub struct Ending {
    /// Text frames received before the close frame.
    pub frames: Vec<String>,
    /// The close frame's code and reason, if a close frame arrived.
    pub close: Option<(u16, String)>,
    /// When the close frame arrived (tokio's clock, so paused-time tests can read it).
    pub close_at: Option<tokio::time::Instant>,
    /// A close frame arrived and the connection then ended without error (`wasClean`).
    pub clean: bool,
}

impl Ending {
    /// The close code, if a close frame arrived.
    pub fn code(&self) -> Option<u16> {
        self.close.as_ref().map(|(code, _)| *code)
    }
}

/// Reads until the connection ends (within `within`), recording the close frame.
pub async fn read_to_end<S>(ws: &mut WebSocketStream<S>, within: Duration) -> Ending
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut frames = Vec::new();
    let mut close = None;
    let mut close_at = None;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| {
                panic!("the connection did not end within {within:?}; close {close:?}, frames {frames:?}")
            });
        match next {
            Some(Ok(Message::Text(text))) if close.is_none() => frames.push(text.to_string()),
            Some(Ok(Message::Close(frame))) if close.is_none() => {
                close_at = Some(tokio::time::Instant::now());
                close = Some(
                    frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new())),
                );
            }
            Some(Ok(_)) => {}
            // tungstenite ends the stream once the closing handshake is complete.
            None => {
                let clean = close.is_some();
                return Ending {
                    frames,
                    close,
                    close_at,
                    clean,
                };
            }
            Some(Err(error)) => {
                println!("connection ended with an error: {error}");
                return Ending {
                    frames,
                    close,
                    close_at,
                    clean: false,
                };
            }
        }
    }
}

#[tokio::test]
async fn a_client_close_is_answered_with_its_code_and_ends_cleanly() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-client-close", |_| {}).await;
    for (user_id, code) in [("u1", CloseCode::Normal), ("u2", CloseCode::Library(4000))] {
        let mut client = user(edge.http, "c1", "a1", user_id).await;
        client
            .ws()
            .close(Some(CloseFrame {
                code,
                reason: "bye".into(),
            }))
            .await
            .unwrap();
        let ending = read_to_end(client.ws(), WAIT).await;
        assert_eq!(ending.code(), Some(u16::from(code)), "{ending:?}");
        assert!(ending.clean, "{ending:?}");
    }
    // The sessions were released like after any other disconnect.
    eventually("sessions released", || async {
        coord.holder("c1", "a1", "u1").await.is_none()
            && coord.holder("c1", "a1", "u2").await.is_none()
    })
    .await;
}

#[tokio::test]
async fn a_takeover_closes_the_old_socket_with_4402_cleanly() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-close-4402", |_| {}).await;
    let mut old = user(edge.http, "c1", "a1", "u1").await;
    let _new = user(edge.http, "c1", "a1", "u1").await;
    let ending = read_to_end(old.ws(), WAIT).await;
    assert_eq!(ending.code(), Some(4402), "{ending:?}");
    assert!(ending.clean, "{ending:?}");
    assert!(ending.frames.iter().any(|f| f.contains("SessionConflict")));
}

#[tokio::test]
async fn a_shutdown_closes_sockets_with_1001_cleanly() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-close-1001", |c| {
        c.drain_spread = Duration::ZERO;
    })
    .await;
    let mut client = user(edge.http, "c1", "a1", "u1").await;
    edge.begin_shutdown();
    let ending = read_to_end(client.ws(), WAIT).await;
    assert_eq!(ending.code(), Some(1001), "{ending:?}");
    assert!(ending.clean, "{ending:?}");
    edge.shutdown().await;
}

#[tokio::test]
async fn a_rate_limit_close_4429_ends_cleanly_and_a_size_close_1009_arrives() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-close-4429", |c| {
        c.limits.rate_per_second = 1;
        c.limits.rate_burst = 2;
        c.limits.rate_close_after = 3;
        c.limits.max_message_size = 1024;
    })
    .await;
    let mut flooder = user(edge.http, "c1", "a1", "flooder").await;
    for _ in 0..5 {
        flooder.send_text(r#"{"type":"ready"}"#).await;
    }
    let ending = read_to_end(flooder.ws(), WAIT).await;
    assert_eq!(ending.code(), Some(4429), "{ending:?}");
    assert!(ending.clean, "{ending:?}");

    let mut big = user(edge.http, "c1", "a1", "big").await;
    big.send_text(&"x".repeat(900)).await;
    assert!(
        big.next_text().await.contains("BadRequest"),
        "a frame under the limit is read"
    );
    big.send_text(&"x".repeat(4096)).await;
    let ending = read_to_end(big.ws(), WAIT).await;
    // The close frame arrives. The connection then ends with a reset rather than cleanly:
    // the rest of the oversized frame is never read (reading it is what the limit prevents),
    // and a socket closed with unread input is reset by the kernel.
    assert_eq!(ending.code(), Some(1009), "{ending:?}");
}

#[tokio::test]
async fn a_slow_consumer_close_4008_ends_cleanly() {
    use daisi_edge::config::SlowConsumerPolicy;
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-close-4008", |c| {
        c.sockets.send_queue = 4;
        c.sockets.slow_consumer = SlowConsumerPolicy::Close;
    })
    .await;
    let mut slow = user(edge.http, "c1", "a1", "slow").await; // does not read until the end
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(64 * 1024));
    let mut seq = 0;
    // Until the queue overflows: the socket is then closing and no longer reached.
    loop {
        seq += 1;
        assert!(seq < 2_000, "the send queue never overflowed");
        let results = edge.deliver(vec![agent_users_event(seq, &big)]).await;
        if results[0].sockets_reached == 0 {
            break;
        }
    }
    let ending = read_to_end(slow.ws(), Duration::from_secs(30)).await;
    assert_eq!(ending.code(), Some(4008), "{:?}", ending.close);
    assert!(ending.clean, "{:?}", ending.close);
}

#[tokio::test]
async fn a_silent_client_gets_1011_pong_timeout_as_a_close_frame() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-close-1011", |c| {
        c.ping_interval = Duration::from_millis(100);
        c.pong_wait = Duration::from_millis(400);
    })
    .await;
    let (mut ws, mute) = muted_user(edge.http, "c1", "a1", "silent").await;
    mute.store(true, Ordering::Relaxed);
    let ending = read_to_end(&mut ws, WAIT).await;
    assert_eq!(
        ending.close,
        Some((1011, "Pong timeout".to_owned())),
        "{ending:?}"
    );
    // The client's own close reply is lost with its other writes; the server still ends the
    // connection after the close frame instead of holding it.
    assert!(ending.clean, "{ending:?}");
}

/// A client whose writes can be silenced: once muted, everything it sends (pongs, its close
/// reply) is lost on the way, as on a path that died in one direction.
pub struct Mutable {
    tcp: TcpStream,
    muted: Arc<AtomicBool>,
}

impl AsyncRead for Mutable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Mutable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.muted.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.muted.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.muted.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// A user socket over a [`Mutable`] stream, `ready` consumed; returns the mute switch.
pub async fn muted_user(
    http: std::net::SocketAddr,
    company: &str,
    agent: &str,
    user_id: &str,
) -> (WebSocketStream<Mutable>, Arc<AtomicBool>) {
    let token = user_token(company, agent, user_id);
    let mut request = format!("ws://{http}/ws/{company}/{agent}?token={}", enc(&token))
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("sec-websocket-protocol", "json.v1".parse().unwrap());
    headers.insert("x-api-key", API_KEY.parse().unwrap());
    let muted = Arc::new(AtomicBool::new(false));
    let stream = Mutable {
        tcp: TcpStream::connect(http).await.unwrap(),
        muted: muted.clone(),
    };
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let ready = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("ready in time");
    assert!(
        matches!(&ready, Some(Ok(Message::Text(t))) if t.as_str() == r#"{"type":"ready"}"#),
        "{ready:?}"
    );
    (ws, muted)
}

/// A message that never completes (a first fragment, then empty continuations) would never be
/// charged to the rate limit: past the fragment bound the socket is closed with 1009, as for a
/// message too big.
#[tokio::test]
async fn a_message_in_endless_fragments_closes_1009() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-close-fragments", |_| {}).await;
    let mut client = user(edge.http, "c1", "a1", "fragments").await;
    let first = Frame::message(b"{".to_vec(), OpCode::Data(Data::Text), false);
    client
        .ws()
        .send(Message::Frame(first))
        .await
        .expect("first");
    let bound = daisi_edge::ws::in_frames::MAX_FRAGMENTS as usize;
    for _ in 0..bound + 10 {
        let empty = Frame::message(Vec::new(), OpCode::Data(Data::Continue), false);
        if client.ws().send(Message::Frame(empty)).await.is_err() {
            break;
        }
    }
    let ending = read_to_end(client.ws(), WAIT).await;
    assert_eq!(ending.code(), Some(1009), "{ending:?}");
}
