//! Browser origins (`DAISI_EDGE_ALLOWED_ORIGINS`). Only browsers send `Origin`; mobile apps and
//! backends do not and are never refused here.
//!
//! The default is the old service's: gorilla/websocket's `checkSameOrigin`, which parses the
//! Origin as a URL and compares its `host[:port]` with the request's `Host`, ignoring ASCII
//! case (the scheme is not compared, and an explicit default port counts as different). A list
//! widens that to the listed origins as well; `*` allows every origin.

use crate::config::Origins;
use http::HeaderMap;

/// Whether a request with `headers` may open a socket.
pub fn allowed(origins: &Origins, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return true;
    };
    if *origins == Origins::Any {
        return true;
    }
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if same_host(origin, headers) {
        return true;
    }
    match origins {
        Origins::SameHostOr(list) => list
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(origin.trim_end_matches('/'))),
        Origins::SameHost | Origins::Any => false,
    }
}

/// gorilla's rule: the Origin's `host[:port]` equals the `Host` header. The authority is cut
/// out of the Origin as Go's `url.Parse` does, without normalising it (an explicit `:443` stays).
fn same_host(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        return false;
    };
    // `Origin: null` (sandboxed frames, file://) has no authority and never matches.
    authority(origin).is_some_and(|authority| authority.eq_ignore_ascii_case(host))
}

/// `host[:port]` of `scheme://[userinfo@]host[:port][/path]`.
fn authority(origin: &str) -> Option<&str> {
    let (scheme, rest) = origin.split_once("://")?;
    if scheme.is_empty() {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(host: &str, origin: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("host", host.parse().expect("header"));
        if let Some(origin) = origin {
            headers.insert("origin", origin.parse().expect("header"));
        }
        headers
    }

    #[test]
    fn default_is_gorillas_same_origin_check() {
        let same = Origins::SameHost;
        // No Origin: not a browser.
        assert!(allowed(&same, &request("ws.example.com", None)));
        assert!(allowed(
            &same,
            &request("ws.example.com", Some("https://ws.example.com"))
        ));
        assert!(allowed(
            &same,
            &request("WS.example.com:8080", Some("http://ws.EXAMPLE.com:8080"))
        ));
        // Another host, another port, or the default port spelt out: refused (Go's url.Parse
        // keeps an explicit port in Host, and r.Host has none).
        for origin in [
            "https://evil.example.com",
            "http://ws.example.com:8080",
            "https://ws.example.com:443",
            "null",
            "",
        ] {
            assert!(
                !allowed(&same, &request("ws.example.com", Some(origin))),
                "{origin}"
            );
        }
    }

    #[test]
    fn a_list_widens_and_a_star_opens() {
        let list = Origins::SameHostOr(vec!["https://app.example.com".to_owned()]);
        let host = "ws.example.com";
        assert!(allowed(
            &list,
            &request(host, Some("https://app.example.com"))
        ));
        assert!(allowed(
            &list,
            &request(host, Some("https://APP.example.com/"))
        ));
        assert!(allowed(
            &list,
            &request(host, Some("https://ws.example.com"))
        ));
        assert!(!allowed(
            &list,
            &request(host, Some("http://app.example.com"))
        ));
        assert!(!allowed(
            &list,
            &request(host, Some("https://evil.example.com"))
        ));
        assert!(allowed(
            &Origins::Any,
            &request(host, Some("https://evil.example.com"))
        ));
    }
}
