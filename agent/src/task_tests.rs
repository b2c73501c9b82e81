//! The task actor's lifecycle against the fake executor: states, health, drain.

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

/// Runs task t1 on an executor `refuse` sets up to fail it before its container starts: the
/// states reported up to `last` and the last status, once the actor ended with the container
/// never started.
async fn refused_before_start(
    refuse: impl FnOnce(&FakeExecutor),
    last: TaskState,
) -> (Vec<TaskState>, TaskStatus) {
    let fake = Arc::new(FakeExecutor::default());
    refuse(&fake);
    let mut a = spawn(task("t1"), fake);
    let states = a.states_until(last).await;
    let st = a.shared.reported("t1").unwrap();
    let (fake, _) = a.remove_and_join().await;
    assert_eq!(fake.count(|c| matches!(c, Call::Start(_))), 0);
    (states, st)
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
    let (states, st) = refused_before_start(
        |f| f.fail_node_config("t1", "--device on node n1: /dev/nope: not found"),
        TaskFailed,
    )
    .await;
    assert_eq!(
        states,
        [TaskAccepted, TaskPreparing, TaskStarting, TaskFailed]
    );
    assert_eq!(st.message, "invalid container spec on this node");
    assert_eq!(st.err, "--device on node n1: /dev/nope: not found");
}

#[tokio::test]
async fn a_failed_network_attach_fails_the_task() {
    let (_, st) = refused_before_start(|f| f.fail_network("t1", "net9"), TaskFailed).await;
    assert_eq!(st.message, "network attach failed");
    assert!(st.err.contains("net9"), "{}", st.err);
}

#[tokio::test]
async fn a_secret_the_node_has_no_data_for_rejects_the_task() {
    let (_, st) = refused_before_start(
        |f| f.fail_mounts("t1", "secret pw (s1) is not available on this node"),
        TaskRejected,
    )
    .await;
    assert_eq!(st.err, "secret pw (s1) is not available on this node");
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

/// The task on a cluster network: in DNS and VIP views, so it drains before stopping.
fn in_view(mut t: Task) -> Task {
    t.networks.push(shoal_proto::v1::NetworkAttachment {
        network_id: "n1".into(),
        addresses: vec!["10.0.1.5/24".into()],
        aliases: Vec::new(),
    });
    t
}

#[tokio::test]
async fn a_running_task_drains_before_its_stop_signal() {
    let grace = Duration::from_millis(300);
    let mut a = spawn(
        in_view(with_grace(task("t1"), grace)),
        Arc::new(FakeExecutor::default()),
    );
    a.states_until(TaskRunning).await;
    assert_eq!(drain_period(&in_view(with_grace(task("x"), grace))), grace);
    assert_eq!(drain_period(&in_view(task("x"))), MAX_DRAIN);
    // In no view (no cluster network, no published port): nothing to drain from.
    assert_eq!(drain_period(&task("x")), Duration::ZERO);
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
        in_view(with_grace(task("t1"), grace)),
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
