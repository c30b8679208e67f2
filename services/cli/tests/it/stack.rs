//! Every subcommand against a running stack: `daisi dev` started as a child process with known
//! secrets and free ports, then driven with the other subcommands as a person would.

use daisi_testkit::{ServiceProcess, get_json, run_with_args};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_daisi");
pub(crate) const USER_KEY: &str =
    "3a7bd3e2360a3d29eea436e864a1b8d5f2f5d5e4dba8ac39d465fc3488db3915";
pub(crate) const ADMIN_KEY: &str =
    "c8b7d5f83e8d4b3c9e2a7b6d5f4e3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f";
pub(crate) const API_KEY: &str = "user-api-key-for-cli-tests";
pub(crate) const ADMIN_API_KEY: &str = "admin-api-key-for-cli-tests";
pub(crate) const PUBLISH_KEY: &str = "publish-key-for-cli-tests-0123456789";
pub(crate) const MINT_KEY: &str = "mint-key-for-cli-tests-0123456789";
pub(crate) const ADMIN_MINT_KEY: &str = "admin-mint-key-for-cli-tests-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The known secrets `daisi dev` runs with in these tests.
const DEV_ENV: [(&str, &str); 8] = [
    ("DAISI_LOG_FORMAT", "json"),
    ("DAISI_EDGE_TOKEN_AES_KEY", USER_KEY),
    ("DAISI_EDGE_ADMIN_TOKEN_AES_KEY", ADMIN_KEY),
    ("DAISI_EDGE_SECRET_TOKEN", API_KEY),
    ("DAISI_EDGE_ADMIN_SECRET_TOKEN", ADMIN_API_KEY),
    ("DAISI_EDGE_MINT_API_KEY", MINT_KEY),
    ("DAISI_EDGE_ADMIN_MINT_API_KEY", ADMIN_MINT_KEY),
    ("DAISI_ROUTER_PUBLISH_API_KEY", PUBLISH_KEY),
];

/// Free loopback addresses for the edge, its minting listener, the router and the coordinator.
fn free_addrs() -> (String, String, String, String) {
    (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    )
}

/// `daisi dev` on these addresses.
fn dev_args<'a>(
    edge: &'a str,
    mint: &'a str,
    router: &'a str,
    coordinator: &'a str,
) -> Vec<&'a str> {
    vec![
        "dev",
        "--edge-addr",
        edge,
        "--mint-addr",
        mint,
        "--router-addr",
        router,
        "--coordinator-addr",
        coordinator,
    ]
}

pub(crate) struct Dev {
    pub(crate) process: ServiceProcess,
    pub(crate) edge: String,
    mint: String,
    router: String,
    coordinator: String,
    /// The operator credential `daisi dev` prints (`export DAISI_INTERNAL_...`): its internal
    /// gRPC runs with mutual TLS under a CA made for the run, so admin commands need it.
    internal: Vec<(String, String)>,
}

impl Dev {
    pub(crate) async fn start() -> Self {
        Self::start_with(&[], &[]).await
    }

