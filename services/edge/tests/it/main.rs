//! End-to-end tests of the `daisi-edge` binary.
#![allow(clippy::unwrap_used)]

mod binary;
