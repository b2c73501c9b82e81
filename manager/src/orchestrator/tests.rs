use super::*;
use shoal_proto::v1::{
    NodeSpec, NodeStatus, Placement, RestartCondition, ServiceSpec, TaskSpec, UpdateConfig,
};

const S: i64 = 1_000_000_000;
const NOW: i64 = 1_000 * S;

fn service(mode: ServiceMode, replicas: u64, restart: RestartPolicy) -> Service {
    Service {
        id: "svc".into(),
        spec: Some(ServiceSpec {
            name: "web".into(),
            mode: mode as i32,
            replicas,
            task: Some(TaskSpec {
                restart: Some(restart),
                ..Default::default()
            }),
            ..Default::default()
        }),
        spec_version: 7,
        ..Default::default()
    }
}

fn replicated(replicas: u64) -> Service {
    service(
        ServiceMode::ModeReplicated,
        replicas,
        RestartPolicy::default(),
    )
}

fn global() -> Service {
    service(ServiceMode::ModeGlobal, 0, RestartPolicy::default())
}

fn with_constraints(mut s: Service, constraints: &[&str]) -> Service {
    if let Some(t) = s.spec.as_mut().and_then(|s| s.task.as_mut()) {
        t.placement = Some(Placement {
            constraints: constraints.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        });
    }
    s
}

fn policy(condition: RestartCondition, delay: i64, max_attempts: u64) -> RestartPolicy {
    RestartPolicy {
        condition: condition as i32,
        delay_ns: delay,
        max_attempts,
        window_ns: 0,
    }
}

/// A task created at `created` (seconds), in `state` since `NOW` unless changed.
fn task(id: &str, slot: u64, node: &str, state: TaskState, created: i64) -> Task {
    Task {
        id: id.into(),
        meta: Some(Meta {
            created_at: created * S,
            ..Default::default()
        }),
        service_id: "svc".into(),
        slot,
        node_id: node.into(),
        status: Some(TaskStatus {
            state: state as i32,
            timestamp: NOW,
            ..Default::default()
        }),
        desired_state: TaskState::TaskRunning as i32,
        ..Default::default()
    }
}

fn run(id: &str, slot: u64, node: &str) -> Task {
    task(id, slot, node, TaskState::TaskRunning, 10)
}

fn desired(mut t: Task, d: TaskState) -> Task {
    t.desired_state = d as i32;
    t
}

fn ended(mut t: Task, at: i64, exit_code: i32) -> Task {
    if let Some(s) = t.status.as_mut() {
        s.timestamp = at;
        s.exit_code = exit_code;
    }
    t
}

