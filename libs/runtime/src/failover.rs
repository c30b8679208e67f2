//! gRPC channels to the replicas of one service, used one at a time: every call goes to the
//! current replica until a call to it fails at the transport level (connection refused, reset,
//! timed out), then to the next one.
//!
//! In Kubernetes a Service name in front of the coordinators already spreads and fails over
//! connections; a comma-separated list of URLs gives the same resilience where there is no
//! such name (docker networks, VMs, the test stacks). Errors the replica itself answers (a
//! gRPC status such as UNAVAILABLE because Redis is down) do not rotate: every replica shares
//! that backend, and switching would only add reconnects.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
#[cfg(test)]
use std::time::Duration;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::{Service, ServiceExt};
use url::Url;

/// Lazily connected channels to every replica, and which one is in use.
#[derive(Debug, Clone)]
pub struct FailoverChannel {
    channels: Arc<[Channel]>,
    current: Arc<AtomicUsize>,
    /// Bumped on every move to another replica, so a caller can tell that its failed call met
    /// a dead replica (and may be retried on the next one) rather than a refusal.
    rotations: Arc<std::sync::atomic::AtomicU64>,
}

/// Replica URLs that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The list was empty.
    #[error("at least one endpoint URL is required")]
    Empty,
    /// A URL is not a valid gRPC endpoint.
    #[error("invalid endpoint {url}: {source}")]
    Invalid {
        /// The URL.
        url: String,
        /// Why.
        source: tonic::transport::Error,
    },
}

impl FailoverChannel {
    /// Channels to `urls` (at least one), each configured by `configure` (timeouts, keep-alive).
    /// Nothing connects until the first call.
    pub fn new(
        urls: &[Url],
        configure: impl Fn(Endpoint) -> Endpoint,
    ) -> Result<Self, EndpointError> {
        if urls.is_empty() {
            return Err(EndpointError::Empty);
        }
        let channels = urls
            .iter()
            .map(|url| {
                Endpoint::from_shared(url.to_string())
                    .map(|e| configure(e).connect_lazy())
                    .map_err(|source| EndpointError::Invalid {
                        url: url.to_string(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            channels: channels.into(),
            current: Arc::new(AtomicUsize::new(0)),
            rotations: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        })
    }

    /// How many replicas there are.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// Always false: construction needs at least one URL.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// How many times calls moved to another replica so far. A call that failed while this
    /// changed failed at the transport level on a replica now abandoned: with more than one
    /// replica, an idempotent call may be sent again and reaches the next one.
    pub fn rotations(&self) -> u64 {
        self.rotations.load(Ordering::Acquire)
    }

    /// Moves to the next replica, unless another caller already moved away from `failed`.
    fn rotate_from(&self, failed: usize) {
        let n = self.channels.len();
        let moved = self
            .current
            .compare_exchange(
                failed,
                (failed + 1) % n,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok();
        if moved {
            self.rotations.fetch_add(1, Ordering::AcqRel);
        }
    }
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, tonic::transport::Error>> + Send>>;

impl Service<http::Request<Body>> for FailoverChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is awaited on the chosen channel inside `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let index = self.current.load(Ordering::Acquire) % self.channels.len();
        let this = self.clone();
        Box::pin(async move {
            // In bounds: `new` refuses an empty list and `index` is taken modulo the length.
            let mut channel = this.channels[index].clone();
            let result = match channel.ready().await {
                Ok(ready) => ready.call(request).await,
                Err(e) => Err(e),
            };
            if result.is_err() {
                this.rotate_from(index);
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    async fn health_server() -> Url {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (_reporter, service) = tonic_health::server::health_reporter();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(crate::grpc::incoming(listener)),
        );
        Url::parse(&format!("http://{addr}")).expect("url")
    }

    fn dead_url() -> Url {
        // Bound and dropped: nothing listens there any more.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        Url::parse(&format!("http://{addr}")).expect("url")
    }

    #[tokio::test]
    async fn a_dead_replica_is_skipped_after_one_failed_call() {
        let urls = [dead_url(), health_server().await];
        let channel =
            FailoverChannel::new(&urls, |e| e.connect_timeout(Duration::from_millis(500)))
                .expect("valid urls");
        let mut client = HealthClient::new(channel.clone());
        let first = client.check(HealthCheckRequest::default()).await;
        assert!(first.is_err(), "the dead replica answered: {first:?}");
        let second = client.check(HealthCheckRequest::default()).await;
        assert!(
            second.is_ok(),
            "the live replica did not answer: {second:?}"
        );
        assert_eq!(channel.current.load(Ordering::Relaxed), 1);
        assert_eq!(channel.rotations(), 1);
    }

    #[test]
    fn an_empty_list_is_refused() {
        assert!(matches!(
            FailoverChannel::new(&[], |e| e),
            Err(EndpointError::Empty)
        ));
    }
}
