//! Sessions that stay settled (issue 16): a kill whose command is lost is not undone. The
//! coordinator tombstones the killed connection and keeps the kill in the pod's inbox (issue
//! 17), so the edge's next heartbeat (or, failing that, its next renew) closes the socket,
//! instead of the renew being told `expired` and re-acquiring it.

use daisi_integration_tests::{Component, Stack, StackOptions, Timing, WAIT, scenario};
use serde_json::json;
use std::time::Duration;

/// Time for routes registered by new sockets to be seen by the routers (cache TTL 300 ms).
const ROUTE_SETTLE: Duration = Duration::from_millis(800);
/// The edges' coordinator call deadline (their default): what the first call after a freeze
/// may pay before the edge's channel moves to the other replica.
const DEADLINE: Duration = Duration::from_secs(2);

/// Sums of the samples of metric families of `component`, from one scrape.
async fn metrics<const N: usize>(
    stack: &Stack,
    component: Component,
    families: [&str; N],
) -> anyhow::Result<[f64; N]> {
    let text = stack.metrics(component).await?;
    Ok(families.map(|family| {
        text.lines()
            .filter(|l| l.starts_with(family))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }))
}

/// Kill commands edge 1 received in all, and those of them that came from its inbox.
const KILL_FAMILIES: [&str; 2] = [
    "daisi_edge_kill_commands_total",
    "daisi_edge_inbox_kills_total",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s16_a_kill_whose_command_is_lost_still_closes_the_socket_within_one_renew() {
    /// Time on top of the interval for the heartbeat (inbox) or audit call and the close frame.
    const SLACK: Duration = Duration::from_millis(700);
    // Both the heartbeat (a third of the pod lease) and the session audit come this often.
    let renew = Timing::default().audit;
    scenario(StackOptions::default(), async |stack: &mut Stack| {
        // Edge 1's command stream, like its other channels, is on coordinator-1 (the first
        // replica): the kill command for these sockets can only reach edge 1 through it.
        let mut victim = stack.edge(1).connect(&stack.user("c1", "a1", "u1")).await?;
        let mut bystander = stack.edge(1).connect(&stack.user("c1", "a1", "u2")).await?;

        // Frozen, coordinator-1 keeps edge 1's command stream open but forwards nothing.
        stack.freeze(Component::Coordinator(1)).await?;
        // Edge 1's unary calls move to coordinator-2 (the first one pays the call deadline):
        // a new socket's acquire goes through it. The stream stays on the frozen replica.
        let started = tokio::time::Instant::now();
        let mut moved = stack.edge(1).connect(&stack.user("c1", "a1", "u3")).await?;
        anyhow::ensure!(
            started.elapsed() <= DEADLINE + Duration::from_secs(1),
            "connect with a frozen replica took {:?}",
            started.elapsed()
        );
        let [kills_before, inbox_before] =
            metrics(stack, Component::Edge(1), KILL_FAMILIES).await?;

        // The operator's kill, raised on coordinator-2, is published to every replica; the only
        // one that could deliver it to edge 1 is frozen. The command is lost.
        let killed_at = tokio::time::Instant::now();
        anyhow::ensure!(
            stack.kill_session(2, "c1", "a1", "u1").await?,
            "u1's session was held"
        );
        let closed = victim.expect_close(renew + SLACK).await?;
        let took = killed_at.elapsed();
        anyhow::ensure!(closed.code == 4402, "killed socket closed with {closed:?}");
        anyhow::ensure!(
            closed.errors.iter().any(|e| e["code"] == "SessionConflict"),
            "no SessionConflict frame before the close: {closed:?}"
        );
        // The stream lost it: whatever kill reached edge 1 came from its inbox, through a
        // heartbeat answered by coordinator-2 (one scrape; inbox kills are counted first).
        let [kills_after, inbox_after] = metrics(stack, Component::Edge(1), KILL_FAMILIES).await?;
        anyhow::ensure!(
            kills_after - kills_before <= inbox_after - inbox_before,
            "the kill command reached edge 1 through its stream ({kills_before} -> \
             {kills_after} kills, {inbox_before} -> {inbox_after} from the inbox): nothing was lost"
        );

        // Not re-acquired behind the client's back: after two more audits the coordinator
        // still lists no session for u1, while the other sockets keep theirs and their events.
        tokio::time::sleep(renew * 2).await;
        let sessions = stack.sessions("c1").await?;
        let users: Vec<&str> = sessions.iter().map(|(k, _)| k.as_str()).collect();
        anyhow::ensure!(
            !users.contains(&"c1/a1/u1"),
            "the killed connection was re-acquired: {users:?}"
        );
        anyhow::ensure!(
            users.contains(&"c1/a1/u2") && users.contains(&"c1/a1/u3"),
            "the other sessions are gone: {users:?}"
        );
        tokio::time::sleep(ROUTE_SETTLE).await;
        let payload = json!({
            "event_id": "1:chats:1",
            "company_id": "c1",
            "agent_id": "a1",
            "row_data": {"n": 1},
        });
        stack.publish("websocket.c1.a1.chats", &payload).await?;
        for client in [&mut bystander, &mut moved] {
            let got = client.expect_event(WAIT).await?;
            anyhow::ensure!(got["row_data"]["n"] == 1, "{got}");
        }
        stack.thaw(Component::Coordinator(1)).await?;
        eprintln!(
            "lost kill command: socket closed {:.0} ms after the kill (renew and heartbeat \
             interval {renew:?}; {} kill(s) from the inbox)",
            took.as_secs_f64() * 1e3,
            inbox_after - inbox_before
        );
        Ok(())
    })
    .await;
}
