//! The harness's step trail: every stack operation and client expectation prints one line
//! with the time since the test started. The test runner shows it when a test fails or is
//! terminated, so a scenario that overran says which step it was in.

use std::fmt::Display;
use std::sync::OnceLock;
use std::time::Instant;

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Prints `[it +12.345s] what` to stderr.
pub(crate) fn step(what: impl Display) {
    let elapsed = start().elapsed();
    #[allow(clippy::print_stderr)] // captured by the test runner, shown only for failing tests
    {
        eprintln!("[it +{:.3}s] {what}", elapsed.as_secs_f64());
    }
}
