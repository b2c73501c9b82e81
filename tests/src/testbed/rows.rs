//! The rows of `shoalctl ... --format json` as the tests read them.

use super::*;

/// A row of `shoalctl service ps --format json`.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskRow {
    /// Task id (possibly truncated, as docker prints it).
    #[serde(rename = "ID")]
    pub id: String,
    /// `service.slot`.
    #[serde(rename = "Name")]
    pub name: String,
    /// Image reference.
    #[serde(rename = "Image", default)]
    pub image: String,
    /// Node hostname (or id).
    #[serde(rename = "Node", default)]
    pub node: String,
    /// "Running", "Shutdown"…
    #[serde(rename = "DesiredState")]
    pub desired_state: String,
    /// "Running 3 seconds ago", "Failed 1 second ago"…
    #[serde(rename = "CurrentState")]
    pub current_state: String,
    /// Why the task failed, if it did.
    #[serde(rename = "Error", default)]
    pub error: String,
}

impl TaskRow {
    /// Whether the task is currently running.
    pub fn is_running(&self) -> bool {
        state_is(&self.current_state, "running")
    }

    /// Whether the task ended in failure.
    pub fn is_failed(&self) -> bool {
        state_is(&self.current_state, "failed")
    }

    /// Whether the orchestrator still wants the task to run.
    pub fn desired_running(&self) -> bool {
        state_is(&self.desired_state, "running")
    }
}

pub(super) fn state_is(text: &str, state: &str) -> bool {
    text.trim().to_ascii_lowercase().starts_with(state)
}

/// A row of `shoalctl service ls --format json`.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceRow {
    /// Service id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    #[serde(rename = "Name")]
    pub name: String,
    /// "replicated" or "global".
    #[serde(rename = "Mode", default)]
    pub mode: String,
    /// "running/desired", e.g. "3/3".
    #[serde(rename = "Replicas")]
    pub replicas: String,
    /// Image reference.
    #[serde(rename = "Image", default)]
    pub image: String,
}

/// A row of `shoalctl node ls --format json`.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeRow {
    /// Node id.
    #[serde(rename = "ID")]
    pub id: String,
    /// The hostname the agent registered.
    #[serde(rename = "Hostname")]
    pub hostname: String,
    /// "Ready", "Down"…
    #[serde(rename = "Status")]
    pub status: String,
    /// "Active", "Drain"…
    #[serde(rename = "Availability", default)]
    pub availability: String,
    /// "Leader", "Reachable" or empty for workers.
    #[serde(rename = "ManagerStatus", default)]
    pub manager_status: String,
}
