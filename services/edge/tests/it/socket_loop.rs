//! The socket loop never waits on another service and keeps its own deadlines: a selection
//! stuck on a frozen coordinator does not stop events or pings, selections made meanwhile are
//! coalesced, a silent client is closed at `pong_wait` (paused time), and control frames draw
//! from the rate limit.

use crate::closing::{muted_user, read_to_end};
use crate::support::*;
use daisi_proto::edge::v1::DeliveryScope;
use daisi_testkit::RedisServer;
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// The real coordinator in-process over a real Redis, with a long Redis timeout so a frozen
/// Redis holds its calls instead of failing them.
struct RedisCoord {
    url: String,
    stop: daisi_runtime::CancellationToken,
}

impl RedisCoord {
    async fn start(redis: &RedisServer, redis_timeout: Duration) -> Self {
        let mut config = daisi_coordinator::Config::for_tests();
        config.store = daisi_coordinator::StoreKind::Redis;
        config.redis_url =
            daisi_coordinator::config::RedisUrl(url::Url::parse(&redis.url()).unwrap());
        config.redis_timeout = redis_timeout;
        let listeners = daisi_coordinator::Listeners::bind(&config)
            .await
            .expect("bind coordinator");
        let url = format!("http://{}", listeners.grpc.local_addr().unwrap());
        let stop = daisi_runtime::CancellationToken::new();
        tokio::spawn(daisi_coordinator::run(config, listeners, stop.clone()));
        Self { url, stop }
    }
}

