//! `/distribution/{name}/json`: the digest and platforms the registry serves for an image now.

use axum::Router;

use super::State;

/// This group's routes (unversioned paths).
pub fn routes() -> Router<State> {
    Router::new()
}
