//! `/networks`: list, inspect, create (swarm-scope overlay; local drivers refused), delete.

use axum::Router;

use super::State;

/// This group's routes (unversioned paths).
pub fn routes() -> Router<State> {
    Router::new()
}
