//! The open-file limit. Every socket is a descriptor, and the soft limit many runtimes hand a
//! process (1,024 under containerd 2 and systemd) caps an edge at a thousand clients while the
//! hard limit allows far more. Like the Go runtime the old service ran on, daisi raises the
//! soft limit to the hard one at start-up.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The open-file limit before and after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// Soft limit found at start.
    pub before: u64,
    /// Soft limit now in force.
    pub now: u64,
    /// Hard limit (the ceiling an unprivileged process can raise to).
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit.
///
/// # Errors
/// When the limit cannot be read or set (a seccomp profile may forbid it); the process keeps
/// the limit it had.
pub fn raise() -> Result<OpenFiles, nix::Error> {
    let (before, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if before < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    let (now, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok(OpenFiles { before, now, hard })
}

/// [`raise`], logging what it did: every daisi process calls this once at start-up.
pub fn raise_and_log() {
    match raise() {
        Ok(limit) if limit.now > limit.before => tracing::info!(
            from = limit.before,
            to = limit.now,
            "raised the open-file limit to the hard limit"
        ),
        Ok(limit) => tracing::debug!(open_files = limit.now, "open-file limit"),
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open-file limit; keeping the current one");
        }
    }
}

/// The soft open-file limit in force, if it can be read.
pub fn current() -> Option<u64> {
    getrlimit(Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_reaches_the_hard_limit_and_is_idempotent() {
        let first = raise().expect("getrlimit/setrlimit are allowed in tests");
        assert_eq!(first.now, first.hard);
        assert!(first.now >= first.before);
        let again = raise().expect("second raise");
        assert_eq!(again.before, first.now);
        assert_eq!(current(), Some(again.now));
    }
}
