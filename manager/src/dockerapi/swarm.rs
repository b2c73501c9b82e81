//! `/info` (with a real `Swarm` section) and `/swarm` (inspect; init, join, leave, update and
//! unlock answer a clear error: a Shoal cluster is made with `shoal-manager init/join`).

use axum::Router;

use super::State;

/// This group's routes (unversioned paths).
pub fn routes() -> Router<State> {
    Router::new()
}
