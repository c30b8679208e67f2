//! The client connection after the upgrade, and how text frames are written to it.
//!
//! - A plain-TCP connection is taken back out of hyper's upgrade wrapper: the socket holds the
//!   `TcpStream` itself, not a boxed stream still wrapped in the door's activity tracking
//!   (which only matters before the upgrade). Behind TLS the upgraded stream is kept as is.
//! - Text frames (events, replies, replays) are written straight to the connection: each
//!   frame's header and its shared payload go out in one vectored write, after tungstenite's
//!   own buffer was flushed. tungstenite formats every frame it sends into a per-socket write
//!   buffer that grows to the largest frame and never shrinks (PITFALLS.md); here that buffer
//!   only carries control frames (pings, pongs, closes: at most 127 bytes of payload each), so
//!   a socket that once received a large event keeps no buffer of that size, and a fan-out
//!   copies no payload per socket.
//! - Reads from the client stop at its frame ends ([`super::in_frames`]), so after a large
//!   client message the socket can start a fresh WebSocket over the same connection and drop
//!   tungstenite's read buffer, which kept the message's size ([`shed_read_buffer`]).

use super::in_frames::InFrames;
use crate::http::door::Activity;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// A client WebSocket as the socket task owns it.
pub type Socket = WebSocketStream<Io>;

/// Frames per vectored write (two slices each, well under the kernel's `IOV_MAX` of 1024).
const FRAMES_PER_WRITE: usize = 64;

/// The connection under a socket, and where its reads are in the client's frames.
#[derive(Debug)]
pub struct Io {
    conn: Conn,
    frames: InFrames,
}

#[derive(Debug)]
enum Conn {
    /// Plain TCP, unwrapped from the upgrade.
    Tcp(TcpStream),
    /// Anything else (TLS): the upgraded stream as hyper hands it over.
    Upgraded(TokioIo<Upgraded>),
    /// Taken away while the socket is rebuilt; never read or written.
    Detached,
}

impl Io {
    /// A plain TCP connection at a frame start.
    pub fn tcp(tcp: TcpStream) -> Self {
        Self {
            conn: Conn::Tcp(tcp),
            frames: InFrames::default(),
        }
    }
}

/// The upgraded connection as a WebSocket (server role), with `config`.
pub async fn from_upgraded(upgraded: Upgraded, config: WebSocketConfig) -> Socket {
    match upgraded.downcast::<TokioIo<Activity<TcpStream>>>() {
        Ok(parts) => {
            let conn = Conn::Tcp(parts.io.into_inner().into_inner());
            if parts.read_buf.is_empty() {
                let io = Io {
                    conn,
                    frames: InFrames::default(),
                };
                WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await
            } else {
                // Bytes the client sent right behind its request (its first frames).
                let part = parts.read_buf.to_vec();
                let io = Io {
                    conn,
                    frames: InFrames::after_part(&part),
                };
                WebSocketStream::from_partially_read(io, part, Role::Server, Some(config)).await
            }
        }
        Err(upgraded) => {
            let io = Io {
                conn: Conn::Upgraded(TokioIo::new(upgraded)),
                frames: InFrames::default(),
            };
            WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await
        }
    }
}

/// After a client message larger than the read buffer: if tungstenite holds no unread bytes
/// (every byte read so far ends at a frame end), flushes what tungstenite queued and puts a
/// fresh WebSocket over the same connection, dropping tungstenite's read buffer, which grew to
/// the message's frame and would stay that size. Call it right after a message was read (a
/// data message: the WebSocket is open and between messages). Returns whether it did;
/// otherwise the socket is left as it was. Not bounded here: callers put their write timeout
/// around it.
pub async fn shed_read_buffer(socket: &mut Socket) -> io::Result<bool> {
    use futures_util::SinkExt;
    if !socket.get_ref().frames.at_frame_end() {
        return Ok(false);
    }
    // A pong tungstenite queued leaves now: the new WebSocket starts with nothing to send.
    socket.flush().await.map_err(io::Error::other)?;
    let config = *socket.get_config();
    let detached = Io {
        conn: Conn::Detached,
        frames: InFrames::default(),
    };
    let placeholder = WebSocketStream::from_raw_socket(detached, Role::Server, Some(config)).await;
    let old = std::mem::replace(socket, placeholder);
    let io = old.into_inner();
    *socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    Ok(true)
}

