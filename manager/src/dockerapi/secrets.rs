//! `/secrets` and `/configs`: list, inspect, create, update (labels only), delete.

use axum::Router;

use super::State;

/// This group's routes (unversioned paths).
pub fn routes() -> Router<State> {
    Router::new()
}
