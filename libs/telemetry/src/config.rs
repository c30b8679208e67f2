//! Telemetry settings and how they are read from the environment.
//!
//! Parsing goes through a lookup function so tests never touch the process environment; the
//! variables are the standard ones (`RUST_LOG`, `OTEL_*`) plus `DAISI_LOG_FORMAT`.

use crate::TelemetryError;
use tracing_subscriber::EnvFilter;

/// Chooses JSON or human-readable logs.
pub const LOG_FORMAT_VAR: &str = "DAISI_LOG_FORMAT";
/// `tracing` filter directives, as understood by `EnvFilter`.
pub const LOG_FILTER_VAR: &str = "RUST_LOG";
/// Standard OpenTelemetry variable: OTLP export is on only when it is set.
pub const OTLP_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Standard OpenTelemetry variable: overrides the service name given in code.
pub const SERVICE_NAME_VAR: &str = "OTEL_SERVICE_NAME";

/// Filter used when `RUST_LOG` is unset.
const DEFAULT_LOG_FILTER: &str = "info";

/// How log lines are written to stdout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors (the default in every deployment).
    #[default]
    Json,
    /// Coloured single-line text, for a developer's terminal.
    Pretty,
}

impl LogFormat {
    fn parse(value: &str) -> Result<Self, TelemetryError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            _ => Err(TelemetryError::InvalidEnv {
                var: LOG_FORMAT_VAR,
                value: value.to_owned(),
                expected: "one of `json`, `pretty`",
            }),
        }
    }
}

/// Everything [`crate::init`] needs; build it with [`TelemetryConfig::from_env`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Reported as `service.name` on every exported span, so traces can be told apart.
    pub service_name: String,
    /// JSON for machines, pretty for humans.
    pub log_format: LogFormat,
    /// `EnvFilter` directives, validated at parse time so a typo fails start-up, not silently.
    pub log_filter: String,
    /// OTLP/gRPC collector address (`http://host:4317`); `None` keeps traces in-process only.
    pub otlp_endpoint: Option<String>,
}

impl TelemetryConfig {
    /// Defaults for `service_name`: JSON logs at `info`, no OTLP export.
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            service_name: service_name.into(),
            log_format: LogFormat::default(),
            log_filter: DEFAULT_LOG_FILTER.to_owned(),
            otlp_endpoint: None,
        }
    }

    /// Reads the process environment; see [`TelemetryConfig::from_lookup`].
    pub fn from_env(service_name: impl Into<String>) -> Result<Self, TelemetryError> {
        Self::from_lookup(service_name, |name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (a variable name to its value).
    ///
    /// Empty values count as unset, as the OpenTelemetry specification asks.
    pub fn from_lookup(
        service_name: impl Into<String>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, TelemetryError> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let mut config = Self::new(service_name);

        if let Some(name) = get(SERVICE_NAME_VAR) {
            config.service_name = name;
        }
        if let Some(format) = get(LOG_FORMAT_VAR) {
            config.log_format = LogFormat::parse(&format)?;
        }
        if let Some(filter) = get(LOG_FILTER_VAR) {
            EnvFilter::try_new(&filter).map_err(|_| TelemetryError::InvalidEnv {
                var: LOG_FILTER_VAR,
                value: filter.clone(),
                expected: "tracing filter directives such as `info` or `info,daisi_edge=debug`",
            })?;
            config.log_filter = filter;
        }
        if let Some(endpoint) = get(OTLP_ENDPOINT_VAR) {
            config.otlp_endpoint = Some(parse_endpoint(endpoint)?);
        }
        Ok(config)
    }
}

/// Rejects endpoints tonic could not dial, so the mistake shows at start-up.
fn parse_endpoint(endpoint: String) -> Result<String, TelemetryError> {
    let valid = endpoint.parse::<http::Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
    });
    if valid {
        Ok(endpoint)
    } else {
        Err(TelemetryError::InvalidEnv {
            var: OTLP_ENDPOINT_VAR,
            value: endpoint,
            expected: "an http(s) url of an otlp/grpc collector, e.g. `http://localhost:4317`",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<TelemetryConfig, TelemetryError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TelemetryConfig::from_lookup("daisi-edge", |name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let config = parse(&[]).expect("empty env is valid");
        assert_eq!(config, TelemetryConfig::new("daisi-edge"));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.log_filter, "info");
        assert_eq!(config.otlp_endpoint, None);
    }

    #[test]
    fn reads_every_variable() {
        let config = parse(&[
            ("DAISI_LOG_FORMAT", "Pretty"),
            ("RUST_LOG", "warn,daisi_edge=debug"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_SERVICE_NAME", "edge-eu-1"),
        ])
        .expect("valid env");
        assert_eq!(config.service_name, "edge-eu-1");
        assert_eq!(config.log_format, LogFormat::Pretty);
        assert_eq!(config.log_filter, "warn,daisi_edge=debug");
        assert_eq!(
            config.otlp_endpoint.as_deref(),
            Some("http://collector:4317")
        );
    }

    #[test]
    fn empty_values_count_as_unset() {
        let config = parse(&[
            ("DAISI_LOG_FORMAT", ""),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", " "),
            ("OTEL_SERVICE_NAME", ""),
        ])
        .expect("empty values are ignored");
        assert_eq!(config, TelemetryConfig::new("daisi-edge"));
    }

    #[test]
    fn bad_log_format_names_the_variable_and_choices() {
        let err = parse(&[("DAISI_LOG_FORMAT", "yaml")]).expect_err("yaml is not a format");
        let message = err.to_string();
        assert!(message.contains("DAISI_LOG_FORMAT"), "{message}");
        assert!(message.contains("yaml"), "{message}");
        assert!(
            message.contains("json") && message.contains("pretty"),
            "{message}"
        );
    }

    #[test]
    fn bad_filter_and_endpoint_are_rejected() {
        let err = parse(&[("RUST_LOG", "info,[[[")]).expect_err("bad directives");
        assert!(err.to_string().contains("RUST_LOG"), "{err}");
        for endpoint in ["collector:4317", "not a url", "ftp://collector:4317"] {
            let err = parse(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)])
                .expect_err("endpoint needs an http(s) scheme");
            assert!(
                err.to_string().contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
                "{err}"
            );
        }
    }
}
