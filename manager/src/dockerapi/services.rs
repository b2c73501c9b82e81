//! `/services`: list (with `status`), inspect (`insertDefaults`), create, update (`version=`, `rollback=previous`), delete.

use axum::Router;

use super::State;

/// This group's routes (unversioned paths).
pub fn routes() -> Router<State> {
    Router::new()
}
