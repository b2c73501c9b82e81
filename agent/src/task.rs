//! One actor per task: prepares the image, starts the container, watches it (and its health),
//! and stops and removes it when told. Each transition is reported once and only forward; a
//! health change is reported in the same state.
//!
//! With a healthcheck a started task stays STARTING until its first successful probe, then it is
//! RUNNING; once unhealthy its container is stopped and the task FAILED (docker's executor does
//! the same). A RUNNING task that must stop first waits a drain period: the manager has taken it
//! out of every node's load-balancing views, and the wait lets that reach them and in-flight
//! requests finish before the stop signal.
//!
//! The actor reaches the node only through an [`Executor`], so this file knows nothing of the
//! worker, the runtime or the networks, and its lifecycle is tested against a fake executor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_proto::v1::*;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::executor::health::{self, Health, HealthMonitor};
use crate::executor::{ContainerStatus, Executor, ExecutorError};

/// Default time between the stop signal and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// The longest drain: the wait between the manager taking a RUNNING task out of the
/// load-balancing views (DNS, VIPs, routing mesh) on every node and its stop signal. The views
/// reach the nodes within a dispatcher round trip; a second also lets short requests in flight
/// finish. Never longer than the task's stop grace period (see [`drain_period`]).
pub const MAX_DRAIN: Duration = Duration::from_secs(1);

/// The error of a task whose container turned unhealthy (docker: "unhealthy container").
pub const UNHEALTHY_ERR: &str = "unhealthy container";

/// What every task actor of a node shares: the executor and the reports going to the manager.
pub struct Shared {
    /// Runs the containers.
    pub executor: Arc<dyn Executor>,
    status_tx: mpsc::UnboundedSender<TaskStatusUpdate>,
    statuses: Mutex<HashMap<String, TaskStatus>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning only means a panic elsewhere; the map stays valid entry by entry.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Shared state over `executor`; status updates come out of the returned receiver.
    pub fn new(executor: Arc<dyn Executor>) -> (Shared, mpsc::UnboundedReceiver<TaskStatusUpdate>) {
        let (status_tx, status_rx) = mpsc::unbounded_channel();
        let shared = Shared {
            executor,
            status_tx,
            statuses: Mutex::new(HashMap::new()),
        };
        (shared, status_rx)
    }

    /// Reports a status, forward-only: a state behind the last reported one is dropped, and so
    /// is one in the same state unless its health changed.
    pub fn report(&self, task_id: &str, status: TaskStatus) {
        {
            let mut map = lock(&self.statuses);
            if let Some(prev) = map.get(task_id) {
                let health_news = status.state == prev.state && status.health != prev.health;
                if status.state < prev.state || (status.state == prev.state && !health_news) {
                    return;
                }
            }
            map.insert(task_id.to_string(), status.clone());
        }
        info!(task.id = %task_id, state = ?TaskState::try_from(status.state).unwrap_or(TaskState::TaskNew), msg = %status.message, err = %status.err, "task state");
        let _ = self.status_tx.send(TaskStatusUpdate {
            task_id: task_id.to_string(),
            status: Some(status),
        });
    }

    /// The last state reported for a task.
    pub fn reported(&self, task_id: &str) -> Option<TaskStatus> {
        lock(&self.statuses).get(task_id).cloned()
    }

    /// Every status reported so far, for resending after a reconnect.
    pub fn all_reported(&self) -> Vec<TaskStatusUpdate> {
        lock(&self.statuses)
            .iter()
            .map(|(id, st)| TaskStatusUpdate {
                task_id: id.clone(),
                status: Some(st.clone()),
            })
            .collect()
    }
}

fn status(state: TaskState, message: &str) -> TaskStatus {
    TaskStatus {
        state: state as i32,
        timestamp: shoal_proto::now_ns(),
        message: message.to_string(),
        ..Default::default()
    }
}

fn failed(message: &str, err: String) -> TaskStatus {
    TaskStatus {
        err,
        ..status(TaskState::TaskFailed, message)
    }
}

