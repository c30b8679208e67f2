//! One long-lived `DeliverStream` per router and edge: batches go out as messages on one open
//! HTTP/2 stream instead of a call each, and the edge answers them in order on the same stream.
//!
//! Requests and the waiters of their answers are queued under one lock, so the n-th answer
//! belongs to the n-th waiter. One reader task per stream matches answers to waiters; when the
//! stream fails or ends, every waiter still queued gets an error and the stream is closed (the
//! next batch opens a new one). Closing a stream ends its request half too: requests still
//! queued behind the transport are dropped, not sent. Their waiters were told the stream ended
//! and the lanes send those batches again on a fresh stream; a copy still going out on the old
//! one would run on the edge beside the retry. An edge that does not know the method (an older
//! version during a rolling upgrade) answers UNIMPLEMENTED when the stream opens: the waiters
//! are told so, and the client sends its batches as unary `Deliver` calls from then on.

use super::DeliverError;
use daisi_proto::edge::v1 as pb;
use daisi_proto::edge::v1::edge_delivery_client::EdgeDeliveryClient;
use daisi_runtime::internal::ClientAuth;
use futures_util::{Stream, StreamExt};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Requests queued on a stream and not yet taken by the transport, at most. The lanes of an
/// edge have one batch in flight each, so this is only reached with more lanes than this.
const BACKLOG: usize = 64;

/// The delivery client of one channel.
pub type Client = EdgeDeliveryClient<InterceptedService<Channel, ClientAuth>>;

/// Why a batch sent on a stream got no answer there.
#[derive(Debug, Clone)]
pub enum StreamFailure {
    /// The edge does not serve `DeliverStream`: send the batch as a unary call.
    Unimplemented,
    /// The stream failed; the batch's outcome is this error.
    Failed(DeliverError),
}

type Answer = Result<pb::DeliverResponse, StreamFailure>;

struct Queue {
    requests: mpsc::Sender<pb::DeliverRequest>,
    /// The other end of `requests`, read by the transport ([`outbound`]); kept here so the
    /// stream's end can drop what is still queued.
    outbound: mpsc::Receiver<pb::DeliverRequest>,
    waiters: VecDeque<oneshot::Sender<Answer>>,
    closed: bool,
}

impl Queue {
    /// The stream ended: later sends are refused, queued requests dropped unsent; the waiters
    /// still queued are returned to be failed.
    fn end(&mut self) -> VecDeque<oneshot::Sender<Answer>> {
        self.closed = true;
        self.outbound.close();
        while self.outbound.try_recv().is_ok() {}
        std::mem::take(&mut self.waiters)
    }
}

/// The request half of the stream: the queued requests until the stream is stopped, checked
/// before each one, so none is handed to the transport after that.
fn outbound(
    queue: Arc<Mutex<Queue>>,
    stop: CancellationToken,
) -> impl Stream<Item = pb::DeliverRequest> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| queue.lock().outbound.poll_recv(cx))
        .take_until(stop.cancelled_owned())
}

/// An open `DeliverStream`; dropping it (or [`DeliveryStream::close`]) ends the stream.
pub struct DeliveryStream {
    queue: Arc<Mutex<Queue>>,
    stop: CancellationToken,
}

impl std::fmt::Debug for DeliveryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryStream")
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Drop for DeliveryStream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl DeliveryStream {
    /// Opens a stream on `client`'s channel (the reader task opens it; batches sent meanwhile
    /// wait in the backlog). Sets `unimplemented` when the edge does not serve the method.
    pub fn open(client: Client, unimplemented: Arc<AtomicBool>) -> Self {
        let (requests, outbound) = mpsc::channel(BACKLOG);
        let queue = Arc::new(Mutex::new(Queue {
            requests,
            outbound,
            waiters: VecDeque::new(),
            closed: false,
        }));
        let stop = CancellationToken::new();
        tokio::spawn(read(client, queue.clone(), stop.clone(), unimplemented));
        Self { queue, stop }
    }

    /// Queues `request`; its answer arrives on the receiver. The request comes back when the
    /// stream is closed or its backlog full.
    pub fn send(
        &self,
        request: pb::DeliverRequest,
    ) -> Result<oneshot::Receiver<Answer>, pb::DeliverRequest> {
        let mut queue = self.queue.lock();
        if queue.closed {
            return Err(request);
        }
        // Under the lock: requests enter the stream in the order of their waiters.
        match queue.requests.try_send(request) {
            Ok(()) => {
                let (tx, rx) = oneshot::channel();
                queue.waiters.push_back(tx);
                Ok(rx)
            }
            Err(mpsc::error::TrySendError::Full(request))
            | Err(mpsc::error::TrySendError::Closed(request)) => Err(request),
        }
    }

    /// Whether the stream ended (a new one is needed).
    pub fn is_closed(&self) -> bool {
        self.queue.lock().closed
    }

    /// Ends the stream: waiting batches fail as unavailable, queued ones are not sent.
    pub fn close(&self) {
        self.queue.lock().closed = true;
        self.stop.cancel();
    }
}

/// Opens the stream, then hands each answer to the oldest waiter until the stream ends.
async fn read(
    mut client: Client,
    queue: Arc<Mutex<Queue>>,
    stop: CancellationToken,
    unimplemented: Arc<AtomicBool>,
) {
    let requests = outbound(queue.clone(), stop.clone());
    let opened = tokio::select! {
        () = stop.cancelled() => Err(None),
        opened = client.deliver_stream(requests) => opened.map_err(Some),
    };
    let failure = match opened {
        Err(None) => closed("the router closed the delivery stream"),
        Err(Some(status)) if status.code() == tonic::Code::Unimplemented => {
            unimplemented.store(true, Ordering::Release);
            StreamFailure::Unimplemented
        }
        Err(Some(status)) => StreamFailure::Failed(super::grpc::error(&status)),
        Ok(response) => {
            let mut answers = response.into_inner();
            loop {
                let next = tokio::select! {
                    () = stop.cancelled() => break closed("the router closed the delivery stream"),
                    next = answers.message() => next,
                };
                match next {
                    Ok(Some(answer)) => {
                        let waiter = queue.lock().waiters.pop_front();
                        match waiter {
                            // A waiter that gave up (deadline) dropped its receiver.
                            Some(waiter) => drop(waiter.send(Ok(answer))),
                            None => break closed("the edge answered a batch nobody sent"),
                        }
                    }
                    Ok(None) => break closed("the edge ended the delivery stream"),
                    Err(status) => break StreamFailure::Failed(super::grpc::error(&status)),
                }
            }
        }
    };
    // However it ended, the request half ends too: nothing queued goes out any more.
    stop.cancel();
    let waiters = queue.lock().end();
    // The oldest waiter's batch is the one the edge failed on (a whole-request error ends the
    // stream); the later ones were not answered and are retried like any unavailable call.
    let mut waiters = waiters.into_iter();
    if let Some(first) = waiters.next() {
        drop(first.send(Err(failure.clone())));
    }
    let rest = match failure {
        StreamFailure::Unimplemented => StreamFailure::Unimplemented,
        StreamFailure::Failed(_) => closed("the delivery stream ended before this batch"),
    };
    for waiter in waiters {
        drop(waiter.send(Err(rest.clone())));
    }
}

fn closed(why: &str) -> StreamFailure {
    StreamFailure::Failed(DeliverError::Unavailable(why.to_owned()))
}
