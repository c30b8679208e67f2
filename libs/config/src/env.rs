//! A snapshot of environment variables and the envy-based loader over it.

use crate::error::{ConfigError, Problem};
use crate::fields::field_names;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

/// Environment variables captured once. Services read the process environment through
/// [`Env::from_process`]; tests build one from pairs and never mutate global state.
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

// Values may be secrets: only names are printed.
impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

impl Env {
    /// The variables of the running process. Variables whose name or value is not UTF-8 are
    /// skipped: none of ours can be.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// An environment made of the given pairs (tests, the dev stack).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Adds or replaces one variable.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.vars.insert(key.into(), value.into());
        self
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    fn prefixed(&self, prefix: &str) -> impl Iterator<Item = (String, String)> + '_ {
        let prefix = prefix.to_owned();
        self.vars
            .iter()
            .filter(move |(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
    }
}

/// The result of [`load`]: the raw settings and the prefixed variables that match none of them.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The deserialized value: raw settings as strings for a [`crate::Validator`] to check, or a
    /// service's typed config once it has been checked.
    pub value: T,
    /// Full names of variables that carry the prefix but are not settings. They are reported as
    /// warnings, not errors: Kubernetes injects `<SERVICE>_PORT`-style variables that can collide
    /// with a prefix, and refusing to start over them would be worse than a typo going unnoticed.
    pub unknown: Vec<String>,
}

/// Deserializes the variables starting with `prefix` into `T` (field `http_addr` ⇐
/// `{prefix}HTTP_ADDR`) with envy. `T` should hold `Option<String>` fields so parsing and
/// defaults happen in a [`crate::Validator`], where errors can name the variable.
pub fn load<T: DeserializeOwned>(prefix: &str, env: &Env) -> Result<Loaded<T>, ConfigError> {
    let raw = envy::prefixed(prefix)
        .from_iter::<_, T>(env.prefixed(prefix))
        .map_err(|e| ConfigError::new(vec![envy_problem(prefix, e)]))?;
    let known = field_names::<T>();
    let unknown = env
        .prefixed(prefix)
        .map(|(k, _)| k)
        .filter(|k| !known.contains(&k[prefix.len()..].to_ascii_lowercase().as_str()))
        .collect();
    Ok(Loaded {
        value: raw,
        unknown,
    })
}

fn envy_problem(prefix: &str, e: envy::Error) -> Problem {
    match e {
        envy::Error::MissingValue(field) => Problem {
            var: format!("{prefix}{}", field.to_ascii_uppercase()),
            message: "is required; set it".into(),
        },
        // envy names the unprefixed variable at the end of its message ("... provided by X").
        envy::Error::Custom(msg) => {
            let var = msg
                .rsplit_once(" provided by ")
                .map(|(_, v)| format!("{prefix}{v}"))
                .unwrap_or_else(|| format!("{prefix}*"));
            Problem { var, message: msg }
        }
    }
}

impl<T> Loaded<T> {
    /// Replaces the value, keeping the warnings (raw settings → typed config).
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Loaded<U> {
        Loaded {
            value: f(self.value),
            unknown: self.unknown,
        }
    }

    /// Like [`Loaded::map`] for a fallible conversion.
    pub fn try_map<U, E>(self, f: impl FnOnce(T) -> Result<U, E>) -> Result<Loaded<U>, E> {
        Ok(Loaded {
            value: f(self.value)?,
            unknown: self.unknown,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Raw {
        http_addr: Option<String>,
        required: String,
    }

    #[test]
    fn loads_prefixed_fields_and_reports_unknown_ones() {
        let env = Env::from_pairs([
            ("APP_HTTP_ADDR", "127.0.0.1:1"),
            ("APP_REQUIRED", "x"),
            ("APP_HTTP_ADR", "typo"),
            ("OTHER_THING", "ignored"),
        ]);
        let loaded = load::<Raw>("APP_", &env).expect("valid");
        assert_eq!(loaded.value.http_addr.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(loaded.value.required, "x");
        assert_eq!(loaded.unknown, vec!["APP_HTTP_ADR".to_string()]);
    }

    #[test]
    fn missing_required_field_names_the_full_variable() {
        let env = Env::from_pairs([("APP_HTTP_ADDR", "x")]);
        let err = load::<Raw>("APP_", &env).expect_err("missing");
        assert!(err.mentions("APP_REQUIRED"), "{err}");
    }

    #[test]
    fn debug_never_prints_values() {
        let env = Env::from_pairs([("APP_SECRET", "hunter2")]);
        let shown = format!("{env:?}");
        assert!(shown.contains("APP_SECRET") && !shown.contains("hunter2"));
    }
}