    /// A stack started with `extra` arguments and `extra_env` variables.
    pub(crate) async fn start_with(extra: &[&str], extra_env: &[(&str, &str)]) -> Self {
        let (edge, mint, router, coordinator) = free_addrs();
        let mut env = DEV_ENV.to_vec();
        env.extend_from_slice(extra_env);
        let mut args = dev_args(&edge, &mint, &router, &coordinator);
        args.extend_from_slice(extra);
        let process = ServiceProcess::spawn_with_args(
            BIN,
            &args,
            &env,
            "edge listening",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        let internal = operator_credential(&process).await;
        let dev = Self {
            process,
            edge,
            mint,
            router,
            coordinator,
            internal,
        };
        for addr in [&dev.edge, &dev.router] {
            let mut ready = false;
            for _ in 0..100 {
                if matches!(
                    get_json(addr.parse().unwrap(), "/ready").await,
                    Ok((200, _))
                ) {
                    ready = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(ready, "{addr} not ready; logs:\n{}", dev.process.logs());
        }
        dev
    }

    pub(crate) fn env(&self) -> Vec<(String, String)> {
        vec![
            ("DAISI_EDGE_TOKEN_AES_KEY".into(), USER_KEY.into()),
            ("DAISI_EDGE_ADMIN_TOKEN_AES_KEY".into(), ADMIN_KEY.into()),
            ("DAISI_EDGE_SECRET_TOKEN".into(), API_KEY.into()),
            ("DAISI_EDGE_ADMIN_SECRET_TOKEN".into(), ADMIN_API_KEY.into()),
            ("DAISI_EDGE_MINT_API_KEY".into(), MINT_KEY.into()),
            (
                "DAISI_EDGE_ADMIN_MINT_API_KEY".into(),
                ADMIN_MINT_KEY.into(),
            ),
            ("DAISI_ROUTER_PUBLISH_API_KEY".into(), PUBLISH_KEY.into()),
            (
                "DAISI_COORDINATOR_URL".into(),
                format!("http://{}", self.coordinator),
            ),
            ("DAISI_ROUTER_URL".into(), format!("http://{}", self.router)),
            ("DAISI_EDGE_URL".into(), format!("http://{}", self.edge)),
        ]
        .into_iter()
        .chain(self.internal.iter().cloned())
        .collect()
    }

    /// Runs `daisi args...` to completion; returns exit code and output.
    pub(crate) async fn daisi(&self, args: &[&str]) -> (i32, String) {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let exited = run_with_args(BIN, args, &env, Duration::from_secs(20))
            .await
            .unwrap();
        (exited.status.code().unwrap_or(-1), exited.output)
    }

    /// Starts `daisi tail` in the background.
    pub(crate) fn tail(&self, args: &[&str]) -> Tail {
        let mut child = tokio::process::Command::new(BIN)
            .arg("tail")
            .args(args)
            .env_clear()
            .envs(self.env())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let printed = Arc::new(Mutex::new(String::new()));
        let readers = [
            collect(child.stdout.take().unwrap(), printed.clone()),
            collect(child.stderr.take().unwrap(), printed.clone()),
        ];
        Tail {
            child,
            printed,
            readers,
        }
    }
}

/// A `daisi tail` running in the background, its output collected as it comes.
pub(crate) struct Tail {
    child: tokio::process::Child,
    printed: Arc<Mutex<String>>,
    readers: [tokio::task::JoinHandle<()>; 2],
}

fn collect(
    pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    into: Arc<Mutex<String>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut text = into.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    })
}

impl Tail {
    /// What it printed so far.
    pub(crate) fn printed(&self) -> String {
        self.printed.lock().unwrap().clone()
    }

    /// Whether it has exited.
    fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// Waits up to 15 s for it to exit: its code and everything it printed. If it does not
    /// exit, it is killed and the test fails showing what it printed.
    pub(crate) async fn finish(mut self) -> (i32, String) {
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
        if status.is_err() {
            let _ = self.child.start_kill();
        }
        for reader in self.readers {
            let _ = reader.await;
        }
        let text = self.printed.lock().unwrap().clone();
        match status {
            Ok(status) => (status.unwrap().code().unwrap_or(-1), text),
            Err(_) => panic!("tail did not finish within 15 s; it printed:\n{text}"),
        }
    }

