//! The door of a listener: a bounded set of connections that are not yet admitted sockets.
//!
//! Every accepted connection takes a [`Pass`] before a byte is read and keeps it until it is
//! upgraded to a WebSocket or closed. At the cap, the connection that has been quiet the
//! longest (no byte received) among those with no request in progress is closed to make room
//! (nginx does the same with idle keep-alive connections when it runs out). A flood of silent
//! or half-sent connections then only evicts its own kind: a client in the middle of its TLS
//! handshake keeps sending and stays, and one whose request head is in (being authenticated or
//! admitted) is never evicted. Only when every pending connection has a request in progress is
//! the new one refused. [`Activity`] records the bytes received.
//!
//! The mutex guards a map and is never held across an await.

use parking_lot::Mutex;
use prometheus::{Histogram, IntCounter, IntGauge};
use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// Metric handles of one door, resolved once at start-up.
#[derive(Debug, Clone)]
pub struct DoorMetrics {
    /// Connections holding a pass.
    pub pending: IntGauge,
    /// Connections closed to make room for a newer one.
    pub evicted: IntCounter,
    /// Connections closed at once because every pass was held by a request in progress.
    pub refused: IntCounter,
    /// Connections closed at the pre-upgrade deadline.
    pub deadline: IntCounter,
    /// How long after `accept` connections were closed at the deadline (timer lateness shows).
    pub deadline_after: Histogram,
    /// How long after `accept` evicted connections were closed.
    pub evicted_after: Histogram,
}

/// See the module docs.
#[derive(Debug)]
pub struct Door {
    cap: usize,
    state: Mutex<State>,
    /// Evicted connections whose task has not closed them yet.
    closing: AtomicUsize,
    /// Zero of the entries' activity clocks.
    epoch: Instant,
    metrics: DoorMetrics,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    /// Ordered by entry: the first idle entry is the oldest idle connection.
    pending: BTreeMap<u64, Arc<Entry>>,
}

#[derive(Debug, Default)]
struct Entry {
    /// Requests of this connection being handled right now.
    in_flight: AtomicUsize,
    /// When a byte last arrived (or the connection was accepted), in ms since the door's epoch.
    last_active: AtomicU64,
    /// Cancelled when the connection is evicted.
    evict: CancellationToken,
}

impl Entry {
    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    fn last_active(&self) -> u64 {
        self.last_active.load(Ordering::Relaxed)
    }
}

/// A connection's place in the door; leaving it (drop) frees the place.
#[derive(Debug)]
pub struct Pass {
    door: Arc<Door>,
    id: u64,
    entry: Arc<Entry>,
}

