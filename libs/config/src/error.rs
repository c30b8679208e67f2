//! Configuration problems: each one names the variable and says what to fix.

use std::fmt;

/// One thing wrong with one variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Full variable name, prefix included (`DAISI_EDGE_HTTP_ADDR`).
    pub var: String,
    /// What is wrong and how to fix it, lowercase, no trailing period.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.var, self.message)
    }
}

/// Every problem found in a service's configuration; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    problems: Vec<Problem>,
}

impl ConfigError {
    /// Wraps a non-empty list of problems. An empty list is a bug in the caller, reported as a
    /// problem of its own rather than a panic.
    pub fn new(problems: Vec<Problem>) -> Self {
        if problems.is_empty() {
            return Self {
                problems: vec![Problem {
                    var: "(internal)".into(),
                    message: "configuration rejected without a reason; please report this".into(),
                }],
            };
        }
        Self { problems }
    }

    /// The individual problems, in the order they were found.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Both lists of problems in one error.
    #[must_use]
    pub fn merged(mut self, other: Self) -> Self {
        self.problems.extend(other.problems);
        self
    }

    /// Whether any problem concerns `var` (full name). Handy in tests and tooling.
    pub fn mentions(&self, var: &str) -> bool {
        self.problems.iter().any(|p| p.var == var)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}
