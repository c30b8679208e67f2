//! Who is calling, and what they may do.
//!
//! Servers run [`Authenticate`] in front of every internal service: it turns the connection's
//! client certificate and the call's bearer token into a [`Caller`] (refusing a call with
//! neither with `UNAUTHENTICATED`), puts it in the request's extensions, and checks the
//! service-wide role (admin API, delivery). Handlers then check what depends on the request,
//! such as the pod a call names ([`Caller::check_pod`]).
//!
//! Identities in certificates are DNS names (SANs) under `daisi.internal`:
//! `<pod-id>.pod.daisi.internal` for an edge pod (a wildcard `*.pod.daisi.internal` is any
//! pod: one shared edge certificate), `router.daisi.internal`, `admin.daisi.internal`. Any
//! certificate the CA signed may make the read-only calls (route lookups, pod resolution).

use super::config::AdminToken;
use super::conn::{ClientTls, Connector};
use super::tls::{PeerCertificate, PeerInfo, TlsMaterial};
use super::token::{TokenIdentity, TokenKey};
use http::HeaderValue;
use secrecy::ExposeSecret;
use std::sync::Arc;
use tokio_rustls::rustls::pki_types::{DnsName, ServerName};
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// Suffix of every identity name in certificates.
pub const IDENTITY_DOMAIN: &str = "daisi.internal";

/// The name a router's certificate carries.
pub fn router_name() -> String {
    format!("router.{IDENTITY_DOMAIN}")
}

/// The name an admin client's certificate carries.
pub fn admin_name() -> String {
    format!("admin.{IDENTITY_DOMAIN}")
}

/// The name the certificate of edge pod `pod_id` carries.
pub fn pod_name(pod_id: &str) -> String {
    format!("{pod_id}.pod.{IDENTITY_DOMAIN}")
}

/// The caller of one internal call.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Internal authentication is not configured: everything is allowed.
    open: bool,
    token: Option<TokenIdentity>,
    admin_token: bool,
    certificate: Option<PeerCertificate>,
}

impl Caller {
    /// The caller of `request`, as [`Authenticate`] found it. A request that did not pass
    /// through it is nobody, and may do nothing.
    pub fn of<T>(request: &Request<T>) -> Self {
        request.extensions().get::<Self>().cloned().unwrap_or(Self {
            open: false,
            token: None,
            admin_token: false,
            certificate: None,
        })
    }

    fn cert_valid_for(&self, name: &str) -> bool {
        let Some(PeerCertificate(der)) = &self.certificate else {
            return false;
        };
        let Ok(name) = DnsName::try_from(name) else {
            return false;
        };
        webpki::EndEntityCert::try_from(der.as_ref())
            .and_then(|cert| cert.verify_is_valid_for_subject_name(&ServerName::DnsName(name)))
            .is_ok()
    }

    /// Whether the caller presented any valid credential (or security is off).
    pub fn is_authenticated(&self) -> bool {
        self.open || self.token.is_some() || self.admin_token || self.certificate.is_some()
    }

    /// Whether the caller holds the admin credential.
    pub fn is_admin(&self) -> bool {
        self.open || self.admin_token || self.cert_valid_for(&admin_name())
    }

    /// Whether the caller is a router.
    pub fn is_router(&self) -> bool {
        self.open
            || self.token == Some(TokenIdentity::Router)
            || self.cert_valid_for(&router_name())
    }

    /// Whether the caller may act as edge pod `pod_id`.
    pub fn may_act_as_pod(&self, pod_id: &str) -> bool {
        self.open
            || matches!(&self.token, Some(TokenIdentity::Pod(id)) if id == pod_id)
            || self.cert_valid_for(&pod_name(pod_id))
    }

    /// `PERMISSION_DENIED` unless the caller may act as `pod_id`: a pod registers,
    /// heartbeats, deregisters and holds sessions and routes for itself only.
    pub fn check_pod(&self, pod_id: &str) -> Result<(), Status> {
        if self.may_act_as_pod(pod_id) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "this credential may not act as pod `{pod_id}`"
            )))
        }
    }
}

/// What a service demands of every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any valid credential (handlers check the rest).
    Authenticated,
    /// The admin credential.
    Admin,
    /// A router's credential.
    Router,
}

