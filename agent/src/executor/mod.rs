//! The seam between the task actor and the kernel: what a task needs done to run as a container
//! on this node (pull its image, prepare, start, wait, stop, remove, inspect, find its log).
//!
//! `RuntimeExecutor` is the real one: today's runtime, image store and networks, with every
//! blocking call (file reads, /proc, fork/exec, deletes) on tokio's blocking pool. The task actor
//! and the worker see only the trait, so their lifecycle logic is unit-tested against
//! `fake::FakeExecutor` without root.

pub mod config;
#[cfg(test)]
pub mod fake;
pub mod health;
mod real;

use std::path::PathBuf;
use std::time::Duration;

use shoal_proto::v1::{RegistryAuth, Task};

use crate::image::{Image, ImageError};
use crate::network::NetworkError;
use crate::runtime::RuntimeError;

pub use crate::runtime::{ContainerConfig, ContainerStatus};
pub use health::{HealthProbe, ProbeResult};
pub use real::RuntimeExecutor;

/// Errors of an executor, by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The task's image could be neither pulled nor found locally.
    #[error("pull {reference}: {source}")]
    Pull {
        /// The reference as the task's spec names it.
        reference: String,
        /// Why the pull failed.
        #[source]
        source: ImageError,
    },
    /// The spec asks for something this node cannot give (a device, the init binary).
    #[error("{reason}")]
    NodeConfig {
        /// What is missing, naming the node and the path.
        reason: String,
    },
    /// The task's mounts, secrets or configs cannot be set up on this node (a missing bind
    /// source, an unsupported volume driver, a secret whose data did not come).
    #[error("{reason}")]
    Mounts {
        /// What is wrong, naming the path, volume, secret or config.
        reason: String,
    },
    /// Plugging the task into its networks (or out of them) failed.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The container runtime failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A call on the blocking pool panicked or was cancelled.
    #[error("{source}")]
    Blocking {
        /// The call.
        op: &'static str,
        /// The pool's error.
        source: tokio::task::JoinError,
    },
}

/// What the task actor and the worker need from the node to run tasks as containers. Methods
/// take task ids, not handles: after an agent restart a container is found by its id alone.
#[async_trait::async_trait]
pub trait Executor: Send + Sync + 'static {
    /// What this node has of a task's container; an error when there is none.
    async fn inspect(&self, task_id: &str) -> Result<ContainerStatus, ExecutorError>;

    /// Every container on this node with its status, by task id.
    async fn list(&self) -> Result<Vec<(String, ContainerStatus)>, ExecutorError>;

    /// The image `reference` names, pulled (or, with the registry unreachable, found locally),
    /// with `auth` (the task's `--with-registry-auth` credentials) when it is for its registry.
    async fn pull(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<Image, ExecutorError>;

    /// The local copy of an image, without asking a registry (`None`: not on this node).
    async fn local_image(&self, reference: &str) -> Option<Image>;

    /// Everything before the start: the container's configuration from the task and its image,
    /// this node's part of it (devices, init), then the task's networks. Leaves no network
    /// plumbing behind when it fails.
    async fn prepare(&self, task: &Task, image: &Image) -> Result<ContainerConfig, ExecutorError>;

    /// Plugs a container found running after an agent restart back into its networks (its
    /// interfaces stayed; its resolver and VIP rules come back).
    async fn reattach(&self, task: &Task) -> Result<(), ExecutorError>;

    /// Starts the prepared container; returns the host pid of its init.
    async fn start(&self, config: ContainerConfig) -> Result<i32, ExecutorError>;

    /// Resolves with the exit code once the container has exited.
    async fn wait(&self, task_id: &str) -> Result<i32, ExecutorError>;

    /// Sends the stop signal, then SIGKILL after `grace`; returns once the container has exited.
    async fn stop(&self, task_id: &str, grace: Duration) -> Result<(), ExecutorError>;

    /// Unplugs a task from its networks (its container ended or never started).
    async fn detach(&self, task_id: &str) -> Result<(), ExecutorError>;

    /// Stops the container if it still runs (within `grace`), deletes it and forgets its
    /// networks. Best effort: what fails is logged, the rest still goes.
    async fn remove(&self, task_id: &str, grace: Duration);

    /// Runs one healthcheck probe inside the task's running container (its namespaces, cgroup,
    /// user, environment, working directory and confinement), killed after the probe's timeout.
    /// Never fails: a probe that cannot run is a failed result (exit code -1, the reason as its
    /// output), as docker records it.
    async fn probe(&self, task_id: &str, probe: &HealthProbe) -> ProbeResult;

    /// The file a task's log is written to.
    fn log_path(&self, task_id: &str) -> Result<PathBuf, ExecutorError>;
}
