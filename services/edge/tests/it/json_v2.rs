//! `json.v2` (issue 13): negotiation, positions on events, `resync` on gaps (drop-oldest, a
//! router's gap notice), in-band token refresh and expiry on live sockets, and recovery
//! answering `resync` when it cannot replay. `json.v1` sockets beside them see none of it.

use crate::support::{
    API_KEY, Client, Coord, Refused, TestEdge, USER_KEY, enc, event, metric, open_as, user,
    user_token,
};
use daisi_domain::token::{TokenKeyring, UserClaims};
use daisi_proto::edge::v1::{self as epb, DeliveryScope};
use futures_util::StreamExt;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const EPOCH: u64 = 1_764_441_600_123_456_789;

/// A token of `user` expiring `seconds` from now.
fn token_for(user: &str, seconds: u64) -> String {
    let claims = UserClaims::expiring_in(
        "c1".parse().unwrap(),
        "a1".parse().unwrap(),
        user.parse().unwrap(),
        jiff::Timestamp::now(),
        seconds,
    )
    .unwrap();
    TokenKeyring::from_hex(&[USER_KEY])
        .unwrap()
        .encode_user(&claims)
        .unwrap()
}

/// Opens a socket offering `protocols`; the client and the subprotocol the server chose.
async fn open_offering(
    http: SocketAddr,
    query: &str,
    protocols: &'static str,
) -> Result<Client, Refused> {
    open_as(
        http,
        &format!("/ws/c1/a1?{query}"),
        Some(API_KEY),
        protocols,
    )
    .await
}

