//! `/tasks`: list and inspect.

use axum::Router;

use super::State;

/// This group's routes (unversioned paths).
pub fn routes() -> Router<State> {
    Router::new()
}
