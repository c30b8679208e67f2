//! gRPC channels to the replicas of one service, used one at a time: every call goes to the
//! current replica until a call to it fails at the transport level (connection refused, reset)
//! or gets no answer within the per-attempt deadline, then to the next one.
//!
//! The deadline lives here, inside the channel, and not only in the callers: a caller's own
//! timeout cancels the call without telling the channel, so a replica that stopped answering
//! (SIGSTOP, a hung kernel: TCP still accepts) stayed current until HTTP/2 keep-alive gave up.
//! Here the attempt's deadline fails the call *and* moves the channel to the next replica, so a silent replica is left after one
//! deadline. [`FailoverChannel::call_idempotent`] then sends an idempotent call again to the
//! next replica within the caller's overall budget.
//!
//! Why not tower's `balance`: it spreads calls over every ready replica, and a replica that is
//! frozen still looks ready (its connection is established); one replica at a time, left on
//! the first unanswered attempt, keeps a single warm connection and needs no health state.
//!
//! In Kubernetes a Service name in front of the coordinators already spreads and fails over
//! connections; a comma-separated list of URLs gives the same resilience where there is no
//! such name (docker networks, VMs, the test stacks). Errors the replica itself answers (a
//! gRPC status such as UNAVAILABLE because Redis is down) do not rotate: every replica shares
//! that backend, and switching would only add reconnects.

use crate::internal::ClientAuth;
use backon::{ConstantBuilder, Retryable};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::{BoxError, Service, ServiceExt};
use url::Url;

/// Per-attempt deadline until [`FailoverChannel::attempt_timeout`] sets one: long enough to
/// never cut a legitimate call, short enough that a silent replica is left eventually.
const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Lazily connected channels to every replica, and which one is in use.
#[derive(Debug, Clone)]
pub struct FailoverChannel {
    channels: Arc<[Replica]>,
    current: Arc<AtomicUsize>,
    /// Bumped on every move to another replica, so a caller can tell that its failed call met
    /// a dead replica (and may be retried on the next one) rather than a refusal.
    rotations: Arc<AtomicU64>,
    attempt_timeout: Duration,
    /// Sent with every call (the caller's internal bearer token), when there is one.
    authorization: Option<http::HeaderValue>,
}

#[derive(Debug)]
struct Replica {
    url: String,
    channel: Channel,
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

/// Why [`FailoverChannel::call_idempotent`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The last attempt ended with this status (answered by a replica, or the transport's or
    /// deadline's failure as a status).
    #[error("{0}")]
    Status(tonic::Status),
    /// The overall budget ran out before any replica answered.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

impl FailoverChannel {
    /// Channels to `urls` (at least one), each configured by `configure` (timeouts, keep-alive,
    /// TLS). Nothing connects until the first call.
    pub fn new(
        urls: &[Url],
        configure: impl Fn(Endpoint) -> Endpoint,
    ) -> Result<Self, EndpointError> {
        Self::with_auth(urls, &ClientAuth::none(), configure)
    }

