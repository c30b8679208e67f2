//! Tests of the session coordinator: the store contract (memory and Redis), the gRPC service
//! against real `redis-server`s (the "Done when" lines), and the binary.
#![allow(clippy::unwrap_used)]

mod api;
mod auth;
mod binary;
mod cluster;
mod contract;
mod done_when;
mod redis_keys;
mod redis_later;
mod rediss;
mod support;