/// The time a task's container gets between its stop signal and SIGKILL.
pub fn grace(task: &Task) -> Duration {
    let ns = task
        .spec
        .as_ref()
        .and_then(|s| s.container.as_ref())
        .map(|c| c.stop_grace_period_ns)
        .unwrap_or(0);
    if ns > 0 {
        Duration::from_nanos(ns as u64)
    } else {
        DEFAULT_GRACE
    }
}

/// How long a RUNNING task waits between leaving the load-balancing views and its stop signal:
/// [`MAX_DRAIN`], or its stop grace period if shorter. None for a task that is in no view: no
/// network of the cluster (DNS, VIP) and no published port.
pub fn drain_period(task: &Task) -> Duration {
    let published = task.endpoint.as_ref().is_some_and(|e| !e.ports.is_empty());
    if task.networks.is_empty() && !published {
        return Duration::ZERO;
    }
    grace(task).min(MAX_DRAIN)
}

/// The image reference of a task's spec.
fn image_ref(task: &Task) -> String {
    task.spec
        .as_ref()
        .and_then(|s| s.container.as_ref())
        .map(|c| c.image.clone())
        .unwrap_or_default()
}

/// The healthcheck of a task's container: the spec's merged with the image's (`None`: the
/// image's record is gone).
fn healthcheck(task: &Task, image: Option<&crate::image::Image>) -> Option<health::Healthcheck> {
    let spec = task
        .spec
        .as_ref()
        .and_then(|s| s.container.as_ref())
        .and_then(|c| c.healthcheck.as_ref());
    health::resolve(spec, image.and_then(|i| i.config.healthcheck.as_ref()))
}

/// A running container's health and when to probe it next.
struct Monitor {
    health: HealthMonitor,
    /// When the container started (or was re-adopted): the start period counts from here.
    started: Instant,
    next_probe: Instant,
}

impl Monitor {
    fn new(health: HealthMonitor) -> Monitor {
        let started = Instant::now();
        let next_probe = started + health.next_interval(Duration::ZERO);
        Monitor {
            health,
            started,
            next_probe,
        }
    }
}

/// The lifecycle phases of a task on this node.
enum Phase {
    /// Not started yet: prepare and start unless told to stop first.
    Start,
    /// The container runs; with a healthcheck, probed by its monitor.
    Running(Option<Monitor>),
    /// Nothing runs: wait to be removed.
    Done,
    /// The task left the set and its container is gone: the actor ends.
    Removed,
}

