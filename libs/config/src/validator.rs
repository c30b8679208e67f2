//! Turns raw strings into typed settings, applying defaults and collecting every problem, each
//! with the full variable name and what to do about it.

use crate::error::{ConfigError, Problem};
use secrecy::SecretString;
use std::fmt::Display;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;
use url::Url;

/// How every secret placeholder of `.env.example` begins.
const PLACEHOLDER: &str = "replace-with-";

/// Collects problems while a service's raw settings are turned into its typed config.
///
/// Every method takes the variable's name without the prefix (`"HTTP_ADDR"`), the raw value
/// (`None` when unset; an empty string counts as unset so `FOO=` in a `.env` file means "use the
/// default") and returns `None` after recording a problem when the value is unusable.
/// [`Validator::finish`] then fails with all problems at once.
#[derive(Debug)]
pub struct Validator {
    prefix: String,
    problems: Vec<Problem>,
}

/// A URL with one of `schemes`. The error never echoes the URL: it may carry a password.
fn parse_url(value: &str, schemes: &[&str]) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !schemes.contains(&url.scheme()) {
        return Err(format!(
            "has scheme `{}`; use one of: {}",
            url.scheme(),
            schemes.join(", ")
        ));
    }
    Ok(url)
}

fn present(raw: Option<&str>) -> Option<&str> {
    raw.map(str::trim).filter(|s| !s.is_empty())
}

