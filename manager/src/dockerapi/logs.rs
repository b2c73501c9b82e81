//! `/services/{id}/logs` and `/tasks/{id}/logs`: docker's stdcopy framing, one line per frame, `details`, `follow`, `tail`, `since`, `timestamps`.

use axum::Router;

use super::State;

/// This group's routes (unversioned paths).
pub fn routes() -> Router<State> {
    Router::new()
}
