//! Settings of the client door (what a connection may cost before it is an admitted socket),
//! of browser origins and of token minting.
//!
//! Kept apart from `tuning.rs` because these are the security controls of the public port:
//! docs/security.md describes each one under the name of its variable.

use super::Raw;
use daisi_config::{SecretString, Validator, secrets_equal};
use ipnet::IpNet;
use std::net::SocketAddr;
use std::time::Duration;

/// What a connection may cost before it becomes an admitted socket.
#[derive(Debug, Clone)]
pub struct Door {
    /// From accept to admitted socket: TLS, request head, authentication and session
    /// acquisition all fit in it, or the connection is closed (`HANDSHAKE_TIMEOUT`).
    pub deadline: Duration,
    /// Connections accepted but not yet admitted (or still plain HTTP). At the cap the oldest
    /// idle one is closed to make room, so silent connections cannot lock clients out.
    pub max_pending: usize,
    /// Upgrades and token requests per client address; `None` turns the budget off.
    pub address_budget: Option<AddressBudget>,
    /// Peers whose `X-Forwarded-For` names the client (ingress, load balancers).
    pub trusted_proxies: Vec<IpNet>,
}

/// A token bucket per client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressBudget {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
}

/// Which browser origins may open sockets. Requests without `Origin` (apps, backends) are
/// never refused by this check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// The old service's default (gorilla/websocket's `checkSameOrigin`): the Origin's
    /// `host[:port]` must equal the request's `Host`, ignoring ASCII case.
    SameHost,
    /// Same host, plus these origins (`scheme://host[:port]`, compared ignoring ASCII case).
    SameHostOr(Vec<String>),
    /// Any origin (`*`).
    Any,
}

/// Token minting: the internal listener and the compat switch for the public port.
#[derive(Debug, Clone)]
pub struct Minting {
    /// The internal listener, reachable by backends and not by browsers.
    pub addr: SocketAddr,
    /// Credentials of `POST /generate-token` on the internal listener (several during a
    /// rotation); none turns the route off.
    pub user_keys: Vec<SecretString>,
    /// Credentials of `POST /admin/generate-token` on the internal listener.
    pub admin_keys: Vec<SecretString>,
    /// Migration window: also serve both routes on the public port, behind the socket API keys
    /// as the old service did.
    pub public: bool,
}

impl Minting {
    /// Whether the internal listener has anything to serve.
    pub fn internal(&self) -> bool {
        !self.user_keys.is_empty() || !self.admin_keys.is_empty()
    }
}

pub(super) fn door(v: &mut Validator, raw: &Raw) -> Option<Door> {
    let deadline = v.duration(
        "HANDSHAKE_TIMEOUT",
        raw.handshake_timeout.as_deref(),
        Duration::from_secs(10),
    );
    let max_pending = v.int_in(
        "MAX_PENDING_CONNECTIONS",
        raw.max_pending_connections.as_deref(),
        2_048usize,
        1,
        1_000_000,
    );
    let per_second = v.int_in(
        "ADDRESS_RATE_PER_SECOND",
        raw.address_rate_per_second.as_deref(),
        20u32,
        0,
        1_000_000,
    );
    let burst = v.int_in(
        "ADDRESS_RATE_BURST",
        raw.address_rate_burst.as_deref(),
        100u32,
        1,
        1_000_000,
    );
    let trusted_proxies = match raw.trusted_proxies.as_deref().map(str::trim) {
        None | Some("") => Some(Vec::new()),
        value => v.list_with("TRUSTED_PROXIES", value, |item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("`{item}` is not an address or CIDR range (10.0.0.0/8)"))
        }),
    };
    Some(Door {
        deadline: deadline?,
        max_pending: max_pending?,
        address_budget: match per_second? {
            0 => None,
            per_second => Some(AddressBudget {
                per_second,
                burst: burst?,
            }),
        },
        trusted_proxies: trusted_proxies?,
    })
}

pub(super) fn origins(v: &mut Validator, raw: Option<&str>) -> Option<Origins> {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Some(Origins::SameHost);
    };
    let items: Vec<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .collect();
    if items.contains(&"*") {
        if items.len() > 1 {
            v.problem(
                "ALLOWED_ORIGINS",
                "`*` allows every origin; list origins or use `*` alone",
            );
            return None;
        }
        return Some(Origins::Any);
    }
    let mut list = Vec::with_capacity(items.len());
    for item in items {
        let item = item.trim_end_matches('/');
        let parsed = url::Url::parse(item)
            .ok()
            .filter(|u| u.host_str().is_some() && u.path() == "/" && u.query().is_none());
        match parsed {
            Some(_) => list.push(item.to_ascii_lowercase()),
            None => {
                v.problem(
                    "ALLOWED_ORIGINS",
                    format!(
                        "`{item}` is not an origin; write scheme://host[:port] without a path (https://app.example.com)"
                    ),
                );
                return None;
            }
        }
    }
    Some(Origins::SameHostOr(list))
}

/// A comma-separated list of credentials, each at least 16 characters; empty is none.
fn credentials(v: &mut Validator, name: &str, raw: Option<&str>) -> Option<Vec<SecretString>> {
    match raw.map(str::trim) {
        None | Some("") => Some(Vec::new()),
        value => v.list_with(name, value, |item| {
            if item.chars().count() < 16 {
                return Err(
                    "is too short; use at least 16 characters (e.g. from `daisi keygen`)"
                        .to_owned(),
                );
            }
            Ok(SecretString::from(item.to_owned()))
        }),
    }
}

pub(super) fn minting(
    v: &mut Validator,
    raw: &Raw,
    socket_keys: &[Option<&SecretString>],
) -> Option<Minting> {
    use daisi_config::ExposeSecret;
    let addr = v.socket_addr("MINT_ADDR", raw.mint_addr.as_deref(), "0.0.0.0:8082");
    let user_keys = credentials(v, "MINT_API_KEY", raw.mint_api_key.as_deref());
    let admin_keys = credentials(v, "ADMIN_MINT_API_KEY", raw.admin_mint_api_key.as_deref());
    let public = v.bool("PUBLIC_MINTING", raw.public_minting.as_deref(), false);
    // A backend credential that browsers also hold would undo the move off the public port.
    for (name, mint) in [
        ("MINT_API_KEY", user_keys.as_deref()),
        ("ADMIN_MINT_API_KEY", admin_keys.as_deref()),
    ] {
        let reused = mint.unwrap_or_default().iter().any(|mint| {
            socket_keys.iter().flatten().any(|socket| {
                secrets_equal(
                    mint.expose_secret().as_bytes(),
                    socket.expose_secret().as_bytes(),
                )
            })
        });
        v.ensure(
            !reused,
            name,
            "must differ from the socket API keys (SECRET_TOKEN, ADMIN_SECRET_TOKEN and their PREVIOUS_ keys): browsers hold those",
        );
    }
    Some(Minting {
        addr: addr?,
        user_keys: user_keys?,
        admin_keys: admin_keys?,
        public: public?,
    })
}
