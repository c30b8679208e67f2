//! Integration tests of `daisi-domain` through its public API only.
#![allow(clippy::unwrap_used)]

mod event_frames;
mod fuzz;
mod token_interop;
mod token_vectors;
