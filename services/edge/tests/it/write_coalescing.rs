//! The write coalescing window (`DAISI_EDGE_WRITE_COALESCE`) over real sockets, in paused time:
//! a lone event leaves at once, events arriving within the window after a write leave together
//! in one write (complete, in order, each its own text frame), and pings and close requests do
//! not wait for the window. With the window off (the default) the other tests run unchanged.
//!
//! Paused time makes "not delayed" exact without a wall-clock bound: had a frame waited for
//! the window, the clock would have jumped to the window's end before it arrived.

use crate::closing::read_to_end;
use crate::support::*;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Far longer than anything else the test waits for, so "arrived before the window's end"
/// cannot happen by chance (the setting itself is capped at 1 s; the loop takes any length).
const WINDOW: Duration = Duration::from_secs(300);

/// An event for every user socket of c1/a1.
fn chat(seq: u64) -> daisi_proto::edge::v1::Event {
    agent_users_event(seq, &format!(r#"{{"n":{seq}}}"#))
}

/// An edge with a window of [`WINDOW`] and pings far apart, and one json.v1 user socket on it
/// whose `ready` frame's window has passed (time is paused from here on).
async fn coalescing_edge(coord: &Coord, pod: &str) -> (TestEdge, Client, Metronome) {
    coalescing_edge_with(coord, pod, |_| {}, false).await
}

/// [`coalescing_edge`] with `tweak` applied to the edge's config and, with `v2`, a json.v2
/// socket.
async fn coalescing_edge_with(
    coord: &Coord,
    pod: &str,
    tweak: impl FnOnce(&mut daisi_edge::Config),
    v2: bool,
) -> (TestEdge, Client, Metronome) {
    let edge = TestEdge::start(&coord.url, pod, |c| {
        c.sockets.write_coalesce = WINDOW;
        c.ping_interval = Duration::from_secs(3600);
        c.pong_wait = Duration::from_secs(7200);
        tweak(c);
    })
    .await;
    // Its `ready` frame was a write: a window starts there.
    let client = if v2 {
        v2_user(edge.http).await
    } else {
        user(edge.http, "c1", "a1", "u1").await
    };
    tokio::time::pause();
    let metronome = Metronome::start();
    tokio::time::sleep(WINDOW + Duration::from_secs(1)).await;
    (edge, client, metronome)
}

/// Opens a json.v2 socket of c1/a1/u1 and consumes `ready`.
async fn v2_user(http: std::net::SocketAddr) -> Client {
    let token = user_token("c1", "a1", "u1");
    let path = format!("/ws/c1/a1?token={}", enc(&token));
    let mut client = open_as(http, &path, Some(API_KEY), "json.v2")
        .await
        .expect("v2 socket opens");
    assert_eq!(client.protocol.as_deref(), Some("json.v2"));
    assert_eq!(client.next_text().await, r#"{"type":"ready"}"#);
    client
}

/// Keeps paused time moving in steps of at most a second. The runtime auto-advances to the next
/// timer whenever it idles, even with loopback bytes in flight; without a short timer that
/// timer could be the window's end itself, and frames would leave early by accident.
struct Metronome(tokio::task::JoinHandle<()>);

impl Metronome {
    fn start() -> Self {
        Self(tokio::spawn(async {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
            }
        }))
    }
}

impl Drop for Metronome {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Socket writes and text frames written so far.
async fn writes(edge: &TestEdge) -> (u64, u64) {
    let text = edge.metrics().await;
    (
        metric(&text, "daisi_edge_socket_writes_total", &[]),
        metric(&text, "daisi_edge_frames_out_total", &[r#"kind="text""#]),
    )
}

async fn deliver_one(edge: &TestEdge, seq: u64) {
    let results = edge.deliver(vec![chat(seq)]).await;
    assert_eq!(results[0].sockets_reached, 1, "event {seq}");
}

/// Delivers event 1 and reads it: a lone event, whose write opens a window.
async fn lone_event(edge: &TestEdge, client: &mut Client) {
    deliver_one(edge, 1).await;
    let lone = client.maybe_text(WINDOW * 2).await.expect("the lone event");
    assert!(lone.contains(r#""n":1"#), "{lone}");
}

#[tokio::test]
async fn events_within_the_window_leave_together_and_a_lone_one_at_once() {
    let coord = Coord::start().await;
    let (edge, mut client, _metronome) = coalescing_edge(&coord, "edge-coalesce").await;
    let (writes_before, frames_before) = writes(&edge).await;

    let sent = Instant::now();
    lone_event(&edge, &mut client).await;
    let lone = sent.elapsed();
    assert!(lone < WINDOW / 10, "a lone event waited {lone:?}");

    // Four more, one delivery call each, inside the window the first write opened.
    for seq in 2..=5 {
        deliver_one(&edge, seq).await;
    }
    assert!(sent.elapsed() < WINDOW / 10, "delivered within the window");
    let mut rest = Vec::new();
    for _ in 2..=5 {
        rest.push(client.maybe_text(WINDOW * 2).await.expect("every event"));
    }
    let waited = sent.elapsed();
    assert!(
        waited >= WINDOW,
        "they waited for the window the first write opened: {waited:?}"
    );
    assert!(waited < WINDOW * 2, "and no longer: {waited:?}");
    for (frame, seq) in rest.iter().zip(2..) {
        assert!(
            frame.contains(&format!(r#""n":{seq}"#)),
            "in order: {rest:?}"
        );
    }

    let (writes_after, frames_after) = writes(&edge).await;
    assert_eq!(frames_after - frames_before, 5, "five text frames");
    assert_eq!(
        writes_after - writes_before,
        2,
        "the lone event, then the four that waited, in one write"
    );
}

#[tokio::test]
async fn pings_and_a_close_request_do_not_wait_for_the_window() {
    let coord = Coord::start().await;
    let (edge, mut client, _metronome) = coalescing_edge(&coord, "edge-coalesce-close").await;
    let sent = Instant::now();
    lone_event(&edge, &mut client).await;
    // This one waits for the window...
    deliver_one(&edge, 2).await;

    // ...while the socket answers a ping at once.
    client
        .ws()
        .send(Message::Ping("still there".into()))
        .await
        .expect("ping");
    let pong = tokio::time::timeout(WINDOW * 2, client.ws().next())
        .await
        .expect("a frame")
        .expect("open")
        .expect("frame");
    assert!(
        matches!(&pong, Message::Pong(p) if p.as_ref() == b"still there"),
        "the pong comes before the waiting event: {pong:?}"
    );
    assert!(
        sent.elapsed() < WINDOW / 10,
        "pong after {:?}",
        sent.elapsed()
    );

    // A takeover asks the socket to close: it closes now, and the waiting event is dropped
    // (a close request overrides queued frames, window or not).
    let _new = user(edge.http, "c1", "a1", "u1").await;
    let ending = read_to_end(client.ws(), WINDOW * 2).await;
    assert_eq!(ending.code(), Some(4402), "{ending:?}");
    assert!(ending.clean, "{ending:?}");
    let closed_after = ending.close_at.expect("close frame") - sent;
    assert!(closed_after < WINDOW / 10, "closed after {closed_after:?}");
    assert!(
        ending.frames.iter().all(|f| !f.contains(r#""n":2"#)),
        "{ending:?}"
    );
}

#[tokio::test]
async fn a_gap_from_the_queue_overflowing_does_not_wait_for_the_window() {
    let coord = Coord::start().await;
    let (edge, mut client, _metronome) = coalescing_edge_with(
        &coord,
        "edge-coalesce-gap",
        |c| c.sockets.send_queue = 4,
        true,
    )
    .await;
    let sent = Instant::now();
    lone_event(&edge, &mut client).await;

    // Within the window the queue fills (2 to 5) and waits; 6 pushes 2 out of it (drop-oldest),
    // a gap the socket announces at once rather than at the window's end.
    for seq in 2..=6 {
        edge.deliver(vec![chat(seq)]).await;
    }
    let resync = client.maybe_text(WINDOW * 2).await.expect("a resync");
    assert!(resync.contains(r#""type":"resync""#), "{resync}");
    let waited = sent.elapsed();
    assert!(waited < WINDOW / 10, "the resync waited {waited:?}");
    // The newer events follow it, in order.
    for seq in 3..=6 {
        let frame = client
            .maybe_text(WINDOW * 2)
            .await
            .expect("every newer event");
        assert!(frame.contains(&format!(r#""n":{seq}"#)), "{seq}: {frame}");
    }
    assert!(sent.elapsed() < WINDOW / 10, "{:?}", sent.elapsed());
}

#[tokio::test]
async fn a_burst_longer_than_a_batch_leaves_in_batches_without_waiting() {
    let coord = Coord::start().await;
    let (edge, mut client, _metronome) = coalescing_edge_with(
        &coord,
        "edge-coalesce-burst",
        |c| c.sockets.send_queue = 1024,
        false,
    )
    .await;
    let sent = Instant::now();
    lone_event(&edge, &mut client).await;
    let (writes_before, frames_before) = writes(&edge).await;
    // 200 events in one delivery: they wait for the window the first write opened, then leave
    // a batch (64 frames) per write, one batch right after the other.
    let burst: Vec<_> = (2..=201).map(chat).collect();
    let results = edge.deliver(burst).await;
    assert!(results.iter().all(|r| r.sockets_reached == 1));
    for seq in 2..=201 {
        let frame = client.maybe_text(WINDOW * 2).await.expect("every event");
        assert!(frame.contains(&format!(r#""n":{seq}"#)), "{seq}: {frame}");
    }
    let waited = sent.elapsed();
    assert!(
        waited >= WINDOW,
        "the burst waited for the window: {waited:?}"
    );
    assert!(
        waited < WINDOW * 2,
        "one window, not one per batch: {waited:?}"
    );
    let (writes_after, frames_after) = writes(&edge).await;
    assert_eq!(frames_after - frames_before, 200);
    assert_eq!(writes_after - writes_before, 4, "64 + 64 + 64 + 8 frames");
}

#[tokio::test]
async fn with_the_window_off_every_wake_up_writes() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-coalesce-off", |_| {}).await;
    let mut client = user(edge.http, "c1", "a1", "u1").await;
    let (writes_before, frames_before) = writes(&edge).await;
    for seq in 1..=3 {
        deliver_one(&edge, seq).await;
        assert!(client.next_text().await.contains(&format!(r#""n":{seq}"#)));
    }
    let (writes_after, frames_after) = writes(&edge).await;
    assert_eq!(frames_after - frames_before, 3);
    assert_eq!(writes_after - writes_before, 3, "one write per event read");
}