fn node(id: &str, state: NodeState, availability: NodeAvailability) -> Node {
    Node {
        id: id.into(),
        spec: Some(NodeSpec {
            availability: availability as i32,
            labels: [("zone".to_string(), format!("z-{id}"))].into(),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: state as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ready(id: &str) -> Node {
    node(
        id,
        NodeState::NodeReady,
        NodeAvailability::AvailabilityActive,
    )
}

/// The plan in words, so tests can compare whole plans although new task ids are random.
fn describe(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .map(|a| match a {
            Action::SetDesired { task_id, desired } => {
                format!("{} {task_id}", desired.display_name())
            }
            Action::CreateTask(t) if t.node_id.is_empty() => format!("create slot {}", t.slot),
            Action::CreateTask(t) => format!("create on {}", t.node_id),
            Action::RemoveTask(id) => format!("remove {id}"),
            Action::PutService(s) => {
                let st = s.update_status.clone().unwrap_or_default();
                format!("status {} {}", st.state().as_str_name(), st.message)
            }
        })
        .collect()
}

/// Reconciles and updates (no memory); fixture tasks without a spec are taken as made from the
/// service's current spec.
fn plan_all(s: &Service, tasks: &[Task], nodes: &[Node], now: i64) -> Plan {
    let tasks = with_specs(s, tasks);
    let tasks: Vec<&Task> = tasks.iter().collect();
    let nodes: Vec<&Node> = nodes.iter().collect();
    plan_service(s, &tasks, &nodes, now, &update::Memory::default())
}

fn with_specs(s: &Service, tasks: &[Task]) -> Vec<Task> {
    let current = s.spec.as_ref().and_then(|sp| sp.task.clone());
    tasks
        .iter()
        .cloned()
        .map(|mut t| {
            if t.spec.is_none() {
                t.spec = current.clone();
            }
            t
        })
        .collect()
}

/// Reconciles; fixture tasks without a spec are taken as made from the service's current spec.
fn reconcile(s: &Service, tasks: &[Task], nodes: &[Node], now: i64) -> Plan {
    let current = s.spec.as_ref().and_then(|sp| sp.task.clone());
    let tasks: Vec<Task> = tasks
        .iter()
        .cloned()
        .map(|mut t| {
            if t.spec.is_none() {
                t.spec = current.clone();
            }
            t
        })
        .collect();
    let tasks: Vec<&Task> = tasks.iter().collect();
    let nodes: Vec<&Node> = nodes.iter().collect();
    reconcile_service(s, &tasks, &nodes, now)
}

#[test]
fn created_task_fields() {
    let s = replicated(1);
    let plan = reconcile(&s, &[], &[], NOW);
    let [Action::CreateTask(t)] = plan.actions.as_slice() else {
        panic!("{plan:?}");
    };
    assert_eq!(t.id.len(), 25);
    assert_eq!(t.service_id, "svc");
    assert_eq!(t.service_name, "web");
    assert_eq!(t.slot, 1);
    assert_eq!(t.node_id, "");
    assert_eq!(
        t.spec.as_ref(),
        s.spec.as_ref().and_then(|s| s.task.as_ref())
    );
    assert_eq!(t.spec_version, 7);
    assert_eq!(t.desired_state(), TaskState::TaskRunning);
    let status = t.status.clone().unwrap_or_default();
    assert_eq!(
        status.state(),
        TaskState::TaskNew,
        "the allocator moves it on"
    );
    assert_eq!(status.timestamp, NOW);
    assert_eq!(status.message, "new task");
    assert_eq!(
        t.meta.map(|m| (m.created_at, m.updated_at)),
        Some((NOW, NOW))
    );
    assert_eq!(plan.wake_at_ns, None);
}

#[test]
fn scale_up_and_down() {
    let n = [ready("n1")];
    // (replicas, tasks, plan)
    let cases: Vec<(u64, Vec<Task>, Vec<&str>)> = vec![
        (
            3,
            vec![],
            vec!["create slot 1", "create slot 2", "create slot 3"],
        ),
        (
            3,
            vec![run("a", 1, "n1"), run("b", 2, "n1")],
            vec!["create slot 3"],
        ),
        (2, vec![run("a", 1, "n1"), run("b", 2, "n1")], vec![]),
        (
            1,
            vec![run("a", 1, "n1"), run("b", 2, "n1"), run("c", 3, "n1")],
            vec!["shutdown b", "shutdown c"],
        ),
        (0, vec![run("a", 1, "n1")], vec!["shutdown a"]),
        // A pending (unscheduled) task counts as the slot's task.
        (
            1,
            vec![task("p", 1, "", TaskState::TaskPending, 10)],
            vec![],
        ),
        // Scaled down earlier (still stopping), scaled up again: a new task for the slot.
        (
            2,
            vec![
                run("a", 1, "n1"),
                desired(run("b", 2, "n1"), TaskState::TaskShutdown),
            ],
            vec!["create slot 2"],
        ),
        // Two tasks meant to run in one slot: the newer stays.
        (
            1,
            vec![
                run("old", 1, "n1"),
                task("new", 1, "n1", TaskState::TaskRunning, 20),
            ],
            vec!["shutdown old"],
        ),
    ];
    for (i, (replicas, tasks, want)) in cases.into_iter().enumerate() {
        let plan = reconcile(&replicated(replicas), &tasks, &n, NOW);
        assert_eq!(describe(&plan), want, "case {i}");
    }
}

#[test]
fn restart_policy() {
    use RestartCondition::*;
    use TaskState::*;
    let n = [ready("n1")];
    let restarted = vec!["shutdown t", "create slot 1"];
    let kept: Vec<&str> = vec![];
    // (policy, final state, exit code, ended at, plan, wake at)
    #[rustfmt::skip]
    let cases = [
        (policy(RestartAny, 0, 0), TaskComplete, 0, NOW, restarted.clone(), None),
        (policy(RestartAny, 0, 0), TaskFailed, 1, NOW, restarted.clone(), None),
        (policy(RestartOnFailure, 0, 0), TaskFailed, 1, NOW, restarted.clone(), None),
        (policy(RestartOnFailure, 0, 0), TaskRejected, 0, NOW, restarted.clone(), None),
        (policy(RestartOnFailure, 0, 0), TaskComplete, 2, NOW, restarted.clone(), None),
        // Completed and not restarted: it stays the slot's task, nothing new.
        (policy(RestartOnFailure, 0, 0), TaskComplete, 0, NOW, kept.clone(), None),
        (policy(RestartNone, 0, 0), TaskFailed, 1, NOW, kept.clone(), None),
        // Delay: wait until the task has been dead long enough.
        (policy(RestartAny, 5 * S, 0), TaskFailed, 1, NOW - 2 * S, kept.clone(), Some(NOW + 3 * S)),
        (policy(RestartAny, 5 * S, 0), TaskFailed, 1, NOW - 5 * S, restarted.clone(), None),
    ];
    for (i, (p, state, code, at, want, wake)) in cases.into_iter().enumerate() {
        let s = service(ServiceMode::ModeReplicated, 1, p);
        let plan = reconcile(
            &s,
            &[ended(task("t", 1, "n1", state, 10), at, code)],
            &n,
            NOW,
        );
        assert_eq!(describe(&plan), want, "case {i}");
        assert_eq!(plan.wake_at_ns, wake, "case {i}");
    }
}

#[test]
fn max_attempts_counts_the_slot_history() {
    let n = [ready("n1")];
    let s = service(
        ServiceMode::ModeReplicated,
        1,
        policy(RestartCondition::RestartAny, 0, 2),
    );
    let old = |id: &str, created: i64| {
        desired(
            ended(
                task(id, 1, "n1", TaskState::TaskFailed, created),
                created * S,
                1,
            ),
            TaskState::TaskShutdown,
        )
    };
    let dead = ended(task("t", 1, "n1", TaskState::TaskFailed, 30), NOW, 1);
    // One restart so far: one more allowed.
    let plan = reconcile(&s, &[old("o1", 10), dead.clone()], &n, NOW);
    assert_eq!(describe(&plan), ["shutdown t", "create slot 1"]);
    // Two restarts so far: the dead task stays.
    let plan = reconcile(&s, &[old("o1", 10), old("o2", 20), dead.clone()], &n, NOW);
    assert_eq!(describe(&plan), Vec::<String>::new());
    // Other slots' history does not count.
    let mut other = old("o2", 20);
    other.slot = 2;
    let s2 = service(
        ServiceMode::ModeReplicated,
        2,
        policy(RestartCondition::RestartAny, 0, 2),
    );
    let plan = reconcile(
        &s2,
        &[old("o1", 10), other, dead, run("r", 2, "n1")],
        &n,
        NOW,
    );
    assert_eq!(describe(&plan), ["shutdown t", "create slot 1"]);
}

#[test]
fn wake_at_is_the_earliest_delay() {
    let n = [ready("n1")];
    let s = service(
        ServiceMode::ModeReplicated,
        3,
        policy(RestartCondition::RestartAny, 10 * S, 0),
    );
    let tasks = [
        ended(
            task("a", 1, "n1", TaskState::TaskFailed, 10),
            NOW - 2 * S,
            1,
        ),
        ended(
            task("b", 2, "n1", TaskState::TaskFailed, 10),
            NOW - 7 * S,
            1,
        ),
        ended(
            task("c", 3, "n1", TaskState::TaskFailed, 10),
            NOW - 11 * S,
            1,
        ),
    ];
    let plan = reconcile(&s, &tasks, &n, NOW);
    assert_eq!(describe(&plan), ["shutdown c", "create slot 3"]);
    assert_eq!(plan.wake_at_ns, Some(NOW + 3 * S));
}

#[test]
fn tasks_on_lost_nodes_are_replaced() {
    use NodeAvailability::*;
    use NodeState::*;
    let replaced = vec!["shutdown t", "create slot 1"];
    // (node n1, task, plan)
    #[rustfmt::skip]
    let cases: Vec<(Option<Node>, Task, Vec<&str>)> = vec![
        (Some(node("n1", NodeReady, AvailabilityActive)), run("t", 1, "n1"), vec![]),
        (Some(node("n1", NodeReady, AvailabilityPause)), run("t", 1, "n1"), vec![]),
        (Some(node("n1", NodeDisconnected, AvailabilityActive)), run("t", 1, "n1"), vec![]),
        (Some(node("n1", NodeDown, AvailabilityActive)), run("t", 1, "n1"), replaced.clone()),
        // Drained: the replacement comes first; t stops once it runs (see the next test).
        (Some(node("n1", NodeReady, AvailabilityDrain)), run("t", 1, "n1"), vec!["create slot 1"]),
        (Some(node("n1", NodeDown, AvailabilityDrain)), run("t", 1, "n1"), replaced.clone()),
        (None, run("t", 1, "n1"), replaced.clone()),
        (Some(node("n1", NodeDown, AvailabilityActive)), task("t", 1, "n1", TaskState::TaskStarting, 1), replaced.clone()),
        // Already ended: the restart policy decides (none here: it stays).
        (
            Some(node("n1", NodeDown, AvailabilityActive)),
            task("t", 1, "n1", TaskState::TaskComplete, 1),
            vec![],
        ),
    ];
    let s = service(
        ServiceMode::ModeReplicated,
        1,
        policy(RestartCondition::RestartNone, 0, 0),
    );
    for (i, (n, t, want)) in cases.into_iter().enumerate() {
        let nodes: Vec<Node> = n.into_iter().chain([ready("n2")]).collect();
        let plan = reconcile(&s, &[t], &nodes, NOW);
        assert_eq!(describe(&plan), want, "case {i}");
    }
}

/// (node n1 of the old task, the replacement, now, plan, wake_at)
type DrainCase = (Node, Task, i64, Vec<&'static str>, Option<i64>);

#[test]
fn drained_tasks_wait_for_their_replacement() {
    use NodeAvailability::*;
    use NodeState::*;
    let created = NOW / S - 5;
    let repl = |state: TaskState| task("r", 1, "n2", state, created);
    let unschedulable = {
        let mut r = repl(TaskState::TaskPending);
        r.node_id.clear();
        if let Some(st) = r.status.as_mut() {
            st.err = "no suitable node (1 node not available for new tasks)".into();
        }
        r
    };
    let until = NOW - 5 * S + DRAIN_HOLD_NS;
    #[rustfmt::skip]
    let cases: Vec<DrainCase> = vec![
        // The replacement is on its way: the old task keeps running, look again at the deadline.
        (node("n1", NodeReady, AvailabilityDrain), repl(TaskState::TaskPending), NOW, vec![], Some(until)),
        (node("n1", NodeReady, AvailabilityDrain), repl(TaskState::TaskAssigned), NOW, vec![], Some(until)),
        (node("n1", NodeReady, AvailabilityDrain), repl(TaskState::TaskStarting), NOW, vec![], Some(until)),
        // It runs: now the old one stops.
        (node("n1", NodeReady, AvailabilityDrain), repl(TaskState::TaskRunning), NOW, vec!["shutdown t"], None),
        // It ended, found no node, or took too long: stop the old one anyway.
        (node("n1", NodeReady, AvailabilityDrain), repl(TaskState::TaskFailed), NOW, vec!["shutdown t"], None),
        (node("n1", NodeReady, AvailabilityDrain), unschedulable, NOW, vec!["shutdown t"], None),
        (node("n1", NodeReady, AvailabilityDrain), repl(TaskState::TaskPending), until, vec!["shutdown t"], None),
        // The drained node went down meanwhile, or was made active again: no reason to wait.
        (node("n1", NodeDown, AvailabilityDrain), repl(TaskState::TaskPending), NOW, vec!["shutdown t"], None),
        (node("n1", NodeReady, AvailabilityActive), repl(TaskState::TaskPending), NOW, vec!["shutdown t"], None),
    ];
    let s = service(
        ServiceMode::ModeReplicated,
        1,
        policy(RestartCondition::RestartNone, 0, 0),
    );
    for (i, (n1, r, now, want, wake)) in cases.into_iter().enumerate() {
        let plan = reconcile(&s, &[run("t", 1, "n1"), r], &[n1, ready("n2")], now);
        assert_eq!(describe(&plan), want, "case {i}");
        assert_eq!(plan.wake_at_ns, wake, "case {i}");
    }
    // Scaled away while waiting: both go.
    let plan = reconcile(
        &replicated(0),
        &[run("t", 1, "n1"), repl(TaskState::TaskPending)],
        &[node("n1", NodeReady, AvailabilityDrain), ready("n2")],
        NOW,
    );
    assert_eq!(describe(&plan), vec!["shutdown r", "shutdown t"]);
}

/// (service, nodes, tasks, plan)
type GlobalCase = (Service, Vec<Node>, Vec<Task>, Vec<&'static str>);

#[test]
fn global_services() {
    use NodeAvailability::*;
    use NodeState::*;
    let g = global();
    // (nodes, tasks, plan)
    let cases: Vec<GlobalCase> = vec![
        (
            g.clone(),
            vec![ready("a"), ready("b")],
            vec![],
            vec!["create on a", "create on b"],
        ),
        // A node joins later: only it gets a new task.
        (
            g.clone(),
            vec![ready("a"), ready("b"), ready("c")],
            vec![run("ta", 0, "a"), run("tb", 0, "b")],
            vec!["create on c"],
        ),
        // Down, drained or gone: shut down, no replacement. Paused: kept.
        (
            g.clone(),
            vec![
                node("a", NodeDown, AvailabilityActive),
                node("b", NodeReady, AvailabilityDrain),
                node("c", NodeReady, AvailabilityPause),
            ],
            vec![
                run("ta", 0, "a"),
                run("tb", 0, "b"),
                run("tc", 0, "c"),
                run("td", 0, "d"),
            ],
            vec!["shutdown ta", "shutdown tb", "shutdown td"],
        ),
        // A node that is not ready gets no task.
        (
            g.clone(),
            vec![ready("a"), node("b", NodeUnknown, AvailabilityActive)],
            vec![],
            vec!["create on a"],
        ),
        // Constraints choose the nodes (the same matching as the scheduler's).
        (
            with_constraints(g.clone(), &["node.labels.zone!=z-b"]),
            vec![ready("a"), ready("b"), ready("c")],
            vec![run("tb", 0, "b")],
            vec!["shutdown tb", "create on a", "create on c"],
        ),
        // Restart policy per node.
        (
            service(
                ServiceMode::ModeGlobal,
                0,
                policy(RestartCondition::RestartOnFailure, 0, 0),
            ),
            vec![ready("a"), ready("b")],
            vec![
                ended(task("ta", 0, "a", TaskState::TaskFailed, 1), NOW, 1),
                task("tb", 0, "b", TaskState::TaskComplete, 1),
            ],
            vec!["shutdown ta", "create on a"],
        ),
    ];
    for (i, (s, nodes, tasks, want)) in cases.into_iter().enumerate() {
        let plan = reconcile(&s, &tasks, &nodes, NOW);
        assert_eq!(describe(&plan), want, "case {i}");
        for a in &plan.actions {
            if let Action::CreateTask(t) = a {
                assert_eq!(t.slot, 0, "case {i}");
            }
        }
    }
}

#[test]
fn history_is_trimmed_to_five_per_slot() {
    let n = [ready("n1")];
    let old = |id: &str, slot: u64, created: i64| {
        desired(
            task(id, slot, "n1", TaskState::TaskFailed, created),
            TaskState::TaskShutdown,
        )
    };
    // Slot 1: 7 old tasks and a running one; slot 2: 5 old tasks and a dead one being restarted.
    let mut tasks: Vec<Task> = (1..=7).map(|i| old(&format!("s1-{i}"), 1, i)).collect();
    tasks.push(run("s1-run", 1, "n1"));
    tasks.extend((1..=5).map(|i| old(&format!("s2-{i}"), 2, i)));
    tasks.push(task("s2-dead", 2, "n1", TaskState::TaskFailed, 9));
    // Slot 3 was scaled away: its history is trimmed too; a stopping task is not history yet.
    tasks.extend((1..=6).map(|i| old(&format!("s3-{i}"), 3, i)));
    tasks.push(desired(
        run("s3-stopping", 3, "n1"),
        TaskState::TaskShutdown,
    ));
    let plan = reconcile(&replicated(2), &tasks, &n, NOW);
    assert_eq!(
        describe(&plan),
        [
            "shutdown s2-dead",
            "create slot 2",
            "remove s1-1",
            "remove s1-2",
            "remove s2-1",
            "remove s3-1",
        ]
    );
    // Applying it changes nothing more.
    let after: Vec<Task> = tasks
        .into_iter()
        .filter(|t| !["s1-1", "s1-2", "s2-1", "s3-1"].contains(&t.id.as_str()))
        .map(|t| {
            if t.id == "s2-dead" {
                desired(t, TaskState::TaskShutdown)
            } else {
                t
            }
        })
        .chain([run("s2-new", 2, "n1")])
        .collect();
    assert!(reconcile(&replicated(2), &after, &n, NOW).is_empty());
}

#[test]
fn global_history_is_per_node() {
    let old = |id: &str, node: &str, created: i64| {
        desired(
            task(id, 0, node, TaskState::TaskComplete, created),
            TaskState::TaskShutdown,
        )
    };
    let mut tasks: Vec<Task> = (1..=6).map(|i| old(&format!("a{i}"), "a", i)).collect();
    tasks.extend((1..=4).map(|i| old(&format!("b{i}"), "b", i)));
    tasks.push(run("ra", 0, "a"));
    tasks.push(run("rb", 0, "b"));
    let plan = reconcile(&global(), &tasks, &[ready("a"), ready("b")], NOW);
    assert_eq!(describe(&plan), ["remove a1"]);
}

#[test]
fn removed_service() {
    use TaskState::*;
    let cases = [
        (task("run", 1, "n1", TaskRunning, 1), "shutdown run"),
        (task("pend", 1, "", TaskPending, 1), "remove pend"),
        (task("done", 1, "n1", TaskComplete, 1), "remove done"),
        (
            desired(task("gone", 1, "n1", TaskShutdown, 1), TaskShutdown),
            "remove gone",
        ),
        (
            desired(task("stopping", 1, "n1", TaskRunning, 1), TaskShutdown),
            "",
        ),
    ];
    for (t, want) in &cases {
        let plan = reconcile_removed(&[t]);
        let want: Vec<&str> = Some(*want).filter(|w| !w.is_empty()).into_iter().collect();
        assert_eq!(describe(&plan), want, "{}", t.id);
    }
    let all: Vec<&Task> = cases.iter().map(|(t, _)| t).collect();
    assert_eq!(
        describe(&reconcile_removed(&all)),
        ["shutdown run", "remove done", "remove gone", "remove pend"]
    );
}

#[test]
fn plans_are_deterministic() {
    let tasks = [run("z", 3, "n1"), run("y", 4, "n1"), run("x", 5, "n1")];
    let nodes = [ready("n1")];
    let a = reconcile(&replicated(2), &tasks, &nodes, NOW);
    let reversed: Vec<Task> = tasks.iter().rev().cloned().collect();
    let b = reconcile(&replicated(2), &reversed, &nodes, NOW);
    assert_eq!(describe(&a), describe(&b));
    assert_eq!(
        describe(&a),
        [
            "shutdown x",
            "shutdown y",
            "shutdown z",
            "create slot 1",
            "create slot 2"
        ]
    );
}

#[test]
fn service_without_spec_is_left_alone() {
    let s = Service {
        id: "svc".into(),
        ..Default::default()
    };
    assert!(reconcile(&s, &[run("a", 1, "n1")], &[], NOW).is_empty());
}

fn with_image(mut s: Service, image: &str) -> Service {
    if let Some(t) = s.spec.as_mut().and_then(|s| s.task.as_mut()) {
        t.container = Some(shoal_proto::v1::ContainerSpec {
            image: image.into(),
            ..Default::default()
        });
    }
    s
}

fn with_ports(mut s: Service, ports: &[(u32, u32, &str)]) -> Service {
    if let Some(spec) = s.spec.as_mut() {
        spec.endpoint = Some(EndpointSpec {
            mode: String::new(),
            ports: ports
                .iter()
                .map(|&(target, published, mode)| PortConfig {
                    target_port: target,
                    published_port: published,
                    publish_mode: mode.into(),
                    ..Default::default()
                })
                .collect(),
        });
    }
    s
}

/// A task made (and allocated) from `s` as it is now.
fn made_from(mut t: Task, s: &Service) -> Task {
    let spec = s.spec.as_ref().unwrap();
    t.spec = spec.task.clone();
    t.endpoint = spec.endpoint.clone().map(|e| shoal_proto::v1::Endpoint {
        spec: Some(e),
        ..Default::default()
    });
    t
}

/// An update of both slots starting, all at once, stop-first.
const DIRTY: [&str; 3] = [
    "status UPDATING update in progress",
    "shutdown a",
    "shutdown b",
];

#[test]
fn spec_changes_replace_tasks_and_port_changes_only_when_tasks_see_them() {
    use TaskState::*;
    let nodes = [ready("n1")];
    let old = with_image(replicated(2), "busybox:1");
    let ported = |ports: &[(u32, u32, &str)]| with_ports(old.clone(), ports);
    // (service now, the service its tasks were made from, the tasks' state, plan)
    #[rustfmt::skip]
    let cases: Vec<(Service, Service, TaskState, Vec<&str>)> = vec![
        (old.clone(), old.clone(), TaskRunning, vec![]),
        // A new image: every task is replaced (all at once here, stop-first: the new tasks
        // come once the old ones stopped).
        (with_image(replicated(2), "busybox:2"), old.clone(), TaskRunning, DIRTY.to_vec()),
        (with_image(replicated(2), "busybox:2"), old.clone(), TaskNew, DIRTY.to_vec()),
        // Another published port number: the routing mesh follows, tasks stay.
        (ported(&[(80, 8081, "")]), ported(&[(80, 8080, "")]), TaskRunning, vec![]),
        (ported(&[(80, 8080, ""), (81, 0, "ingress")]), ported(&[(80, 8080, "")]), TaskRunning, vec![]),
        // The first ingress port: tasks must join ingress.
        (ported(&[(80, 8080, "")]), old.clone(), TaskRunning, DIRTY.to_vec()),
        // The last ingress port gone: tasks leave ingress.
        (ported(&[(80, 8080, "host")]), ported(&[(80, 8080, "")]), TaskRunning, DIRTY.to_vec()),
        // A host-mode port changed: the node publishes it per task.
        (ported(&[(80, 9090, "host")]), ported(&[(80, 8080, "host")]), TaskRunning, DIRTY.to_vec()),
        // Not allocated yet: the allocator gives it the current endpoint.
        (ported(&[(80, 8080, "")]), old.clone(), TaskNew, vec![]),
    ];
    for (i, (mut now, from, state, want)) in cases.into_iter().enumerate() {
        if let Some(sp) = now.spec.as_mut() {
            sp.update = Some(UpdateConfig::default()); // parallelism 0: all at once
        }
        let tasks = [
            made_from(task("a", 1, "n1", state, 10), &from),
            made_from(task("b", 2, "n1", state, 10), &from),
        ];
        // Reconciliation alone leaves old-spec tasks to the updater.
        assert!(reconcile(&now, &tasks, &nodes, NOW).is_empty(), "case {i}");
        let plan = plan_all(&now, &tasks, &nodes, NOW);
        assert_eq!(describe(&plan), want, "case {i}");
        for a in &plan.actions {
            if let Action::CreateTask(t) = a {
                assert_eq!(t.spec, now.spec.as_ref().unwrap().task, "case {i}");
                assert!(!is_outdated(&now, t), "case {i}: a new task is current");
            }
        }
    }
}

#[test]
fn global_tasks_are_replaced_on_their_node() {
    let nodes = [ready("n1"), ready("n2")];
    let old = with_image(global(), "busybox:1");
    let now = with_image(global(), "busybox:2");
    let tasks = [
        made_from(run("a", 0, "n1"), &old),
        made_from(run("b", 0, "n2"), &now),
    ];
    assert_eq!(
        describe(&plan_all(&now, &tasks, &nodes, NOW)),
        ["status UPDATING update in progress", "shutdown a"]
    );
}

#[test]
fn a_replacement_that_cannot_get_an_address_releases_the_drained_task() {
    use NodeAvailability::*;
    use NodeState::*;
    let mut repl = task("r", 1, "", TaskState::TaskNew, 20);
    if let Some(st) = repl.status.as_mut() {
        st.err = "no free address on network front (10.1.0.0/24)".into();
    }
    let tasks = [run("t", 1, "n1"), repl];
    let plan = reconcile(
        &replicated(1),
        &tasks,
        &[node("n1", NodeReady, AvailabilityDrain)],
        NOW,
    );
    assert_eq!(describe(&plan), ["shutdown t"]);
}

mod updater;