    /// Stops it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The `export DAISI_INTERNAL_...=...` lines of `daisi dev`'s banner, waited for (at most
/// 10 s) since the banner follows the services' start.
async fn operator_credential(process: &ServiceProcess) -> Vec<(String, String)> {
    for _ in 0..100 {
        let logs = process.logs();
        if logs.contains("daisi dev is running") {
            let exports: Vec<(String, String)> = logs
                .lines()
                .filter_map(|line| line.trim().strip_prefix("export "))
                .filter_map(|kv| kv.split_once('='))
                .filter(|(k, _)| k.starts_with("DAISI_INTERNAL_"))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            assert!(
                !exports.is_empty(),
                "daisi dev printed no operator credential:\n{logs}"
            );
            return exports;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "daisi dev printed no banner within 10 s:\n{}",
        process.logs()
    );
}

/// Waits until `daisi sessions list` shows `n` sessions of company `c1`. With a `tail`, first
/// waits for its `ready` (its session is acquired before the upgrade, so from then on the
/// count includes it rather than a predecessor whose release is still on its way). If the tail
/// exits first (refused, say), or the count never comes, the failure shows what it printed and
/// the stack's logs.
async fn wait_sessions(dev: &Dev, n: usize, tail: Option<&mut Tail>) {
    let mut tail = tail;
    for _ in 0..100 {
        if let Some(tail) = tail.as_deref_mut() {
            if tail.exited() {
                panic!(
                    "`daisi tail` exited before its session showed:\n{}\nstack logs:\n{}",
                    tail.printed(),
                    dev.process.logs()
                );
            }
            if !tail.printed().contains("ready") {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let (code, out) = dev
            .daisi(&["sessions", "list", "--company", "c1", "--json"])
            .await;
        assert_eq!(code, 0, "{out}");
        let list: Vec<Value> = serde_json::from_str(&out).unwrap();
        if list.len() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "never saw {n} sessions\ntail printed:\n{}\nstack logs:\n{}",
        tail.map(|t| t.printed()).unwrap_or_default(),
        dev.process.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_works_against_the_dev_stack() {
    let mut dev = Dev::start().await;

    // token through the edge's minting listener, then tail with it and publish an event to it.
    let (code, token) = dev
        .daisi(&[
            "token",
            "user",
            "--company",
            "c1",
            "--agent",
            "a1",
            "--user",
            "u1",
            "--edge",
            &format!("http://{}", dev.mint),
        ])
        .await;
    assert_eq!(code, 0, "{token}");
    // The public port does not mint, and says where to go.
    let (code, out) = dev
        .daisi(&[
            "token",
            "user",
            "--company",
            "c1",
            "--agent",
            "a1",
            "--user",
            "u1",
            "--edge",
            &format!("http://{}", dev.edge),
        ])
        .await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("minting listener"), "{out}");
    let token = token.trim().to_owned();
    let mut tail = dev.tail(&[
        "--token",
        &token,
        "--select-chat",
        "chat-7",
        "--count",
        "2",
        "--json",
    ]);
    wait_sessions(&dev, 1, Some(&mut tail)).await;

    // sessions get / pods / routes while the socket is up.
    let (code, out) = dev
        .daisi(&[
            "sessions",
            "get",
            "--company",
            "c1",
            "--agent",
            "a1",
            "--user",
            "u1",
            "--json",
        ])
        .await;
    assert_eq!(code, 0, "{out}");
    let session: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(session["pod_id"], "dev-edge");
    let (code, out) = dev.daisi(&["pods", "--json"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("dev-edge"), "{out}");
    let (code, out) = dev
        .daisi(&["routes", "--company", "c1", "--agent", "a1"])
        .await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("agent c1/a1") && out.contains("dev-edge"),
        "{out}"
    );
    let mut chat_route = String::new();
    for _ in 0..50 {
        chat_route = dev
            .daisi(&[
                "routes",
                "--company",
                "c1",
                "--agent",
                "a1",
                "--chat",
                "chat-7",
                "--json",
            ])
            .await
            .1;
        if chat_route.contains("dev-edge") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        chat_route.contains("dev-edge"),
        "select_chat did not register the chat route: {chat_route}"
    );

    // publish: a chats event and a message of the selected chat reach the tail.
    let (code, out) = dev
        .daisi(&[
            "publish",
            "websocket.c1.a1.chats",
            r#"{"event_id":"1:chats:1","row_data":{"n":1}}"#,
        ])
        .await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = dev
        .daisi(&[
            "publish",
            "websocket.c1.a1.messages.chat-7",
            r#"{"event_id":"2:messages:9","row_data":{"text":"hi"}}"#,
        ])
        .await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = tail.finish().await;
    assert_eq!(code, 0, "{out}");
    let types: Vec<String> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["frame"]["type"] == "event")
        .map(|v| {
            v["frame"]["payload"]["event_type"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(types, ["chat", "message"], "{out}");

    // kill: a second tail is closed with 4402 and the CLI shows it.
    let mut tail = dev.tail(&["--token", &token]);
    wait_sessions(&dev, 1, Some(&mut tail)).await;
    let (code, out) = dev
        .daisi(&[
            "sessions",
            "kill",
            "--company",
            "c1",
            "--agent",
            "a1",
            "--user",
            "u1",
            "--reason",
            "test",
        ])
        .await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = tail.finish().await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("closed 4402"), "{out}");
    wait_sessions(&dev, 0, None).await;

    // Ctrl-C stops the whole stack cleanly.
    dev.process.signal(Signal::SIGINT).unwrap();
    let exited = dev
        .process
        .wait(Duration::from_secs(15))
        .await
        .expect("daisi dev did not stop");
    assert!(exited.status.success(), "{}", exited.output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_runs_on_real_redis_and_nats_and_publish_goes_through_nats() {
    let redis = daisi_testkit::RedisServer::start().unwrap();
    let nats = daisi_testkit::nats::NatsServer::start().await.unwrap();
    let (redis_url, nats_url) = (redis.url(), nats.url());
    let mut dev = Dev::start_with(&["--redis-url", &redis_url, "--nats-url", &nats_url], &[]).await;
    assert!(
        dev.process.logged(r#""store":"Redis""#),
        "{}",
        dev.process.logs()
    );

    let (code, token) = dev
        .daisi(&[
            "token",
            "user",
            "--company",
            "c1",
            "--agent",
            "a1",
            "--user",
            "u9",
        ])
        .await;
    assert_eq!(code, 0, "{token}");
    let mut tail = dev.tail(&["--token", token.trim(), "--count", "1", "--json"]);
    wait_sessions(&dev, 1, Some(&mut tail)).await;
    let (code, out) = dev
        .daisi(&[
            "publish",
            "websocket.c1.a1.contacts",
            r#"{"event_id":"3:contacts:1"}"#,
            "--nats",
            &nats_url,
            "--json",
        ])
        .await;
    assert_eq!(code, 0, "{out}");
    let ack: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ack["stream"], "wa_stream", "{out}");
    let (code, out) = tail.finish().await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(r#""event_type":"contact""#), "{out}");

    dev.process.signal(Signal::SIGINT).unwrap();
    assert!(
        dev.process
            .wait(Duration::from_secs(15))
            .await
            .is_some_and(|e| e.status.success())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_keygen_run_a_stack() {
    let exited = run_with_args(BIN, &["keygen"], &[], Duration::from_secs(20))
        .await
        .unwrap();
    assert!(exited.status.success(), "{}", exited.output);
    let generated: Vec<(String, String)> = exited
        .output
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let get = |name: &str| {
        generated
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };

    let (edge, mint, router) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let coordinator = format!("127.0.0.1:{}", free_port());
    let mut env: Vec<(&str, &str)> = generated
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.push(("DAISI_LOG_FORMAT", "json"));
    let args = [
        "dev",
        "--edge-addr",
        &edge,
        "--mint-addr",
        &mint,
        "--router-addr",
        &router,
        "--coordinator-addr",
        &coordinator,
    ];
    let mut dev = ServiceProcess::spawn_with_args(
        BIN,
        &args,
        &env,
        "edge listening",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    for _ in 0..100 {
        if matches!(
            get_json(edge.parse().unwrap(), "/ready").await,
            Ok((200, _))
        ) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The generated backend credential mints through the edge's minting listener, and the
    // token opens with the generated keys.
    let api_key = get("DAISI_EDGE_MINT_API_KEY");
    let edge_url = format!("http://{mint}");
    let minted = run_with_args(
        BIN,
        &[
            "token",
            "user",
            "--company",
            "c1",
            "--agent",
            "a1",
            "--user",
            "u1",
            "--edge",
            &edge_url,
            "--api-key",
            &api_key,
        ],
        &[],
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert!(minted.status.success(), "{}", minted.output);
    let ring =
        daisi_domain::token::TokenKeyring::from_hex(&[get("DAISI_EDGE_TOKEN_AES_KEY")]).unwrap();
    let claims = ring
        .decode_user(minted.output.trim(), jiff::Timestamp::now())
        .unwrap();
    assert_eq!(claims.user_id.as_str(), "u1");

    // The generated publish key is the router's.
    let router_url = format!("http://{router}");
    let publish_key = get("DAISI_ROUTER_PUBLISH_API_KEY");
    let published = run_with_args(
        BIN,
        &[
            "publish",
            "websocket.c1.a1.chats",
            "{}",
            "--router",
            &router_url,
            "--api-key",
            &publish_key,
        ],
        &[],
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert!(published.status.success(), "{}", published.output);

    dev.signal(Signal::SIGINT).unwrap();
    let exited = dev
        .wait(Duration::from_secs(15))
        .await
        .expect("daisi dev did not stop");
    assert!(
        exited.status.success(),
        "{:?}\n{}",
        exited.status,
        exited.output
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_start_up_names_a_failed_service_and_heeds_ctrl_c() {
    // A Redis URL the client refuses (no such database): the coordinator fails at once, and
    // `daisi dev` says so rather than waiting for readiness that cannot come.
    let (edge, mint, router, coordinator) = free_addrs();
    let mut args = dev_args(&edge, &mint, &router, &coordinator);
    args.extend_from_slice(&["--redis-url", "redis://127.0.0.1:1/not-a-database"]);
    let started = std::time::Instant::now();
    let exited = run_with_args(BIN, &args, &DEV_ENV, Duration::from_secs(60))
        .await
        .expect("daisi dev exits");
    assert!(!exited.status.success(), "{}", exited.output);
    assert!(
        exited.output.contains("coordinator failed"),
        "{}",
        exited.output
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );

    // A Redis that is not there: the stack never becomes ready, and Ctrl-C stops it now.
    let (edge, mint, router, coordinator) = free_addrs();
    let mut args = dev_args(&edge, &mint, &router, &coordinator);
    args.extend_from_slice(&["--redis-url", "redis://127.0.0.1:1"]);
    let mut dev = ServiceProcess::spawn_with_args(
        BIN,
        &args,
        &DEV_ENV,
        "edge listening",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    dev.signal(Signal::SIGINT).unwrap();
    let exited = dev
        .wait(Duration::from_secs(12))
        .await
        .expect("Ctrl-C during start-up stops daisi dev at once");
    assert!(exited.status.success(), "{}", exited.output);
    assert!(
        !exited.output.contains("daisi dev is running"),
        "{}",
        exited.output
    );
}
