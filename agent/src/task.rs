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
/// [`MAX_DRAIN`], or its stop grace period if shorter.
pub fn drain_period(task: &Task) -> Duration {
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
            let (state, message) = match &monitor {
                Some(m) if m.health.status() == Health::Starting => {
                    (TaskState::TaskStarting, "starting")
                }
                _ => (TaskState::TaskRunning, "started"),
            };
            shared.report(
                &id,
                TaskStatus {
                    pid,
                    container_id: id.clone(),
                    health: monitor.as_ref().map(|m| m.health.report()),
                    ..status(state, message)
                },
            );
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
    if running {
        let period = drain_period(task);
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
    let image = match exec.pull(&image_ref).await {
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
            let (state, message) = match &monitor {
                Some(_) => (TaskState::TaskStarting, "starting"),
                None => (TaskState::TaskRunning, "started"),
            };
            shared.report(
                &id,
                TaskStatus {
                    pid,
                    container_id: id.clone(),
                    health: monitor.as_ref().map(|m| m.health.report()),
                    ..status(state, message)
                },
            );
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
mod lifecycle_tests {
    use super::*;
    use crate::executor::fake::{
        next_update, state, task, Call, FakeExecutor, IMAGE, STOPPED_EXIT_CODE,
    };
    use TaskState::*;

    /// One task actor over a fake executor, with the controls the worker holds.
    struct Actor {
        id: String,
        fake: Arc<FakeExecutor>,
        shared: Arc<Shared>,
        rx: mpsc::UnboundedReceiver<TaskStatusUpdate>,
        desired: watch::Sender<i32>,
        remove: watch::Sender<bool>,
        handle: tokio::task::JoinHandle<()>,
    }

    fn spawn(task: Task, fake: Arc<FakeExecutor>) -> Actor {
        let (shared, rx) = Shared::new(fake.clone());
        let shared = Arc::new(shared);
        let (desired, desired_rx) = watch::channel(task.desired_state);
        let (remove, remove_rx) = watch::channel(false);
        let id = task.id.clone();
        let handle = tokio::spawn(run(task, shared.clone(), desired_rx, remove_rx));
        Actor {
            id,
            fake,
            shared,
            rx,
            desired,
            remove,
            handle,
        }
    }

    impl Actor {
        /// The next reported status of this actor's task.
        async fn next(&mut self) -> TaskStatus {
            let (id, st) = next_update(&mut self.rx).await;
            assert_eq!(id, self.id);
            st
        }

        /// The states reported up to and including `last`.
        async fn states_until(&mut self, last: TaskState) -> Vec<TaskState> {
            let mut seen = Vec::new();
            loop {
                let s = state(&self.next().await);
                seen.push(s);
                if s == last {
                    return seen;
                }
            }
        }

        /// Takes the task out of the assignment set and waits for the actor to end.
        async fn remove_and_join(
            self,
        ) -> (Arc<FakeExecutor>, mpsc::UnboundedReceiver<TaskStatusUpdate>) {
            let _ = self.remove.send(true);
            let joined = tokio::time::timeout(Duration::from_secs(10), self.handle).await;
            assert!(
                matches!(joined, Ok(Ok(()))),
                "actor did not end: {joined:?}"
            );
            (self.fake, self.rx)
        }

        fn count(&self, call: &Call) -> usize {
            self.fake.count(|c| c == call)
        }
    }

    fn with_grace(mut t: Task, grace: Duration) -> Task {
        if let Some(c) = t.spec.as_mut().and_then(|s| s.container.as_mut()) {
            c.stop_grace_period_ns = grace.as_nanos() as i64;
        }
        t
    }

    #[tokio::test]
    async fn a_task_runs_through_its_states_to_complete_and_is_not_restarted_here() {
        let mut a = spawn(task("t1"), Arc::new(FakeExecutor::default()));
        assert_eq!(
            a.states_until(TaskRunning).await,
            [TaskAccepted, TaskPreparing, TaskStarting, TaskRunning]
        );
        let running = a.shared.reported("t1").unwrap();
        assert_eq!((running.pid, running.container_id.as_str()), (1000, "t1"));
        assert_eq!(running.message, "started");
        a.fake.exit("t1", 0);
        let done = a.next().await;
        assert_eq!(state(&done), TaskComplete);
        assert_eq!((done.exit_code, done.message.as_str()), (0, "finished"));
        // The addresses went back before the end was reported.
        assert_eq!(a.count(&Call::Detach("t1".into())), 1);
        // Restarting is the orchestrator's business (a new task): wanting it running again
        // changes nothing here.
        a.desired.send_replace(TaskRunning as i32);
        let (fake, mut rx) = a.remove_and_join().await;
        assert_eq!(
            fake.calls(),
            [
                Call::Inspect("t1".into()),
                Call::Pull(IMAGE.into()),
                Call::Prepare("t1".into()),
                Call::Start("t1".into()),
                Call::Wait("t1".into()),
                Call::Detach("t1".into()),
                Call::Remove("t1".into(), DEFAULT_GRACE),
            ]
        );
        assert!(rx.try_recv().is_err(), "nothing reported after the end");
    }

    #[tokio::test]
    async fn a_non_zero_exit_fails_the_task_with_its_code() {
        let mut a = spawn(task("t1"), Arc::new(FakeExecutor::default()));
        a.states_until(TaskRunning).await;
        a.fake.exit("t1", 3);
        let st = a.next().await;
        assert_eq!(state(&st), TaskFailed);
        assert_eq!(st.exit_code, 3);
        assert_eq!(st.message, "failed");
        assert_eq!(st.err, "task: non-zero exit (3)");
        a.remove_and_join().await;
    }

    #[tokio::test]
    async fn an_image_that_cannot_be_pulled_rejects_the_task() {
        let fake = Arc::new(FakeExecutor::default());
        fake.fail_pull(IMAGE);
        let mut a = spawn(task("t1"), fake);
        assert_eq!(
            a.states_until(TaskRejected).await,
            [TaskAccepted, TaskPreparing, TaskRejected]
        );
        let st = a.shared.reported("t1").unwrap();
        assert_eq!(st.message, "image pull failed");
        assert_eq!(
            st.err,
            "pull busybox: no linux/amd64 manifest in the index of busybox"
        );
        let (fake, _) = a.remove_and_join().await;
        assert_eq!(
            fake.count(|c| matches!(c, Call::Prepare(_) | Call::Start(_))),
            0
        );
    }

    #[tokio::test]
    async fn a_spec_this_node_cannot_honour_fails_the_task_before_the_start() {
        let fake = Arc::new(FakeExecutor::default());
        fake.fail_node_config("t1", "--device on node n1: /dev/nope: not found");
        let mut a = spawn(task("t1"), fake);
        assert_eq!(
            a.states_until(TaskFailed).await,
            [TaskAccepted, TaskPreparing, TaskStarting, TaskFailed]
        );
        let st = a.shared.reported("t1").unwrap();
        assert_eq!(st.message, "invalid container spec on this node");
        assert_eq!(st.err, "--device on node n1: /dev/nope: not found");
        let (fake, _) = a.remove_and_join().await;
        assert_eq!(fake.count(|c| matches!(c, Call::Start(_))), 0);
    }

    #[tokio::test]
    async fn a_failed_network_attach_fails_the_task() {
        let fake = Arc::new(FakeExecutor::default());
        fake.fail_network("t1", "net9");
        let mut a = spawn(task("t1"), fake);
        a.states_until(TaskFailed).await;
        let st = a.shared.reported("t1").unwrap();
        assert_eq!(st.message, "network attach failed");
        assert!(st.err.contains("net9"), "{}", st.err);
        let (fake, _) = a.remove_and_join().await;
        assert_eq!(fake.count(|c| matches!(c, Call::Start(_))), 0);
    }

    #[tokio::test]
    async fn a_container_that_fails_to_start_fails_the_task_and_gives_its_addresses_back() {
        let fake = Arc::new(FakeExecutor::default());
        fake.fail_start("t1", "exec /bin/nope: no such file");
        let mut a = spawn(task("t1"), fake);
        a.states_until(TaskFailed).await;
        let st = a.shared.reported("t1").unwrap();
        assert_eq!(st.message, "starting container failed");
        assert_eq!(
            st.err,
            "container t1 failed to start: exec /bin/nope: no such file"
        );
        assert_eq!(a.count(&Call::Detach("t1".into())), 1);
        a.remove_and_join().await;
    }

    #[tokio::test]
    async fn shutting_down_a_running_task_stops_it_with_its_grace_period() {
        let grace = Duration::from_secs(3);
        let mut a = spawn(
            with_grace(task("t1"), grace),
            Arc::new(FakeExecutor::default()),
        );
        a.states_until(TaskRunning).await;
        a.desired.send_replace(TaskShutdown as i32);
        let st = a.next().await;
        assert_eq!(
            (state(&st), st.message.as_str()),
            (TaskShutdown, "shutdown")
        );
        assert_eq!(a.count(&Call::Stop("t1".into(), grace)), 1);
        assert_eq!(a.count(&Call::Detach("t1".into())), 1);
        assert_eq!(
            a.fake.container("t1"),
            Some(ContainerStatus::Exited {
                code: STOPPED_EXIT_CODE
            })
        );
        // Its container (and log) stays until the task leaves the set.
        let (fake, _) = a.remove_and_join().await;
        assert_eq!(fake.count(|c| *c == Call::Remove("t1".into(), grace)), 1);
    }

    #[tokio::test]
    async fn without_a_grace_period_in_the_spec_stop_waits_ten_seconds() {
        let mut a = spawn(task("t1"), Arc::new(FakeExecutor::default()));
        a.states_until(TaskRunning).await;
        a.desired.send_replace(TaskShutdown as i32);
        a.states_until(TaskShutdown).await;
        assert_eq!(
            a.count(&Call::Stop("t1".into(), Duration::from_secs(10))),
            1
        );
        a.remove_and_join().await;
    }

    #[tokio::test]
    async fn shutdown_is_reported_only_once_the_stop_has_returned() {
        let fake = Arc::new(FakeExecutor::default());
        fake.hold_stops();
        let mut a = spawn(task("t1"), fake);
        a.states_until(TaskRunning).await;
        a.desired.send_replace(TaskShutdown as i32);
        a.fake.until(Call::Stop("t1".into(), DEFAULT_GRACE)).await;
        // The container ignores its signal: the task is still running for the manager.
        assert_eq!(state(&a.shared.reported("t1").unwrap()), TaskRunning);
        assert!(a.rx.try_recv().is_err());
        a.fake.release_stops();
        assert_eq!(state(&a.next().await), TaskShutdown);
        a.remove_and_join().await;
    }

    #[tokio::test]
    async fn a_task_wanted_down_before_it_started_is_never_started() {
        let mut t = task("t1");
        t.desired_state = TaskShutdown as i32;
        let mut a = spawn(t, Arc::new(FakeExecutor::default()));
        let st = a.next().await;
        assert_eq!(
            (state(&st), st.message.as_str()),
            (TaskShutdown, "shutdown before start")
        );
        let (fake, _) = a.remove_and_join().await;
        assert_eq!(
            fake.calls(),
            [
                Call::Inspect("t1".into()),
                Call::Remove("t1".into(), DEFAULT_GRACE)
            ]
        );
    }

    #[tokio::test]
    async fn a_running_task_removed_from_the_set_is_removed_without_a_report() {
        let mut a = spawn(task("t1"), Arc::new(FakeExecutor::default()));
        a.states_until(TaskRunning).await;
        let (fake, mut rx) = a.remove_and_join().await;
        assert_eq!(
            fake.count(|c| *c == Call::Remove("t1".into(), DEFAULT_GRACE)),
            1
        );
        assert_eq!(fake.count(|c| matches!(c, Call::Stop(..))), 0);
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn after_an_agent_restart_a_running_container_is_adopted_not_restarted() {
        let fake = Arc::new(FakeExecutor::default());
        fake.found_running("t1", 42);
        let mut t = task("t1");
        t.status = Some(status(TaskRunning, "started"));
        let mut a = spawn(t, fake);
        let st = a.next().await;
        assert_eq!(state(&st), TaskRunning);
        assert_eq!((st.pid, st.container_id.as_str()), (42, "t1"));
        assert_eq!(a.count(&Call::Reattach("t1".into())), 1);
        a.fake.exit("t1", 0);
        assert_eq!(state(&a.next().await), TaskComplete);
        let (fake, _) = a.remove_and_join().await;
        assert_eq!(
            fake.count(|c| matches!(c, Call::Pull(_) | Call::Prepare(_) | Call::Start(_))),
            0
        );
    }

    #[tokio::test]
    async fn after_an_agent_restart_an_exited_container_reports_its_exit() {
        let fake = Arc::new(FakeExecutor::default());
        fake.found_exited("t1", 2);
        let mut t = task("t1");
        t.status = Some(status(TaskRunning, "started"));
        let mut a = spawn(t, fake);
        let st = a.next().await;
        assert_eq!((state(&st), st.exit_code), (TaskFailed, 2));
        let (fake, _) = a.remove_and_join().await;
        assert_eq!(fake.count(|c| matches!(c, Call::Start(_))), 0);
    }

    #[tokio::test]
    async fn after_an_agent_restart_a_started_task_without_container_is_gone() {
        let mut t = task("t1");
        t.status = Some(status(TaskRunning, "started"));
        let mut a = spawn(t, Arc::new(FakeExecutor::default()));
        let st = a.next().await;
        assert_eq!(state(&st), TaskFailed);
        assert_eq!(
            (st.message.as_str(), st.err.as_str()),
            ("container gone", "container not found on node")
        );
        let (fake, _) = a.remove_and_join().await;
        assert_eq!(fake.count(|c| matches!(c, Call::Start(_))), 0);
    }

    #[tokio::test]
    async fn after_an_agent_restart_a_finished_task_without_container_stays_quiet() {
        let mut t = task("t1");
        t.status = Some(status(TaskComplete, "finished"));
        let a = spawn(t, Arc::new(FakeExecutor::default()));
        let (fake, mut rx) = a.remove_and_join().await;
        assert!(rx.try_recv().is_err(), "a finished task reports nothing");
        assert_eq!(fake.count(|c| matches!(c, Call::Start(_))), 0);
    }

    /// A healthcheck probing every 20 ms, unhealthy after `retries` failures.
    fn with_health(mut t: Task, retries: i32) -> Task {
        if let Some(c) = t.spec.as_mut().and_then(|s| s.container.as_mut()) {
            c.healthcheck = Some(HealthConfig {
                test: vec!["CMD".into(), "check".into()],
                interval_ns: 20_000_000,
                timeout_ns: 1_000_000_000,
                retries,
                ..Default::default()
            });
        }
        t
    }

    fn health_of(st: &TaskStatus) -> (String, i32) {
        let h = st.health.clone().unwrap_or_default();
        (h.status, h.failing_streak)
    }

    #[tokio::test]
    async fn with_a_healthcheck_a_task_is_starting_until_its_first_healthy_probe() {
        let fake = Arc::new(FakeExecutor::default());
        fake.script_probes("t1", &[1, 1]);
        let mut a = spawn(with_health(task("t1"), 3), fake);
        assert_eq!(
            a.states_until(TaskStarting).await,
            [TaskAccepted, TaskPreparing, TaskStarting]
        );
        // Started, not yet healthy: still STARTING, now with the container and its health.
        let st = a.next().await;
        assert_eq!(
            (state(&st), st.message.as_str()),
            (TaskStarting, "starting")
        );
        assert_eq!((st.pid, st.container_id.as_str()), (1000, "t1"));
        assert_eq!(health_of(&st), ("starting".into(), 0));
        for streak in [1, 2] {
            let st = a.next().await;
            assert_eq!(state(&st), TaskStarting);
            assert_eq!(health_of(&st), ("starting".into(), streak));
        }
        let st = a.next().await;
        assert_eq!((state(&st), st.message.as_str()), (TaskRunning, "started"));
        assert_eq!((st.pid, st.container_id.as_str()), (1000, "t1"));
        assert_eq!(health_of(&st), ("healthy".into(), 0));
        let log = st.health.unwrap_or_default().log;
        assert_eq!(
            log.iter().map(|r| r.exit_code).collect::<Vec<_>>(),
            [1, 1, 0]
        );
        assert_eq!(log[2].output, "probe exit 0");
        assert!(a.count(&Call::Probe("t1".into(), vec!["check".into()])) >= 3);
        // Healthy probes after that change nothing worth a report.
        a.fake.until(Call::Wait("t1".into())).await;
        a.fake.exit("t1", 0);
        let done = a.next().await;
        assert_eq!(state(&done), TaskComplete);
        assert_eq!(health_of(&done).0, "healthy");
        a.remove_and_join().await;
    }

    #[tokio::test]
    async fn a_container_that_never_gets_healthy_is_stopped_and_its_task_failed() {
        let grace = Duration::from_secs(4);
        let fake = Arc::new(FakeExecutor::default());
        fake.probes_default_to(1);
        let mut a = spawn(with_grace(with_health(task("t1"), 2), grace), fake);
        let states = a.states_until(TaskFailed).await;
        assert!(!states.contains(&TaskRunning), "{states:?}");
        let st = a.shared.reported("t1").unwrap();
        assert_eq!(st.message, "unhealthy");
        assert_eq!(st.err, UNHEALTHY_ERR);
        assert!(st.err.contains("unhealthy"));
        assert_eq!(health_of(&st), ("unhealthy".into(), 2));
        assert_eq!(st.container_id, "t1");
        // Its stop signal with the grace period, and its addresses back before the report.
        assert_eq!(a.count(&Call::Stop("t1".into(), grace)), 1);
        assert_eq!(a.count(&Call::Detach("t1".into())), 1);
        assert_eq!(
            a.fake.container("t1"),
            Some(ContainerStatus::Exited {
                code: STOPPED_EXIT_CODE
            })
        );
        let (fake, _) = a.remove_and_join().await;
        assert_eq!(fake.count(|c| matches!(c, Call::Start(_))), 1);
    }

    #[tokio::test]
    async fn a_running_task_that_turns_unhealthy_fails_without_a_drain() {
        // A grace of 4 s would mean a 1 s drain.
        let fake = Arc::new(FakeExecutor::default());
        fake.script_probes("t1", &[0]);
        fake.probes_default_to(7);
        let mut a = spawn(
            with_grace(with_health(task("t1"), 2), Duration::from_secs(4)),
            fake,
        );
        a.states_until(TaskRunning).await;
        let st = a.next().await;
        assert_eq!(
            (state(&st), health_of(&st)),
            (TaskRunning, ("healthy".into(), 1))
        );
        let st = a.next().await;
        assert_eq!(
            (state(&st), health_of(&st)),
            (TaskRunning, ("unhealthy".into(), 2))
        );
        let unhealthy_at = std::time::Instant::now();
        let st = a.next().await;
        assert_eq!((state(&st), st.err.as_str()), (TaskFailed, UNHEALTHY_ERR));
        assert!(
            unhealthy_at.elapsed() < Duration::from_millis(500),
            "no drain for a failing task"
        );
        assert_eq!(
            st.health
                .unwrap_or_default()
                .log
                .last()
                .map(|r| r.exit_code),
            Some(7)
        );
        a.remove_and_join().await;
    }

    #[tokio::test]
    async fn a_running_task_drains_before_its_stop_signal() {
        let grace = Duration::from_millis(300);
        let mut a = spawn(
            with_grace(task("t1"), grace),
            Arc::new(FakeExecutor::default()),
        );
        a.states_until(TaskRunning).await;
        assert_eq!(drain_period(&with_grace(task("x"), grace)), grace);
        assert_eq!(drain_period(&task("x")), MAX_DRAIN);
        let asked = std::time::Instant::now();
        a.desired.send_replace(TaskShutdown as i32);
        a.fake.until(Call::Stop("t1".into(), grace)).await;
        assert!(
            asked.elapsed() >= grace,
            "stopped after {:?}",
            asked.elapsed()
        );
        assert_eq!(state(&a.next().await), TaskShutdown);
        a.remove_and_join().await;
    }

    #[tokio::test]
    async fn a_running_task_taken_out_of_the_set_drains_before_it_is_removed() {
        let grace = Duration::from_millis(300);
        let mut a = spawn(
            with_grace(task("t1"), grace),
            Arc::new(FakeExecutor::default()),
        );
        a.states_until(TaskRunning).await;
        let asked = std::time::Instant::now();
        let (fake, _) = a.remove_and_join().await;
        assert!(
            asked.elapsed() >= grace,
            "removed after {:?}",
            asked.elapsed()
        );
        assert_eq!(fake.count(|c| *c == Call::Remove("t1".into(), grace)), 1);
    }

    #[tokio::test]
    async fn no_drain_for_a_task_that_exited_or_never_became_healthy() {
        let grace = Duration::from_secs(4);
        // Exited: nothing left to drain when it is removed.
        let mut a = spawn(
            with_grace(task("t1"), grace),
            Arc::new(FakeExecutor::default()),
        );
        a.states_until(TaskRunning).await;
        a.fake.exit("t1", 0);
        a.states_until(TaskComplete).await;
        let asked = std::time::Instant::now();
        a.remove_and_join().await;
        assert!(asked.elapsed() < Duration::from_millis(500));
        // Still starting (never in the views): stopped at once.
        let fake = Arc::new(FakeExecutor::default());
        fake.probes_default_to(1);
        let mut a = spawn(with_grace(with_health(task("t2"), 1000), grace), fake);
        let st = loop {
            let st = a.next().await;
            if st.health.is_some() {
                break st;
            }
        };
        assert_eq!(state(&st), TaskStarting);
        let asked = std::time::Instant::now();
        a.desired.send_replace(TaskShutdown as i32);
        a.fake.until(Call::Stop("t2".into(), grace)).await;
        assert!(asked.elapsed() < Duration::from_millis(500));
        a.remove_and_join().await;
    }

    fn image_check(test: &[&str]) -> crate::image::ImageHealthcheck {
        crate::image::ImageHealthcheck {
            test: test.iter().map(|s| s.to_string()).collect(),
            interval_ns: 20_000_000,
            retries: 1,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn the_images_healthcheck_gates_running_and_no_healthcheck_disables_it() {
        let fake = Arc::new(FakeExecutor::default());
        fake.image_healthcheck(IMAGE, image_check(&["CMD-SHELL", "wget -q -O- localhost"]));
        fake.script_probes("t1", &[0]);
        let mut a = spawn(task("t1"), fake.clone());
        a.states_until(TaskRunning).await;
        assert_eq!(health_of(&a.shared.reported("t1").unwrap()).0, "healthy");
        let shell = ["/bin/sh", "-c", "wget -q -O- localhost"]
            .map(String::from)
            .to_vec();
        assert!(a.count(&Call::Probe("t1".into(), shell)) >= 1);
        a.remove_and_join().await;

        // --no-healthcheck: RUNNING at once, never probed.
        let mut t = task("t2");
        if let Some(c) = t.spec.as_mut().and_then(|s| s.container.as_mut()) {
            c.healthcheck = Some(HealthConfig {
                test: vec!["NONE".into()],
                ..Default::default()
            });
        }
        let mut a = spawn(t, fake);
        let st = loop {
            let st = a.next().await;
            if state(&st) == TaskRunning {
                break st;
            }
        };
        assert_eq!(st.health, None);
        let (fake, _) = a.remove_and_join().await;
        assert_eq!(
            fake.count(|c| matches!(c, Call::Probe(id, _) if id == "t2")),
            0
        );
    }

    #[tokio::test]
    async fn a_re_adopted_container_is_still_probed_with_its_images_healthcheck() {
        let fake = Arc::new(FakeExecutor::default());
        fake.image_healthcheck(IMAGE, image_check(&["CMD", "check"]));
        fake.found_running("t1", 42);
        fake.probes_default_to(1);
        let mut t = task("t1");
        t.status = Some(status(TaskRunning, "started"));
        let mut a = spawn(t, fake);
        let st = a.next().await;
        assert_eq!(
            (state(&st), health_of(&st)),
            (TaskRunning, ("healthy".into(), 0))
        );
        // Unhealthy after one failure (retries 1): stopped and failed, as for a fresh start.
        a.states_until(TaskFailed).await;
        assert_eq!(a.shared.reported("t1").unwrap().err, UNHEALTHY_ERR);
        let (fake, _) = a.remove_and_join().await;
        assert_eq!(
            fake.count(|c| matches!(c, Call::Pull(_) | Call::Start(_))),
            0
        );
        assert_eq!(fake.count(|c| *c == Call::LocalImage(IMAGE.into())), 1);
    }

    #[test]
    fn a_health_change_is_reported_in_the_same_state() {
        let (shared, mut rx) = Shared::new(Arc::new(FakeExecutor::default()));
        let healthy = |streak| HealthStatus {
            status: "healthy".into(),
            failing_streak: streak,
            log: Vec::new(),
        };
        let running = |streak| TaskStatus {
            health: Some(healthy(streak)),
            ..status(TaskRunning, "started")
        };
        shared.report("t1", running(0));
        shared.report("t1", running(0));
        shared.report("t1", running(1));
        shared.report("t1", status(TaskStarting, "back"));
        let streaks: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|u| u.status.unwrap().health.unwrap().failing_streak)
            .collect();
        assert_eq!(streaks, [0, 1]);
    }

    #[test]
    fn reports_only_move_forward() {
        let (shared, mut rx) = Shared::new(Arc::new(FakeExecutor::default()));
        shared.report("t1", status(TaskRunning, "started"));
        shared.report("t1", status(TaskStarting, "starting"));
        shared.report("t1", status(TaskRunning, "again"));
        shared.report("t1", status(TaskComplete, "finished"));
        let states: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|u| state(&u.status.unwrap()))
            .collect();
        assert_eq!(states, [TaskRunning, TaskComplete]);
        assert_eq!(shared.all_reported().len(), 1);
        assert_eq!(shared.reported("t1").unwrap().message, "finished");
    }
}