    /// Like [`FailoverChannel::new`], dialing and calling with `auth`'s credentials (TLS
    /// client certificate, bearer token).
    pub fn with_auth(
        urls: &[Url],
        auth: &ClientAuth,
        configure: impl Fn(Endpoint) -> Endpoint,
    ) -> Result<Self, EndpointError> {
        if urls.is_empty() {
            return Err(EndpointError::Empty);
        }
        let channels = urls
            .iter()
            .map(|url| {
                Endpoint::from_shared(url.to_string())
                    .map(|e| Replica {
                        url: url.to_string(),
                        channel: auth.connect_lazy(&configure(e)),
                    })
                    .map_err(|source| EndpointError::Invalid {
                        url: url.to_string(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            channels: channels.into(),
            current: Arc::new(AtomicUsize::new(0)),
            rotations: Arc::new(AtomicU64::new(0)),
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            authorization: auth.authorization().cloned(),
        })
    }

    /// Sets the deadline of one attempt on one replica (until the response headers arrive;
    /// a stream's later messages are not bounded by it). An attempt that misses it fails with
    /// UNAVAILABLE and the channel moves to the next replica.
    #[must_use]
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The per-attempt deadline that fits `budget`: with several replicas, half of it, so a
    /// call that meets a silent replica still has time for one attempt on the next.
    pub fn attempt_timeout_for(budget: Duration, replicas: usize) -> Duration {
        if replicas > 1 { budget / 2 } else { budget }
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

    /// Runs an idempotent call made by `attempt` (a tonic client call on this channel), and
    /// when it failed because its replica did not answer (the channel moved on), sends it
    /// again, at once, to the next replica: at most once per replica, all within `budget`.
    /// Answers of a replica (any status it returns) are final.
    pub async fn call_idempotent<T, F, Fut>(
        &self,
        budget: Duration,
        mut attempt: F,
    ) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        // Not tower's `Retry` around the channel: it must clone the request, and a tonic
        // request's body is a stream; the typed call is cheap to make again, so the retry
        // lives here, with backon running the loop. What backon cannot know is whether a
        // failure met a silent replica or a refusal, so each attempt reports whether the
        // channel moved during it.
        let run = (|| {
            let before = self.rotations();
            let call = attempt();
            async move {
                call.await
                    .map_err(|status| (status, self.rotations() != before))
            }
        })
        .retry(
            ConstantBuilder::default()
                .with_delay(Duration::ZERO)
                .with_max_times(self.len().saturating_sub(1)),
        )
        .when(|(_, rotated)| *rotated);
        match tokio::time::timeout(budget, run).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err((status, _))) => Err(CallError::Status(status)),
            Err(_) => Err(CallError::TimedOut(budget)),
        }
    }
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

impl Service<http::Request<Body>> for FailoverChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is awaited on the chosen channel inside `call`, under the deadline.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Some(value) = &self.authorization {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, value.clone());
        }
        let index = self.current.load(Ordering::Acquire) % self.channels.len();
        let this = self.clone();
        Box::pin(async move {
            // In bounds: `new` refuses an empty list and `index` is taken modulo the length.
            let replica = &this.channels[index];
            let mut channel = replica.channel.clone();
            // The deadline covers readiness too: a channel whose request buffer is full of
            // calls to a silent replica is not ready, and that wait must not be endless.
            let attempt = async {
                let ready = channel.ready().await?;
                ready.call(request).await
            };
            match tokio::time::timeout(this.attempt_timeout, attempt).await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(error)) => {
                    this.rotate_from(index);
                    Err(BoxError::from(error))
                }
                Err(_elapsed) => {
                    this.rotate_from(index);
                    // A status, so tonic hands it to the caller as is.
                    Err(BoxError::from(tonic::Status::unavailable(format!(
                        "{} gave no answer within {:?}",
                        replica.url, this.attempt_timeout
                    ))))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
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

    /// A listener that accepts TCP connections and never answers: what a SIGSTOPped process
    /// looks like from outside (the kernel completes the handshake).
    fn silent_url() -> (std::net::TcpListener, Url) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        (
            listener,
            Url::parse(&format!("http://{addr}")).expect("url"),
        )
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

    #[tokio::test]
    async fn a_silent_replica_is_left_after_one_deadline_and_the_call_retried() {
        let (_silent, silent) = silent_url();
        let urls = [silent, health_server().await];
        let channel = FailoverChannel::new(&urls, |e| e)
            .expect("valid urls")
            .attempt_timeout(Duration::from_millis(300));
        let started = std::time::Instant::now();
        let answer = channel
            .call_idempotent(Duration::from_secs(5), || {
                let mut client = HealthClient::new(channel.clone());
                async move { client.check(HealthCheckRequest::default()).await }
            })
            .await;
        assert!(
            answer.is_ok(),
            "not retried on the live replica: {answer:?}"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(3),
            "one deadline, then the next replica: {took:?}"
        );
        assert_eq!(channel.rotations(), 1);
        // The next call goes straight to the live replica.
        let started = std::time::Instant::now();
        HealthClient::new(channel.clone())
            .check(HealthCheckRequest::default())
            .await
            .expect("live replica");
        assert!(started.elapsed() < Duration::from_millis(300));
    }

    #[tokio::test]
    async fn a_frozen_process_is_left_after_one_deadline() {
        // A real process stopped with SIGSTOP, holding an established HTTP/2 connection.
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(64)\n\
                 print(s.getsockname()[1],flush=True)\ntime.sleep(60)",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut port = String::new();
        {
            use std::io::BufRead;
            let out = child.stdout.take().expect("stdout");
            std::io::BufReader::new(out)
                .read_line(&mut port)
                .expect("port");
        }
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        nix::sys::signal::kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
        let frozen = Url::parse(&format!("http://127.0.0.1:{}", port.trim())).expect("url");
        let urls = [frozen, health_server().await];
        let channel = FailoverChannel::new(&urls, |e| e)
            .expect("valid urls")
            .attempt_timeout(Duration::from_millis(400));
        let answer = channel
            .call_idempotent(Duration::from_secs(2), || {
                let mut client = HealthClient::new(channel.clone());
                async move { client.check(HealthCheckRequest::default()).await }
            })
            .await;
        let _ = child.kill();
        let _ = child.wait();
        assert!(answer.is_ok(), "{answer:?}");
        assert_eq!(channel.current.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn the_budget_bounds_the_whole_call() {
        let (_a, a) = silent_url();
        let (_b, b) = silent_url();
        let channel = FailoverChannel::new(&[a, b], |e| e)
            .expect("valid urls")
            .attempt_timeout(Duration::from_secs(10));
        let answer = channel
            .call_idempotent(Duration::from_millis(300), || {
                let mut client = HealthClient::new(channel.clone());
                async move { client.check(HealthCheckRequest::default()).await }
            })
            .await;
        assert!(matches!(answer, Err(CallError::TimedOut(_))), "{answer:?}");
    }

    #[tokio::test]
    async fn a_status_answered_by_a_replica_is_final() {
        let urls = [health_server().await, health_server().await];
        let channel = FailoverChannel::new(&urls, |e| e).expect("valid urls");
        let mut calls = 0;
        let answer = channel
            .call_idempotent(Duration::from_secs(2), || {
                calls += 1;
                let mut client = HealthClient::new(channel.clone());
                async move {
                    client
                        .check(HealthCheckRequest {
                            service: "no-such-service".into(),
                        })
                        .await
                }
            })
            .await;
        assert!(
            matches!(&answer, Err(CallError::Status(s)) if s.code() == tonic::Code::NotFound),
            "{answer:?}"
        );
        assert_eq!(calls, 1, "not retried");
        assert_eq!(channel.rotations(), 0);
    }

    #[test]
    fn an_empty_list_is_refused() {
        assert!(matches!(
            FailoverChannel::new(&[], |e| e),
            Err(EndpointError::Empty)
        ));
    }
}
