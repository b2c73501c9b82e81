//! `UpdateSecret` and `UpdateConfig`: only labels change (docker's rule). `stack deploy` sends the
//! spec it wants for a secret that exists; the store refuses it when the data differ, so a
//! changed secret file is an error naming the secret instead of being silently ignored.

use shoal_proto::spec::validate_labels;
use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::*;
use tonic::{Request, Response, Status};
use tracing::info;

use super::config::find_config;
use super::secret::{find_secret, without_data};
use super::{invalid, ControlApi};
use crate::auth::require_admin;
use crate::store::StoreError;

/// A refusal of the store (changed data, a name that differs) is the caller's mistake.
fn refused(e: StoreError) -> Status {
    match e {
        StoreError::Conflict(msg) => Status::invalid_argument(msg),
        other => other.into(),
    }
}

/// Checks the `version` a client read, as service updates do.
fn check_read_version(
    kind: &str,
    name: &str,
    meta: Option<&Meta>,
    version: u64,
) -> Result<(), Status> {
    let found = meta.map_or(0, |m| m.version);
    if version != 0 && version != found {
        return Err(Status::failed_precondition(format!(
            "update out of sequence: {kind} {name} is at version {found}, the update was based on \
             version {version}"
        )));
    }
    Ok(())
}

/// `UpdateSecret`: new labels for a secret whose data stays as it is.
pub(super) async fn update_secret(
    api: &ControlApi,
    request: Request<UpdateSecretRequest>,
) -> Result<Response<UpdateSecretResponse>, Status> {
    require_admin(&api.store, &request)?;
    let req = request.into_inner();
    let spec = req
        .spec
        .ok_or_else(|| Status::invalid_argument("spec: missing"))?;
    validate_labels("--label", spec.labels.iter()).map_err(invalid)?;
    let mut secret = api.store.read(|s| find_secret(s, &req.name_or_id))?;
    let name = secret
        .spec
        .as_ref()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    check_read_version("secret", &name, secret.meta.as_ref(), req.version)?;
    secret.spec = Some(spec);
    api.store
        .propose(vec![StoreAction {
            action: Some(Action::UpdateSecret(secret.clone())),
        }])
        .await
        .map_err(refused)?;
    info!(secret.id = %secret.id, secret.name = %name, "secret labels updated");
    let secret = api
        .store
        .read(|s| s.secret(&secret.id).cloned())
        .unwrap_or(secret);
    Ok(Response::new(UpdateSecretResponse {
        secret: Some(without_data(secret)),
    }))
}

/// `UpdateConfig`: new labels for a config whose data stays as it is.
pub(super) async fn update_config(
    api: &ControlApi,
    request: Request<UpdateConfigRequest>,
) -> Result<Response<UpdateConfigResponse>, Status> {
    require_admin(&api.store, &request)?;
    let req = request.into_inner();
    let spec = req
        .spec
        .ok_or_else(|| Status::invalid_argument("spec: missing"))?;
    validate_labels("--label", spec.labels.iter()).map_err(invalid)?;
    let mut config = api.store.read(|s| find_config(s, &req.name_or_id))?;
    let name = config
        .spec
        .as_ref()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    check_read_version("config", &name, config.meta.as_ref(), req.version)?;
    config.spec = Some(spec);
    api.store
        .propose(vec![StoreAction {
            action: Some(Action::UpdateConfig(config.clone())),
        }])
        .await
        .map_err(refused)?;
    info!(config.id = %config.id, config.name = %name, "config labels updated");
    let config = api
        .store
        .read(|s| s.config(&config.id).cloned())
        .unwrap_or(config);
    Ok(Response::new(UpdateConfigResponse {
        config: Some(config),
    }))
}
