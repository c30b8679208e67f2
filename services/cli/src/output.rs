//! How the CLI prints: readable tables for people, JSON (one document per command, or one line
//! per event for `tail`) with `--json` for scripts, errors on stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)] // printing is this module's job

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde_json::Value;

/// Prints an error for a person.
pub(crate) fn fail(message: &str) {
    eprintln!("daisi: {message}");
}

/// An error and its causes on one line, `outer: cause: root`, leaving out a cause whose text
/// the previous part already shows (many I/O errors repeat their source in their own message).
pub(crate) fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Prints a line of text.
pub(crate) fn line(text: &str) {
    println!("{text}");
}

/// Prints a JSON value, pretty when it is a document, compact when `compact` (event streams).
pub(crate) fn json(value: &Value, compact: bool) {
    let text = if compact {
        value.to_string()
    } else {
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    };
    println!("{text}");
}

/// Prints rows as a table with `headers`; an empty table prints `empty` instead.
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>, empty: &str) {
    if rows.is_empty() {
        println!("{empty}");
        return;
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(headers.iter().copied());
    for row in rows {
        table.add_row(row);
    }
    println!("{table}");
}

#[cfg(test)]
mod tests {
    use super::describe;
    use anyhow::Context;

    #[test]
    fn causes_are_chained_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let repeated = anyhow::Error::new(std::io::Error::other(io)).context("cannot connect");
        assert_eq!(describe(&repeated), "cannot connect: refused");
        let distinct: anyhow::Result<()> = Err(anyhow::anyhow!("root")).context("outer");
        assert_eq!(describe(&distinct.expect_err("an error")), "outer: root");
    }
}