/// Writes `frames` as text frames, in order, after whatever tungstenite still holds, and
/// flushes. Not bounded here: callers put their write timeout around it (a timed-out write
/// leaves a frame half sent, so the socket must then be dropped, as every caller does).
pub async fn write_text(socket: &mut Socket, frames: &[Utf8Bytes]) -> io::Result<()> {
    use futures_util::SinkExt;
    if frames.is_empty() {
        return Ok(());
    }
    // A pong or ping tungstenite queued goes first, and whole: the connection is then at a
    // frame boundary.
    socket.flush().await.map_err(io::Error::other)?;
    let io = socket.get_mut();
    for chunk in frames.chunks(FRAMES_PER_WRITE) {
        let headers: Vec<Header> = chunk.iter().map(|f| Header::text(f.len())).collect();
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(chunk.len() * 2);
        for (header, frame) in headers.iter().zip(chunk) {
            slices.push(IoSlice::new(header.as_bytes()));
            slices.push(IoSlice::new(frame.as_bytes()));
        }
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let n = io.write_vectored(rest).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut rest, n);
        }
    }
    io.flush().await
}

/// The header of an unmasked, unfragmented server frame (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy)]
pub struct Header {
    bytes: [u8; 10],
    len: u8,
}

impl Header {
    /// The header of a text frame of `payload` bytes.
    pub fn text(payload: usize) -> Self {
        const FIN_TEXT: u8 = 0x80 | 0x1;
        let mut bytes = [0u8; 10];
        bytes[0] = FIN_TEXT;
        let len = if payload < 126 {
            // Fits the 7-bit length field.
            bytes[1] = payload as u8;
            2
        } else if let Ok(short) = u16::try_from(payload) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(payload as u64).to_be_bytes());
            10
        };
        Self { bytes, len }
    }

    /// The header's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl AsyncRead for Io {
    /// Reads at most up to the end of the client's current frame.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let limit = this.frames.limit(buf.remaining());
        let (polled, n) = {
            // Initialised (tokio-tungstenite hands over initialised buffers, so this writes
            // nothing), then read through a window that ends at the frame end.
            let mut window = ReadBuf::new(buf.initialize_unfilled_to(limit));
            let polled = match &mut this.conn {
                Conn::Tcp(io) => Pin::new(io).poll_read(cx, &mut window),
                Conn::Upgraded(io) => Pin::new(io).poll_read(cx, &mut window),
                Conn::Detached => Poll::Ready(Err(detached())),
            };
            if matches!(polled, Poll::Ready(Ok(()))) {
                this.frames.read(window.filled());
            }
            (polled, window.filled().len())
        };
        if this.frames.too_fragmented() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                TooFragmented,
            )));
        }
        buf.advance(n);
        polled
    }
}

/// A client message came in more frames than [`super::in_frames::MAX_FRAGMENTS`]; the read
/// fails with this inside an [`io::ErrorKind::InvalidData`] error.
#[derive(Debug, thiserror::Error)]
#[error("a message in more than {} frames", super::in_frames::MAX_FRAGMENTS)]
pub struct TooFragmented;