/// Held while one request of the connection is handled; the connection cannot be evicted
/// meanwhile.
#[derive(Debug)]
pub struct InFlight {
    entry: Arc<Entry>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.entry.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Door {
    /// A door for at most `cap` pending connections.
    pub fn new(cap: usize, metrics: DoorMetrics) -> Arc<Self> {
        metrics.pending.set(0);
        Arc::new(Self {
            cap: cap.max(1),
            state: Mutex::new(State::default()),
            closing: AtomicUsize::new(0),
            epoch: Instant::now(),
            metrics,
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A pass for a connection just accepted, evicting the quietest idle one at the cap; `None`
    /// when every place is held by a request in progress (the caller closes the connection).
    pub fn enter(self: &Arc<Self>) -> Option<Pass> {
        let entry = Arc::new(Entry::default());
        entry.last_active.store(self.now(), Ordering::Relaxed);
        let mut state = self.state.lock();
        if state.pending.len() >= self.cap {
            // Quietest first; among equals the oldest (the map is in order of entry).
            let victim = state
                .pending
                .iter()
                .filter(|(_, e)| e.idle())
                .min_by_key(|(id, e)| (e.last_active(), **id))
                .map(|(id, _)| *id);
            match victim.and_then(|id| state.pending.remove(&id)) {
                Some(evicted) => {
                    self.closing.fetch_add(1, Ordering::AcqRel);
                    evicted.evict.cancel();
                    self.metrics.evicted.inc();
                }
                None => {
                    drop(state);
                    self.metrics.refused.inc();
                    return None;
                }
            }
        }
        let id = state.next;
        state.next += 1;
        state.pending.insert(id, entry.clone());
        self.metrics.pending.set(gauge(state.pending.len()));
        Some(Pass {
            door: self.clone(),
            id,
            entry,
        })
    }

    /// Connections holding a pass.
    pub fn len(&self) -> usize {
        self.state.lock().pending.len()
    }

    /// Whether no connection holds a pass.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Evicted connections still open: their tasks close them when they next run, so the
    /// accept loop lets them run before it evicts more (descriptors stay near the cap).
    pub fn closing(&self) -> usize {
        self.closing.load(Ordering::Acquire)
    }

    /// Counts a connection closed at its deadline, `open_for` after it was accepted.
    pub fn count_deadline(&self, open_for: std::time::Duration) {
        self.metrics.deadline.inc();
        self.metrics.deadline_after.observe(open_for.as_secs_f64());
    }

    /// Records that an evicted connection is being closed, `open_for` after it was accepted.
    pub fn count_evicted(&self, open_for: std::time::Duration) {
        self.metrics.evicted_after.observe(open_for.as_secs_f64());
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Pass {
    /// Resolves when the door evicted this connection to make room.
    pub fn evicted(&self) -> WaitForCancellationFuture<'_> {
        self.entry.evict.cancelled()
    }

    /// Marks a request in progress until the returned guard is dropped.
    pub fn request(&self) -> InFlight {
        self.entry.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            entry: self.entry.clone(),
        }
    }

    /// A handle that marks requests from inside the connection's service.
    pub fn requests(&self) -> RequestMarker {
        RequestMarker {
            entry: self.entry.clone(),
        }
    }

    /// Whether no request of this connection is in progress.
    pub fn idle(&self) -> bool {
        self.entry.idle()
    }

    /// `io` recording, for this pass, when bytes arrive.
    pub fn watch<IO>(&self, io: IO) -> Activity<IO> {
        Activity {
            io,
            entry: self.entry.clone(),
            epoch: self.door.epoch,
        }
    }
}

/// A connection's stream that records when bytes arrive, so the door evicts the quietest
/// connections first. A plain-TCP socket leaves it at the upgrade ([`Activity::into_inner`]);
/// behind TLS it stays around the socket (one atomic store per read).
#[derive(Debug)]
pub struct Activity<IO> {
    io: IO,
    entry: Arc<Entry>,
    epoch: Instant,
}

impl<IO> Activity<IO> {
    /// The stream itself: the door's bookkeeping ends with the pre-upgrade phase.
    pub fn into_inner(self) -> IO {
        self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Activity<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            let now = u64::try_from(this.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            this.entry.last_active.store(now, Ordering::Relaxed);
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Activity<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Clonable handle of [`Pass::request`] for the per-connection service.
#[derive(Debug, Clone)]
pub struct RequestMarker {
    entry: Arc<Entry>,
}

impl RequestMarker {
    /// See [`Pass::request`].
    pub fn request(&self) -> InFlight {
        self.entry.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            entry: self.entry.clone(),
        }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut state = self.door.state.lock();
        // An evicted pass was removed when it was evicted.
        if state.pending.remove(&self.id).is_none() {
            self.door.closing.fetch_sub(1, Ordering::AcqRel);
        }
        self.door.metrics.pending.set(gauge(state.pending.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn door(cap: usize) -> Arc<Door> {
        let metrics = DoorMetrics {
            pending: IntGauge::new("p", "p").expect("gauge"),
            evicted: IntCounter::new("e", "e").expect("counter"),
            refused: IntCounter::new("r", "r").expect("counter"),
            deadline: IntCounter::new("d", "d").expect("counter"),
            deadline_after: Histogram::with_opts(prometheus::HistogramOpts::new("da", "da"))
                .expect("histogram"),
            evicted_after: Histogram::with_opts(prometheus::HistogramOpts::new("ea", "ea"))
                .expect("histogram"),
        };
        Door::new(cap, metrics)
    }

    fn is_evicted(pass: &Pass) -> bool {
        pass.entry.evict.is_cancelled()
    }

    #[test]
    fn the_oldest_idle_connection_makes_room() {
        let door = door(3);
        let a = door.enter().expect("a");
        let b = door.enter().expect("b");
        let c = door.enter().expect("c");
        // `a` is handling a request: it is skipped, `b` is the oldest idle one.
        let busy = a.request();
        let d = door.enter().expect("d");
        assert!(!is_evicted(&a) && is_evicted(&b) && !is_evicted(&c) && !is_evicted(&d));
        assert_eq!(door.len(), 3);
        assert_eq!(door.metrics.evicted.get(), 1);
        assert_eq!(door.closing(), 1);
        drop(busy);
        let _e = door.enter().expect("e");
        assert!(is_evicted(&a), "idle again, and now the oldest");
        drop(b);
        assert_eq!(
            door.len(),
            3,
            "dropping an evicted pass frees nothing twice"
        );
    }

    #[tokio::test]
    async fn the_quietest_idle_connection_goes_first() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let door = door(2);
        let a = door.enter().expect("a");
        let b = door.enter().expect("b");
        // `a` is older, but bytes arrive on it later: `b` is now the quietest.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let (mut client, server) = tokio::io::duplex(64);
        let mut watched = a.watch(server);
        client.write_all(b"hello").await.expect("write");
        let mut buf = [0u8; 5];
        watched.read_exact(&mut buf).await.expect("read");
        let _c = door.enter().expect("c");
        assert!(!is_evicted(&a) && is_evicted(&b));
    }

    #[test]
    fn refuses_only_when_every_place_has_a_request_in_progress() {
        let door = door(2);
        let a = door.enter().expect("a");
        let b = door.enter().expect("b");
        let _ga = a.request();
        let _gb = b.requests().request();
        assert!(door.enter().is_none());
        assert_eq!(door.metrics.refused.get(), 1);
        drop(a);
        assert_eq!(door.len(), 1);
        assert!(door.enter().is_some());
    }

    #[test]
    fn the_gauge_follows_the_passes() {
        let door = door(10);
        let passes: Vec<Pass> = (0..5).filter_map(|_| door.enter()).collect();
        assert_eq!(door.metrics.pending.get(), 5);
        drop(passes);
        assert_eq!(door.metrics.pending.get(), 0);
        assert!(door.is_empty());
    }
}
