//! `volume ls|inspect|rm|prune`: asks the nodes' agents about their volumes through the
//! dispatcher's sessions (volumes live on nodes, not in the store).

use shoal_proto::v1::*;
use tonic::{Request, Response, Status};

use super::ControlApi;

/// Not built yet.
pub(super) async fn list_volumes(
    _api: &ControlApi,
    _request: Request<ListVolumesRequest>,
) -> Result<Response<ListVolumesResponse>, Status> {
    Err(Status::unimplemented("list_volumes is not built yet"))
}

/// Not built yet.
pub(super) async fn remove_volume(
    _api: &ControlApi,
    _request: Request<RemoveVolumeRequest>,
) -> Result<Response<RemoveVolumeResponse>, Status> {
    Err(Status::unimplemented("remove_volume is not built yet"))
}

/// Not built yet.
pub(super) async fn prune_volumes(
    _api: &ControlApi,
    _request: Request<PruneVolumesRequest>,
) -> Result<Response<PruneVolumesResponse>, Status> {
    Err(Status::unimplemented("prune_volumes is not built yet"))
}
