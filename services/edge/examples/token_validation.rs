//! Token validation in a loop, for counting instructions per validation with callgrind (which
//! counts the same on a loaded machine, unlike criterion's wall clock).
//!
//! ```sh
//! cargo build --release -p daisi-edge --example token_validation
//! for n in 0 100000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/tv.$n \
//!     target/release/examples/token_validation cached $n
//! done
//! # instructions per validation = (Ir at 100000 - Ir at 0) / 100000
//! ```
//!
//! `cached` validates one token the cache already holds; `uncached` decodes it every time
//! (cache disabled), as `edge_token/cached` and `edge_token/uncached` do in the criterion
//! bench. Prints the wall-clock time per validation and a checksum (so the loop cannot be
//! optimised away).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use daisi_config::Env;
use daisi_domain::token::{TokenKeyring, UserClaims};
use daisi_edge::auth::Authenticator;
use std::hint::black_box;
use std::time::Instant;

const KEY: &str = "3a7bd3e2360a3d29eea436e864a1b8d5f2f5d5e4dba8ac39d465fc3488db3915";

fn authenticator(token_cache: &str) -> Authenticator {
    let env = Env::from_pairs([
        ("DAISI_EDGE_HTTP_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_GRPC_ADDR", "127.0.0.1:0"),
        ("DAISI_EDGE_POD_ID", "edge-bench"),
        ("DAISI_EDGE_TOKEN_AES_KEY", KEY),
        ("DAISI_EDGE_ADMIN_TOKEN_AES_KEY", KEY),
        ("DAISI_EDGE_SECRET_TOKEN", "bench-api-key"),
        ("DAISI_EDGE_ADMIN_SECRET_TOKEN", "bench-admin-key"),
        ("DAISI_EDGE_TOKEN_CACHE_SIZE", token_cache),
    ]);
    Authenticator::new(&daisi_edge::Config::from_env(&env).unwrap().value)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "cached".into());
    let iterations: u64 = args
        .next()
        .map_or(100_000, |n| n.parse().expect("iterations"));
    let ring = TokenKeyring::from_hex(&[KEY]).unwrap();
    // A fixed instant: the same token text (up to its random nonce) on every run.
    let now: jiff::Timestamp = "2026-11-29T12:00:00Z".parse().unwrap();
    let claims = UserClaims::expiring_in(
        "comp-9".parse().unwrap(),
        "agent_7".parse().unwrap(),
        "user-42".parse().unwrap(),
        now,
        3600,
    )
    .unwrap();
    let token = ring.encode_user(&claims).unwrap();
    let auth = match mode.as_str() {
        "cached" => authenticator("100000"),
        "uncached" => authenticator("0"),
        other => panic!("mode is cached or uncached, not {other}"),
    };
    // The first validation fills the cache (and warms lazy initialisation) in both modes.
    auth.user_token(Some(&token), now, |_| ()).unwrap();
    let mut sum = 0usize;
    let started = Instant::now();
    for _ in 0..iterations {
        let len = auth
            .user_token(black_box(Some(&token)), now, |claims| {
                claims.user_id.as_str().len()
            })
            .unwrap();
        sum = sum.wrapping_add(len);
    }
    let elapsed = started.elapsed();
    // Wall clock, so only indicative on a loaded machine (the instruction count is the measure).
    let per = elapsed.as_nanos() / u128::from(iterations.max(1));
    println!("{mode}: {iterations} validations, {per} ns each (wall clock), checksum {sum}");
}
