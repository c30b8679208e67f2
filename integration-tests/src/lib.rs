//! Full-stack test harness of daisi: Redis, NATS with JetStream, two coordinators, two routers
//! and two edges, started either as containers (testcontainers, on a Docker network created
//! for the run) or as local processes on free ports. The same scenarios run on both.
//!
//! Choose with `DAISI_IT_LAUNCHER=docker|process` (default: docker when a Docker engine
//! answers, processes otherwise). Image names come from the environment with the official
//! images as defaults:
//!
//! | variable | default |
//! |---|---|
//! | `DAISI_IT_REDIS_IMAGE` | `redis:7` |
//! | `DAISI_IT_NATS_IMAGE` | `nats:2.10` |
//! | `DAISI_IT_IMAGE_PREFIX` / `DAISI_IT_IMAGE_TAG` | `daisi` / `dev` (`make test-images`: deploy/Dockerfile from the debug binaries) |
//!
//! [`StackOptions`] sets the shape (the isolation scenarios run three edges) and router
//! settings that differ from the defaults.
//!
//! Scenarios read like prose: `stack.edge(1).connect(&user)`, `stack.publish(...)`,
//! `client.expect_event(...)`, `stack.kill_edge(1)`, `stack.pause_redis()`,
//! `stack.freeze(Component::Edge(3))`, `stack.publish_paced(...)`. When a scenario
//! fails, the stack prints the logs of every service as it is torn down.
//!
//! Every stack runs with mutual TLS between its services: a CA made for the run signs each
//! service's certificate (`pki.rs`), and the test's admin calls present an admin certificate.

mod backend;
mod client;
mod docker;
pub mod observability;
mod pki;
mod process;
mod secrets;
mod stack;
mod topology;
mod trail;

pub use backend::LauncherKind;
pub use client::{Closed, Refused, WAIT, WsClient};
pub use secrets::{Secrets, User};
pub use stack::{AdminClient, Edge, Stack, StackOptions, scenario};
pub use topology::{Component, Timing};
