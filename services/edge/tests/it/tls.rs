//! Optional TLS termination: with a certificate configured the edge speaks HTTPS (and so WSS)
//! on its client port. The certificate is a self-signed test fixture for 127.0.0.1.

use crate::support::*;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

#[tokio::test]
async fn serves_https_when_a_certificate_is_configured() {
    let coord = Coord::start().await;
    let edge = TestEdge::spawn(
        &coord.url,
        "edge-tls",
        |c| {
            c.tls = Some(daisi_edge::config::TlsFiles {
                cert: format!("{DATA}/tls-cert.pem").into(),
                key: format!("{DATA}/tls-key.pem").into(),
            });
        },
        None,
    )
    .await;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(format!("{DATA}/tls-cert.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // HTTP/2 only (ALPN h2): refused, the client port speaks HTTP/1.1.
    let mut h2_only = config.clone();
    h2_only.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(edge.http).await.unwrap();
    let refused = tokio_rustls::TlsConnector::from(Arc::new(h2_only))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await;
    assert!(refused.is_err(), "an h2-only client got a TLS session");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(edge.http).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("tls handshake");
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.ok();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#"{"status":"OK"}"#), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("x-request-id"),
        "{response}"
    );

    // Plain HTTP on the TLS port gets nothing useful.
    let plain = reqwest::get(format!("http://{}/health", edge.http)).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}
