//! Certificate lifecycle: the lifetime of issued certificates, renewal (nodes, manager processes,
//! admin credentials) and CA rotation.

use shoal_proto::v1::{
    GetClusterResponse, RenewAdminCertificateRequest, RenewAdminCertificateResponse,
    RotateCaResponse,
};
use tonic::{Request, Status};

use crate::store::Store;

/// `RenewAdminCertificate`: a new admin certificate for the caller's new key.
pub async fn renew_admin(
    _store: &Store,
    _request: Request<RenewAdminCertificateRequest>,
) -> Result<RenewAdminCertificateResponse, Status> {
    Err(Status::unimplemented("not yet"))
}

/// `GetCluster`.
pub fn cluster_info(_store: &Store) -> Result<GetClusterResponse, Status> {
    Err(Status::unimplemented("not yet"))
}

/// `UpdateCluster --cert-expiry`.
pub async fn set_cert_expiry(_store: &Store, _ns: i64) -> Result<(), Status> {
    Err(Status::unimplemented("not yet"))
}

/// `RotateCa`.
pub async fn start_rotation(_store: &Store) -> Result<RotateCaResponse, Status> {
    Err(Status::unimplemented("not yet"))
}
