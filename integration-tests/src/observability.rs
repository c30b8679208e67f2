//! What the shipped dashboard (`deploy/grafana/daisi.json`) and Prometheus rules
//! (`deploy/prometheus/*.yml`) query, and what a running stack exports: enough PromQL and
//! exposition-format reading to check that every series they name exists, with the labels
//! their matchers use.
//!
//! The PromQL reader is deliberately small: it finds metric selectors (a name, optionally
//! with `{label matchers}`) and skips functions, aggregation clauses, keywords, numbers,
//! durations and strings. Rule files are read line by line (`record:`/`expr:` keys, plain or
//! block scalars); the test cross-checks the number of rules found with promtool's own count,
//! so a rule this reader misses fails the test instead of going unchecked.

use std::collections::{BTreeMap, BTreeSet};

/// A metric selector found in an expression: `name{label="...",...}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Selector {
    /// The metric name.
    pub name: String,
    /// Label names its matchers use.
    pub labels: BTreeSet<String>,
}

/// Words of PromQL that are not metric names when they stand alone.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
];

/// Labels Prometheus attaches to every scraped series (target labels), which a service's own
/// `/metrics` cannot show.
pub const TARGET_LABELS: &[&str] = &[
    "job",
    "instance",
    "namespace",
    "pod",
    "container",
    "endpoint",
    "service_name",
];

/// Series Prometheus makes itself rather than scraping them.
pub const PROMETHEUS_SERIES: &[&str] = &["up"];

/// Every metric selector in `expr`. Grafana variables (`$__rate_interval`, `$instance`) may
/// appear in ranges and label values.
pub fn selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '[' {
            // A range or subquery: durations and variables only.
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            // Matchers without a name before them (`{__name__=~...}`): not used by us.
            let (_, end) = matcher_labels(&chars, i);
            i = end;
        } else if c == '$' {
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let lower = word.to_ascii_lowercase();
            if KEYWORDS.contains(&lower.as_str()) {
                // `by (...)`, `on (...)`, ...: label lists, skipped with their parentheses.
                if chars.get(j) == Some(&'(') {
                    i = skip_parens(&chars, j);
                }
            } else if chars.get(j) == Some(&'(') || clause_follows(&chars, j) {
                // A function or an aggregation (`sum by (x) (...)` included): its arguments
                // are read by the loop.
            } else if chars.get(j) == Some(&'{') {
                let (labels, end) = matcher_labels(&chars, j);
                out.push(Selector { name: word, labels });
                i = end;
            } else {
                out.push(Selector {
                    name: word,
                    labels: BTreeSet::new(),
                });
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Whether `by`/`without` starts at `at` (an aggregation whose clause comes first).
fn clause_follows(chars: &[char], at: usize) -> bool {
    ["by", "without"].iter().any(|kw| {
        let end = at + kw.len();
        end <= chars.len()
            && chars[at..end].iter().copied().eq(kw.chars())
            && chars
                .get(end)
                .is_none_or(|c| c.is_whitespace() || *c == '(')
    })
}

fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

fn skip_parens(chars: &[char], start: usize) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// The label names of the matchers in `{...}` starting at `start`, and where it ends.
fn matcher_labels(chars: &[char], start: usize) -> (BTreeSet<String>, usize) {
    let mut labels = BTreeSet::new();
    let mut i = start + 1;
    let mut name = String::new();
    while i < chars.len() && chars[i] != '}' {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(chars, i);
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' {
            name.push(c);
        } else {
            if matches!(c, '=' | '!') && !name.is_empty() {
                labels.insert(std::mem::take(&mut name));
            }
            name.clear();
        }
        i += 1;
    }
    (labels, i + 1)
}

/// One rule of a Prometheus rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `record:` name of a recording rule, `None` for an alert.
    pub record: Option<String>,
    /// The expression.
    pub expr: String,
}

