//! What a socket keeps in memory, counted by a counting global allocator. Its own test binary:
//! the allocator counts every allocation of the process, so nothing else runs beside it.
#![allow(clippy::unwrap_used, clippy::print_stdout, dead_code)]

#[path = "../it/support.rs"]
mod support;

use daisi_proto::edge::v1::{DeliveryScope, EventOutcome};
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
        let e = event(
            seq,
            "c1",
            "a1",
            DeliveryScope::AgentUsers,
            "",
            "chat",
            payload,
        );
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
