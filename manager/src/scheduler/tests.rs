use std::collections::HashMap;

use super::*;
use shoal_proto::v1::{
    NodeAvailability, NodeDescription, NodeRole, NodeSpec, NodeState, NodeStatus, Placement,
    ResourceRequirements, TaskStatus,
};

const GIB: i64 = 1 << 30;

fn node(id: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        id: id.into(),
        spec: Some(NodeSpec {
            role: NodeRole::RoleWorker as i32,
            availability: NodeAvailability::AvailabilityActive as i32,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }),
        description: Some(NodeDescription {
            hostname: format!("host-{id}"),
            resources: Some(Resources {
                nano_cpus: 4_000_000_000,
                memory_bytes: 4 * GIB,
            }),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: NodeState::NodeReady as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn with_state(mut n: Node, state: NodeState) -> Node {
    if let Some(s) = n.status.as_mut() {
        s.state = state as i32;
    }
    n
}

fn with_availability(mut n: Node, a: NodeAvailability) -> Node {
    if let Some(s) = n.spec.as_mut() {
        s.availability = a as i32;
    }
    n
}

fn with_memory(mut n: Node, memory_bytes: i64) -> Node {
    if let Some(r) = n.description.as_mut().and_then(|d| d.resources.as_mut()) {
        r.memory_bytes = memory_bytes;
    }
    n
}

#[derive(Default, Clone)]
struct Spec {
    memory: i64,
    cpu: i64,
    constraints: Vec<&'static str>,
    preferences: Vec<&'static str>,
    max_per_node: u64,
}

fn spec(s: &Spec) -> TaskSpec {
    TaskSpec {
        resources: Some(ResourceRequirements {
            reservations: Some(Resources {
                nano_cpus: s.cpu,
                memory_bytes: s.memory,
            }),
            ..Default::default()
        }),
        placement: Some(Placement {
            constraints: s.constraints.iter().map(|c| c.to_string()).collect(),
            max_replicas_per_node: s.max_per_node,
            preferences: s.preferences.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pending(id: &str, service: &str, s: &Spec) -> Task {
    Task {
        id: id.into(),
        service_id: service.into(),
        spec: Some(spec(s)),
        spec_version: 1,
        status: Some(TaskStatus {
            state: TaskState::TaskPending as i32,
            ..Default::default()
        }),
        desired_state: TaskState::TaskRunning as i32,
        ..Default::default()
    }
}

fn running(id: &str, service: &str, node: &str, s: &Spec) -> Task {
    let mut t = pending(id, service, s);
    t.node_id = node.into();
    if let Some(st) = t.status.as_mut() {
        st.state = TaskState::TaskRunning as i32;
    }
    t
}

fn tasks(prefix: &str, service: &str, n: usize, s: &Spec) -> Vec<Task> {
    (0..n)
        .map(|i| pending(&format!("{prefix}{i:06}"), service, s))
        .collect()
}

fn assigned(d: &Decision) -> &str {
    match &d.outcome {
        Outcome::Assign(n) => n,
        Outcome::NoFit(r) => panic!("task {} not placed: {r}", d.task_id),
    }
}

fn per_node(decisions: &[Decision]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for d in decisions {
        *m.entry(assigned(d).to_string()).or_insert(0) += 1;
    }
    m
}

fn run(nodes: &[Node], existing: &[Task], pend: &[Task]) -> Vec<Decision> {
    let mut s = Scheduler::new(nodes, existing);
    let refs: Vec<&Task> = pend.iter().collect();
    s.schedule(&refs)
}

#[test]
fn spread_scores() {
    let plain = Spec::default();
    // (existing tasks as (service, node), expected node for one task of service "web")
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        // Nothing anywhere: lowest node id.
        (vec![], "a"),
        // Fewest tasks of this service wins over fewest tasks overall.
        (
            vec![
                ("web", "a"),
                ("db", "b"),
                ("db", "b"),
                ("db", "b"),
                ("web", "c"),
            ],
            "b",
        ),
        // Tie on this service: fewest tasks overall.
        (vec![("db", "a"), ("db", "b"), ("db", "b")], "c"),
        (vec![("db", "a"), ("db", "c")], "b"),
        // Tie on both: lowest id.
        (vec![("web", "a"), ("web", "b"), ("web", "c")], "a"),
    ];
    let nodes = [node("a", &[]), node("b", &[]), node("c", &[])];
    for (i, (existing, want)) in cases.into_iter().enumerate() {
        let existing: Vec<Task> = existing
            .iter()
            .enumerate()
            .map(|(j, (svc, n))| running(&format!("e{j}"), svc, n, &plain))
            .collect();
        let d = run(&nodes, &existing, &[pending("t", "web", &plain)]);
        assert_eq!(assigned(&d[0]), want, "case {i}");
    }
}

#[test]
fn what_occupies_a_node() {
    let plain = Spec::default();
    let mut shut = running("s", "web", "a", &plain);
    shut.desired_state = TaskState::TaskShutdown as i32;
    let mut failed = running("f", "web", "a", &plain);
    if let Some(st) = failed.status.as_mut() {
        st.state = TaskState::TaskFailed as i32;
    }
    let starting = {
        let mut t = running("p", "web", "a", &plain);
        if let Some(st) = t.status.as_mut() {
            st.state = TaskState::TaskStarting as i32;
        }
        t
    };
    // (existing task on node a, whether it pushes the next task to b)
    let cases = [(shut, false), (failed, false), (starting, true)];
    let nodes = [node("a", &[]), node("b", &[])];
    for (t, occupies) in cases {
        assert_eq!(occupies_node(&t), occupies, "{}", t.id);
        let d = run(
            &nodes,
            std::slice::from_ref(&t),
            &[pending("t", "web", &plain)],
        );
        assert_eq!(
            assigned(&d[0]),
            if occupies { "b" } else { "a" },
            "{}",
            t.id
        );
    }
}

#[test]
fn a_batch_spreads_evenly_and_counts_other_services() {
    let plain = Spec::default();
    let nodes: Vec<Node> = (0..7).map(|i| node(&format!("n{i}"), &[])).collect();
    // n0 already runs 3 tasks of another service: it gets the fewest of the 100 new ones.
    let existing: Vec<Task> = (0..3)
        .map(|i| running(&format!("db{i}"), "db", "n0", &plain))
        .collect();
    let d = run(&nodes, &existing, &tasks("w", "web", 100, &plain));
    let counts = per_node(&d);
    let max = counts.values().max().copied().unwrap_or(0);
    let min = counts.values().min().copied().unwrap_or(0);
    assert_eq!(counts.len(), 7);
    assert!(max - min <= 1, "{counts:?}");
    assert_eq!(counts["n0"], min, "{counts:?}");
    // Decisions come back in the order the tasks were given.
    for (i, dec) in d.iter().enumerate() {
        assert_eq!(dec.task_id, format!("w{i:06}"));
    }
}

#[test]
fn placement_preference_spreads_over_label_values_first() {
    let s = Spec {
        preferences: vec!["spread=node.labels.zone"],
        ..Default::default()
    };
    let nodes = [
        node("a1", &[("zone", "a")]),
        node("a2", &[("zone", "a")]),
        node("a3", &[("zone", "a")]),
        node("b1", &[("zone", "b")]),
        node("x1", &[]),
    ];
    // (existing tasks of the service, new tasks, expected tasks per zone after: a, b, no label)
    let cases: Vec<(Vec<&str>, usize, [usize; 3])> = vec![
        (vec![], 3, [1, 1, 1]),
        (vec![], 6, [2, 2, 2]),
        (vec!["b1", "b1"], 4, [2, 2, 2]),
        (vec!["a1", "a2", "a3"], 3, [3, 2, 1]),
    ];
    for (i, (existing, n, want)) in cases.into_iter().enumerate() {
        let existing: Vec<Task> = existing
            .iter()
            .enumerate()
            .map(|(j, n)| running(&format!("e{j}"), "web", n, &s))
            .collect();
        let d = run(&nodes, &existing, &tasks("t", "web", n, &s));
        let mut zones = [0usize; 3];
        for node_id in existing
            .iter()
            .map(|t| t.node_id.as_str())
            .chain(d.iter().map(assigned))
        {
            zones[match &node_id[..1] {
                "a" => 0,
                "b" => 1,
                _ => 2,
            }] += 1;
        }
        assert_eq!(zones, want, "case {i}");
    }
    // Within a zone, tasks still spread over its nodes.
    let d = run(&nodes, &[], &tasks("t", "web", 9, &s));
    let counts = per_node(&d);
    assert_eq!((counts["a1"], counts["a2"], counts["a3"]), (1, 1, 1));
    assert_eq!(counts["b1"], 3);
}

#[test]
fn nested_preferences() {
    let s = Spec {
        preferences: vec!["spread=node.labels.zone", "spread=engine.labels.rack"],
        ..Default::default()
    };
    let mut nodes = Vec::new();
    for (id, zone, rack) in [
        ("a1", "a", "r1"),
        ("a2", "a", "r1"),
        ("a3", "a", "r2"),
        ("b1", "b", "r1"),
    ] {
        let mut n = node(id, &[("zone", zone)]);
        if let Some(d) = n.description.as_mut() {
            d.engine_labels.insert("rack".into(), rack.into());
        }
        nodes.push(n);
    }
    let counts = per_node(&run(&nodes, &[], &tasks("t", "web", 8, &s)));
    // 4 per zone; inside zone a, 2 per rack: r2's single node takes 2.
    assert_eq!(counts["b1"], 4);
    assert_eq!(counts["a3"], 2);
    assert_eq!(counts["a1"] + counts["a2"], 2);
}

#[test]
fn resources_are_reserved_as_tasks_are_placed() {
    let s = Spec {
        memory: GIB,
        ..Default::default()
    };
    // a: 4 GiB with 1 GiB taken by an existing task of another service; b: 2 GiB.
    let nodes = [node("a", &[]), with_memory(node("b", &[]), 2 * GIB)];
    let existing = [running("e", "db", "a", &s)];
    let d = run(&nodes, &existing, &tasks("t", "web", 6, &s));
    let placed: Vec<&str> = d[..5].iter().map(assigned).collect();
    assert_eq!(placed.iter().filter(|n| **n == "a").count(), 3);
    assert_eq!(placed.iter().filter(|n| **n == "b").count(), 2);
    assert_eq!(
        d[5].outcome,
        Outcome::NoFit("no suitable node (insufficient memory on 2 nodes)".into())
    );
}

#[test]
fn no_fit_reasons() {
    let mem = Spec {
        memory: 8 * GIB,
        ..Default::default()
    };
    let picky = Spec {
        memory: 8 * GIB,
        constraints: vec!["node.labels.zone==east"],
        ..Default::default()
    };
    let east = Spec {
        constraints: vec!["node.labels.zone==east"],
        ..Default::default()
    };
    let cpu = Spec {
        cpu: 5_000_000_000,
        ..Default::default()
    };
    let four = || {
        vec![
            node("a", &[("zone", "east")]),
            node("b", &[]),
            node("c", &[]),
            node("d", &[]),
        ]
    };
    let mixed = vec![
        with_state(node("a", &[]), NodeState::NodeDown),
        with_availability(node("b", &[]), NodeAvailability::AvailabilityDrain),
        with_availability(node("c", &[]), NodeAvailability::AvailabilityPause),
        node("d", &[]),
    ];
    let cases: Vec<(Vec<Node>, Spec, &str)> = vec![
        (vec![], Spec::default(), "no suitable node (no nodes available)"),
        (four(), mem, "no suitable node (insufficient memory on 4 nodes)"),
        // Resources come before constraints in the pipeline; a node is counted once.
        (
            with_memory_of(four(), "b", 16 * GIB),
            picky,
            "no suitable node (insufficient memory on 3 nodes; constraint not met on 1 node)",
        ),
        (
            vec![node("b", &[]), node("c", &[])],
            east,
            "no suitable node (constraint not met on 2 nodes)",
        ),
        (
            mixed,
            cpu,
            "no suitable node (node not ready on 1 node; node not available (paused or drained) on 2 nodes; \
             insufficient cpu on 1 node)",
        ),
    ];
    for (i, (nodes, s, want)) in cases.into_iter().enumerate() {
        let d = run(&nodes, &[], &[pending("t", "web", &s)]);
        assert_eq!(d[0].outcome, Outcome::NoFit(want.into()), "case {i}");
    }
}

fn with_memory_of(nodes: Vec<Node>, id: &str, memory: i64) -> Vec<Node> {
    nodes
        .into_iter()
        .map(|n| {
            if n.id == id {
                with_memory(n, memory)
            } else {
                n
            }
        })
        .collect()
}

#[test]
fn max_replicas_per_node() {
    let s = Spec {
        max_per_node: 2,
        ..Default::default()
    };
    let nodes = [node("a", &[]), node("b", &[])];
    let existing = [running("e", "web", "a", &s)];
    let d = run(&nodes, &existing, &tasks("t", "web", 4, &s));
    assert_eq!(
        d[..3].iter().map(assigned).collect::<Vec<_>>(),
        ["b", "a", "b"]
    );
    assert_eq!(
        d[3].outcome,
        Outcome::NoFit("no suitable node (max replicas per node reached on 2 nodes)".into())
    );
    // Other services' tasks do not count toward the limit.
    let other = [running("e", "db", "a", &s), running("f", "db", "a", &s)];
    let d = run(&nodes, &other, &tasks("t", "web", 4, &s));
    assert_eq!(
        per_node(&d),
        HashMap::from([("a".into(), 2), ("b".into(), 2)])
    );
}

#[test]
fn tasks_bound_to_a_node_only_go_there() {
    let s = Spec {
        memory: 3 * GIB,
        ..Default::default()
    };
    let nodes = [
        node("a", &[]),
        with_state(node("b", &[]), NodeState::NodeDown),
    ];
    let bound = |id: &str, n: &str| {
        let mut t = pending(id, "mon", &s);
        t.node_id = n.into();
        t
    };
    // The pending bound task is also among the store's tasks: its own reservation must not
    // count against it.
    let ga = bound("ga", "a");
    let cases: Vec<(Vec<Task>, Task, Outcome)> = vec![
        (vec![ga.clone()], ga.clone(), Outcome::Assign("a".into())),
        (
            vec![],
            bound("gb", "b"),
            Outcome::NoFit("no suitable node (node not ready on 1 node)".into()),
        ),
        (
            vec![],
            bound("gz", "z"),
            Outcome::NoFit("no suitable node (no nodes available)".into()),
        ),
        (
            vec![running("e", "db", "a", &s)],
            bound("gc", "a"),
            Outcome::NoFit("no suitable node (insufficient memory on 1 node)".into()),
        ),
    ];
    for (existing, task, want) in cases {
        let d = run(&nodes, &existing, std::slice::from_ref(&task));
        assert_eq!(d[0].outcome, want, "{}", task.id);
    }
}

#[test]
fn rescheduling_the_same_task_does_not_count_it_twice() {
    let s = Spec {
        memory: 4 * GIB,
        ..Default::default()
    };
    let nodes = [node("a", &[])];
    let t = pending("t", "web", &s);
    let mut sched = Scheduler::new(&nodes, &[]);
    for _ in 0..3 {
        let d = sched.schedule(&[&t]);
        assert_eq!(d[0].outcome, Outcome::Assign("a".into()));
    }
}

#[test]
fn invalid_spec_is_a_no_fit() {
    let s = Spec {
        preferences: vec!["pack=node.labels.zone"],
        ..Default::default()
    };
    let d = run(&[node("a", &[])], &[], &[pending("t", "web", &s)]);
    match &d[0].outcome {
        Outcome::NoFit(r) => assert!(
            r.starts_with("no suitable node (placement preference"),
            "{r}"
        ),
        o => panic!("{o:?}"),
    }
}

#[test]
fn batches_keep_services_apart() {
    let plain = Spec::default();
    let nodes = [node("a", &[]), node("b", &[])];
    let mut pend = tasks("w", "web", 2, &plain);
    pend.extend(tasks("d", "db", 2, &plain));
    // Same service, another spec version: a batch of its own, still spread with the others.
    let mut newer = pending("w9", "web", &plain);
    newer.spec_version = 2;
    pend.push(newer);
    let d = run(&nodes, &[], &pend);
    let got: Vec<&str> = d.iter().map(assigned).collect();
    assert_eq!(got, ["a", "b", "a", "b", "a"]);
}

#[test]
fn large_batch_spreads_evenly_with_constraints() {
    let s = Spec {
        constraints: vec!["node.labels.zone!=c", "node.role==worker"],
        ..Default::default()
    };
    let zones = ["a", "b", "c", "d"];
    let nodes: Vec<Node> = (0..2000)
        .map(|i| node(&format!("n{i:05}"), &[("zone", zones[i % 4])]))
        .collect();
    let d = run(&nodes, &[], &tasks("t", "web", 20_000, &s));
    let counts = per_node(&d);
    assert_eq!(counts.len(), 1500, "zone c excluded");
    assert!(counts
        .keys()
        .all(|n| zones[n[1..].parse::<usize>().unwrap_or(0) % 4] != "c"));
    let max = counts.values().max().copied().unwrap_or(0);
    let min = counts.values().min().copied().unwrap_or(0);
    assert!(max - min <= 1, "min {min} max {max}");
}

/// The obvious scheduler: for each task, scan every node and take the best that passes every
/// filter. The heap scheduler must decide exactly the same.
fn reference(nodes: &[Node], existing: &[Task], pend: &[Task]) -> Vec<Outcome> {
    let mut sorted: Vec<&Node> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut free: Vec<i64> = sorted
        .iter()
        .map(|n| {
            n.description
                .as_ref()
                .and_then(|d| d.resources)
                .unwrap_or_default()
                .memory_bytes
        })
        .collect();
    let mut svc: Vec<HashMap<String, u32>> = vec![HashMap::new(); sorted.len()];
    let mut total = vec![0u32; sorted.len()];
    fn count(
        svc: &mut [HashMap<String, u32>],
        total: &mut [u32],
        free: &mut [i64],
        i: usize,
        t: &Task,
    ) {
        *svc[i].entry(t.service_id.clone()).or_insert(0) += 1;
        total[i] += 1;
        free[i] -= t
            .spec
            .as_ref()
            .map(filter::reservations)
            .unwrap_or_default()
            .memory_bytes;
    }
    for t in existing.iter().filter(|t| occupies_node(t)) {
        if let Some(i) = sorted.iter().position(|n| n.id == t.node_id) {
            count(&mut svc, &mut total, &mut free, i, t);
        }
    }
    let mut out = Vec::new();
    for t in pend {
        let spec = t.spec.clone().unwrap_or_default();
        let mem = filter::reservations(&spec).memory_bytes;
        let max = spec.placement.map_or(0, |p| p.max_replicas_per_node);
        let best = (0..sorted.len())
            .filter(|&i| {
                let s = svc[i].get(&t.service_id).copied().unwrap_or(0);
                let ready =
                    sorted[i].status.as_ref().map(|s| s.state()) == Some(NodeState::NodeReady);
                ready && (mem == 0 || mem <= free[i]) && (max == 0 || u64::from(s) < max)
            })
            .min_by_key(|&i| (svc[i].get(&t.service_id).copied().unwrap_or(0), total[i], i));
        out.push(match best {
            Some(i) => {
                count(&mut svc, &mut total, &mut free, i, t);
                Outcome::Assign(sorted[i].id.clone())
            }
            None => Outcome::NoFit(String::new()),
        });
    }
    out
}

#[test]
fn heaps_decide_like_a_full_scan() {
    // A small deterministic generator, so failures reproduce.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    for round in 0..300 {
        let nodes: Vec<Node> = (0..1 + next(12))
            .map(|i| {
                let n = with_memory(
                    node(&format!("n{i:02}"), &[]),
                    [GIB / 2, GIB, 2 * GIB, 4 * GIB][next(4) as usize],
                );
                if next(8) == 0 {
                    with_state(n, NodeState::NodeDown)
                } else {
                    n
                }
            })
            .collect();
        let small = Spec {
            memory: GIB / 2,
            ..Default::default()
        };
        let existing: Vec<Task> = (0..next(20))
            .map(|i| {
                let svc = if next(2) == 0 { "web" } else { "db" };
                running(
                    &format!("e{i}"),
                    svc,
                    &nodes[next(nodes.len() as u64) as usize].id,
                    &small,
                )
            })
            .collect();
        let s = Spec {
            memory: [0, GIB / 2, GIB][next(3) as usize],
            max_per_node: next(4),
            ..Default::default()
        };
        let pend = tasks("t", "web", 1 + next(30) as usize, &s);
        let got: Vec<Outcome> = run(&nodes, &existing, &pend)
            .into_iter()
            .map(|d| match d.outcome {
                Outcome::NoFit(_) => Outcome::NoFit(String::new()),
                o => o,
            })
            .collect();
        assert_eq!(got, reference(&nodes, &existing, &pend), "round {round}");
    }
}

fn publishing(mut t: Task, ports: &[(&str, u32, &str)]) -> Task {
    t.endpoint = Some(super::filter::tests::endpoint(ports));
    t
}

#[test]
fn host_mode_ports_take_a_node() {
    let plain = Spec::default();
    let host80 = [("tcp", 80, "host")];
    let nodes = [node("a", &[]), node("b", &[])];
    let on = |id: &str, n: &str, ports: &[(&str, u32, &str)]| {
        publishing(running(id, "web", n, &plain), ports)
    };
    let stopping = |id: &str, n: &str, state: TaskState| {
        let mut t = on(id, n, &host80);
        t.desired_state = TaskState::TaskShutdown as i32;
        if let Some(st) = t.status.as_mut() {
            st.state = state as i32;
        }
        t
    };
    let conflict = "no suitable node (host-mode port already in use on 2 nodes)";
    // (existing tasks, how many new tasks publishing tcp/80 in host mode, expected outcomes)
    let cases: Vec<(Vec<Task>, usize, Vec<&str>)> = vec![
        // Two tasks of one batch never share a node; the third finds none.
        (vec![], 3, vec!["a", "b", conflict]),
        // A node already running one is skipped, whatever service the task belongs to.
        (vec![on("e", "a", &host80)], 1, vec!["b"]),
        (
            vec![on("e", "a", &host80), on("f", "b", &host80)],
            1,
            vec![conflict],
        ),
        // Another port, another protocol or an ingress-mode port do not conflict.
        (
            vec![
                on("e", "a", &[("tcp", 81, "host")]),
                on("f", "a", &[("udp", 80, "host")]),
                on("g", "a", &[("tcp", 80, "ingress")]),
            ],
            2,
            vec!["b", "a"],
        ),
        // A task told to shut down holds its port until it has stopped.
        (
            vec![stopping("e", "a", TaskState::TaskRunning)],
            1,
            vec!["b"],
        ),
        (
            vec![stopping("e", "a", TaskState::TaskShutdown)],
            1,
            vec!["a"],
        ),
        (
            vec![stopping("e", "a", TaskState::TaskFailed)],
            1,
            vec!["a"],
        ),
    ];
    for (i, (existing, n, want)) in cases.into_iter().enumerate() {
        let pend: Vec<Task> = tasks("t", "web", n, &plain)
            .into_iter()
            .map(|t| publishing(t, &host80))
            .collect();
        let got: Vec<String> = run(&nodes, &existing, &pend)
            .into_iter()
            .map(|d| match d.outcome {
                Outcome::Assign(n) => n,
                Outcome::NoFit(r) => r,
            })
            .collect();
        assert_eq!(got, want, "case {i}");
    }
}

#[test]
fn host_mode_ports_of_node_bound_tasks() {
    let plain = Spec::default();
    let host80 = [("tcp", 80, "host")];
    let nodes = [node("a", &[])];
    let bound = |id: &str| {
        let mut t = publishing(pending(id, "mon", &plain), &host80);
        t.node_id = "a".into();
        t
    };
    let mut sched = Scheduler::new(&nodes, &[]);
    let first = bound("g1");
    let second = bound("g2");
    // The same task scheduled again does not conflict with itself; another one does.
    for _ in 0..2 {
        assert_eq!(
            sched.schedule(&[&first])[0].outcome,
            Outcome::Assign("a".into())
        );
    }
    assert_eq!(
        sched.schedule(&[&second])[0].outcome,
        Outcome::NoFit("no suitable node (host-mode port already in use on 1 node)".into())
    );
}
