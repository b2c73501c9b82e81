//! The one place store errors become gRPC statuses.

use tonic::Status;

use crate::store::StoreError;

/// Maps a store error to the status a client sees.
pub fn to_status(e: StoreError) -> Status {
    match e {
        StoreError::Conflict(msg) => Status::already_exists(msg),
        StoreError::NotLeader { leader } => Status::unavailable(match leader {
            Some(l) => format!("this manager is not the leader (leader: {l})"),
            None => {
                "no leader: the managers have no quorum; writes are refused until it is restored"
                    .to_string()
            }
        }),
        StoreError::NoQuorum => Status::unavailable(
            "no quorum: writes are refused until a majority of managers is reachable",
        ),
        other => Status::internal(other.to_string()),
    }
}
