//! gRPC serving helpers: the server builder every daisi gRPC server starts from, accepted
//! sockets with `TCP_NODELAY`, and the standard gRPC health service (`grpc.health.v1`) kept in
//! step with [`Readiness`].

use crate::health::Readiness;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// A server pings a connection it has read nothing from for this long (the clients of daisi
/// ping every 10 s themselves, so a healthy connection is rarely pinged by the server).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// A ping not answered within this closes the connection and every call on it: a client that
/// vanished without a FIN (a killed node, a dropped route) is gone within interval + timeout,
/// 20 s, instead of holding its streams until TCP gives up (about 15 minutes).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most calls in flight on one HTTP/2 connection (`SETTINGS_MAX_CONCURRENT_STREAMS`); a client
/// beyond it queues further calls on its side. tonic sets no limit unless told (hyper's own
/// default is 200); 1,024 leaves an edge's reconnect storm of acquires room on one connection
/// while bounding what one connection can hold open.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// The tonic server builder every daisi gRPC server starts from: HTTP/2 keep-alive
/// ([`KEEPALIVE_INTERVAL`], [`KEEPALIVE_TIMEOUT`]) and [`MAX_CONCURRENT_STREAMS`].
pub fn server() -> Server {
    server_with(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
}

fn server_with(keepalive_interval: Duration, keepalive_timeout: Duration) -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(keepalive_interval))
        .http2_keepalive_timeout(Some(keepalive_timeout))
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
}

/// The listener as a tonic incoming stream with `TCP_NODELAY` on every connection.
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Keeps the overall (`""`) and per-service health statuses equal to `readiness` until
/// `shutdown`, then reports NOT_SERVING so balancers move away before the server stops.
pub async fn mirror_health(
    readiness: Readiness,
    reporter: HealthReporter,
    services: Vec<String>,
    shutdown: CancellationToken,
) {
    let mut changes = readiness.subscribe();
    loop {
        let status = if readiness.is_ready() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        set_all(&reporter, &services, status).await;
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break },
            () = shutdown.cancelled() => break,
        }
    }
    set_all(&reporter, &services, ServingStatus::NotServing).await;
}

async fn set_all(reporter: &HealthReporter, services: &[String], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for service in services {
        reporter.set_service_status(service, status).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What a silent HTTP/2 client saw of the server.
    #[derive(Debug, Default)]
    struct Seen {
        max_concurrent_streams: Option<u32>,
        pinged: bool,
        closed: bool,
    }

    /// Speaks the HTTP/2 preface and then nothing (a client whose host vanished): reads the
    /// server's frames until it closes the connection or `within` passes.
    async fn silent_client(addr: std::net::SocketAddr, within: Duration) -> Seen {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
        tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
        let mut seen = Seen::default();
        let read = async {
            loop {
                let mut header = [0u8; 9];
                if tcp.read_exact(&mut header).await.is_err() {
                    seen.closed = true;
                    return;
                }
                let len = usize::from(header[0]) << 16
                    | usize::from(header[1]) << 8
                    | usize::from(header[2]);
                let mut payload = vec![0u8; len];
                if tcp.read_exact(&mut payload).await.is_err() {
                    seen.closed = true;
                    return;
                }
                let (kind, ack) = (header[3], header[4] & 1 == 1);
                match kind {
                    4 if !ack => {
                        for setting in payload.chunks_exact(6) {
                            if u16::from_be_bytes([setting[0], setting[1]]) == 3 {
                                let value = [setting[2], setting[3], setting[4], setting[5]];
                                seen.max_concurrent_streams = Some(u32::from_be_bytes(value));
                            }
                        }
                    }
                    6 if !ack => seen.pinged = true,
                    _ => {}
                }
            }
        };
        let _ = tokio::time::timeout(within, read).await;
        seen
    }

    #[tokio::test]
    async fn a_client_that_stops_answering_pings_is_disconnected() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let server = server_with(Duration::from_millis(200), Duration::from_millis(200))
            .add_service(health)
            .serve_with_incoming_shutdown(incoming(listener), stop.clone().cancelled_owned());
        let server = tokio::spawn(server);

        let seen = silent_client(addr, Duration::from_secs(5)).await;
        assert_eq!(seen.max_concurrent_streams, Some(MAX_CONCURRENT_STREAMS));
        assert!(seen.pinged, "the server pings an idle connection: {seen:?}");
        assert!(
            seen.closed,
            "the server drops a connection whose pings go unanswered: {seen:?}"
        );
        stop.cancel();
        server.await.unwrap().unwrap();
    }
}
