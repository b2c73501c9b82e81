//! A scripted executor for unit tests: it records every call and answers as the test said (a
//! pull that fails, a container found running after an agent restart, a stop that hangs until
//! released, an exit with code N), so the task actor and the worker are tested without root.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use shoal_proto::v1::{RegistryAuth, Task};
use tokio::sync::watch;

use super::config::container_config;
use super::{ContainerConfig, ContainerStatus, Executor, ExecutorError, HealthProbe, ProbeResult};
use crate::image::{Image, ImageConfig, ImageError, ImageHealthcheck};
use crate::network::NetworkError;
use crate::runtime::{self, RuntimeError};

/// How long [`FakeExecutor::until`] waits for a call before failing the test.
const DEADLINE: Duration = Duration::from_secs(10);

/// The pid the first started container gets; each later one gets the next.
const FIRST_PID: i32 = 1000;

/// The exit code a stopped container records (128 + SIGTERM).
pub const STOPPED_EXIT_CODE: i32 = 143;

/// One call on the executor, with the arguments a test checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `inspect(task_id)`.
    Inspect(String),
    /// `list()`.
    List,
    /// `pull(reference)`.
    Pull(String),
    /// `local_image(reference)`.
    LocalImage(String),
    /// `prepare(task, _)`, by task id.
    Prepare(String),
    /// `reattach(task)`, by task id.
    Reattach(String),
    /// `start(config)`, by container id.
    Start(String),
    /// `wait(task_id)`.
    Wait(String),
    /// `stop(task_id, grace)`.
    Stop(String, Duration),
    /// `detach(task_id)`.
    Detach(String),
    /// `remove(task_id, grace)`.
    Remove(String, Duration),
    /// `probe(task_id, probe)`, with the probe's command.
    Probe(String, Vec<String>),
}

/// How a scripted `prepare` fails.
#[derive(Debug, Clone)]
enum PrepareFailure {
    /// The node lacks what the spec asks for.
    NodeConfig(String),
    /// The task names a network this node has no view of.
    Network(String),
    /// The task's mounts, secrets or configs cannot be set up here.
    Mounts(String),
}

/// What the test scripted, and the containers the fake "runs".
#[derive(Debug)]
struct Script {
    containers: HashMap<String, ContainerStatus>,
    exits: HashMap<String, watch::Sender<Option<i32>>>,
    pull_failures: HashSet<String>,
    prepare_failures: HashMap<String, PrepareFailure>,
    start_failures: HashMap<String, String>,
    list_fails: bool,
    next_pid: i32,
    /// Exit codes the next probes of a task give, in order; once empty, `probe_default`.
    probe_results: HashMap<String, std::collections::VecDeque<i32>>,
    /// The exit code of an unscripted probe.
    probe_default: i32,
    /// The HEALTHCHECK of images, by reference.
    image_healthchecks: HashMap<String, ImageHealthcheck>,
}

/// An executor whose outcomes a test scripts and whose calls it reads back.
#[derive(Debug)]
pub struct FakeExecutor {
    script: Mutex<Script>,
    calls: watch::Sender<Vec<Call>>,
    /// While true, `stop` does not return (a container that ignores its stop signal).
    stops_held: watch::Sender<bool>,
}

impl Default for FakeExecutor {
    fn default() -> Self {
        FakeExecutor {
            script: Mutex::new(Script {
                containers: HashMap::new(),
                exits: HashMap::new(),
                pull_failures: HashSet::new(),
                prepare_failures: HashMap::new(),
                start_failures: HashMap::new(),
                list_fails: false,
                next_pid: FIRST_PID,
                probe_results: HashMap::new(),
                probe_default: 0,
                image_healthchecks: HashMap::new(),
            }),
            calls: watch::channel(Vec::new()).0,
            stops_held: watch::channel(false).0,
        }
    }
}

