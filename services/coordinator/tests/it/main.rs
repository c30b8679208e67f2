//! End-to-end tests of the `daisi-coordinator` binary.
#![allow(clippy::unwrap_used)]

mod binary;
