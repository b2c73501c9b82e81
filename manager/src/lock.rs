//! Encryption at rest and autolock: each manager's data key, sealed under the cluster's unlock key
//! while autolock is on.

use tonic::Status;

use crate::store::Store;

/// `UpdateCluster --autolock`: turns autolock on (returns the new unlock key) or off (returns "").
pub async fn set_autolock(_store: &Store, _on: bool) -> Result<String, Status> {
    Err(Status::unimplemented("autolock is not built yet"))
}

/// `UnlockKey`: the current unlock key, or a new one when `rotate`.
pub async fn unlock_key(_store: &Store, _rotate: bool) -> Result<String, Status> {
    Err(Status::unimplemented("autolock is not built yet"))
}
