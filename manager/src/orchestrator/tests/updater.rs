//! The updater's state machine, table-driven: each case is a service (config, status), its
//! tasks and the time, and the plan in words.

use super::*;
use shoal_proto::v1::update_config::{FailureAction, Order};
use shoal_proto::v1::update_status::State;
use shoal_proto::v1::UpdateStatus;

/// A replicated service at spec version 2 ("busybox:2") with the previous spec "busybox:1".
fn svc(replicas: u64, cfg: UpdateConfig, st: Option<State>) -> Service {
    let mut s = with_image(replicated(replicas), "busybox:2");
    s.spec_version = 2;
    s.previous_spec = with_image(replicated(replicas), "busybox:1")
        .spec
        .map(Box::new);
    s.previous_spec_version = 1;
    if let Some(sp) = s.spec.as_mut() {
        sp.update = Some(cfg);
        sp.rollback = Some(cfg);
    }
    s.update_status = st.map(|st| UpdateStatus {
        state: st as i32,
        started_at: 100 * S,
        ..Default::default()
    });
    s
}

fn cfg(parallelism: u64, delay: i64, action: FailureAction, order: Order) -> UpdateConfig {
    UpdateConfig {
        parallelism,
        delay_ns: delay * S,
        failure_action: action as i32,
        monitor_ns: 5 * S,
        max_failure_ratio: 0.0,
        order: order as i32,
    }
}

/// A task of the old spec (version 1), running in `slot`.
fn old(id: &str, slot: u64) -> Task {
    let mut t = made_from(run(id, slot, "n1"), &with_image(replicated(1), "busybox:1"));
    t.spec_version = 1;
    t
}

/// A task of this update (version 2) in `slot`, in `state` since `since` seconds.
fn new(id: &str, slot: u64, state: TaskState, since: i64) -> Task {
    let mut t = made_from(
        task(id, slot, "n1", state, 150),
        &with_image(replicated(1), "busybox:2"),
    );
    t.spec_version = 2;
    if let Some(st) = t.status.as_mut() {
        st.timestamp = since * S;
    }
    t
}

fn stopping(t: Task) -> Task {
    desired(t, TaskState::TaskShutdown)
}

type Case = (&'static str, Service, Vec<Task>, i64, Vec<&'static str>);

fn check(cases: Vec<Case>, memory: &update::Memory) {
    let nodes = [ready("n1")];
    for (name, s, tasks, now, want) in cases {
        let tasks = with_specs(&s, &tasks);
        let refs: Vec<&Task> = tasks.iter().collect();
        let node_refs: Vec<&Node> = nodes.iter().collect();
        let plan = plan_service(&s, &refs, &node_refs, now * S, memory);
        assert_eq!(describe(&plan), want, "{name}");
    }
}

const GO: &str = "status UPDATING update in progress";

