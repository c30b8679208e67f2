//! The connections behind internal gRPC: accepted (plain or TLS) for servers, dialed with TLS
//! for clients.

use super::tls::{PeerCertificate, PeerInfo, SERVER_NAME, TlsMaterial};
use futures_util::Stream;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Longest TLS handshake of an internal client; a peer that stalls it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; further accepted sockets wait their turn (bounded memory
/// against a flood on an internal port).
const MAX_HANDSHAKES: usize = 256;

/// An accepted internal connection.
#[derive(Debug)]
pub struct ServerConn {
    io: ServerIo,
    info: PeerInfo,
}

#[derive(Debug)]
enum ServerIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl tonic::transport::server::Connected for ServerConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

macro_rules! delegate_io {
    ($ty:ty, $($variant:path),+) => {
        impl AsyncRead for $ty {
            fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
                match &mut self.get_mut().io { $($variant(s) => Pin::new(s).poll_read(cx, buf),)+ }
            }
        }
        impl AsyncWrite for $ty {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                match &mut self.get_mut().io { $($variant(s) => Pin::new(s).poll_write(cx, buf),)+ }
            }
            fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
                match &mut self.get_mut().io { $($variant(s) => Pin::new(s).poll_write_vectored(cx, bufs),)+ }
            }
            fn is_write_vectored(&self) -> bool {
                match &self.io { $($variant(s) => s.is_write_vectored(),)+ }
            }
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match &mut self.get_mut().io { $($variant(s) => Pin::new(s).poll_flush(cx),)+ }
            }
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match &mut self.get_mut().io { $($variant(s) => Pin::new(s).poll_shutdown(cx),)+ }
            }
        }
    };
}

delegate_io!(ServerConn, ServerIo::Plain, ServerIo::Tls);

/// Accepted connections of `listener` for tonic's `serve_with_incoming`: with `tls`, each
/// after its TLS handshake (done in its own task, at most [`MAX_HANDSHAKES`] at once, each
/// within [`HANDSHAKE_TIMEOUT`]), with the client's certificate in the connection info.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<TlsMaterial>>,
) -> Pin<Box<dyn Stream<Item = io::Result<ServerConn>> + Send>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<ServerConn>(64);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (socket, remote) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tracing::warn!(%error, "internal gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            let Some(tls) = tls.clone() else {
                let conn = ServerConn {
                    io: ServerIo::Plain(socket),
                    info: PeerInfo {
                        remote_addr: Some(remote),
                        certificate: None,
                    },
                };
                if tx.send(conn).await.is_err() {
                    return;
                }
                continue;
            };
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let acceptor = TlsAcceptor::from(tls.server_config());
                let stream =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%remote, %error, "internal TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%remote, "internal TLS handshake timed out");
                            return;
                        }
                    };
                let certificate = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|leaf| PeerCertificate(Arc::new(leaf.clone().into_owned())));
                let conn = ServerConn {
                    io: ServerIo::Tls(Box::new(stream)),
                    info: PeerInfo {
                        remote_addr: Some(remote),
                        certificate,
                    },
                };
                let _ = tx.send(conn).await;
            });
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|conn| (Ok(conn), rx))
    }))
}

/// A TLS connection dialed by [`Connector`].
#[derive(Debug)]
pub struct ClientConn {
    io: ClientIo,
}

#[derive(Debug)]
enum ClientIo {
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

delegate_io!(ClientConn, ClientIo::Tls);

/// Dials internal servers over TLS with the current client certificate, checking that the
/// server's certificate is valid for [`SERVER_NAME`] and signed by the CA.
#[derive(Debug, Clone)]
pub struct Connector {
    tls: ClientTls,
}

/// Where a client's TLS configuration comes from.
#[derive(Debug, Clone)]
pub(crate) enum ClientTls {
    /// The reloadable material: the configuration current at each connection.
    Material(Arc<TlsMaterial>),
    /// A fixed configuration (no client certificate).
    Fixed(Arc<tokio_rustls::rustls::ClientConfig>),
}

impl Connector {
    /// A connector using `tls`.
    pub fn new(tls: Arc<TlsMaterial>) -> Self {
        Self {
            tls: ClientTls::Material(tls),
        }
    }

    pub(crate) fn from_source(tls: ClientTls) -> Self {
        Self { tls }
    }
}

type ConnectFuture = Pin<
    Box<dyn std::future::Future<Output = io::Result<hyper_util::rt::TokioIo<ClientConn>>> + Send>,
>;

impl tower::Service<http::Uri> for Connector {
    type Response = hyper_util::rt::TokioIo<ClientConn>;
    type Error = io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = match &self.tls {
            ClientTls::Material(material) => material.client_config(),
            ClientTls::Fixed(config) => config.clone(),
        };
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URI without a host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("https") => 443,
                _ => 80,
            });
            let socket = TcpStream::connect((host.as_str(), port)).await?;
            socket.set_nodelay(true)?;
            let name = ServerName::try_from(SERVER_NAME)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let stream = TlsConnector::from(config).connect(name, socket).await?;
            Ok(hyper_util::rt::TokioIo::new(ClientConn {
                io: ClientIo::Tls(Box::new(stream)),
            }))
        })
    }
}
