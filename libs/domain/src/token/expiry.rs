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
    // lenient on input is harmless since the text was authenticated by GCM. The usual spelling
    // is read directly (jiff's general parser is most of a token's decoding time otherwise).
    usual_rfc3339(text.as_bytes()).or_else(|| text.parse().ok())
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)` with a year in 1000..=9000, a real calendar day,
/// hours below 24, minutes and seconds below 60 and an offset below 24 hours: the instant
/// jiff would parse. `None` for any other text (jiff decides those), never a different answer.
fn usual_rfc3339(text: &[u8]) -> Option<Timestamp> {
    // Fixed positions in a fixed-size head: no bounds checks, no loop over fields.
    let (head, tail) = text.split_first_chunk::<19>()?;
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    let digit = |at: usize| i64::from(head[at].wrapping_sub(b'0'));
    const DIGITS: [usize; 14] = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
    let not_digits = DIGITS.iter().fold(false, |bad, &at| bad | (digit(at) > 9));
    if not_digits || separators.iter().any(|&(at, s)| head[at] != s) {
        return None;
    }
    let two = |at: usize| digit(at) * 10 + digit(at + 1);
    let (year, month, day) = (two(0) * 100 + two(2), two(5), two(8));
    let (hour, minute, second) = (two(11), two(14), two(17));
    if !(1000..=9000).contains(&year) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let (nanos, offset) = match tail {
        [b'.', rest @ ..] => {
            let len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            if !(1..=9).contains(&len) {
                return None;
            }
            let (fraction, offset) = rest.split_at(len);
            let value = fraction
                .iter()
                .fold(0i64, |acc, &b| acc * 10 + i64::from(b - b'0'));
            (value * 10i64.pow(9 - len as u32), offset)
        }
        _ => (0, tail),
    };
    let offset = match offset {
        b"Z" => 0,
        &[sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [h1, h2, m1, m2].map(|b| i64::from(b.wrapping_sub(b'0')));
            if digits.iter().any(|&d| d > 9) {
                return None;
            }
            let (hours, minutes) = (digits[0] * 10 + digits[1], digits[2] * 10 + digits[3]);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3600 + minutes * 60;
            if sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Timestamp::new(seconds, i32::try_from(nanos).ok()?).ok()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
#[inline]
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
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
    fn reads_the_usual_spelling_like_jiff() {
        for text in [
            "2099-01-01T00:00:00.123456789+07:00",
            "2099-12-31T23:59:59Z",
            "2020-01-01T00:00:00Z",
            "2024-02-29T12:00:00.5-03:30",
            "2000-02-29T00:00:00.000000001Z",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999Z",
            "1000-03-01T00:00:00+23:59",
            "9000-12-31T23:59:59-23:59",
            "2026-11-25T18:00:00.120000000+07:00",
        ] {
            let usual = usual_rfc3339(text.as_bytes());
            assert!(usual.is_some(), "{text}");
            assert_eq!(usual, text.parse().ok(), "{text}");
        }
    }

    #[test]
    fn leaves_other_spellings_to_jiff() {
        for text in [
            "2099-01-01t00:00:00z",
            "2099-01-01 00:00:00Z",
            "2099-01-01T00:00:00+07",
            "2099-01-01T00:00:00,5Z",
            "2099-01-01T00:00:00.Z",
            "2099-01-01T00:00:00.1234567891Z",
            "2099-01-01T00:00:00Z[UTC]",
            "2099-01-01T00:00:60Z",
            "2099-01-01T24:00:00Z",
            "2099-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2099-13-01T00:00:00Z",
            "2099-00-01T00:00:00Z",
            "2099-01-00T00:00:00Z",
            "0999-01-01T00:00:00Z",
            "9001-01-01T00:00:00Z",
            "2099-01-01T00:00:00+24:00",
            "2099-01-01T00:00:00+07:60",
            "2099-01-01T00:00:00+0700",
            "2099-01-01T00:00:00",
            "+2099-01-01T00:00:00Z",
            "2099-1-01T00:00:00Z",
            "",
        ] {
            assert!(usual_rfc3339(text.as_bytes()).is_none(), "{text}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        /// Whatever the fast reader answers, jiff answers the same.
        #[test]
        fn never_disagrees_with_jiff(
            text in "[0-9]{4}-[01][0-9]-[0-3][0-9][Tt ][0-2][0-9]:[0-6][0-9]:[0-6][0-9]\
                     (\\.[0-9]{0,10})?(Z|z|[+-][0-2][0-9]:[0-6][0-9]|[+-][0-9]{2}|)",
        ) {
            if let Some(usual) = usual_rfc3339(text.as_bytes()) {
                proptest::prop_assert_eq!(Some(usual), text.parse::<Timestamp>().ok(), "{}", text);
            }
        }

        #[test]
        fn never_disagrees_with_jiff_on_any_bytes(text in "[-+0-9:.TZ]{18,32}") {
            if let Some(usual) = usual_rfc3339(text.as_bytes()) {
                proptest::prop_assert_eq!(Some(usual), text.parse::<Timestamp>().ok(), "{}", text);
            }
        }
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
