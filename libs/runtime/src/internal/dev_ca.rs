//! A throw-away CA for `daisi dev` and the tests: the secure path is the tested path.
//!
//! [`DevCa::create`] writes `ca.crt` into a directory; [`DevCa::issue`] writes a leaf
//! certificate and key for the given identity names, signed by it, and returns the three
//! paths as the `DAISI_INTERNAL_TLS_*` settings take them. Keys are ECDSA P-256.

use super::auth::{admin_name, pod_name, router_name};
use super::tls::{SERVER_NAME, TlsFiles};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::io;
use std::path::{Path, PathBuf};

/// A CA whose key lives only in this process.
pub struct DevCa {
    dir: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn other(e: rcgen::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// Writes `contents` readable by the owner only (it may be a private key).
fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents.as_bytes())
}

impl DevCa {
    /// A new CA; its certificate is written to `dir/ca.crt` (`dir` is created).
    pub fn create(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(other)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "daisi dev CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(other)?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(other)?;
        std::fs::write(dir.join("ca.crt"), issuer.pem())?;
        Ok(Self {
            dir: dir.to_owned(),
            issuer,
        })
    }

    /// The CA certificate's path.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A leaf certificate for `names` (DNS SANs), written to `dir/<file>.crt` and `.key`,
    /// usable as server and as client certificate.
    pub fn issue(&self, file: &str, names: &[String]) -> io::Result<TlsFiles> {
        let mut params = CertificateParams::new(names.to_vec()).map_err(other)?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().map_or(file, String::as_str),
        );
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(other)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(other)?;
        let files = TlsFiles {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
            ca: self.ca_path(),
        };
        std::fs::write(&files.cert, cert.pem())?;
        write_private(&files.key, &key.serialize_pem())?;
        Ok(files)
    }

    /// The coordinator's certificate (a server).
    pub fn coordinator(&self) -> io::Result<TlsFiles> {
        self.issue("coordinator", &[SERVER_NAME.to_owned()])
    }

    /// The certificate of edge pod `pod_id` (a server, and that pod as a client).
    pub fn edge(&self, pod_id: &str) -> io::Result<TlsFiles> {
        self.issue(
            &format!("edge-{pod_id}"),
            &[SERVER_NAME.to_owned(), pod_name(pod_id)],
        )
    }

    /// A router's certificate.
    pub fn router(&self) -> io::Result<TlsFiles> {
        self.issue("router", &[router_name()])
    }

    /// An operator's certificate for the admin API.
    pub fn admin(&self) -> io::Result<TlsFiles> {
        self.issue("admin", &[admin_name()])
    }
}
