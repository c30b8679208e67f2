//! Store failures as gRPC statuses: one mapping for every service.

use crate::store::StoreError;
use tonic::Status;

/// `UNAVAILABLE` (retry), `FAILED_PRECONDITION` (heartbeat first), `INVALID_ARGUMENT` (bad page
/// token) or `INTERNAL` (malformed data; logged, details withheld from the caller).
pub(crate) fn from_store(error: StoreError) -> Status {
    match &error {
        StoreError::Unavailable(_) => Status::unavailable(error.to_string()),
        StoreError::UnknownPod(_) => Status::failed_precondition(error.to_string()),
        StoreError::BadPageToken => Status::invalid_argument(error.to_string()),
        StoreError::Corrupt(_) => {
            tracing::error!(%error, "store returned malformed data");
            Status::internal("the coordinator store returned malformed data")
        }
    }
}
