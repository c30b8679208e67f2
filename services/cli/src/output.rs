//! How the CLI prints: readable tables for people, JSON (one document per command, or one line
//! per event for `tail`) with `--json` for scripts, errors on stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)] // printing is this module's job

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde_json::Value;

/// Prints an error for a person.
pub(crate) fn fail(message: &str) {
    eprintln!("daisi: {message}");
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
