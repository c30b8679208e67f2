//! End-to-end tests of the `daisi` command.
#![allow(clippy::unwrap_used)]

mod bench;
mod browser;
mod offline;
mod stack;
