//! The accept loop of the edge's HTTP listeners (the public port and the minting listener).
//!
//! axum's `serve` offers neither a deadline nor TLS, so the edge drives hyper itself:
//! - a [`Pass`] of the listener's [`Door`] is taken right after `accept`, before a byte is
//!   read, so connections that are not yet admitted sockets are bounded;
//! - one deadline runs from accept through TLS, the request head, authentication and session
//!   acquisition: a connection that is not a WebSocket by then is closed (on the minting
//!   listener a request in progress may finish first, for `in_flight_grace`);
//! - HTTP/1.1 only: WebSockets upgrade over HTTP/1.1, and hyper-util's protocol sniffing reads
//!   bytes with no timer before HTTP/1 is even chosen (PITFALLS.md);
//! - `TCP_NODELAY` on every socket, the peer address as `ConnectInfo` for the per-address
//!   budget, and a graceful stop.

use super::door::{Door, Pass};
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long requests in flight may take to finish once the server stops.
const FINISH_IN_FLIGHT: Duration = Duration::from_secs(5);

/// Largest request head hyper buffers (hyper's own default is ~400 KiB). Every pending
/// connection may fill it, so it is part of what the door's cap bounds; 32 KiB is what nginx
/// allows by default (4 x 8 KiB) and leaves room for cookies.
const MAX_HEAD_BYTES: usize = 32 * 1024;

/// How one listener treats its connections.
#[derive(Clone)]
pub struct Policy {
    /// TLS termination, when configured.
    pub tls: Option<TlsAcceptor>,
    /// The bound on connections that are not admitted sockets.
    pub door: Arc<Door>,
    /// From accept to an upgraded socket (or, for plain HTTP, the connection's whole life).
    pub deadline: Duration,
    /// At the deadline, how long a request in progress may still take before the connection
    /// is closed; zero closes at once.
    pub in_flight_grace: Duration,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("tls", &self.tls.is_some())
            .field("door", &self.door)
            .field("deadline", &self.deadline)
            .field("in_flight_grace", &self.in_flight_grace)
            .finish()
    }
}

/// Serves `router` on `listener` until `stop`; returns once the connections that are not
/// WebSockets are closed (within 5 s). Upgraded sockets live on in their own
/// tasks.
pub async fn serve(listener: TcpListener, router: Router, policy: Policy, stop: CancellationToken) {
    let connections = TaskTracker::new();
    // Outside tokio's cooperative budget, so a busy runtime (thousands of TLS handshakes) does
    // not leave connections waiting in the kernel's accept queue, where no deadline runs yet;
    // the loop yields by itself every `ACCEPT_BATCH` connections instead.
    tokio::task::unconstrained(accept_loop(
        &listener,
        &router,
        &policy,
        &connections,
        &stop,
    ))
    .await;
    drop(listener);
    connections.close();
    if tokio::time::timeout(FINISH_IN_FLIGHT, connections.wait())
        .await
        .is_err()
    {
        tracing::debug!("http connections still open at shutdown");
    }
}

/// Connections accepted before the accept loop lets other tasks run.
const ACCEPT_BATCH: usize = 256;
/// Evicted connections still open above which the accept loop waits for their tasks to close
/// them, so the descriptors held stay near the door's cap even when the runtime is behind.
const MAX_CLOSING: usize = 64;
/// Bound of that wait, in yields: a wedged connection task must not stop the accept loop.
const MAX_CLOSING_YIELDS: usize = 1_000;

async fn accept_loop(
    listener: &TcpListener,
    router: &Router,
    policy: &Policy,
    connections: &TaskTracker,
    stop: &CancellationToken,
) {
    let mut batch = 0;
    loop {
        batch += 1;
        if batch == ACCEPT_BATCH {
            batch = 0;
            tokio::task::yield_now().await;
        }
        for _ in 0..MAX_CLOSING_YIELDS {
            if policy.door.closing() < MAX_CLOSING {
                break;
            }
            tokio::task::yield_now().await;
        }
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and similar: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let deadline = Instant::now() + policy.deadline;
        // Dropping the stream closes it: nothing is read from a connection without a pass.
        let Some(pass) = policy.door.enter() else {
            continue;
        };
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "failed to set TCP_NODELAY");
        }
        connections.spawn(connection(
            tcp,
            peer,
            router.clone(),
            policy.clone(),
            pass,
            deadline,
            stop.clone(),
        ));
    }
}

/// Why a connection was closed before it finished by itself.
enum Cut {
    Evicted,
    Deadline,
    Stop,
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    policy: Policy,
    pass: Pass,
    deadline: Instant,
    stop: CancellationToken,
) {
    let tcp = pass.watch(tcp);
    let Some(acceptor) = policy.tls.clone() else {
        http(tcp, peer, router, &policy, &pass, deadline, &stop).await;
        return;
    };
    let handshake = tokio::select! {
        biased;
        cut = interrupted(&pass, deadline, &stop) => {
            count(&policy, &cut, deadline);
            return;
        }
        handshake = acceptor.accept(tcp) => handshake,
    };
    match handshake {
        Ok(tls) => http(tls, peer, router, &policy, &pass, deadline, &stop).await,
        Err(error) => tracing::debug!(%error, "tls handshake failed"),
    }
}

/// Records why the door closes a connection, and how long after `accept`.
fn count(policy: &Policy, cut: &Cut, deadline: Instant) {
    let accepted = deadline - policy.deadline;
    let open_for = Instant::now().saturating_duration_since(accepted);
    match cut {
        Cut::Deadline => policy.door.count_deadline(open_for),
        Cut::Evicted => policy.door.count_evicted(open_for),
        Cut::Stop => {}
    }
}

/// Resolves when the connection must go: evicted, out of time, or the server stops.
async fn interrupted(pass: &Pass, deadline: Instant, stop: &CancellationToken) -> Cut {
    tokio::select! {
        biased;
        () = pass.evicted() => Cut::Evicted,
        () = tokio::time::sleep_until(deadline) => Cut::Deadline,
        () = stop.cancelled() => Cut::Stop,
    }
}

async fn http<IO>(
    io: IO,
    peer: SocketAddr,
    router: Router,
    policy: &Policy,
    pass: &Pass,
    deadline: Instant,
    stop: &CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let requests = pass.requests();
    // The router as a hyper service that records the peer and marks requests in progress.
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let in_flight = requests.request();
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await;
            drop(in_flight);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.max_buf_size(MAX_HEAD_BYTES);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let cut = tokio::select! {
        biased;
        cut = interrupted(pass, deadline, stop) => cut,
        // Finished: the client closed, or the connection became a WebSocket (its socket task
        // owns it now and the pass is given back).
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "http connection ended with an error");
            }
            return;
        }
    };
    count(policy, &cut, deadline);
    let grace = match cut {
        Cut::Evicted => return,
        Cut::Deadline => policy.in_flight_grace,
        Cut::Stop => FINISH_IN_FLIGHT,
    };
    if pass.idle() || grace.is_zero() {
        return;
    }
    // A request is being answered: let hyper finish it and close (no keep-alive), within the
    // grace.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(grace, conn).await;
}