/// Runs a task's lifecycle until the task leaves the assignment set.
pub async fn run(
    task: Task,
    shared: Arc<Shared>,
    mut desired: watch::Receiver<i32>,
    mut remove: watch::Receiver<bool>,
) {
    let id = task.id.clone();
    let exec = shared.executor.clone();
    let known = task.status.as_ref().map(|s| s.state).unwrap_or(0);
    let mut phase = match exec.inspect(&id).await {
        // Re-adoption after an agent restart: the container kept running under its shim.
        Ok(ContainerStatus::Running { pid }) => {
            info!(task.id = %id, pid, "re-adopted running container");
            if let Err(e) = exec.reattach(&task).await {
                warn!(task.id = %id, error = %e, "re-attaching the networks of a re-adopted task");
            }
            // The image's HEALTHCHECK from the local record (no pull: the container already
            // runs). A task already RUNNING was healthy; one still STARTING is gated again.
            let was_running = known >= TaskState::TaskRunning as i32;
            let image = exec.local_image(&image_ref(&task)).await;
            let monitor = healthcheck(&task, image.as_ref()).map(|check| {
                let start = if was_running {
                    Health::Healthy
                } else {
                    Health::Starting
                };
                Monitor::new(HealthMonitor::with_status(check, start))
            });
            let starting = monitor
                .as_ref()
                .is_some_and(|m| m.health.status() == Health::Starting);
            report_started(&shared, &id, pid, monitor.as_ref(), starting);
            Phase::Running(monitor)
        }
        Ok(ContainerStatus::Exited { code }) => {
            report_exit(&shared, &id, code, None);
            Phase::Done
        }
        _ if known >= TaskState::TaskComplete as i32 => Phase::Done,
        _ if known >= TaskState::TaskStarting as i32 => {
            // The manager thinks it was started here, but no container exists (host rebooted, or
            // the data dir was wiped): it is gone.
            shared.report(
                &id,
                failed("container gone", "container not found on node".into()),
            );
            Phase::Done
        }
        _ => Phase::Start,
    };
    loop {
        phase = match phase {
            // Starting: ACCEPTED -> PREPARING (image) -> STARTING (container) -> RUNNING.
            Phase::Start => {
                let stop_first = *desired.borrow() > TaskState::TaskRunning as i32;
                if stop_first {
                    shared.report(
                        &id,
                        status(TaskState::TaskShutdown, "shutdown before start"),
                    );
                    Phase::Done
                } else {
                    tokio::select! {
                        p = start(&task, &shared) => p,
                        _ = removed(&mut remove) => {
                            exec.remove(&id, grace(&task)).await;
                            return;
                        }
                    }
                }
            }
            // Running: until it exits, turns unhealthy, or the manager wants it stopped or removed.
            Phase::Running(monitor) => {
                supervise(&task, &shared, &mut desired, &mut remove, monitor).await
            }
            // Done: keep the container (and its logs) until the task is removed.
            Phase::Done => {
                removed(&mut remove).await;
                exec.remove(&id, grace(&task)).await;
                return;
            }
            Phase::Removed => return,
        };
    }
}

/// Watches a running container until it exits, turns unhealthy, or the manager wants it
/// stopped or removed; probes it on its healthcheck's schedule meanwhile.
async fn supervise(
    task: &Task,
    shared: &Arc<Shared>,
    desired: &mut watch::Receiver<i32>,
    remove: &mut watch::Receiver<bool>,
    mut monitor: Option<Monitor>,
) -> Phase {
    let id = task.id.as_str();
    let exec = shared.executor.clone();
    // One wait for the container's whole life: probes come and go around it.
    let wait = exec.wait(id);
    tokio::pin!(wait);
    loop {
        let due = monitor
            .as_ref()
            .map(|m| (m.next_probe, m.started, m.health.probe()));
        let health_now = monitor.as_ref().map(|m| m.health.report());
        tokio::select! {
            r = &mut wait => {
                // Addresses go back before the end is reported: the manager may hand them to
                // another task as soon as it hears of it.
                release_network(exec.as_ref(), id).await;
                match r {
                    Ok(code) => report_exit(shared, id, code, health_now),
                    Err(e) => shared.report(id, TaskStatus {
                        health: health_now,
                        ..failed("wait failed", e.to_string())
                    }),
                }
                return Phase::Done;
            }
            _ = stop_wanted(desired) => {
                drain(task, shared, "stop").await;
                info!(task.id = %id, "stopping task");
                if let Err(e) = exec.stop(id, grace(task)).await {
                    warn!(task.id = %id, error = %e, "stop failed");
                }
                release_network(exec.as_ref(), id).await;
                shared.report(id, TaskStatus {
                    health: health_now,
                    ..status(TaskState::TaskShutdown, "shutdown")
                });
                return Phase::Done;
            }
            _ = removed(remove) => {
                // Only a task taken out of the set drains; a worker that is going away (the
                // agent shutting down) leaves its containers as they are.
                if *remove.borrow() {
                    drain(task, shared, "removal").await;
                }
                exec.remove(id, grace(task)).await;
                return Phase::Removed;
            }
            (result, since_start) = async {
                let Some((at, started, probe)) = due.clone() else {
                    return std::future::pending().await;
                };
                tokio::time::sleep_until(at).await;
                let since_start = Instant::now() - started;
                (exec.probe(id, &probe).await, since_start)
            }, if due.is_some() => {
                let Some(m) = monitor.as_mut() else { continue };
                if let Some(phase) = on_probe(task, shared, m, result, since_start).await {
                    return phase;
                }
            }
        }
    }
}