#[test]
fn dispatch_parallelism_order_and_delay() {
    use FailureAction::*;
    use Order::*;
    use TaskState::*;
    let three = || vec![old("a", 1), old("b", 2), old("c", 3)];
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("parallelism 1 starts one slot", svc(3, cfg(1, 0, Pause, StopFirst), None), three(), 200,
            vec![GO, "shutdown a"]),
        ("parallelism 0 starts every slot", svc(3, cfg(0, 0, Pause, StopFirst), None), three(), 200,
            vec![GO, "shutdown a", "shutdown b", "shutdown c"]),
        ("parallelism 2 starts two", svc(3, cfg(2, 0, Pause, StopFirst), None), three(), 200,
            vec![GO, "shutdown a", "shutdown b"]),
        ("start-first creates the new task, the old one keeps running", svc(3, cfg(1, 0, Pause, StartFirst), None), three(), 200,
            vec![GO, "create slot 1"]),
        ("stop-first: the old task still stopping holds its slot (and the worker)",
            svc(3, cfg(1, 0, Pause, StopFirst), Some(State::Updating)),
            vec![stopping(old("a", 1)), old("b", 2), old("c", 3)], 200, vec![]),
        ("stop-first: once it stopped the slot gets its new task",
            svc(3, cfg(1, 0, Pause, StopFirst), Some(State::Updating)),
            vec![stopping(ended(task("a", 1, "n1", TaskShutdown, 10), 199 * S, 0)), old("b", 2), old("c", 3)], 200,
            vec!["create slot 1"]),
        ("a new task on its way keeps its worker busy",
            svc(3, cfg(1, 0, Pause, StopFirst), Some(State::Updating)),
            vec![new("n", 1, TaskStarting, 199), old("b", 2), old("c", 3)], 200, vec![]),
        ("start-first: the old task stays until the new one runs",
            svc(3, cfg(1, 0, Pause, StartFirst), Some(State::Updating)),
            vec![old("a", 1), new("n", 1, TaskStarting, 199), old("b", 2), old("c", 3)], 200, vec![]),
        ("start-first: the new task runs, the old one stops, the next slot starts",
            svc(3, cfg(1, 0, Pause, StartFirst), Some(State::Updating)),
            vec![old("a", 1), new("n", 1, TaskRunning, 199), old("b", 2), old("c", 3)], 200,
            vec!["shutdown a", "create slot 2"]),
        ("delay: the worker rests after its slot's task runs",
            svc(3, cfg(1, 10, Pause, StopFirst), Some(State::Updating)),
            vec![new("n", 1, TaskRunning, 195), old("b", 2), old("c", 3)], 200, vec![]),
        ("delay over: the next slot",
            svc(3, cfg(1, 10, Pause, StopFirst), Some(State::Updating)),
            vec![new("n", 1, TaskRunning, 185), old("b", 2), old("c", 3)], 200, vec!["shutdown b"]),
        ("paused: nothing moves", svc(3, cfg(1, 0, Pause, StopFirst), Some(State::Paused)), three(), 200, vec![]),
        ("rollback paused: nothing moves", svc(3, cfg(1, 0, Pause, StopFirst), Some(State::RollbackPaused)), three(), 200, vec![]),
        ("scale only: nothing to update", svc(1, cfg(1, 0, Pause, StopFirst), None),
            vec![new("n", 1, TaskRunning, 10)], 200, vec![]),
    ];
    check(cases, &update::Memory::default());
}

#[test]
fn monitor_failures_and_completion() {
    use FailureAction::*;
    use Order::*;
    use TaskState::*;
    let failed_new = |id: &str, slot: u64, at: i64| {
        let mut t = new(id, slot, TaskFailed, at);
        t.status.as_mut().unwrap().exit_code = 1;
        t
    };
    // The failed task was seen RUNNING at 190 s.
    let mut memory = update::Memory::default();
    let seen = [new("f", 1, TaskRunning, 190), new("g", 1, TaskRunning, 100)];
    memory.observe(seen.iter(), 190 * S);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("failure within monitor pauses", svc(2, cfg(1, 0, Pause, StopFirst), Some(State::Updating)),
            vec![failed_new("f", 1, 193), old("b", 2)], 200,
            vec!["shutdown f", "create slot 1", "status PAUSED update paused due to failure or early termination of task f"]),
        ("failure after the monitor window is no failure", svc(2, cfg(1, 0, Pause, StopFirst), Some(State::Updating)),
            vec![failed_new("g", 1, 150), old("b", 2)], 200, vec!["shutdown g", "create slot 1"]),
        ("continue ignores failures", svc(2, cfg(1, 0, Continue, StopFirst), Some(State::Updating)),
            vec![failed_new("f", 1, 193), old("b", 2)], 200, vec!["shutdown f", "create slot 1"]),
        ("rollback rolls back", svc(2, cfg(1, 0, Rollback, StopFirst), Some(State::Updating)),
            vec![failed_new("f", 1, 193), old("b", 2)], 200,
            vec!["shutdown f", "create slot 1", "status ROLLBACK_STARTED update rolled back due to failure or early termination of task f"]),
        ("a failure during a rollback pauses it", svc(2, cfg(1, 0, Rollback, StopFirst), Some(State::RollbackStarted)),
            vec![failed_new("f", 1, 193), old("b", 2)], 200,
            vec!["shutdown f", "create slot 1", "status ROLLBACK_PAUSED rollback paused due to failure or early termination of task f"]),
        ("a task that never ran is a failure", svc(2, cfg(1, 0, Pause, StopFirst), Some(State::Updating)),
            vec![failed_new("x", 1, 150), old("b", 2)], 200,
            vec!["shutdown x", "create slot 1", "status PAUSED update paused due to failure or early termination of task x"]),
        ("stuck starting past monitor + health allowance is a failure",
            svc(2, cfg(1, 0, Pause, StopFirst), Some(State::Updating)),
            vec![new("s", 1, TaskStarting, 100), old("b", 2)], 200,
            vec!["status PAUSED update paused due to failure or early termination of task s"]),
        ("last slot running: one more monitor period", svc(1, cfg(1, 0, Pause, StopFirst), Some(State::Updating)),
            vec![new("n", 1, TaskRunning, 198)], 200, vec![]),
        ("then completed", svc(1, cfg(1, 0, Pause, StopFirst), Some(State::Updating)),
            vec![new("n", 1, TaskRunning, 190)], 200, vec!["status COMPLETED update completed"]),
        ("a rollback completes as a rollback", svc(1, cfg(1, 0, Pause, StopFirst), Some(State::RollbackStarted)),
            vec![new("n", 1, TaskRunning, 190)], 200, vec!["status ROLLBACK_COMPLETED rollback completed"]),
    ];
    check(cases, &memory);
}

