//! Full-stack scenarios (issue 7): each test starts its own stack — Redis, NATS with
//! JetStream, two coordinators, two routers, two edges — with the launcher chosen by
//! `DAISI_IT_LAUNCHER` (docker or process), and checks what one process cannot.
#![allow(clippy::unwrap_used)]

mod deploy_files;
mod observability;
mod scenarios;