/// Takes one probe result: reports a health change, RUNNING on the first healthy probe, and
/// stops the container once it is unhealthy (then the task has FAILED).
async fn on_probe(
    task: &Task,
    shared: &Arc<Shared>,
    m: &mut Monitor,
    result: health::ProbeResult,
    since_start: Duration,
) -> Option<Phase> {
    let id = task.id.as_str();
    let before = m.health.status();
    let changed = m.health.record(result, since_start);
    m.next_probe = Instant::now() + m.health.next_interval(Instant::now() - m.started);
    let now = m.health.status();
    if now != before {
        info!(task.id = %id, from = before.as_str(), to = now.as_str(), "task health changed");
    }
    let last = shared.reported(id).unwrap_or_default();
    let starting = last.state == TaskState::TaskStarting as i32;
    match now {
        // Healthy at last: the task is RUNNING (and may enter the load-balancing views).
        Health::Healthy if starting => shared.report(
            id,
            TaskStatus {
                health: Some(m.health.report()),
                ..status(TaskState::TaskRunning, "started")
            }
            .with_container(&last),
        ),
        Health::Unhealthy => {
            // Said at once in the current state, so the manager knows before the stop ends.
            shared.report(
                id,
                TaskStatus {
                    health: Some(m.health.report()),
                    timestamp: shoal_proto::now_ns(),
                    ..last.clone()
                },
            );
            // Failing already: no drain; the stop signal, then SIGKILL after the grace.
            warn!(task.id = %id, "container unhealthy: stopping it");
            let exec = shared.executor.as_ref();
            if let Err(e) = exec.stop(id, grace(task)).await {
                warn!(task.id = %id, error = %e, "stop failed");
            }
            release_network(exec, id).await;
            shared.report(
                id,
                TaskStatus {
                    health: Some(m.health.report()),
                    ..failed("unhealthy", UNHEALTHY_ERR.to_string())
                }
                .with_container(&last),
            );
            return Some(Phase::Done);
        }
        _ if changed => shared.report(
            id,
            TaskStatus {
                health: Some(m.health.report()),
                timestamp: shoal_proto::now_ns(),
                ..last
            },
        ),
        _ => {}
    }
    None
}

/// Waits the drain period before stopping a task the manager saw RUNNING (it was in the
/// load-balancing views); a task that never got there has nothing to drain.
async fn drain(task: &Task, shared: &Shared, why: &str) {
    let running = shared
        .reported(&task.id)
        .is_some_and(|s| s.state == TaskState::TaskRunning as i32);
    let period = drain_period(task);
    // Without a drain period there is nothing to wait for, not even a timer tick (which, for a
    // `service rm` of 1,000 tasks, is 1,000 timer wake-ups before the first stop signal).
    if running && !period.is_zero() {
        info!(task.id = %task.id, ?period, why, "draining before the stop signal");
        tokio::time::sleep(period).await;
    }
}

/// Copies the container's pid and id from an earlier status.
trait WithContainer {
    fn with_container(self, from: &TaskStatus) -> Self;
}

impl WithContainer for TaskStatus {
    fn with_container(self, from: &TaskStatus) -> TaskStatus {
        TaskStatus {
            pid: from.pid,
            container_id: from.container_id.clone(),
            ..self
        }
    }
}

/// Resolves once the task has left the assignment set (or the worker is gone).
async fn removed(remove: &mut watch::Receiver<bool>) {
    // The guard wait_for returns is not Send; drop it before anything else awaits.
    let _ = remove.wait_for(|r| *r).await.map(|_| ());
}

