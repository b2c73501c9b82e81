//! `config create|ls|inspect|rm`: named immutable data mounted as files.

use shoal_proto::v1::*;
use tonic::{Request, Response, Status};

use super::ControlApi;

/// Not built yet.
pub(super) async fn create_config(
    _api: &ControlApi,
    _request: Request<CreateConfigRequest>,
) -> Result<Response<CreateConfigResponse>, Status> {
    Err(Status::unimplemented("create_config is not built yet"))
}

/// Not built yet.
pub(super) async fn get_config(
    _api: &ControlApi,
    _request: Request<GetConfigRequest>,
) -> Result<Response<GetConfigResponse>, Status> {
    Err(Status::unimplemented("get_config is not built yet"))
}

/// Not built yet.
pub(super) async fn list_configs(
    _api: &ControlApi,
    _request: Request<ListConfigsRequest>,
) -> Result<Response<ListConfigsResponse>, Status> {
    Err(Status::unimplemented("list_configs is not built yet"))
}

/// Not built yet.
pub(super) async fn remove_config(
    _api: &ControlApi,
    _request: Request<RemoveConfigRequest>,
) -> Result<Response<RemoveConfigResponse>, Status> {
    Err(Status::unimplemented("remove_config is not built yet"))
}
