//! What a socket keeps in memory, counted by a counting global allocator. Its own test binary:
//! the allocator counts every allocation of the process, so nothing else runs beside it.
#![allow(clippy::unwrap_used, clippy::print_stdout, dead_code)]

#[path = "../it/support.rs"]
mod support;

use daisi_proto::edge::v1::EventOutcome;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use std::alloc::System;
use support::*;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::MaybeTlsStream;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated and not yet freed, process-wide (a realloc counts its growth as allocated
/// and its shrinking as freed).
fn live_bytes() -> i128 {
    let stats = GLOBAL.stats();
    stats.bytes_allocated as i128 - stats.bytes_deallocated as i128
}

/// Reads frames off the raw connection, without a WebSocket library's buffer, until a text
/// frame of `len` payload bytes went by; control frames (a ping) are skipped. The payload is
/// read through `scratch` and dropped, so the client side keeps nothing of it.
async fn skip_until_text_of(tcp: &mut tokio::net::TcpStream, len: usize, scratch: &mut [u8]) {
    loop {
        let mut head = [0u8; 2];
        tcp.read_exact(&mut head).await.unwrap();
        assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
        let payload = match head[1] & 0x7f {
            126 => usize::from(tcp.read_u16().await.unwrap()),
            127 => usize::try_from(tcp.read_u64().await.unwrap()).unwrap(),
            n => usize::from(n),
        };
        let mut left = payload;
        while left > 0 {
            let n = left.min(scratch.len());
            tcp.read_exact(&mut scratch[..n]).await.unwrap();
            left -= n;
        }
        if head[0] & 0x0f == 0x1 && payload == len {
            return;
        }
    }
}

/// A socket that once received a large event keeps nothing of its size: tungstenite's write
/// buffer would hold the whole frame for the rest of the socket's life (it drains, it never
/// shrinks); the edge writes text frames straight to the connection instead.
#[tokio::test]
async fn a_large_event_leaves_no_buffer_of_its_size_behind() {
    const LARGE: usize = 2 << 20;
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-memory", |_| {}).await;
    let mut client = user(edge.http, "c1", "a1", "u1").await;
    let small = r#"{"k":1}"#;
    let large = format!(r#"{{"blob":"{}"}}"#, "x".repeat(LARGE));
    // The event frame: the payload object with `event_type` added, inside the envelope.
    let frame_len = |payload: &str| {
        let object = &payload[..payload.len() - 1];
        format!(r#"{{"type":"event","payload":{object},"event_type":"chat"}}}}"#).len()
    };
    let mut scratch = vec![0u8; 64 << 10];
    let MaybeTlsStream::Plain(tcp) = client.ws().get_mut() else {
        panic!("plain TCP expected");
    };
    let deliver = |seq: u64, payload: &str| {
        let e = agent_users_event(seq, payload);
        edge.deliver(vec![e])
    };

    // Warm-up: one small event through the whole path, so what is made once exists.
    let r = deliver(1, small).await;
    assert_eq!(r[0].outcome, EventOutcome::Delivered as i32);
    skip_until_text_of(tcp, frame_len(small), &mut scratch).await;

    // Everything the test itself holds exists before the first count and after the second.
    let (large_len, small_len) = (frame_len(&large), frame_len(small));
    let before = live_bytes();
    let r = deliver(2, &large).await;
    assert_eq!(r[0].outcome, EventOutcome::Delivered as i32);
    skip_until_text_of(tcp, large_len, &mut scratch).await;
    // One more small event: once it arrived, the socket's loop is past the large write.
    let r = deliver(3, small).await;
    assert_eq!(r[0].outcome, EventOutcome::Delivered as i32);
    skip_until_text_of(tcp, small_len, &mut scratch).await;
    drop(r);
    let kept = live_bytes() - before;

    println!("kept after a {LARGE}-byte event: {kept} bytes");
    assert!(
        kept < (LARGE / 8) as i128,
        "{kept} bytes still allocated after a {LARGE}-byte event went out"
    );
}

/// Writes one masked text frame (mask key zero: the payload goes out as is) straight to the
/// connection, so the client side keeps no write buffer of its size.
async fn send_raw_text(tcp: &mut tokio::net::TcpStream, payload: &[u8]) {
    use tokio::io::AsyncWriteExt;
    tcp.write_all(&raw_frame(0x1, payload)).await.unwrap();
}

/// One masked client frame of `opcode` (mask key zero).
fn raw_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut head = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => head.push(0x80 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            head.push(0x80 | 126);
            head.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            head.push(0x80 | 127);
            head.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    head.extend_from_slice(&[0; 4]);
    head.extend_from_slice(payload);
    head
}

/// The opcodes of the next `n` frames from the server (payloads read and dropped).
async fn next_opcodes(tcp: &mut tokio::net::TcpStream, n: usize) -> Vec<u8> {
    let mut opcodes = Vec::new();
    for _ in 0..n {
        let mut head = [0u8; 2];
        tcp.read_exact(&mut head).await.unwrap();
        let payload = match head[1] & 0x7f {
            126 => usize::from(tcp.read_u16().await.unwrap()),
            127 => usize::try_from(tcp.read_u64().await.unwrap()).unwrap(),
            n => usize::from(n),
        };
        let mut body = vec![0u8; payload];
        tcp.read_exact(&mut body).await.unwrap();
        opcodes.push(head[0] & 0x0f);
    }
    opcodes
}

/// A socket whose client once sent a large message keeps nothing of its size: tungstenite
/// reads a frame into one buffer reserved for the whole frame, and that buffer would stay with
/// the socket (it is reused, never shrunk).
#[tokio::test]
async fn a_large_client_message_leaves_no_buffer_of_its_size_behind() {
    const LARGE: usize = 1 << 20;
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-memory-in", |c| {
        c.limits.max_message_size = LARGE + 1024;
        // One large message and a few small ones stay far below any rate limit.
        c.limits.rate_burst = 100;
    })
    .await;
    let mut client = user(edge.http, "c1", "a1", "u1").await;
    let mut scratch = vec![0u8; 64 << 10];
    let MaybeTlsStream::Plain(tcp) = client.ws().get_mut() else {
        panic!("plain TCP expected");
    };
    // A type the edge does not handle: each message is answered by one error frame, the
    // same for the small and the large one (it names the type only).
    let small = br#"{"type":"unknown"}"#;
    let reply_len = daisi_domain::protocol::ServerMessage::Error(
        daisi_domain::protocol::parse_client_message(std::str::from_utf8(small).unwrap())
            .unwrap_err()
            .error_body(),
    )
    .to_json()
    .len();
    let large = format!(r#"{{"type":"unknown","pad":"{}"}}"#, "x".repeat(LARGE));

    // Warm-up: one small message through the whole path.
    send_raw_text(tcp, small).await;
    skip_until_text_of(tcp, reply_len, &mut scratch).await;

    let before = live_bytes();
    send_raw_text(tcp, large.as_bytes()).await;
    skip_until_text_of(tcp, reply_len, &mut scratch).await;
    // Small messages after it: the socket has read on past the large one.
    for _ in 0..3 {
        send_raw_text(tcp, small).await;
        skip_until_text_of(tcp, reply_len, &mut scratch).await;
    }
    let kept = live_bytes() - before;

    println!("kept after a {LARGE}-byte client message: {kept} bytes");
    assert!(
        kept < (LARGE / 8) as i128,
        "{kept} bytes still allocated after a {LARGE}-byte client message"
    );

    // Frames sent in one write right behind a large message (so they arrive with its end)
    // are all read and answered: the socket is rebuilt only once nothing is left unread.
    let mut burst = raw_frame(0x1, large.as_bytes());
    burst.extend_from_slice(&raw_frame(0x9, b"p"));
    burst.extend_from_slice(&raw_frame(0x1, small));
    burst.extend_from_slice(&raw_frame(0x1, large.as_bytes()));
    burst.extend_from_slice(&raw_frame(0x1, small));
    tokio::io::AsyncWriteExt::write_all(tcp, &burst)
        .await
        .unwrap();
    let replies = tokio::time::timeout(std::time::Duration::from_secs(10), next_opcodes(tcp, 5));
    let mut opcodes = replies
        .await
        .expect("every frame of the burst answered within 10 s");
    opcodes.sort_unstable();
    assert_eq!(
        opcodes,
        [0x1, 0x1, 0x1, 0x1, 0xA],
        "four replies and the pong"
    );
}
