//! Browser origin allow-list. Only browsers send `Origin`; mobile apps and backends do not and
//! are not affected. An empty list allows every origin (development).

use http::HeaderMap;

/// Whether the request's origin may open a socket.
pub fn allowed(allowed_origins: &[String], headers: &HeaderMap) -> bool {
    if allowed_origins.is_empty() {
        return true;
    }
    match headers.get(http::header::ORIGIN).map(|v| v.to_str()) {
        None => true,
        Some(Ok(origin)) => allowed_origins
            .iter()
            .any(|a| a.eq_ignore_ascii_case(origin.trim_end_matches('/'))),
        Some(Err(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_only_browsers_against_the_list() {
        let list = vec!["https://app.example.com".to_owned()];
        let mut headers = HeaderMap::new();
        assert!(allowed(&list, &headers));
        headers.insert("origin", "https://app.example.com".parse().expect("header"));
        assert!(allowed(&list, &headers));
        headers.insert(
            "origin",
            "https://evil.example.com".parse().expect("header"),
        );
        assert!(!allowed(&list, &headers));
        assert!(allowed(&[], &headers));
    }
}
