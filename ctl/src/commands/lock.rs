//! `shoalctl cluster unlock|unlock-key`: autolock.

use std::path::Path;

use anyhow::{anyhow, Result};

use crate::cli::{Format, UnlockArgs, UnlockKeyArgs};
use crate::client::ManagerChannel;

/// `cluster unlock`: dials the managers of the admin configuration itself (a locked manager
/// answers nothing else).
pub async fn unlock(_config: Option<&Path>, _a: &UnlockArgs) -> Result<()> {
    Err(anyhow!("autolock is not built yet"))
}

/// `cluster unlock-key [--rotate]`.
pub async fn unlock_key(
    _channel: ManagerChannel,
    _a: &UnlockKeyArgs,
    _format: Format,
) -> Result<()> {
    Err(anyhow!("autolock is not built yet"))
}
