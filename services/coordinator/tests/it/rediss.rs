//! `rediss://` (issue 11): the coordinator reaches a real `redis-server` over TLS with a
//! private CA and a client certificate (the server runs with `tls-auth-clients yes`), set
//! through its settings; started after the coordinator.

use crate::support::{Replica, eventually};
use daisi_config::Env;
use daisi_coordinator::Config;
use daisi_runtime::internal::DevCa;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A TLS-only `redis-server`, killed when dropped.
struct TlsRedis {
    child: Child,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    daisi_testkit::ports::free_port().expect("a free port")
}

#[tokio::test]
async fn the_coordinator_uses_rediss_with_a_private_ca_and_a_client_certificate() {
    let dir = std::env::temp_dir().join(format!("daisi-rediss-{}", uuid_like()));
    let ca = DevCa::create(&dir).unwrap();
    let server = ca.issue("redis", &["127.0.0.1".to_owned()]).unwrap();
    let client = ca
        .issue("client", &["coordinator.example".to_owned()])
        .unwrap();
    let port = free_port();

    let url = format!("rediss://127.0.0.1:{port}");
    let (ca_path, cert, key) = (
        server.ca.display().to_string(),
        client.cert.display().to_string(),
        client.key.display().to_string(),
    );
    let env = Env::from_pairs([
        ("DAISI_COORDINATOR_GRPC_ADDR", "127.0.0.1:0"),
        ("DAISI_COORDINATOR_HTTP_ADDR", "127.0.0.1:0"),
        ("DAISI_COORDINATOR_STORE", "redis"),
        ("DAISI_COORDINATOR_REDIS_URL", url.as_str()),
        ("DAISI_COORDINATOR_REDIS_CA", ca_path.as_str()),
        ("DAISI_COORDINATOR_REDIS_TLS_CERT", cert.as_str()),
        ("DAISI_COORDINATOR_REDIS_TLS_KEY", key.as_str()),
    ]);
    let config = Config::from_env(&env).expect("rediss settings").value;
    // Ready means the store's PING went through TLS with the client certificate.
    let replica = Replica::start(config).await;
    // Redis comes up after the coordinator (redis_later.rs): the TLS connection made while it was
    // down must not keep the coordinator unready.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let child = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .arg("--tls-cert-file")
        .arg(&server.cert)
        .arg("--tls-key-file")
        .arg(&server.key)
        .arg("--tls-ca-cert-file")
        .arg(&server.ca)
        .args([
            "--tls-auth-clients",
            "yes",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (Debian's is built with TLS)");
    let _redis = TlsRedis { child };
    eventually(Duration::from_secs(20), || async {
        daisi_testkit::get_json(replica.http, "/ready")
            .await
            .is_ok_and(|(status, _)| status == 200)
    })
    .await;

    // The CA and certificates need a rediss:// URL: a forgotten `s` is refused, not ignored.
    let plain = Env::from_pairs([
        ("DAISI_COORDINATOR_REDIS_URL", "redis://127.0.0.1:6379"),
        ("DAISI_COORDINATOR_REDIS_CA", ca_path.as_str()),
    ]);
    let err = Config::from_env(&plain).expect_err("CA without TLS");
    assert!(err.mentions("DAISI_COORDINATOR_REDIS_CA"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn uuid_like() -> String {
    daisi_domain::ConnectionId::generate().into_string()
}