fn detached() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "socket being rebuilt")
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().conn {
            Conn::Tcp(io) => Pin::new(io).poll_write(cx, buf),
            Conn::Upgraded(io) => Pin::new(io).poll_write(cx, buf),
            Conn::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().conn {
            Conn::Tcp(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Conn::Upgraded(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Conn::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.conn {
            Conn::Tcp(io) => io.is_write_vectored(),
            Conn::Upgraded(io) => io.is_write_vectored(),
            Conn::Detached => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().conn {
            Conn::Tcp(io) => Pin::new(io).poll_flush(cx),
            Conn::Upgraded(io) => Pin::new(io).poll_flush(cx),
            Conn::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().conn {
            Conn::Tcp(io) => Pin::new(io).poll_shutdown(cx),
            Conn::Upgraded(io) => Pin::new(io).poll_shutdown(cx),
            Conn::Detached => Poll::Ready(Err(detached())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    #[test]
    fn headers_use_the_shortest_length_encoding() {
        assert_eq!(Header::text(0).as_bytes(), [0x81, 0]);
        assert_eq!(Header::text(125).as_bytes(), [0x81, 125]);
        assert_eq!(Header::text(126).as_bytes(), [0x81, 126, 0, 126]);
        assert_eq!(Header::text(65_535).as_bytes(), [0x81, 126, 0xff, 0xff]);
        assert_eq!(
            Header::text(65_536).as_bytes(),
            [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    /// What `write_text` puts on the wire is what a WebSocket client reads, at every length
    /// encoding, in order, after a control frame tungstenite queued.
    #[tokio::test]
    async fn a_client_reads_the_frames_written_directly() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let mut ws = WebSocketStream::from_raw_socket(tcp, Role::Client, None).await;
            let mut got = Vec::new();
            while got.len() < 4 {
                match ws.next().await.expect("open").expect("frame") {
                    Message::Text(text) => got.push(text.as_str().to_owned()),
                    Message::Ping(_) => got.push("ping".to_owned()),
                    other => panic!("unexpected {other:?}"),
                }
            }
            got
        });
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut socket = WebSocketStream::from_raw_socket(Io::tcp(tcp), Role::Server, None).await;
        // Queued by tungstenite, not yet flushed: must precede the frames below.
        futures_util::SinkExt::feed(&mut socket, Message::Ping(Default::default()))
            .await
            .expect("feed");
        let frames: Vec<Utf8Bytes> = [10, 300, 70_000]
            .iter()
            .map(|&n| Utf8Bytes::from("x".repeat(n)))
            .collect();
        write_text(&mut socket, &frames).await.expect("write");
        let got = client.await.expect("client");
        assert_eq!(got[0], "ping");
        let lens: Vec<usize> = got[1..].iter().map(String::len).collect();
        assert_eq!(lens, [10, 300, 70_000]);
    }

    /// Messages a client sent in one burst behind a large one are all read after the socket
    /// shed its read buffer; bytes handed over with the upgrade keep it from shedding until a
    /// read went past them.
    #[tokio::test]
    async fn shedding_the_read_buffer_loses_no_frame() {
        use futures_util::SinkExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let large = "L".repeat(100_000);
        let sent = vec![large.clone(), "a".into(), large.clone(), "b".into()];
        let to_send = sent.clone();
        let client = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let mut ws = WebSocketStream::from_raw_socket(tcp, Role::Client, None).await;
            for text in to_send {
                ws.feed(Message::text(text)).await.expect("feed");
            }
            // One flush: the frames leave together.
            ws.flush().await.expect("flush");
            ws
        });
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut socket = WebSocketStream::from_raw_socket(Io::tcp(tcp), Role::Server, None).await;
        let mut got = Vec::new();
        let mut shed = 0;
        while got.len() < sent.len() {
            let next = tokio::time::timeout(std::time::Duration::from_secs(5), socket.next());
            match next
                .await
                .expect("every message read")
                .expect("open")
                .expect("message")
            {
                Message::Text(text) => got.push(text.as_str().to_owned()),
                other => panic!("unexpected {other:?}"),
            }
            if shed_read_buffer(&mut socket).await.expect("shed") {
                shed += 1;
            }
        }
        assert_eq!(got, sent);
        assert_eq!(
            shed,
            sent.len(),
            "every message ended at the end of what was read"
        );
        let _client = client.await.expect("client");

        // A socket created with bytes already handed over does not shed before reading.
        let mut fresh = InFrames::after_part(&[0x81, 0x80, 0, 0, 0, 0]);
        assert!(!fresh.at_frame_end());
        fresh.read(&[]);
        assert!(fresh.at_frame_end());
    }
}