/// A `json.v2` user socket of c1/a1 with `token` (and `extra` query), `ready` consumed.
async fn v2_with(http: SocketAddr, token: &str, extra: &str) -> Client {
    let mut client = open_offering(
        http,
        &format!("token={}{extra}", enc(token)),
        "json.v2, json.v1",
    )
    .await
    .expect("v2 socket opens");
    assert_eq!(client.protocol.as_deref(), Some("json.v2"));
    assert_eq!(client.next_text().await, r#"{"type":"ready"}"#);
    client
}

async fn v2(http: SocketAddr, user: &str) -> Client {
    v2_with(http, &user_token("c1", "a1", user), "").await
}

fn chat_event(seq: u64, payload: &str) -> epb::Event {
    let mut e = event(
        seq,
        "c1",
        "a1",
        DeliveryScope::AgentUsers,
        "",
        "chats",
        payload,
    );
    e.event_type = "chat".into();
    e.stream_epoch = EPOCH;
    e
}

#[tokio::test]
async fn v2_is_negotiated_and_its_events_carry_positions_while_v1_frames_stay_the_same() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-v2-pos", |_| {}).await;
    // Offering only json.v1 keeps json.v1.
    let only_v1 = open_offering(
        edge.http,
        &format!("token={}", enc(&user_token("c1", "a1", "u0"))),
        "json.v1",
    )
    .await
    .expect("opens");
    assert_eq!(only_v1.protocol.as_deref(), Some("json.v1"));
    drop(only_v1);
    let mut old = user(edge.http, "c1", "a1", "u1").await;
    let mut new = v2(edge.http, "u2").await;
    edge.deliver(vec![chat_event(42, r#"{"a":1}"#)]).await;
    assert_eq!(
        old.next_text().await,
        r#"{"type":"event","payload":{"a":1,"event_type":"chat"}}"#
    );
    assert_eq!(
        new.next_text().await,
        format!(
            r#"{{"type":"event","payload":{{"a":1,"event_type":"chat"}},"position":{{"seq":42,"epoch":"{EPOCH}"}}}}"#
        )
    );
}

#[tokio::test]
async fn a_gap_notice_tells_v2_sockets_to_resync_and_v1_sockets_nothing() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-v2-notice", |_| {}).await;
    let mut old = user(edge.http, "c1", "a1", "u1").await;
    let mut new = v2(edge.http, "u2").await;
    edge.delivery()
        .await
        .notice_gap(epb::NoticeGapRequest {
            pod_id: edge.pod.clone(),
            router_id: "router-test".into(),
            given_up: 3,
        })
        .await
        .expect("notice taken");
    let resync = new.next_json().await;
    assert_eq!(resync["type"], "resync");
    assert_eq!(resync["payload"]["reason"], "router_give_up");
    assert_eq!(old.maybe_text(Duration::from_millis(300)).await, None);
    let metrics = edge.metrics().await;
    assert_eq!(
        metric(&metrics, "daisi_edge_resyncs_total", &["router_give_up"]),
        1
    );
    // A notice for another pod is refused.
    let wrong = edge
        .delivery()
        .await
        .notice_gap(epb::NoticeGapRequest {
            pod_id: "edge-other".into(),
            router_id: "router-test".into(),
            given_up: 1,
        })
        .await
        .expect_err("wrong pod");
    assert_eq!(wrong.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test]
async fn a_slow_v2_consumer_under_drop_oldest_gets_resync_then_newer_events() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-v2-slow", |c| c.sockets.send_queue = 4).await;
    let mut slow = v2(edge.http, "slow").await; // does not read while events pile up
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(64 * 1024));
    let mut seq = 0;
    // Until frames were dropped for it (its TCP buffers full, then its queue).
    loop {
        seq += 1;
        assert!(seq < 2_000, "the send queue never overflowed");
        edge.deliver(vec![chat_event(seq, &big)]).await;
        if metric(
            &edge.metrics().await,
            "daisi_edge_send_queue_drops_total",
            &[],
        ) > 0
        {
            break;
        }
    }
    // Reading now: events, and exactly where frames were dropped, a resync; the positions
    // show the gap the resync announced.
    let mut last = 0u64;
    let mut resyncs = 0;
    let mut gap_seen = false;
    while last < seq {
        let frame = slow.next_json().await;
        match frame["type"].as_str() {
            Some("resync") => {
                assert_eq!(frame["payload"]["reason"], "drop_oldest");
                resyncs += 1;
            }
            Some("event") => {
                let at = frame["position"]["seq"].as_u64().expect("position");
                if at != last + 1 {
                    assert!(resyncs > 0, "a gap ({last} -> {at}) came without a resync");
                    gap_seen = true;
                }
                last = at;
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert!(
        gap_seen && resyncs >= 1,
        "resyncs {resyncs}, gap {gap_seen}"
    );
}

#[tokio::test]
async fn a_refresh_extends_the_socket_and_without_one_it_closes_4401() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-v2-refresh", |_| {}).await;
    let mut refreshed = v2_with(edge.http, &token_for("r1", 2), "").await;
    let mut expiring = v2_with(edge.http, &token_for("r2", 2), "").await;
    // json.v1 keeps the old service's behaviour: its token is not enforced once connected.
    let mut old = open_offering(
        edge.http,
        &format!("token={}", enc(&token_for("r3", 2))),
        "json.v1",
    )
    .await
    .expect("v1 opens");
    assert_eq!(old.next_text().await, r#"{"type":"ready"}"#);

    // Another user's token is refused and counted; an older one too.
    refreshed
        .send_text(&format!(
            r#"{{"type":"refresh","payload":{{"token":"{}"}}}}"#,
            token_for("someone-else", 3600)
        ))
        .await;
    let refused = refreshed.next_json().await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["payload"]["code"], "InvalidToken");
    refreshed
        .send_text(&format!(
            r#"{{"type":"refresh","payload":{{"token":"{}"}}}}"#,
            token_for("r1", 3600)
        ))
        .await;
    let ok = refreshed.next_json().await;
    assert_eq!(ok["type"], "refreshed", "{ok}");

    let closed = expiring.closed_within(Duration::from_secs(6)).await;
    assert_eq!(closed.code, Some(4401), "{closed:?}");
    let error: Value = serde_json::from_str(closed.frames.last().expect("error frame")).unwrap();
    assert_eq!(error["payload"]["code"], "InvalidToken");
    assert_eq!(error["payload"]["message"], "Company token has expired.");

    // Past the first token's expiry, the refreshed socket and the json.v1 one still deliver.
    edge.deliver(vec![chat_event(1, "{}")]).await;
    assert_eq!(refreshed.next_json().await["type"], "event");
    assert_eq!(old.next_json().await["type"], "event");

    let metrics = edge.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "daisi_edge_token_refreshes_total",
            &["other_user"]
        ),
        1
    );
    assert_eq!(
        metric(&metrics, "daisi_edge_token_refreshes_total", &["accepted"]),
        1
    );
}

#[tokio::test]
async fn refresh_is_not_part_of_json_v1() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-v1-refresh", |_| {}).await;
    let mut old = user(edge.http, "c1", "a1", "u1").await;
    old.send_text(r#"{"type":"refresh","payload":{"token":"x"}}"#)
        .await;
    assert_eq!(
        old.next_text().await,
        r#"{"type":"error","payload":{"code":"BadRequest","message":"Unhandled message type","details":"Type: refresh"}}"#
    );
}

#[tokio::test]
async fn recovery_without_history_answers_resync_then_live_events() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-v2-nohist", |_| {}).await;
    let token = user_token("c1", "a1", "u1");
    let mut client = v2_with(edge.http, &token, &format!("&since={EPOCH}:41")).await;
    let resync = client.next_json().await;
    assert_eq!(resync["type"], "resync");
    assert_eq!(resync["payload"]["reason"], "recovery_unavailable");
    edge.deliver(vec![chat_event(42, "{}")]).await;
    assert_eq!(client.next_json().await["position"]["seq"], 42);
    // A malformed position is refused before the upgrade.
    let refused = open_offering(
        edge.http,
        &format!("token={}&since=yesterday", enc(&token)),
        "json.v2",
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(refused.status, 400);
}

/// Reads text frames until none came for `quiet`.
#[allow(dead_code)]
async fn drain(client: &mut Client, quiet: Duration) -> Vec<String> {
    let mut frames = Vec::new();
    while let Ok(Some(Ok(message))) = tokio::time::timeout(quiet, client.ws().next()).await {
        if let Message::Text(t) = message {
            frames.push(t.to_string());
        }
    }
    frames
}

/// An admin token of `admin` restricted to `restriction`, expiring `seconds` from now.
fn admin_token_for(admin: &str, restriction: Option<&str>, seconds: u64) -> String {
    let mut claims = daisi_domain::token::AdminClaims::expiring_in(
        admin.parse().unwrap(),
        jiff::Timestamp::now(),
        seconds,
    )
    .unwrap();
    claims.company_id_restriction = restriction.map(|c| c.parse().unwrap());
    TokenKeyring::from_hex(&[crate::support::ADMIN_KEY])
        .unwrap()
        .encode_admin(&claims)
        .unwrap()
}

#[tokio::test]
async fn an_admin_refresh_must_grant_the_same_access() {
    let coord = Coord::start().await;
    let edge = TestEdge::start(&coord.url, "edge-v2-admin-refresh", |_| {}).await;
    let mut socket = open_as(
        edge.http,
        &format!(
            "/ws/admin?token={}",
            enc(&admin_token_for("ad1", Some("c1"), 60))
        ),
        Some(crate::support::ADMIN_API_KEY),
        "json.v2",
    )
    .await
    .expect("admin socket opens");
    assert_eq!(socket.protocol.as_deref(), Some("json.v2"));
    assert_eq!(socket.next_text().await, r#"{"type":"ready"}"#);
    let refresh =
        |token: String| format!(r#"{{"type":"refresh","payload":{{"token":"{token}"}}}}"#);

    // The same admin, a later expiry, but no company restriction: wider access, refused.
    socket
        .send_text(&refresh(admin_token_for("ad1", None, 3600)))
        .await;
    let refused = socket.next_json().await;
    assert_eq!(refused["payload"]["code"], "InvalidToken", "{refused}");
    // Restricted to another company: refused too.
    socket
        .send_text(&refresh(admin_token_for("ad1", Some("c2"), 3600)))
        .await;
    assert_eq!(socket.next_json().await["payload"]["code"], "InvalidToken");
    // The same access, later: accepted.
    socket
        .send_text(&refresh(admin_token_for("ad1", Some("c1"), 3600)))
        .await;
    let ok = socket.next_json().await;
    assert_eq!(ok["type"], "refreshed", "{ok}");
    assert_eq!(
        metric(
            &edge.metrics().await,
            "daisi_edge_token_refreshes_total",
            &["other_scope"]
        ),
        2
    );
}
