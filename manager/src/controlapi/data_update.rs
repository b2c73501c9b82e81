//! `UpdateSecret` and `UpdateConfig`: only labels change (docker's rule). `stack deploy` sends the
//! spec it wants for a secret that exists; the store refuses it when the data differ, so a
//! changed secret file is an error naming the secret instead of being silently ignored.

use shoal_proto::v1::*;
use tonic::{Request, Response, Status};

use super::named_data;
use super::ControlApi;

/// `UpdateSecret`: new labels for a secret whose data stays as it is.
pub(super) async fn update_secret(
    api: &ControlApi,
    request: Request<UpdateSecretRequest>,
) -> Result<Response<UpdateSecretResponse>, Status> {
    let secret: Secret =
        named_data::update(api, request, |r| (r.name_or_id, r.spec, r.version)).await?;
    Ok(Response::new(UpdateSecretResponse {
        secret: Some(secret),
    }))
}

/// `UpdateConfig`: new labels for a config whose data stays as it is.
pub(super) async fn update_config(
    api: &ControlApi,
    request: Request<UpdateConfigRequest>,
) -> Result<Response<UpdateConfigResponse>, Status> {
    let config: Config =
        named_data::update(api, request, |r| (r.name_or_id, r.spec, r.version)).await?;
    Ok(Response::new(UpdateConfigResponse {
        config: Some(config),
    }))
}
