//! Store failures as gRPC statuses: one mapping for every service.

use crate::store::StoreError;
use daisi_runtime::ratelog::RateLimit;
use std::sync::LazyLock;
use std::time::Duration;
use tonic::Status;

/// What callers are told while the store is unavailable; the cause (Redis's own error text,
/// addresses, authentication failures) is logged here, never sent.
pub(crate) const UNAVAILABLE: &str = "the coordinator store is unavailable; retry later";

/// `UNAVAILABLE` (retry), `FAILED_PRECONDITION` (heartbeat first), `INVALID_ARGUMENT` (bad page
/// token) or `INTERNAL` (malformed data). Store details are logged and withheld from the caller.
pub(crate) fn from_store(error: StoreError) -> Status {
    match &error {
        StoreError::Unavailable(_) => {
            // Every call fails the same way during an outage: one line per period says it.
            static LOG: LazyLock<RateLimit> =
                LazyLock::new(|| RateLimit::new(Duration::from_secs(10)));
            if let Some(repeats) = LOG.check("store") {
                tracing::warn!(%error, repeats, "store call failed");
            }
            Status::unavailable(UNAVAILABLE)
        }
        StoreError::UnknownPod(_) => Status::failed_precondition(error.to_string()),
        StoreError::BadPageToken => Status::invalid_argument(error.to_string()),
        StoreError::Corrupt(_) => {
            tracing::error!(%error, "store returned malformed data");
            Status::internal("the coordinator store returned malformed data")
        }
    }
}