#[test]
fn ratio_allows_some_failures() {
    use TaskState::*;
    let mut c = cfg(0, 0, FailureAction::Pause, Order::StopFirst);
    c.max_failure_ratio = 0.5;
    let s = svc(4, c, Some(State::Updating));
    let f = |id: &str, slot| new(id, slot, TaskFailed, 150);
    let r = |id: &str, slot| new(id, slot, TaskStarting, 199);
    // 2 of 4 is not above 0.5; 3 of 4 is.
    let cases: Vec<Case> = vec![
        (
            "2/4",
            s.clone(),
            vec![f("f1", 1), f("f2", 2), r("r3", 3), r("r4", 4)],
            200,
            vec![
                "shutdown f1",
                "shutdown f2",
                "create slot 1",
                "create slot 2",
            ],
        ),
        (
            "3/4",
            s.clone(),
            vec![f("f1", 1), f("f2", 2), f("f3", 3), r("r4", 4)],
            200,
            vec![
                "shutdown f1",
                "shutdown f2",
                "shutdown f3",
                "create slot 1",
                "create slot 2",
                "create slot 3",
                "status PAUSED update paused due to failure or early termination of task f1",
            ],
        ),
    ];
    check(cases, &update::Memory::default());
}

#[test]
fn automatic_rollback_restores_the_previous_spec_and_clears_it() {
    let s = svc(
        1,
        cfg(1, 0, FailureAction::Rollback, Order::StopFirst),
        Some(State::Updating),
    );
    let f = new("f", 1, TaskState::TaskFailed, 150);
    let tasks = with_specs(&s, &[f]);
    let refs: Vec<&Task> = tasks.iter().collect();
    let plan = plan_service(&s, &refs, &[], 200 * S, &update::Memory::default());
    let Some(Action::PutService(after)) = plan.actions.last() else {
        panic!("{plan:?}");
    };
    assert_eq!(after.spec, s.previous_spec.as_deref().cloned());
    assert_eq!(after.previous_spec, None);
    assert_eq!(after.spec_version, 3, "a fresh version");
    let st = after.update_status.clone().unwrap_or_default();
    assert_eq!(st.state(), State::RollbackStarted);
    assert_eq!(st.started_at, 200 * S);
}

#[test]
fn a_new_leader_resumes_from_the_store() {
    use TaskState::*;
    // Slot 1 done before the failover, slot 2 stopping, slot 3 to do; no memory.
    let s = svc(
        3,
        cfg(2, 0, FailureAction::Pause, Order::StopFirst),
        Some(State::Updating),
    );
    let tasks = vec![
        new("n1", 1, TaskRunning, 150),
        stopping(old("b", 2)),
        old("c", 3),
    ];
    check(
        vec![("resume", s, tasks, 200, vec!["shutdown c"])],
        &update::Memory::default(),
    );
}
