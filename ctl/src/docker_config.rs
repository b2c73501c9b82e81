//! Registry credentials where docker keeps them: `$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json` (`auths`), read by `--with-registry-auth` and written by `login`.

use anyhow::Result;
use shoal_proto::v1::RegistryAuth;

/// The credentials stored for the registry `image` is pulled from, if any. (Stub.)
pub fn registry_auth_for(_image: &str) -> Result<Option<RegistryAuth>> {
    Ok(None)
}