/// The rules of a rule file, read by key: each `- record:`/`- alert:` starts a rule, its
/// `expr:` is a plain scalar or a `|`/`>` block.
pub fn rules(yaml: &str) -> Vec<Rule> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut record: Option<Option<String>> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start().trim_start_matches("- ").trim_start();
        if let Some(name) = trimmed.strip_prefix("record:") {
            record = Some(Some(unquote(name)));
        } else if trimmed.starts_with("alert:") {
            record = Some(None);
        } else if let Some(value) = trimmed.strip_prefix("expr:")
            && let Some(kind) = record.take()
        {
            let value = value.trim();
            let expr = if value.starts_with('|') || value.starts_with('>') {
                let indent = line.len() - line.trim_start().len();
                let mut body = Vec::new();
                while i + 1 < lines.len() {
                    let next = lines[i + 1];
                    let next_indent = next.len() - next.trim_start().len();
                    if !next.trim().is_empty() && next_indent <= indent {
                        break;
                    }
                    body.push(next.trim());
                    i += 1;
                }
                body.join("\n")
            } else {
                unquote(value)
            };
            out.push(Rule { record: kind, expr });
        }
        i += 1;
    }
    out
}

fn unquote(value: &str) -> String {
    let v = value.trim();
    let quoted = v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')));
    if quoted {
        v[1..v.len() - 1].to_owned()
    } else {
        v.to_owned()
    }
}

/// Every query of a Grafana dashboard: panel targets (rows' nested panels included) and
/// template variables (`label_values(metric, label)` becomes `metric`).
pub fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    fn panels(list: &serde_json::Value, out: &mut Vec<String>) {
        for panel in list.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(expr.to_owned());
                }
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = var["query"]["query"]
            .as_str()
            .or_else(|| var["query"].as_str())
            .unwrap_or_default();
        if let Some(args) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
        {
            let metric = args.rsplit_once(',').map_or(args, |(m, _)| m).trim();
            out.push(metric.to_owned());
        }
    }
    out
}

/// Metric names in an exposition-format page, each with the label names its samples carry.
pub fn exported(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = line[..end].to_owned();
        let labels = out.entry(name).or_default();
        if line[end..].starts_with('{') {
            let chars: Vec<char> = line[end..].chars().collect();
            labels.extend(matcher_labels(&chars, 0).0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        selectors(expr).into_iter().map(|s| s.name).collect()
    }

    #[test]
    fn finds_selectors_and_skips_functions_clauses_and_variables() {
        let expr = r#"histogram_quantile(0.99, sum by (le, op) (rate(daisi_coordinator_store_seconds_bucket{instance=~"$instance", op!="x"}[$__rate_interval])))"#;
        let found = selectors(expr);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].name, "daisi_coordinator_store_seconds_bucket");
        assert_eq!(
            found[0].labels,
            BTreeSet::from(["instance".to_owned(), "op".to_owned()])
        );
        assert_eq!(
            names(
                "sum(rate(a_total[5m])) == 0 and max(b) > 0 or on(x) group_left(y) c unless d offset 5m"
            ),
            ["a_total", "b", "c", "d"]
        );
        assert_eq!(
            names("time() - process_start_time_seconds"),
            ["process_start_time_seconds"]
        );
        assert_eq!(names(r#"up{job=~"daisi.*"} == 0"#), ["up"]);
        assert_eq!(names("1e3 * x / 2.5"), ["x"]);
        assert_eq!(
            names(r#"label_replace(m, "token_type", "company", "kind", "user")"#),
            ["m"]
        );
    }

    #[test]
    fn reads_plain_and_block_expressions_of_rule_files() {
        let yaml = "groups:\n  - name: g\n    rules:\n      - record: r_one\n        expr: sum(a)\n      - alert: A\n        expr: |\n          b > 1\n          and c\n        for: 5m\n      - alert: B\n        expr: \"d == 0\"\n";
        let found = rules(yaml);
        assert_eq!(
            found,
            [
                Rule {
                    record: Some("r_one".into()),
                    expr: "sum(a)".into()
                },
                Rule {
                    record: None,
                    expr: "b > 1\nand c".into()
                },
                Rule {
                    record: None,
                    expr: "d == 0".into()
                },
            ]
        );
    }

    #[test]
    fn reads_exported_names_and_labels() {
        let text = "# HELP a x\n# TYPE a counter\na{kind=\"user\",service=\"edge\"} 1\nb 2\nc_bucket{le=\"0.1\"} 0\n";
        let got = exported(text);
        assert_eq!(got["a"], BTreeSet::from(["kind".into(), "service".into()]));
        assert!(got["b"].is_empty());
        assert!(got.contains_key("c_bucket"));
    }
}
