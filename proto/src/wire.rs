//! Typed accessors for wire fields that every crate reads the same way: one place each for "is
//! this an ingress port" and "the observed state of a task".

use crate::v1::{PortConfig, Task, TaskState};

impl PortConfig {
    /// Whether the port is published through the routing mesh (`mode=ingress`, the default).
    pub fn is_ingress(&self) -> bool {
        self.publish_mode.is_empty() || self.publish_mode == "ingress"
    }

    /// Whether the port is published on the node of each task only (`mode=host`).
    pub fn is_host_mode(&self) -> bool {
        self.publish_mode == "host"
    }
}

impl Task {
    /// The task's observed state (`TASK_NEW` while it has no status yet).
    pub fn observed_state(&self) -> TaskState {
        self.status
            .as_ref()
            .map_or(TaskState::TaskNew, |s| s.state())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::TaskStatus;

    #[test]
    fn publish_modes() {
        let port = |mode: &str| PortConfig {
            publish_mode: mode.into(),
            ..Default::default()
        };
        assert!(port("").is_ingress() && port("ingress").is_ingress());
        assert!(!port("host").is_ingress() && port("host").is_host_mode());
        assert!(!port("").is_host_mode());
    }

    #[test]
    fn a_task_without_status_is_new() {
        let mut task = Task::default();
        assert_eq!(task.observed_state(), TaskState::TaskNew);
        task.status = Some(TaskStatus {
            state: TaskState::TaskRunning as i32,
            ..Default::default()
        });
        assert_eq!(task.observed_state(), TaskState::TaskRunning);
    }
}
