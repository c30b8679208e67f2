//! Failures of store operations, split by what the caller can do about them.

use daisi_domain::PodId;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backing store did not answer in time or is unreachable; retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The call named a pod that is not registered (or whose lease lapsed): heartbeat first.
    #[error("pod {0} is not registered; send a heartbeat first")]
    UnknownPod(PodId),
    /// A page token this store did not issue.
    #[error("page_token is not a token of this listing")]
    BadPageToken,
    /// The store holds or returned data this code cannot read (a bug or foreign writes).
    #[error("store data is malformed: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Short stable label for metrics.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::UnknownPod(_) => "unknown_pod",
            Self::BadPageToken => "bad_page_token",
            Self::Corrupt(_) => "corrupt",
        }
    }
}
