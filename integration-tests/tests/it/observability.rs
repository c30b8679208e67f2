//! The shipped dashboard and Prometheus rules against a running stack: every rule file passes
//! `promtool check rules` and the rule unit tests pass `promtool test rules`; every series the
//! dashboard and the rules query is exported by the stack's services (with the labels their
//! matchers use) once ordinary traffic has flowed.

use daisi_integration_tests::observability::{
    PROMETHEUS_SERIES, TARGET_LABELS, dashboard_queries, exported, rules, selectors,
};
use daisi_integration_tests::{Component, Stack, StackOptions, WAIT, scenario};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The rule files (unit tests excluded).
fn rule_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy().join("prometheus"))
        .expect("deploy/prometheus")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yml") && !p.to_string_lossy().ends_with(".test.yml")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 2, "alerts and dws-compat rules: {files:?}");
    files
}

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool").args(args).output().unwrap_or_else(|e| {
        panic!(
            "promtool cannot run ({e}); it comes with Debian's `prometheus` package, which `make test` installs"
        )
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn rule_files_pass_promtool_and_their_unit_tests() {
    for file in rule_files() {
        let path = file.to_string_lossy().into_owned();
        let report = promtool(&["check", "rules", &path]);
        // promtool's count of rules must match ours, so no rule escapes the series check.
        let counted: usize = report
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("SUCCESS: ")?
                    .strip_suffix(" rules found")?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no rule count in: {report}"));
        let text = std::fs::read_to_string(&file).expect("rule file");
        assert_eq!(
            rules(&text).len(),
            counted,
            "{path}: rules read vs promtool"
        );
    }
    let tests = deploy().join("prometheus/rules.test.yml");
    let report = promtool(&["test", "rules", &tests.to_string_lossy()]);
    assert!(report.contains("SUCCESS"), "{report}");
}

/// Every selector of the dashboard and the rules, with where it comes from; recording rules
/// are resolved to the series they are computed from.
fn queried() -> (
    Vec<(String, daisi_integration_tests::observability::Selector)>,
    BTreeSet<String>,
) {
    let mut exprs: Vec<(String, String)> = Vec::new();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy().join("grafana/daisi.json")).expect("dashboard"),
    )
    .expect("dashboard is JSON");
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() > 30, "dashboard queries: {}", queries.len());
    exprs.extend(
        queries
            .into_iter()
            .map(|q| ("grafana/daisi.json".to_owned(), q)),
    );
    let mut recorded = BTreeSet::new();
    for file in rule_files() {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for rule in rules(&std::fs::read_to_string(&file).expect("rule file")) {
            if let Some(record) = rule.record {
                recorded.insert(record);
            }
            exprs.push((name.clone(), rule.expr));
        }
    }
    let selectors = exprs
        .into_iter()
        .flat_map(|(from, expr)| {
            let found = selectors(&expr);
            assert!(!found.is_empty(), "{from}: no series in `{expr}`");
            found
                .into_iter()
                .map(move |s| (format!("{from}: {expr}"), s))
        })
        .collect();
    (selectors, recorded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s14_every_series_of_the_dashboard_and_alerts_is_exported_by_a_running_stack() {
    let (wanted, recorded) = queried();
    scenario(StackOptions::default(), async |stack: &mut Stack| {
        // Ordinary traffic: sockets of both kinds, a chat selected, events of each kind,
        // an authentication failure, a takeover, a socket closed.
        let user = stack.user("c1", "a1", "u1");
        let admin = stack.admin("adm1", None, None);
        let mut socket = stack.edge(1).connect(&user).await?;
        let mut admin_socket = stack.edge(2).connect(&admin).await?;
        socket.select_chat("chat-1").await?;
        let wrong = stack
            .edge(1)
            .try_connect_with_key(&user, "wrong-key")
            .await?;
        anyhow::ensure!(wrong.is_err(), "a wrong API key is refused");
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        let event =
            json!({"event_id": "1:chats:1", "company_id": "c1", "agent_id": "a1", "row_data": {}});
        stack.publish("websocket.c1.a1.chats", &event).await?;
        stack
            .publish("websocket.c1.a1.messages.chat-1", &event)
            .await?;
        stack.publish("websocket.c1.a1.agents", &event).await?;
        socket.expect_event(WAIT).await?;
        socket.expect_event(WAIT).await?;
        socket.expect_event(WAIT).await?;
        admin_socket.expect_event(WAIT).await?;
        // The same user on the other edge takes the session over; the first socket closes.
        let mut again = stack.edge(2).connect(&user).await?;
        socket.expect_close(WAIT).await?;
        again.send_text(r#"{"type":"ready"}"#).await?;
        again.close().await;
        admin_socket.close().await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;

        let mut exported_series: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for component in [
            Component::Edge(1),
            Component::Edge(2),
            Component::Coordinator(1),
            Component::Coordinator(2),
            Component::Router(1),
            Component::Router(2),
        ] {
            for (name, labels) in exported(&stack.metrics(component).await?) {
                exported_series.entry(name).or_default().extend(labels);
            }
        }
        let mut missing = BTreeSet::new();
        for (from, selector) in &wanted {
            if PROMETHEUS_SERIES.contains(&selector.name.as_str())
                || recorded.contains(&selector.name)
            {
                continue;
            }
            match exported_series.get(&selector.name) {
                None => {
                    missing.insert(format!("{} (in {from})", selector.name));
                }
                Some(labels) => {
                    for label in &selector.labels {
                        if !labels.contains(label) && !TARGET_LABELS.contains(&label.as_str()) {
                            missing
                                .insert(format!("label {label} of {} (in {from})", selector.name));
                        }
                    }
                }
            }
        }
        anyhow::ensure!(
            missing.is_empty(),
            "queried but not exported:\n  {}",
            missing.into_iter().collect::<Vec<_>>().join("\n  ")
        );
        Ok(())
    })
    .await;
}