impl Validator {
    /// A validator for variables named `{prefix}{NAME}`.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            problems: Vec::new(),
        }
    }

    /// The full variable name for `name`.
    pub fn var(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Records a problem with `name`.
    pub fn problem(&mut self, name: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            var: self.var(name),
            message: message.into(),
        });
    }

    /// Records a problem with `name` unless `ok` holds (cross-field rules).
    pub fn ensure(&mut self, ok: bool, name: &str, message: impl Into<String>) {
        if !ok {
            self.problem(name, message);
        }
    }

    /// A value parsed by `parse`, or `default` when unset. `parse` errors are shown as they are,
    /// so they must not contain the value when it is secret.
    pub fn parse_with<T>(
        &mut self,
        name: &str,
        raw: Option<&str>,
        default: Option<T>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match (present(raw), default) {
            (Some(value), _) => match parse(value) {
                Ok(v) => Some(v),
                Err(message) => {
                    self.problem(name, message);
                    None
                }
            },
            (None, Some(default)) => Some(default),
            (None, None) => {
                self.problem(name, "is required; set it");
                None
            }
        }
    }

    /// A comma-separated, non-empty list, each item parsed by `parse` (e.g. several token keys
    /// for rotation). Items are trimmed; empty items are rejected.
    pub fn list_with<T>(
        &mut self,
        name: &str,
        raw: Option<&str>,
        mut parse: impl FnMut(&str) -> Result<T, String>,
    ) -> Option<Vec<T>> {
        self.parse_with(name, raw, None, |value| {
            value
                .split(',')
                .map(str::trim)
                .enumerate()
                .map(|(i, item)| {
                    if item.is_empty() {
                        return Err(format!(
                            "item {} of the comma-separated list is empty; remove the extra comma",
                            i + 1
                        ));
                    }
                    parse(item).map_err(|e| format!("item {}: {e}", i + 1))
                })
                .collect()
        })
    }

    /// A value of any `FromStr` type, with the parse error and the offending value in the
    /// message. Not for secrets: use [`Validator::secret`].
    pub fn from_str<T>(
        &mut self,
        name: &str,
        raw: Option<&str>,
        default: Option<T>,
        expected: &str,
    ) -> Option<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.parse_with(name, raw, default, |v| {
            v.parse::<T>()
                .map_err(|e| format!("`{v}` is not {expected} ({e})"))
        })
    }

    /// A listen or connect address such as `0.0.0.0:8080` or `[::1]:9000`.
    pub fn socket_addr(
        &mut self,
        name: &str,
        raw: Option<&str>,
        default: &str,
    ) -> Option<SocketAddr> {
        let default = default.parse().ok();
        self.from_str(
            name,
            raw,
            default,
            "an IP:port address such as 0.0.0.0:8080",
        )
    }

    /// A positive duration in humantime form (`500ms`, `30s`, `2m`, `1h 30m`).
    pub fn duration(
        &mut self,
        name: &str,
        raw: Option<&str>,
        default: Duration,
    ) -> Option<Duration> {
        self.parse_with(name, raw, Some(default), |v| {
            let d = humantime::parse_duration(v)
                .map_err(|e| format!("`{v}` is not a duration such as 500ms, 30s or 2m ({e})"))?;
            if d.is_zero() {
                return Err(format!("`{v}` must be greater than zero"));
            }
            Ok(d)
        })
    }

    /// A duration that may be zero (zero switches something off).
    pub fn duration_or_zero(
        &mut self,
        name: &str,
        raw: Option<&str>,
        default: Duration,
    ) -> Option<Duration> {
        self.parse_with(name, raw, Some(default), |v| {
            humantime::parse_duration(v)
                .map_err(|e| format!("`{v}` is not a duration such as 0s, 30s or 2m ({e})"))
        })
    }

    /// An integer in `min..=max`.
    pub fn int_in<T>(
        &mut self,
        name: &str,
        raw: Option<&str>,
        default: T,
        min: T,
        max: T,
    ) -> Option<T>
    where
        T: FromStr + PartialOrd + Display + Copy,
    {
        self.parse_with(name, raw, Some(default), |v| {
            let n: T = v
                .parse()
                .map_err(|_| format!("`{v}` is not a whole number between {min} and {max}"))?;
            if n < min || n > max {
                return Err(format!(
                    "{n} is out of range; use a value between {min} and {max}"
                ));
            }
            Ok(n)
        })
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`, any case).
    pub fn bool(&mut self, name: &str, raw: Option<&str>, default: bool) -> Option<bool> {
        self.parse_with(name, raw, Some(default), |v| {
            match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(format!("`{v}` is not a boolean; use true or false")),
            }
        })
    }

    /// One of a closed set of words, case-insensitive; returns the matching word.
    pub fn one_of(
        &mut self,
        name: &str,
        raw: Option<&str>,
        default: &'static str,
        allowed: &[&'static str],
    ) -> Option<&'static str> {
        self.parse_with(name, raw, Some(default), |v| {
            allowed
                .iter()
                .find(|a| a.eq_ignore_ascii_case(v))
                .copied()
                .ok_or_else(|| format!("`{v}` is not one of: {}", allowed.join(", ")))
        })
    }

    /// A URL whose scheme is one of `schemes` (e.g. `redis`, `rediss`).
    pub fn url(
        &mut self,
        name: &str,
        raw: Option<&str>,
        default: Option<&str>,
        schemes: &[&str],
    ) -> Option<Url> {
        let default = default.and_then(|d| Url::parse(d).ok());
        self.parse_with(name, raw, default, |v| parse_url(v, schemes))
    }

    /// A comma-separated list of URLs (replicas of one service), each with one of `schemes`.
    pub fn url_list(
        &mut self,
        name: &str,
        raw: Option<&str>,
        default: &str,
        schemes: &[&str],
    ) -> Option<Vec<Url>> {
        let value = present(raw).unwrap_or(default);
        self.list_with(name, Some(value), |item| parse_url(item, schemes))
    }

    /// A required secret of at least `min_len` characters, and not a placeholder of
    /// `.env.example` (`replace-with-…`: a stack must not start with a published key). The
    /// value never appears in messages.
    pub fn secret(
        &mut self,
        name: &str,
        raw: Option<&str>,
        min_len: usize,
    ) -> Option<SecretString> {
        self.parse_with(name, raw, None, |v| {
            if v.starts_with(PLACEHOLDER) {
                return Err(
                    "is still the placeholder of .env.example; generate one with `daisi keygen`"
                        .to_owned(),
                );
            }
            if v.chars().count() < min_len {
                return Err(format!(
                    "is too short; use at least {min_len} characters (e.g. from `daisi keygen`)"
                ));
            }
            Ok(SecretString::from(v.to_owned()))
        })
    }

    /// A plain string with a default (trimmed; empty means unset).
    pub fn string(&self, raw: Option<&str>, default: &str) -> String {
        present(raw).unwrap_or(default).to_owned()
    }

    /// Whether a problem has been recorded so far.
    pub fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }

    /// Fails with every recorded problem, or builds the config. `build` runs only when nothing
    /// was recorded; it returns `Option` so fields can be taken with `?`.
    pub fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, ConfigError> {
        if !self.problems.is_empty() {
            return Err(ConfigError::new(self.problems));
        }
        build().ok_or_else(|| {
            ConfigError::new(vec![Problem {
                var: format!("{}*", self.prefix),
                message: "a setting was rejected without a reason; please report this".into(),
            }])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        let mut v = Validator::new("P_");
        assert_eq!(
            v.duration("LEASE", None, Duration::from_secs(30)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            v.duration("LEASE", Some("  "), Duration::from_secs(30)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(v.int_in("N", Some("7"), 1u32, 1, 10), Some(7));
        assert!(!v.has_problems());
    }

    #[test]
    fn collects_every_problem_with_full_names() {
        let mut v = Validator::new("P_");
        assert_eq!(
            v.socket_addr("HTTP_ADDR", Some("localhost"), "0.0.0.0:1"),
            None
        );
        assert_eq!(
            v.duration("LEASE", Some("0s"), Duration::from_secs(1)),
            None
        );
        assert_eq!(
            v.duration("RENEW", Some("ten"), Duration::from_secs(1)),
            None
        );
        assert_eq!(v.int_in("MAX", Some("0"), 5u32, 1, 10), None);
        assert_eq!(v.bool("TLS", Some("maybe"), false), None);
        assert!(v.secret("KEY", None, 8).is_none());
        let err = v.finish(|| Some(())).expect_err("problems");
        let vars: Vec<_> = err.problems().iter().map(|p| p.var.as_str()).collect();
        assert_eq!(
            vars,
            [
                "P_HTTP_ADDR",
                "P_LEASE",
                "P_RENEW",
                "P_MAX",
                "P_TLS",
                "P_KEY"
            ]
        );
        assert!(err.to_string().contains("6 problems"));
    }

    #[test]
    fn secrets_are_never_echoed() {
        let mut v = Validator::new("P_");
        assert!(v.secret("API_KEY", Some("s3cr3t"), 16).is_none());
        assert!(
            v.url("REDIS_URL", Some("redis//:hunter2@x"), None, &["redis"])
                .is_none()
        );
        let err = v.finish(|| Some(())).expect_err("problems");
        let text = err.to_string();
        assert!(
            !text.contains("s3cr3t") && !text.contains("hunter2"),
            "{text}"
        );
        let mut v = Validator::new("P_");
        let s = v
            .secret("API_KEY", Some("long-enough-secret"), 8)
            .expect("ok");
        assert_eq!(s.expose_secret(), "long-enough-secret");
        assert!(!format!("{s:?}").contains("long-enough"));
    }

    #[test]
    fn the_placeholders_of_the_example_env_file_are_refused() {
        let mut v = Validator::new("P_");
        assert!(
            v.secret("API_KEY", Some("replace-with-a-generated-api-key"), 1)
                .is_none()
        );
        let err = v.finish(|| Some(())).expect_err("problems");
        assert!(err.mentions("P_API_KEY"), "{err}");
        assert!(err.to_string().contains("daisi keygen"), "{err}");
    }

    #[test]
    fn url_scheme_and_lists_are_checked() {
        let mut v = Validator::new("P_");
        let url = v.url("NATS_URL", Some("nats://127.0.0.1:4222"), None, &["nats"]);
        assert_eq!(url.map(|u| u.port()), Some(Some(4222)));
        assert!(
            v.url("NATS_URL", Some("http://x"), None, &["nats"])
                .is_none()
        );
        let list = v.list_with("KEYS", Some("a, b"), |s| Ok::<_, String>(s.to_owned()));
        assert_eq!(list, Some(vec!["a".to_owned(), "b".to_owned()]));
        assert!(
            v.list_with("KEYS", Some("a,,b"), |s| Ok::<_, String>(s.to_owned()))
                .is_none()
        );
        let err = v.finish(|| Some(())).expect_err("problems");
        assert_eq!(err.problems().len(), 2);
        assert!(err.problems()[1].message.contains("item 2"));
    }

    #[test]
    fn one_of_and_cross_field_rules() {
        let mut v = Validator::new("P_");
        assert_eq!(
            v.one_of("FMT", Some("PRETTY"), "json", &["json", "pretty"]),
            Some("pretty")
        );
        v.ensure(false, "RENEW", "must be shorter than P_LEASE");
        let err = v.finish(|| Some(())).expect_err("problem");
        assert_eq!(
            err.problems()[0].to_string(),
            "P_RENEW: must be shorter than P_LEASE"
        );
    }
}
