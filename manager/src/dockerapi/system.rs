//! `/_ping`, `/version`, `/info`, `/swarm` (inspect; init/join/leave/update/unlock answer a clear error).

use axum::Router;

use super::State;

/// This group's routes (unversioned paths).
pub fn routes() -> Router<State> {
    Router::new()
}
