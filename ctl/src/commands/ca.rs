//! `shoalctl cluster ca|update|admin renew`: the CA, certificate lifetime and admin renewal.

use std::path::Path;

use anyhow::{anyhow, Result};

use crate::cli::{CaArgs, ClusterUpdateArgs, Format};
use crate::client::ManagerChannel;

/// `cluster admin renew`.
pub async fn admin_renew(_config: Option<&Path>, _channel: ManagerChannel) -> Result<()> {
    Err(anyhow!("not yet"))
}

/// `cluster update`.
pub async fn update(_channel: ManagerChannel, _a: &ClusterUpdateArgs) -> Result<()> {
    Err(anyhow!("not yet"))
}

/// `cluster ca [--rotate]`.
pub async fn ca(
    _config: Option<&Path>,
    _channel: ManagerChannel,
    _a: &CaArgs,
    _format: Format,
) -> Result<()> {
    Err(anyhow!("not yet"))
}
