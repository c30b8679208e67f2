//! The client address a request is charged to: the peer, or, when the peer is a trusted proxy
//! (`DAISI_EDGE_TRUSTED_PROXIES`), the nearest untrusted hop of `X-Forwarded-For`.
//!
//! `X-Forwarded-For` is read from the right: each trusted proxy appends the address it received
//! the request from, so the rightmost entry that is not a trusted proxy is the first one a
//! client could not have forged. Entries further left are whatever the client sent.

use http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr};

/// The address `peer`'s request is charged to.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut current = canonical(peer);
    if !is_trusted(&current) {
        return current;
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|value| value.to_str().unwrap_or("").rsplit(','));
    for hop in hops {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            // Garbage (or an obfuscated identifier): the last good hop is the best we know.
            return current;
        };
        current = canonical(ip);
        if !is_trusted(&current) {
            return current;
        }
    }
    current
}

/// The key a budget is kept under: IPv4 addresses as they are, IPv6 addresses by their /64
/// (one host usually owns a whole /64, so per-address keys would let it rotate freely).
pub fn budget_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// IPv4-mapped IPv6 addresses (dual-stack listeners) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().expect("header"));
        }
        h
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_claim() {
        let h = headers(&["1.2.3.4"]);
        assert_eq!(client_ip(ip("9.9.9.9"), &h, &[]), ip("9.9.9.9"));
        let trusted = ["10.0.0.0/8".parse().expect("net")];
        assert_eq!(client_ip(ip("9.9.9.9"), &h, &trusted), ip("9.9.9.9"));
    }

    #[test]
    fn trusted_proxies_are_skipped_from_the_right() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        // The client forged the first entry; the ingress appended the real one.
        let h = headers(&["6.6.6.6, 5.5.5.5", "10.1.1.1"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted), ip("5.5.5.5"));
        // Only proxies: the leftmost one we reached.
        let h = headers(&["10.1.1.1"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted), ip("10.1.1.1"));
        // No header: the proxy itself.
        assert_eq!(
            client_ip(ip("10.0.0.2"), &HeaderMap::new(), &trusted),
            ip("10.0.0.2")
        );
        // Garbage stops the walk at the last good hop.
        let h = headers(&["5.5.5.5, unknown, 10.1.1.1"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted), ip("10.1.1.1"));
    }

    #[test]
    fn ipv6_clients_share_a_budget_per_slash_64() {
        assert_eq!(
            budget_key(ip("2001:db8:1:2:aaaa::1")),
            budget_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            budget_key(ip("2001:db8:1:2::1")),
            budget_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(budget_key(ip("::ffff:1.2.3.4")), ip("1.2.3.4"));
        assert_eq!(budget_key(ip("1.2.3.4")), ip("1.2.3.4"));
    }
}
