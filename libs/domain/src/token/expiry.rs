//! The `expires_at` timestamp: parsing RFC 3339 with an offset, printing Go's RFC3339Nano, and
//! computing an expiry from `expires_in_seconds`.

use jiff::{SignedDuration, Timestamp};

/// An expiry that cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    /// `expires_in_seconds` must be greater than zero.
    #[error("expires_in_seconds must be greater than zero")]
    NotPositive,
    /// `now + expires_in_seconds` is beyond the representable time range.
    #[error("expires_in_seconds is too large")]
    OutOfRange,
}

/// `now + expires_in_seconds`.
pub fn expires_at_after(now: Timestamp, expires_in_seconds: u64) -> Result<Timestamp, ExpiryError> {
    if expires_in_seconds == 0 {
        return Err(ExpiryError::NotPositive);
    }
    let seconds = i64::try_from(expires_in_seconds).map_err(|_| ExpiryError::OutOfRange)?;
    now.checked_add(SignedDuration::from_secs(seconds))
        .map_err(|_| ExpiryError::OutOfRange)
}

/// Go's RFC3339Nano in UTC: `2026-11-25T11:00:00.123456789Z`, fraction trimmed of trailing
/// zeros and left out when zero. jiff's default printer does exactly that.
pub fn format_rfc3339_nano(timestamp: Timestamp) -> String {
    timestamp.to_string()
}

/// Parses RFC 3339 with a mandatory offset (`Z` or `±hh:mm`) and optional fraction.
pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    // jiff also accepts a few non-RFC 3339 spellings (e.g. a bracketed zone annotation); being
    // lenient on input is harmless since the text was authenticated by GCM.
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn prints_like_go_rfc3339_nano() {
        let cases = [
            (
                "2026-11-25T18:00:00.123456789+07:00",
                "2026-11-25T11:00:00.123456789Z",
            ),
            (
                "2026-11-25T18:00:00.120000000+07:00",
                "2026-11-25T11:00:00.12Z",
            ),
            ("2099-12-31T23:59:59Z", "2099-12-31T23:59:59Z"),
            ("2099-12-31T23:59:59.000Z", "2099-12-31T23:59:59Z"),
        ];
        for (input, printed) in cases {
            assert_eq!(format_rfc3339_nano(parse_rfc3339(input).unwrap()), printed);
        }
    }

    #[test]
    fn requires_an_offset() {
        assert!(parse_rfc3339("2099-01-01T00:00:00").is_none());
        assert!(parse_rfc3339("tomorrow").is_none());
        assert!(parse_rfc3339("").is_none());
    }

    #[test]
    fn computes_expiry() {
        let now = parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        let later = expires_at_after(now, 90).unwrap();
        assert_eq!(later.to_string(), "2026-01-01T00:01:30Z");
        assert_eq!(expires_at_after(now, 0), Err(ExpiryError::NotPositive));
        assert_eq!(
            expires_at_after(now, u64::MAX),
            Err(ExpiryError::OutOfRange)
        );
        assert_eq!(expires_at_after(now, 1 << 60), Err(ExpiryError::OutOfRange));
    }
}
