//! The task lifecycle: states are ordered and a task only ever moves forward.

use crate::v1::TaskState;

impl TaskState {
    /// True once the task has stopped for good (complete, failed, shut down, rejected, ...).
    pub fn is_terminal(self) -> bool {
        self >= TaskState::TaskComplete
    }

    /// True while the task's container is (or is about to be) running on its node.
    pub fn is_active(self) -> bool {
        self >= TaskState::TaskAssigned && self <= TaskState::TaskRunning
    }

    /// Whether a task may move from `self` to `next`. Only forward moves are allowed; a restart is
    /// a new task in the same slot, never a backwards move.
    pub fn can_transition_to(self, next: TaskState) -> bool {
        next > self
    }

    /// Docker's lower-case name for the state ("running", "pending", ...).
    pub fn display_name(self) -> &'static str {
        match self {
            TaskState::TaskNew => "new",
            TaskState::TaskPending => "pending",
            TaskState::TaskAssigned => "assigned",
            TaskState::TaskAccepted => "accepted",
            TaskState::TaskPreparing => "preparing",
            TaskState::TaskStarting => "starting",
            TaskState::TaskRunning => "running",
            TaskState::TaskComplete => "complete",
            TaskState::TaskShutdown => "shutdown",
            TaskState::TaskFailed => "failed",
            TaskState::TaskRejected => "rejected",
            TaskState::TaskRemove => "remove",
            TaskState::TaskOrphaned => "orphaned",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_only_move_forward() {
        assert!(TaskState::TaskPending.can_transition_to(TaskState::TaskAssigned));
        assert!(TaskState::TaskRunning.can_transition_to(TaskState::TaskFailed));
        assert!(!TaskState::TaskRunning.can_transition_to(TaskState::TaskStarting));
        assert!(!TaskState::TaskRunning.can_transition_to(TaskState::TaskRunning));
        assert!(TaskState::TaskFailed.is_terminal());
        assert!(!TaskState::TaskRunning.is_terminal());
        assert!(TaskState::TaskRunning.is_active());
        assert!(!TaskState::TaskPending.is_active());
    }
}