impl FakeExecutor {
    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, call: Call) {
        self.calls.send_modify(|c| c.push(call));
    }

    /// Sets a container's status, waking whoever waits for its exit.
    fn set(&self, id: &str, status: ContainerStatus) {
        let mut s = self.script();
        s.containers.insert(id.to_string(), status);
        let code = match status {
            ContainerStatus::Exited { code } => Some(code),
            _ => None,
        };
        s.exits
            .entry(id.to_string())
            .or_insert_with(|| watch::channel(None).0)
            .send_replace(code);
    }

    /// A container the node already has (as found after an agent restart), running.
    pub fn found_running(&self, id: &str, pid: i32) {
        self.set(id, ContainerStatus::Running { pid });
    }

    /// A container the node already has, exited with `code`.
    pub fn found_exited(&self, id: &str, code: i32) {
        self.set(id, ContainerStatus::Exited { code });
    }

    /// The running container of task `id` exits with `code`.
    pub fn exit(&self, id: &str, code: i32) {
        self.set(id, ContainerStatus::Exited { code });
    }

    /// Pulls of `reference` fail (and no local copy exists).
    pub fn fail_pull(&self, reference: &str) {
        self.script().pull_failures.insert(reference.to_string());
    }

    /// Preparing task `id` fails: this node lacks what its spec asks for.
    pub fn fail_node_config(&self, id: &str, reason: &str) {
        let failure = PrepareFailure::NodeConfig(reason.to_string());
        self.script()
            .prepare_failures
            .insert(id.to_string(), failure);
    }

    /// Preparing task `id` fails: network `network_id` is unknown here.
    pub fn fail_network(&self, id: &str, network_id: &str) {
        let failure = PrepareFailure::Network(network_id.to_string());
        self.script()
            .prepare_failures
            .insert(id.to_string(), failure);
    }

    /// Preparing task `id` fails: its mounts, secrets or configs cannot be set up (`reason`).
    pub fn fail_mounts(&self, id: &str, reason: &str) {
        let failure = PrepareFailure::Mounts(reason.to_string());
        self.script()
            .prepare_failures
            .insert(id.to_string(), failure);
    }

    /// Starting task `id` fails with the shim's `message`.
    pub fn fail_start(&self, id: &str, message: &str) {
        self.script()
            .start_failures
            .insert(id.to_string(), message.to_string());
    }

    /// The next probes of task `id` exit with `codes`, in order (-1: timed out).
    pub fn script_probes(&self, id: &str, codes: &[i32]) {
        self.script()
            .probe_results
            .entry(id.to_string())
            .or_default()
            .extend(codes.iter().copied());
    }

    /// Image `reference` has this HEALTHCHECK.
    pub fn image_healthcheck(&self, reference: &str, check: ImageHealthcheck) {
        self.script()
            .image_healthchecks
            .insert(reference.to_string(), check);
    }

    /// The image every pull of `reference` gives.
    fn image(&self, reference: &str) -> Image {
        Image {
            reference: reference.to_string(),
            digest: format!("sha256:{}", "0".repeat(64)),
            config: ImageConfig {
                healthcheck: self.script().image_healthchecks.get(reference).cloned(),
                ..Default::default()
            },
            layers: Vec::new(),
        }
    }

    /// Probes nobody scripted exit with `code` (0 until set).
    pub fn probes_default_to(&self, code: i32) {
        self.script().probe_default = code;
    }

    /// Listing the node's containers fails.
    pub fn fail_list(&self) {
        self.script().list_fails = true;
    }

    /// Holds every `stop` until [`FakeExecutor::release_stops`].
    pub fn hold_stops(&self) {
        self.stops_held.send_replace(true);
    }

    /// Lets held stops return.
    pub fn release_stops(&self) {
        self.stops_held.send_replace(false);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    /// How many calls so far match `pred`.
    pub fn count(&self, pred: impl Fn(&Call) -> bool) -> usize {
        self.calls.borrow().iter().filter(|c| pred(c)).count()
    }

    /// Waits until `call` has been made; fails the test after a deadline.
    pub async fn until(&self, call: Call) {
        let mut rx = self.calls.subscribe();
        let seen = tokio::time::timeout(DEADLINE, rx.wait_for(|c| c.contains(&call))).await;
        assert!(
            matches!(seen, Ok(Ok(_))),
            "no {call:?} within {DEADLINE:?}; calls: {:?}",
            self.calls()
        );
    }

    /// The container's status now, if the fake has it.
    pub fn container(&self, id: &str) -> Option<ContainerStatus> {
        self.script().containers.get(id).copied()
    }
}

#[async_trait::async_trait]
impl Executor for FakeExecutor {
    async fn inspect(&self, task_id: &str) -> Result<ContainerStatus, ExecutorError> {
        self.record(Call::Inspect(task_id.to_string()));
        self.container(task_id).ok_or_else(|| {
            RuntimeError::NotFound {
                id: task_id.to_string(),
            }
            .into()
        })
    }

