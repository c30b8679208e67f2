//! API keys: where clients put them and how they are compared (through
//! [`daisi_config::SecretDigest`], the one constant-time comparison of the project).

use daisi_config::{SecretDigest, SecretString};

/// A configured API key, kept only as its digest.
#[derive(Clone)]
pub struct ApiKey {
    digest: SecretDigest,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// What the client presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// No key (or an empty one).
    Missing,
    /// A key that is not the configured one.
    Wrong,
    /// The configured key.
    Valid,
}

impl ApiKey {
    /// Keeps the digest of `secret`.
    pub fn new(secret: &SecretString) -> Self {
        Self {
            digest: SecretDigest::new(secret),
        }
    }

    /// Compares `presented` in constant time.
    pub fn check(&self, presented: Option<&str>) -> KeyCheck {
        match presented {
            None | Some("") => KeyCheck::Missing,
            Some(key) if self.digest.matches(key.as_bytes()) => KeyCheck::Valid,
            Some(_) => KeyCheck::Wrong,
        }
    }
}

/// The key of a request: header `X-API-Key`, else query parameter `x-api-key` (compat.md).
pub fn presented_key<'a>(
    headers: &'a http::HeaderMap,
    query_key: Option<&'a str>,
) -> Option<&'a str> {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .or(query_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_keys() {
        let key = ApiKey::new(&SecretString::from("s3cret".to_owned()));
        assert_eq!(key.check(None), KeyCheck::Missing);
        assert_eq!(key.check(Some("")), KeyCheck::Missing);
        assert_eq!(key.check(Some("s3cre")), KeyCheck::Wrong);
        assert_eq!(key.check(Some("s3cret")), KeyCheck::Valid);
        assert!(!format!("{key:?}").contains("s3cret"));
    }

    #[test]
    fn header_wins_over_query() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(presented_key(&headers, Some("q")), Some("q"));
        headers.insert("x-api-key", http::HeaderValue::from_static("h"));
        assert_eq!(presented_key(&headers, Some("q")), Some("h"));
    }
}
