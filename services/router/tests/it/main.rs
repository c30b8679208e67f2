//! End-to-end tests of the router: the binary, the event-source contract on both backends,
//! delivery through real JetStream to stub edges, faults, and the publish API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ack_window;
mod binary;
mod consumer_rebuild;
mod delivery;
mod faults;
mod nats_cluster;
mod publish_api;
mod redelivery_delay;
mod source_contract;
mod start_position;
mod stream;
mod support;
