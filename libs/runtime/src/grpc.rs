//! gRPC serving helpers: accepted sockets with `TCP_NODELAY`, and the standard gRPC health
//! service (`grpc.health.v1`) kept in step with [`Readiness`].

use crate::health::Readiness;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

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