impl Drop for RedisCoord {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

const PENDING: &str = "daisi_edge_chat_selections_pending";

fn chat_event(seq: u64, chat: &str) -> daisi_proto::edge::v1::Event {
    event(
        seq,
        "c1",
        "a1",
        DeliveryScope::ChatUsers,
        chat,
        "message",
        &format!(r#"{{"chat_id":"{chat}","n":{seq}}}"#),
    )
}

/// The value of the series `name` whose labels include `labels` (0 when absent). Series
/// carry the service's constant label too, so labels are matched, not the whole line.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let matches = series_name == name
                && labels.iter().all(|(k, v)| {
                    series_labels
                        .split(',')
                        .any(|pair| pair == format!("{k}=\"{v}\""))
                });
            matches.then(|| value.parse().ok()).flatten()
        })
        .next()
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selection_stuck_on_a_frozen_coordinator_does_not_stop_events_or_pings() {
    let redis = RedisServer::start().expect("redis-server");
    let coord = RedisCoord::start(&redis, Duration::from_secs(20)).await;
    let edge = TestEdge::start(&coord.url, "edge-frozen", |c| {
        c.coordinator_timeout = Duration::from_secs(20);
        c.ping_interval = Duration::from_millis(200);
        c.pong_wait = Duration::from_secs(60);
    })
    .await;
    let mut client = user(edge.http, "c1", "a1", "u1").await;

    // Freeze the coordinator's Redis: the coordinator accepts the call and hangs in it.
    redis.pause().expect("SIGSTOP redis");
    client
        .send_text(r#"{"type":"select_chat","payload":{"chat_id":"A"}}"#)
        .await;
    eventually("the selection of A is in flight", || async {
        metric(&edge.metrics().await, PENDING, &[]) == 1.0
    })
    .await;
    // Two more while A hangs: B is replaced by C before it is ever sent.
    client
        .send_text(r#"{"type":"select_chat","payload":{"chat_id":"B"}}"#)
        .await;
    client
        .send_text(r#"{"type":"select_chat","payload":{"chat_id":"C"}}"#)
        .await;

    // Meanwhile the socket gets its agent's events, answers the client's ping and keeps
    // pinging, each well inside the coordinator's 20 s deadline the selection waits on.
    let results = edge.deliver(vec![agent_users_event(1, r#"{"n":1}"#)]).await;
    assert_eq!(results[0].sockets_reached, 1);
    let started = tokio::time::Instant::now();
    let quick = Duration::from_secs(3);
    let text = tokio::time::timeout(quick, client.next_text())
        .await
        .expect("the event arrives while the selection hangs");
    assert!(text.contains(r#""n":1"#), "{text}");
    client
        .ws()
        .send(Message::Ping("are you there".into()))
        .await
        .unwrap();
    let mut server_pings = 0;
    loop {
        let frame = tokio::time::timeout_at(started + quick, client.ws().next())
            .await
            .expect("the pong arrives while the selection hangs")
            .expect("socket open")
            .expect("frame");
        match frame {
            Message::Pong(payload) if payload.as_ref() == b"are you there" => break,
            Message::Ping(_) => server_pings += 1,
            other => panic!("unexpected frame {other:?}"),
        }
    }
    // At 200 ms intervals the server pinged at least once more while we waited.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(Some(Ok(frame))) =
        tokio::time::timeout(Duration::from_millis(50), client.ws().next()).await
    {
        if matches!(frame, Message::Ping(_)) {
            server_pings += 1;
        }
    }
    assert!(server_pings >= 1, "the server kept pinging");
    let metrics = edge.metrics().await;
    assert_eq!(
        metric(&metrics, PENDING, &[]),
        1.0,
        "all of that happened while the selection was stuck"
    );

    // Thaw: A completes, then only the latest request (C) is sent.
    redis.resume().expect("SIGCONT redis");
    // Sequence 0: not subject to the edge's duplicate filter, so the probe can repeat.
    eventually("chat C selected", || async {
        edge.deliver(vec![chat_event(0, "C")]).await[0].sockets_reached == 1
    })
    .await;
    let results = edge
        .deliver(vec![chat_event(3, "A"), chat_event(4, "B")])
        .await;
    assert_eq!(results[0].sockets_reached, 0, "no longer A");
    assert_eq!(results[1].sockets_reached, 0, "B was never selected");
    let metrics = edge.metrics().await;
    let selections = |outcome: &str| {
        metric(
            &metrics,
            "daisi_edge_chat_selections_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(selections("selected"), 2.0, "A and C: {metrics}");
    assert_eq!(selections("coalesced"), 1.0, "B: {metrics}");
    assert_eq!(metric(&metrics, PENDING, &[]), 0.0);
}

#[tokio::test]
async fn a_silent_client_is_closed_at_its_pong_deadline_in_paused_time() {
    const PING_INTERVAL: Duration = Duration::from_secs(20);
    const PONG_WAIT: Duration = Duration::from_secs(30);
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-pong-deadline", |c| {
        c.ping_interval = PING_INTERVAL;
        c.pong_wait = PONG_WAIT;
    })
    .await;
    // The edge's first socket: its pings are not offset, so they fall at 20 s and 40 s. A
    // check made only on ping ticks would close it at 40 s.
    let (mut ws, mute) = muted_user(edge.http, "c1", "a1", "silent").await;
    tokio::time::pause();
    mute.store(true, Ordering::Relaxed);
    let silent_since = tokio::time::Instant::now();
    let ending = read_to_end(&mut ws, Duration::from_secs(120)).await;
    let waited = ending.close_at.expect("a close frame") - silent_since;
    assert_eq!(
        ending.close,
        Some((1011, "Pong timeout".to_owned())),
        "{ending:?}"
    );
    // The server last heard from the client when the socket opened, a moment before the
    // clock was paused; the close frame arrived at the deadline after that.
    assert!(
        waited <= PONG_WAIT + Duration::from_secs(1),
        "closed {waited:?} after the client fell silent (pong wait {PONG_WAIT:?})"
    );
    assert!(
        waited >= PONG_WAIT - Duration::from_secs(1),
        "closed early: {waited:?}"
    );
}

#[tokio::test]
async fn control_and_binary_frames_draw_from_the_rate_limit() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-control-budget", |c| {
        c.limits.rate_per_second = 1;
        c.limits.rate_burst = 5;
        c.limits.rate_close_after = 5;
    })
    .await;
    // A few pings within the burst are answered.
    let mut polite = user(edge.http, "c1", "a1", "polite").await;
    for i in 0..3u8 {
        polite
            .ws()
            .send(Message::Ping(vec![i].into()))
            .await
            .unwrap();
        let pong = tokio::time::timeout(WAIT, polite.ws().next())
            .await
            .expect("pong in time");
        assert!(
            matches!(&pong, Some(Ok(Message::Pong(p))) if p.as_ref() == [i]),
            "{pong:?}"
        );
    }

    // A flood of pings is closed with 4429, as a flood of binary frames is.
    for (user_id, frame) in [
        ("pinger", Message::Ping("x".into())),
        ("binary", Message::binary(vec![0u8; 16])),
    ] {
        let mut flooder = user(edge.http, "c1", "a1", user_id).await;
        for _ in 0..20 {
            if flooder.ws().send(frame.clone()).await.is_err() {
                break;
            }
        }
        let ending = read_to_end(flooder.ws(), WAIT).await;
        assert_eq!(ending.code(), Some(4429), "{user_id}: {ending:?}");
        assert!(ending.clean, "{user_id}: {ending:?}");
        // No error frame for refused control frames: only the one of the close itself.
        assert_eq!(ending.frames.len(), 1, "{user_id}: {:?}", ending.frames);
    }
    // Refused frames are counted like any other: 5 refusals closed each flooder.
    let metrics = edge.metrics().await;
    assert!(
        metric(&metrics, "daisi_edge_frames_in_total", &[("kind", "ping")]) >= 13.0,
        "3 polite pings and 10 of the flood: {metrics}"
    );
    assert!(
        metric(&metrics, "daisi_edge_rate_limited_total", &[]) >= 10.0,
        "{metrics}"
    );
}