/// Resolves once the manager wants the task stopped.
async fn stop_wanted(desired: &mut watch::Receiver<i32>) {
    let _ = desired
        .wait_for(|d| *d > TaskState::TaskRunning as i32)
        .await
        .map(|_| ());
}

/// Reports a container that runs: STARTING while its healthcheck has yet to pass, else RUNNING.
fn report_started(shared: &Shared, id: &str, pid: i32, monitor: Option<&Monitor>, starting: bool) {
    let (state, message) = if starting {
        (TaskState::TaskStarting, "starting")
    } else {
        (TaskState::TaskRunning, "started")
    };
    shared.report(
        id,
        TaskStatus {
            pid,
            container_id: id.to_string(),
            health: monitor.map(|m| m.health.report()),
            ..status(state, message)
        },
    );
}

fn report_exit(shared: &Shared, id: &str, code: i32, health: Option<HealthStatus>) {
    let st = if code == 0 {
        status(TaskState::TaskComplete, "finished")
    } else {
        TaskStatus {
            exit_code: code,
            err: format!("task: non-zero exit ({code})"),
            ..status(TaskState::TaskFailed, "failed")
        }
    };
    shared.report(
        id,
        TaskStatus {
            exit_code: code,
            health,
            ..st
        },
    );
}

/// ACCEPTED -> PREPARING (image) -> STARTING (configuration, networks, container) -> RUNNING; a
/// failed step ends the task with the status the manager shows in `service ps`.
async fn start(task: &Task, shared: &Arc<Shared>) -> Phase {
    let id = task.id.clone();
    let exec = shared.executor.as_ref();
    shared.report(&id, status(TaskState::TaskAccepted, "accepted"));
    let image_ref = image_ref(task);
    shared.report(&id, status(TaskState::TaskPreparing, "preparing"));
    let auth = task
        .spec
        .as_ref()
        .and_then(|s| s.container.as_ref())
        .and_then(|c| c.registry_auth.as_ref());
    let image = match exec.pull(&image_ref, auth).await {
        Ok(i) => i,
        Err(e) => {
            shared.report(
                &id,
                TaskStatus {
                    err: e.to_string(),
                    ..status(TaskState::TaskRejected, "image pull failed")
                },
            );
            return Phase::Done;
        }
    };
    shared.report(&id, status(TaskState::TaskStarting, "starting"));
    let cfg = match exec.prepare(task, &image).await {
        Ok(cfg) => cfg,
        Err(e @ ExecutorError::Network(_)) => {
            shared.report(&id, failed("network attach failed", e.to_string()));
            return Phase::Done;
        }
        // As swarm: a task whose mounts, secrets or configs this node cannot give is rejected.
        Err(e @ ExecutorError::Mounts { .. }) => {
            shared.report(
                &id,
                TaskStatus {
                    err: e.to_string(),
                    ..status(
                        TaskState::TaskRejected,
                        "mounts, secrets or configs unavailable",
                    )
                },
            );
            return Phase::Done;
        }
        Err(e) => {
            shared.report(
                &id,
                failed("invalid container spec on this node", e.to_string()),
            );
            return Phase::Done;
        }
    };
    match exec.start(cfg).await {
        Ok(pid) => {
            let monitor =
                healthcheck(task, Some(&image)).map(|c| Monitor::new(HealthMonitor::new(c)));
            // With a healthcheck the task stays STARTING until its first healthy probe.
            report_started(shared, &id, pid, monitor.as_ref(), monitor.is_some());
            Phase::Running(monitor)
        }
        Err(e) => {
            release_network(exec, &id).await;
            shared.report(&id, failed("starting container failed", e.to_string()));
            Phase::Done
        }
    }
}

/// Unplugs a task from its networks (its container has ended or never started).
async fn release_network(exec: &dyn Executor, id: &str) {
    if let Err(e) = exec.detach(id).await {
        warn!(task.id = %id, error = %e, "network detach failed");
    }
}

#[cfg(test)]
#[path = "task_tests.rs"]
mod lifecycle_tests;
