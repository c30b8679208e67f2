//! Shared test helpers: stubs of the router's peers, routers started in-process or as child
//! processes, and JetStream publishing.
#![allow(dead_code)]

pub mod stubs;

use daisi_config::Env;
use daisi_router::source::EventSource;
use daisi_router::{Config, Listeners};
use daisi_runtime::CancellationToken;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A router running in this process.
pub struct InProcess {
    pub http: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), daisi_router::Error>>>,
}

impl InProcess {
    /// Stops it (SIGTERM path) and waits.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("router stops within 20s")
                .expect("router task");
            result.expect("router ran cleanly");
        }
    }

    /// Waits for it to stop by itself (without a shutdown) and returns how it ended.
    pub async fn exited(mut self, timeout: Duration) -> Result<(), daisi_router::Error> {
        let task = self.task.take().expect("router task");
        tokio::time::timeout(timeout, task)
            .await
            .expect("router stops by itself within the timeout")
            .expect("router task")
    }

    /// Kills it without any shutdown: nothing is acknowledged or handed back.
    pub fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    pub async fn ready(&self) -> (u16, serde_json::Value) {
        daisi_testkit::get_json(self.http, "/ready").await.unwrap()
    }

    /// Waits until `/ready` answers `status`, or panics after `timeout`.
    pub async fn wait_ready_status(&self, status: u16, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (got, body) = self.ready().await;
            if got == status {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/ready stayed {got} {body}, expected {status}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        match daisi_testkit::get_json(self.http, "/metrics")
            .await
            .unwrap()
        {
            (_, serde_json::Value::String(text)) => text,
            (_, other) => other.to_string(),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The value of a metric line starting with `prefix` (name and labels), or 0.
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Settings for a test router: port 0, short timings.
pub fn env(pairs: &[(&str, &str)]) -> Env {
    let mut env = Env::from_pairs([
        ("DAISI_ROUTER_HTTP_ADDR", "127.0.0.1:0"),
        ("DAISI_ROUTER_ACK_WAIT", "5s"),
        ("DAISI_ROUTER_HEARTBEAT", "500ms"),
        ("DAISI_ROUTER_SHUTDOWN_GRACE", "5s"),
        ("DAISI_ROUTER_BATCH_DELAY", "1ms"),
        // Tests publish right after starting routers, before the consumer may exist; the
        // default (`new`) is tested in `start_position.rs`.
        ("DAISI_ROUTER_START_POSITION", "all"),
    ]);
    for (k, v) in pairs {
        env.set(*k, *v);
    }
    env
}

/// Starts a router with `env` on its configured source.
pub async fn start(env: &Env) -> InProcess {
    let config = Config::from_env(env).expect("valid test config").value;
    let http = TcpListener::bind(config.http_addr).await.unwrap();
    let addr = http.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(daisi_router::run(
        config,
        Listeners { http },
        shutdown.clone(),
    ));
    InProcess {
        http: addr,
        shutdown,
        task: Some(task),
    }
}

/// Starts a router with `env` on `source`.
pub async fn start_with<S: EventSource>(env: &Env, source: S) -> InProcess {
    let config = Config::from_env(env).expect("valid test config").value;
    let http = TcpListener::bind(config.http_addr).await.unwrap();
    let addr = http.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(daisi_router::run_with(
        config,
        Listeners { http },
        shutdown.clone(),
        source,
    ));
    InProcess {
        http: addr,
        shutdown,
        task: Some(task),
    }
}

/// A JetStream client for tests.
pub async fn jetstream(url: &str) -> async_nats::jetstream::Context {
    let client = async_nats::connect(url).await.expect("nats connects");
    async_nats::jetstream::new(client)
}

/// Publishes `messages` with JetStream acks, pipelined in windows; returns the sequences.
pub async fn publish_all(
    js: &async_nats::jetstream::Context,
    messages: Vec<(String, Vec<u8>)>,
) -> Vec<u64> {
    let mut sequences = Vec::with_capacity(messages.len());
    for window in messages.chunks(500) {
        let mut acks = Vec::with_capacity(window.len());
        for (subject, payload) in window {
            acks.push(
                js.publish(subject.clone(), payload.clone().into())
                    .await
                    .expect("publish"),
            );
        }
        for ack in acks {
            sequences.push(ack.await.expect("stream ack").sequence);
        }
    }
    sequences
}

/// Creates the stream the way the router would, so tests can publish before any router runs.
pub async fn create_stream(js: &async_nats::jetstream::Context, name: &str, partitions: u32) {
    use async_nats::jetstream::stream;
    let transform = (partitions > 0).then(|| stream::SubjectTransform {
        source: "websocket.*.*.>".into(),
        destination: format!(
            "websocket.{{{{partition({partitions},1,2)}}}}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}.>"
        ),
    });
    js.get_or_create_stream(stream::Config {
        name: name.into(),
        subjects: vec!["websocket.>".into()],
        subject_transform: transform,
        ..Default::default()
    })
    .await
    .expect("stream created");
}

/// A CDC-like payload.
pub fn payload(n: usize) -> Vec<u8> {
    format!(r#"{{"event_id":"{n}:messages:{n}","company_id":"c1","row_data":{{"n":{n}}}}}"#)
        .into_bytes()
}
