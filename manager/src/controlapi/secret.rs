//! `secret create|ls|inspect|rm`: named immutable data, stored sealed in the Raft store.

use shoal_proto::v1::*;
use tonic::{Request, Response, Status};

use super::ControlApi;

/// Not built yet.
pub(super) async fn create_secret(
    _api: &ControlApi,
    _request: Request<CreateSecretRequest>,
) -> Result<Response<CreateSecretResponse>, Status> {
    Err(Status::unimplemented("create_secret is not built yet"))
}

/// Not built yet.
pub(super) async fn get_secret(
    _api: &ControlApi,
    _request: Request<GetSecretRequest>,
) -> Result<Response<GetSecretResponse>, Status> {
    Err(Status::unimplemented("get_secret is not built yet"))
}

/// Not built yet.
pub(super) async fn list_secrets(
    _api: &ControlApi,
    _request: Request<ListSecretsRequest>,
) -> Result<Response<ListSecretsResponse>, Status> {
    Err(Status::unimplemented("list_secrets is not built yet"))
}

/// Not built yet.
pub(super) async fn remove_secret(
    _api: &ControlApi,
    _request: Request<RemoveSecretRequest>,
) -> Result<Response<RemoveSecretResponse>, Status> {
    Err(Status::unimplemented("remove_secret is not built yet"))
}
