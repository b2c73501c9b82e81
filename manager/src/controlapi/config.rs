//! `config create|ls|inspect|rm`: named immutable data mounted as files. Unlike a secret's, a
//! config's data is returned by `config inspect`, as docker does.

use shoal_proto::spec::{validate_data, validate_data_name, validate_labels};
use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::*;
use tonic::{Request, Response, Status};
use tracing::info;

use super::{invalid, ControlApi};
use crate::auth::require_admin;
use crate::store::State;

/// Finds a config by id, name or unique id prefix.
pub fn find_config(s: &State, name_or_id: &str) -> Result<Config, Status> {
    match s.find_config(name_or_id) {
        Ok(Some(config)) => Ok(config.clone()),
        Ok(None) => Err(Status::not_found(format!("config {name_or_id} not found"))),
        Err(n) => Err(Status::invalid_argument(format!(
            "config {name_or_id:?} is ambiguous: {n} config ids start with it"
        ))),
    }
}

fn config_name(config: &Config) -> &str {
    config.spec.as_ref().map_or("", |s| s.name.as_str())
}

/// `config create`: checks the name, labels and size, then writes the config once.
pub(super) async fn create_config(
    api: &ControlApi,
    request: Request<CreateConfigRequest>,
) -> Result<Response<CreateConfigResponse>, Status> {
    require_admin(&api.store, &request)?;
    let spec = request
        .into_inner()
        .spec
        .ok_or_else(|| Status::invalid_argument("spec: missing"))?;
    validate_data_name("config", &spec.name).map_err(invalid)?;
    validate_labels("--label", spec.labels.iter()).map_err(invalid)?;
    validate_data("config", &spec.data).map_err(invalid)?;
    let now = shoal_proto::now_ns();
    let config = Config {
        id: shoal_proto::new_id(),
        meta: Some(Meta {
            version: 0,
            created_at: now,
            updated_at: now,
        }),
        spec: Some(spec),
    };
    // A name already taken comes back from the store as "config NAME already exists".
    api.write(Action::CreateConfig(config.clone())).await?;
    info!(config.id = %config.id, config.name = %config_name(&config), "config created");
    let config = api
        .store
        .read(|s| s.config(&config.id).cloned())
        .unwrap_or(config);
    Ok(Response::new(CreateConfigResponse {
        config: Some(config),
    }))
}

/// `config inspect`: the config with its data.
pub(super) async fn get_config(
    api: &ControlApi,
    request: Request<GetConfigRequest>,
) -> Result<Response<GetConfigResponse>, Status> {
    require_admin(&api.store, &request)?;
    let name = request.into_inner().name_or_id;
    let config = api.store.read(|s| find_config(s, &name))?;
    Ok(Response::new(GetConfigResponse {
        config: Some(config),
    }))
}

/// `config ls`: every config, ordered by name.
pub(super) async fn list_configs(
    api: &ControlApi,
    request: Request<ListConfigsRequest>,
) -> Result<Response<ListConfigsResponse>, Status> {
    require_admin(&api.store, &request)?;
    let mut configs: Vec<Config> = api.store.read(|s| s.configs().cloned().collect());
    configs.sort_by(|a, b| config_name(a).cmp(config_name(b)).then(a.id.cmp(&b.id)));
    Ok(Response::new(ListConfigsResponse { configs }))
}

/// `config rm`: refused while a service mounts the config (the store names the service).
pub(super) async fn remove_config(
    api: &ControlApi,
    request: Request<RemoveConfigRequest>,
) -> Result<Response<RemoveConfigResponse>, Status> {
    require_admin(&api.store, &request)?;
    let name = request.into_inner().name_or_id;
    let config = api.store.read(|s| find_config(s, &name))?;
    // Refused while a service mounts it: "config NAME is in use by service S".
    api.write_removal(Action::RemoveConfig(config.id.clone()))
        .await?;
    info!(config.id = %config.id, config.name = %config_name(&config), "config removed");
    Ok(Response::new(RemoveConfigResponse { id: config.id }))
}
