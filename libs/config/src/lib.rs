//! Configuration shared by the daisi services: every service reads its settings from environment
//! variables with its own prefix (`DAISI_EDGE_`, `DAISI_COORDINATOR_`, `DAISI_ROUTER_`), checks
//! every one of them before anything binds, and reports *all* problems at once, each naming the
//! variable and what to do about it.
//!
//! The pattern, per service:
//! 1. a `Raw` struct of `Option<String>` fields deserialized by [`load`] (envy underneath), so a
//!    value that does not parse is reported by [`Validator`] with the variable's full name rather
//!    than by serde with a field name;
//! 2. a typed `Config` built by a [`Validator`], which applies defaults and collects problems;
//! 3. [`Env`] is a snapshot of the environment, so tests never touch the process environment.

mod env;
mod error;
mod fields;
pub mod secret;
mod validator;

pub use env::{Env, Loaded, load};
pub use error::{ConfigError, Problem};

/// Both results, or every problem of both: settings read in two parts (a service's own and a
/// shared group) still report all problems at once.
pub fn join<A, B>(
    a: Result<A, ConfigError>,
    b: Result<B, ConfigError>,
) -> Result<(A, B), ConfigError> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(a), Err(b)) => Err(a.merged(b)),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
    }
}
pub use secrecy::{ExposeSecret, SecretString};
pub use secret::{SecretDigest, secrets_equal, url_without_credentials};
pub use validator::Validator;

/// Exit status for a process that refused its configuration (`EX_USAGE` from sysexits.h), so
/// orchestrators and scripts can tell "fix your settings" from a crash.
pub const EXIT_BAD_CONFIG: u8 = 64;
