//! A coordinator started before its Redis is reachable (a fresh cluster where Redis comes up
//! last, a Redis restart during a rollout) becomes ready once Redis answers, without a
//! restart. The client connection created while Redis was down was seen never to connect; the
//! readiness probe replaces a connection that stays silent (store/redis/connection.rs).

use crate::support::{Replica, eventually};
use daisi_config::Env;
use daisi_coordinator::Config;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` on a fixed port, killed when dropped.
struct LateRedis(Child);

impl Drop for LateRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_coordinator_started_before_redis_becomes_ready_when_redis_comes_up() {
    let port = daisi_testkit::ports::free_port().expect("a free port");
    let url = format!("redis://127.0.0.1:{port}");
    let env = Env::from_pairs([
        ("DAISI_COORDINATOR_GRPC_ADDR", "127.0.0.1:0"),
        ("DAISI_COORDINATOR_HTTP_ADDR", "127.0.0.1:0"),
        ("DAISI_COORDINATOR_STORE", "redis"),
        ("DAISI_COORDINATOR_REDIS_URL", url.as_str()),
    ]);
    let config = Config::from_env(&env).expect("settings").value;
    let replica = Replica::start(config).await;
    let ready = || async {
        daisi_testkit::get_json(replica.http, "/ready")
            .await
            .is_ok_and(|(status, _)| status == 200)
    };
    // Nothing listens yet: unready, and it stays so while Redis is down.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!ready().await, "ready without Redis");

    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    let _redis = LateRedis(child);
    eventually(Duration::from_secs(20), ready).await;
}
