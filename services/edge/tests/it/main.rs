//! End-to-end tests of the edge: real WebSocket clients against edges started with `run` on
//! 127.0.0.1:0, the real coordinator in-process, and the binary.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod admission;
mod binary;
mod closing;
mod delivery;
mod door;
mod drain;
mod flood;
mod front_door;
mod http_routes;
mod internal_auth;
mod json_v2;
mod many_sockets;
mod minting;
mod recovery;
mod redis_load;
mod secrets_in_logs;
mod sessions;
mod socket_loop;
mod support;
mod tls;
mod write_coalescing;
mod ws_auth;
mod ws_protocol;
