//! End-to-end tests of the `daisi-router` binary.
#![allow(clippy::unwrap_used)]

mod binary;
