//! Reconnect storms (issue 16): many connects of one user at once, spread over two edges,
//! settle on exactly one socket at once, not at the next renew. Every takeover's kill reaches
//! a socket that may not be indexed yet (its acquire reply still on its way); the edges
//! remember such kills and apply them when the socket is indexed.

use daisi_integration_tests::{Refused, StackOptions, WAIT, WsClient, scenario};
use futures_util::future::join_all;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

/// Connects of the one user, all at once, alternating between the two edges.
const CONNECTS: usize = 200;
/// From the moment the last connect was answered, how long the losers may take to be closed.
const SETTLE: Duration = Duration::from_secs(1);
/// Time for the route of the surviving socket to be seen by the routers (cache TTL 300 ms).
const ROUTE_SETTLE: Duration = Duration::from_millis(800);

/// How one connect ended up once the storm settled.
#[derive(Debug)]
enum Fate {
    /// Still open (it got `ready`), frames received so far.
    Open(Box<WsClient>),
    /// Closed with this code.
    Closed(u16),
    /// The edge refused the upgrade (or the connect failed).
    Refused(String),
}

/// Reads `client` until it closes or `until`; `ready` and error frames are all it may get.
async fn settle(mut client: WsClient, until: Instant) -> anyhow::Result<Fate> {
    let left = until.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, client.expect_close(WAIT)).await {
        Err(_) => Ok(Fate::Open(Box::new(client))),
        Ok(closed) => Ok(Fate::Closed(closed?.code)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s20_two_hundred_connects_of_one_user_over_two_edges_leave_one_socket_within_a_second() {
    // One client address opens them all: the per-address budget is not what is tested here.
    let options = StackOptions::default().edge("DAISI_EDGE_ADDRESS_RATE_PER_SECOND", "0");
    scenario(options, async |stack| {
        let user = stack.user("c1", "a1", "storm-user");
        let edges = [stack.edge(1), stack.edge(2)];
        let attempts = join_all((0..CONNECTS).map(|i| {
            let edge = edges[i % 2].clone();
            let user = user.clone();
            async move { edge.try_connect(&user).await }
        }))
        .await;
        let answered = Instant::now();
        let until = answered + SETTLE;
        let fates = join_all(attempts.into_iter().map(|attempt| async move {
            match attempt? {
                Ok(client) => settle(client, until).await,
                Err(Refused::Http { status, body, .. }) => Ok(Fate::Refused(format!("{status} {body}"))),
                Err(Refused::Transport(e)) => Ok(Fate::Refused(e)),
            }
        }))
        .await;
        let mut open = Vec::new();
        let (mut conflicts, mut refused) = (0, std::collections::BTreeMap::<String, usize>::new());
        for fate in fates {
            match fate? {
                Fate::Open(client) => open.push(client),
                Fate::Closed(4402) => conflicts += 1,
                Fate::Closed(code) => anyhow::bail!("a socket was closed with {code}, not 4402"),
                Fate::Refused(why) => *refused.entry(why).or_default() += 1,
            }
        }
        eprintln!(
            "storm: {CONNECTS} connects, {} open, {conflicts} closed with 4402, refused {refused:?}, settled {:?} after the last answer",
            open.len(),
            answered.elapsed()
        );
        anyhow::ensure!(
            open.len() == 1,
            "{} sockets still open {SETTLE:?} after the storm ({conflicts} got 4402, refused {refused:?})",
            open.len(),
        );
        anyhow::ensure!(conflicts + refused.values().sum::<usize>() == CONNECTS - 1);
        let mut survivor = open.pop().expect("one open socket");

        // The survivor is the session's holder and gets the user's events, once.
        let sessions = stack.sessions("c1").await?;
        anyhow::ensure!(sessions.len() == 1, "coordinator shows {sessions:?}");
        tokio::time::sleep(ROUTE_SETTLE).await;
        let payload = json!({
            "event_id": "1:chats:1",
            "company_id": "c1",
            "agent_id": "a1",
            "row_data": {"n": 1},
        });
        stack.publish("websocket.c1.a1.chats", &payload).await?;
        let event: Value = survivor.expect_event(WAIT).await?;
        anyhow::ensure!(event["row_data"]["n"] == 1, "{event}");
        survivor.expect_silence(Duration::from_millis(300)).await?;
        Ok(())
    })
    .await;
}
