//! Full-stack scenarios (issue 7): each test starts its own stack — Redis, NATS with
//! JetStream, two coordinators, two routers, two edges — with the launcher chosen by
//! `DAISI_IT_LAUNCHER` (docker or process), and checks what one process cannot.
//! `isolation.rs` holds the fault-isolation scenarios of issue 10 (frozen edge among three,
//! frozen coordinator replica); `sessions.rs` those of issue 16 (a lost kill command).
#![allow(clippy::unwrap_used)]

mod deploy_files;
mod isolation;
mod observability;
mod scenarios;
mod sessions;