    async fn list(&self) -> Result<Vec<(String, ContainerStatus)>, ExecutorError> {
        self.record(Call::List);
        let s = self.script();
        if s.list_fails {
            return Err(RuntimeError::InvalidConfig("scripted list failure".into()).into());
        }
        let mut out: Vec<_> = s.containers.iter().map(|(k, v)| (k.clone(), *v)).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn pull(
        &self,
        reference: &str,
        _auth: Option<&RegistryAuth>,
    ) -> Result<Image, ExecutorError> {
        self.record(Call::Pull(reference.to_string()));
        if self.script().pull_failures.contains(reference) {
            return Err(ExecutorError::Pull {
                reference: reference.to_string(),
                source: ImageError::NoMatchingPlatform {
                    reference: reference.to_string(),
                },
            });
        }
        Ok(self.image(reference))
    }

    async fn local_image(&self, reference: &str) -> Option<Image> {
        self.record(Call::LocalImage(reference.to_string()));
        let missing = self.script().pull_failures.contains(reference);
        (!missing).then(|| self.image(reference))
    }

    async fn prepare(&self, task: &Task, image: &Image) -> Result<ContainerConfig, ExecutorError> {
        self.record(Call::Prepare(task.id.clone()));
        let failure = self.script().prepare_failures.get(&task.id).cloned();
        match failure {
            Some(PrepareFailure::NodeConfig(reason)) => Err(ExecutorError::NodeConfig { reason }),
            Some(PrepareFailure::Network(network_id)) => {
                Err(NetworkError::UnknownNetwork { network_id }.into())
            }
            Some(PrepareFailure::Mounts(reason)) => Err(ExecutorError::Mounts { reason }),
            None => Ok(container_config(task, image)),
        }
    }

    async fn reattach(&self, task: &Task) -> Result<(), ExecutorError> {
        self.record(Call::Reattach(task.id.clone()));
        Ok(())
    }

    async fn start(&self, config: ContainerConfig) -> Result<i32, ExecutorError> {
        self.record(Call::Start(config.id.clone()));
        let pid = {
            let mut s = self.script();
            if let Some(message) = s.start_failures.get(&config.id).cloned() {
                return Err(RuntimeError::Start {
                    id: config.id,
                    message,
                }
                .into());
            }
            s.next_pid += 1;
            s.next_pid - 1
        };
        self.set(&config.id, ContainerStatus::Running { pid });
        Ok(pid)
    }

    async fn wait(&self, task_id: &str) -> Result<i32, ExecutorError> {
        self.record(Call::Wait(task_id.to_string()));
        let rx = self.script().exits.get(task_id).map(|tx| tx.subscribe());
        let Some(mut rx) = rx else {
            return Err(RuntimeError::NotFound {
                id: task_id.to_string(),
            }
            .into());
        };
        let code = match rx.wait_for(Option::is_some).await {
            Ok(code) => *code,
            // The fake lives as long as the test; its senders are never dropped before it.
            Err(_) => None,
        };
        code.ok_or_else(|| {
            RuntimeError::ShimDied {
                id: task_id.to_string(),
            }
            .into()
        })
    }

    async fn stop(&self, task_id: &str, grace: Duration) -> Result<(), ExecutorError> {
        self.record(Call::Stop(task_id.to_string(), grace));
        let mut held = self.stops_held.subscribe();
        let _ = held.wait_for(|h| !*h).await;
        if let Some(ContainerStatus::Running { .. }) = self.container(task_id) {
            self.set(
                task_id,
                ContainerStatus::Exited {
                    code: STOPPED_EXIT_CODE,
                },
            );
        }
        Ok(())
    }

    async fn detach(&self, task_id: &str) -> Result<(), ExecutorError> {
        self.record(Call::Detach(task_id.to_string()));
        Ok(())
    }

    async fn remove(&self, task_id: &str, grace: Duration) {
        self.record(Call::Remove(task_id.to_string(), grace));
        self.script().containers.remove(task_id);
    }

    async fn probe(&self, task_id: &str, probe: &HealthProbe) -> ProbeResult {
        self.record(Call::Probe(task_id.to_string(), probe.args.clone()));
        let exit_code = {
            let mut s = self.script();
            let default = s.probe_default;
            s.probe_results
                .get_mut(task_id)
                .and_then(|q| q.pop_front())
                .unwrap_or(default)
        };
        let now = shoal_proto::now_ns();
        ProbeResult {
            start_ns: now,
            end_ns: now,
            exit_code,
            output: format!("probe exit {exit_code}"),
        }
    }

    fn log_path(&self, task_id: &str) -> Result<PathBuf, ExecutorError> {
        runtime::validate_id(task_id)?;
        Ok(std::env::temp_dir().join("shoal-fake-logs").join(task_id))
    }
}

/// The image the tasks of [`task`] run.
pub const IMAGE: &str = "busybox";

/// A task as the dispatcher assigns it: wanted running, image [`IMAGE`], never started.
pub fn task(id: &str) -> Task {
    use shoal_proto::v1::{ContainerSpec, TaskSpec, TaskState};
    Task {
        id: id.to_string(),
        desired_state: TaskState::TaskRunning as i32,
        spec: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The next status update reported; fails the test if none comes before a deadline.
pub async fn next_update(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<shoal_proto::v1::TaskStatusUpdate>,
) -> (String, shoal_proto::v1::TaskStatus) {
    match tokio::time::timeout(DEADLINE, rx.recv()).await {
        Ok(Some(u)) => (u.task_id, u.status.unwrap_or_default()),
        Ok(None) => panic!("status channel closed"),
        Err(_) => panic!("no status update within {DEADLINE:?}"),
    }
}

/// The state of a reported status, for readable assertions.
pub fn state(st: &shoal_proto::v1::TaskStatus) -> shoal_proto::v1::TaskState {
    shoal_proto::v1::TaskState::try_from(st.state).unwrap_or(shoal_proto::v1::TaskState::TaskNew)
}
