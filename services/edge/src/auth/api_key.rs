//! API keys: where clients put them and how they are compared (through
//! [`daisi_config::SecretDigest`], the one constant-time comparison of the project).

use daisi_config::{SecretDigest, SecretString};

/// A configured API key, kept only as digests: the current one, and during a rotation the
/// ones still accepted.
#[derive(Clone)]
pub struct ApiKey {
    digests: Vec<SecretDigest>,
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
        Self::any_of([secret])
    }

    /// Accepts any of `secrets` (a rotation: the new key and the old ones).
    pub fn any_of<'a>(secrets: impl IntoIterator<Item = &'a SecretString>) -> Self {
        Self {
            digests: secrets.into_iter().map(SecretDigest::new).collect(),
        }
    }

    /// Compares `presented` in constant time with every accepted key (all of them, so the
    /// time does not tell which one matched).
    pub fn check(&self, presented: Option<&str>) -> KeyCheck {
        let Some(key) = presented.filter(|k| !k.is_empty()) else {
            return KeyCheck::Missing;
        };
        let matched = self.digests.iter().fold(false, |found, digest| {
            digest.matches(key.as_bytes()) | found
        });
        if matched {
            KeyCheck::Valid
        } else {
            KeyCheck::Wrong
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
        let rotating = ApiKey::any_of(&[
            SecretString::from("new-key".to_owned()),
            SecretString::from("old-key".to_owned()),
        ]);
        assert_eq!(rotating.check(Some("new-key")), KeyCheck::Valid);
        assert_eq!(rotating.check(Some("old-key")), KeyCheck::Valid);
        assert_eq!(rotating.check(Some("other")), KeyCheck::Wrong);
    }

    #[test]
    fn header_wins_over_query() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(presented_key(&headers, Some("q")), Some("q"));
        headers.insert("x-api-key", http::HeaderValue::from_static("h"));
        assert_eq!(presented_key(&headers, Some("q")), Some("h"));
    }
}
