//! `config create|ls|inspect|rm`: named immutable data mounted as files. Unlike a secret's, a
//! config's data is returned by `config inspect`, as docker does.

use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::*;
use tonic::{Request, Response, Status};

use super::named_data::{self, impl_named_data};
use super::ControlApi;
use crate::store::State;

impl_named_data!(
    Config, ConfigSpec, config,
    store: find_config, config, configs,
    actions: CreateConfig, RemoveConfig, UpdateConfig
);

/// Finds a config by id, name or unique id prefix.
pub fn find_config(s: &State, name_or_id: &str) -> Result<Config, Status> {
    named_data::find(s, name_or_id)
}

/// `config create`: checks the name, labels and size, then writes the config once.
pub(super) async fn create_config(
    api: &ControlApi,
    request: Request<CreateConfigRequest>,
) -> Result<Response<CreateConfigResponse>, Status> {
    let config = named_data::create(api, request, |r| r.spec).await?;
    Ok(Response::new(CreateConfigResponse {
        config: Some(config),
    }))
}

/// `config inspect`: the config with its data.
pub(super) async fn get_config(
    api: &ControlApi,
    request: Request<GetConfigRequest>,
) -> Result<Response<GetConfigResponse>, Status> {
    let config = named_data::get(api, request, |r| r.name_or_id)?;
    Ok(Response::new(GetConfigResponse {
        config: Some(config),
    }))
}

/// `config ls`: every config, ordered by name.
pub(super) async fn list_configs(
    api: &ControlApi,
    request: Request<ListConfigsRequest>,
) -> Result<Response<ListConfigsResponse>, Status> {
    let configs = named_data::list(api, &request)?;
    Ok(Response::new(ListConfigsResponse { configs }))
}

/// `config rm`: refused while a service mounts the config (the store names the service).
pub(super) async fn remove_config(
    api: &ControlApi,
    request: Request<RemoveConfigRequest>,
) -> Result<Response<RemoveConfigResponse>, Status> {
    let id = named_data::remove::<Config, _>(api, request, |r| r.name_or_id).await?;
    Ok(Response::new(RemoveConfigResponse { id }))
}