/// The server side: a tonic interceptor. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Authenticate {
    pub(crate) on: bool,
    pub(crate) token: Option<TokenKey>,
    pub(crate) admin: Option<AdminToken>,
    pub(crate) need: Need,
}

impl Authenticate {
    fn caller(&self, request: &Request<()>) -> Result<Caller, Status> {
        let certificate = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|info| info.certificate.clone());
        let mut caller = Caller {
            open: !self.on,
            token: None,
            admin_token: false,
            certificate,
        };
        if let Some(value) = request.metadata().get("authorization") {
            let presented = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .unwrap_or_default();
            if self
                .admin
                .as_ref()
                .is_some_and(|admin| admin.digest.matches(presented.as_bytes()))
            {
                caller.admin_token = true;
            } else if let Some(identity) = self.token.as_ref().and_then(|k| k.verify(presented)) {
                caller.token = Some(identity);
            } else if self.on {
                // Never echo what was presented: it may be a secret meant for something else.
                return Err(Status::unauthenticated("invalid bearer token"));
            }
        }
        Ok(caller)
    }
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.caller(&request)?;
        if !caller.is_authenticated() {
            return Err(Status::unauthenticated(
                "internal calls need a client certificate or a bearer token (DAISI_INTERNAL_*)",
            ));
        }
        let allowed = match self.need {
            Need::Authenticated => true,
            Need::Admin => caller.is_admin(),
            Need::Router => caller.is_router(),
        };
        if !allowed {
            return Err(Status::permission_denied(match self.need {
                Need::Admin => "this call needs the admin credential",
                _ => "this call is for routers only",
            }));
        }
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The client side: how a client dials (TLS with its certificate, or plain) and the bearer
/// token it sends. Also a tonic interceptor adding the token to every call.
#[derive(Clone, Default)]
pub struct ClientAuth {
    pub(crate) tls: Option<ClientTls>,
    pub(crate) bearer: Option<HeaderValue>,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("tls", &self.tls.is_some())
            .field("bearer", &self.bearer.is_some())
            .finish()
    }
}

impl ClientAuth {
    /// No credentials: plain connections, no token.
    pub fn none() -> Self {
        Self::default()
    }

    /// TLS that trusts the CA in `ca` but presents no client certificate and no token: an
    /// unidentified peer (health checks, tests of refusals).
    pub fn anonymous_tls(ca: &std::path::Path) -> Result<Self, super::TlsError> {
        let config = super::tls::anonymous_client_config(ca)?;
        Ok(Self {
            tls: Some(ClientTls::Fixed(config)),
            bearer: None,
        })
    }

    pub(crate) fn with_token(
        tls: Option<Arc<TlsMaterial>>,
        token: Option<&secrecy::SecretString>,
    ) -> Self {
        let tls = tls.map(ClientTls::Material);
        let bearer = token.and_then(|t| {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", t.expose_secret())).ok()?;
            // Never logged by the HTTP stacks, never put in HPACK's table.
            value.set_sensitive(true);
            Some(value)
        });
        Self { tls, bearer }
    }

    /// A lazily connected channel to `endpoint`: TLS when certificates are configured (over
    /// `http://` URLs too), plain otherwise.
    pub fn connect_lazy(&self, endpoint: &Endpoint) -> Channel {
        match &self.tls {
            Some(tls) => endpoint.connect_with_connector_lazy(Connector::from_source(tls.clone())),
            None => endpoint.connect_lazy(),
        }
    }

    /// A channel to `endpoint`, connected now.
    pub async fn connect(&self, endpoint: &Endpoint) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            Some(tls) => {
                endpoint
                    .connect_with_connector(Connector::from_source(tls.clone()))
                    .await
            }
            None => endpoint.connect().await,
        }
    }

    /// The `authorization` header to send, if any.
    pub fn authorization(&self) -> Option<&HeaderValue> {
        self.bearer.as_ref()
    }
}

impl Interceptor for ClientAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.bearer
            && let Ok(value) = tonic::metadata::MetadataValue::try_from(value.as_bytes())
        {
            let mut value: tonic::metadata::AsciiMetadataValue = value;
            value.set_sensitive(true);
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}
