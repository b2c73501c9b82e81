//! Scheduler throughput: placements per second for 100,000 pending tasks on 10,000 nodes.
//!
//! `cargo bench -p shoal-manager --bench scheduler` prints one row per scenario; the best of a few
//! runs is shown, and "incl. build" also counts building the scheduler's indexes from the store.

use std::time::{Duration, Instant};

use shoal_manager::scheduler::{Outcome, Scheduler};
use shoal_proto::v1::{
    Node, NodeAvailability, NodeDescription, NodeRole, NodeSpec, NodeState, NodeStatus, Placement,
    ResourceRequirements, Resources, Task, TaskSpec, TaskState, TaskStatus,
};

const NODES: usize = 10_000;
const TASKS: usize = 100_000;
const RUNS: usize = 3;
const ZONES: usize = 8;

struct Scenario {
    name: &'static str,
    services: usize,
    constraints: &'static [&'static str],
    preferences: &'static [&'static str],
    memory: i64,
    /// Tasks already running before the batch, spread round-robin.
    existing: usize,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "1 service, spread only",
        services: 1,
        constraints: &[],
        preferences: &[],
        memory: 0,
        existing: 0,
    },
    Scenario {
        name: "1 service, 2 constraints",
        services: 1,
        constraints: &["node.labels.zone!=z3", "node.role==worker"],
        preferences: &[],
        memory: 0,
        existing: 0,
    },
    Scenario {
        name: "1 service, constraint + spread=zone",
        services: 1,
        constraints: &["node.labels.zone!=z3"],
        preferences: &["spread=node.labels.zone"],
        memory: 0,
        existing: 0,
    },
    Scenario {
        name: "1 service, constraint + memory, 100k running",
        services: 1,
        constraints: &["node.labels.zone!=z3"],
        preferences: &[],
        memory: 64 << 20,
        existing: 100_000,
    },
    Scenario {
        name: "100 services x 1,000, constraint + spread",
        services: 100,
        constraints: &["node.labels.zone!=z3"],
        preferences: &["spread=node.labels.zone"],
        memory: 0,
        existing: 0,
    },
    Scenario {
        name: "1,000 services x 100, constraint",
        services: 1_000,
        constraints: &["node.labels.zone!=z3"],
        preferences: &[],
        memory: 0,
        existing: 0,
    },
    Scenario {
        name: "10,000 services x 10, constraint",
        services: 10_000,
        constraints: &["node.labels.zone!=z3"],
        preferences: &[],
        memory: 0,
        existing: 0,
    },
];

fn node(i: usize) -> Node {
    Node {
        id: format!("node{i:020}"),
        spec: Some(NodeSpec {
            role: NodeRole::RoleWorker as i32,
            availability: NodeAvailability::AvailabilityActive as i32,
            labels: [("zone".to_string(), format!("z{}", i % ZONES))].into(),
        }),
        description: Some(NodeDescription {
            hostname: format!("host{i}"),
            resources: Some(Resources {
                nano_cpus: 16_000_000_000,
                memory_bytes: 64 << 30,
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

fn task(i: usize, s: &Scenario, service: usize, node_id: Option<&str>) -> Task {
    Task {
        id: format!("task{i:021}"),
        service_id: format!("service{service:018}"),
        spec: Some(TaskSpec {
            resources: Some(ResourceRequirements {
                reservations: Some(Resources {
                    nano_cpus: 0,
                    memory_bytes: s.memory,
                }),
                ..Default::default()
            }),
            placement: Some(Placement {
                constraints: s.constraints.iter().map(|c| c.to_string()).collect(),
                preferences: s.preferences.iter().map(|c| c.to_string()).collect(),
                max_replicas_per_node: 0,
                platforms: Vec::new(),
            }),
            ..Default::default()
        }),
        spec_version: 1,
        node_id: node_id.unwrap_or_default().to_string(),
        status: Some(TaskStatus {
            state: if node_id.is_some() {
                TaskState::TaskRunning
            } else {
                TaskState::TaskPending
            } as i32,
            ..Default::default()
        }),
        desired_state: TaskState::TaskRunning as i32,
        ..Default::default()
    }
}

fn main() {
    let nodes: Vec<Node> = (0..NODES).map(node).collect();
    println!("scheduler: {TASKS} pending tasks on {NODES} nodes (best of {RUNS} runs)\n");
    println!(
        "| {:<45} | {:>12} | {:>16} | {:>24} |",
        "scenario", "schedule", "placements/s", "placements/s incl. build"
    );
    println!("|{:-<47}|{:->14}|{:->18}|{:->26}|", "", "", "", "");
    for s in SCENARIOS {
        let per_service = TASKS / s.services;
        let pending: Vec<Task> = (0..TASKS)
            .map(|i| task(i, s, i / per_service, None))
            .collect();
        let existing: Vec<Task> = (0..s.existing)
            .map(|i| task(TASKS + i, s, 1_000 + i % 10, Some(&nodes[i % NODES].id)))
            .collect();
        let refs: Vec<&Task> = pending.iter().collect();
        let mut best_schedule = Duration::MAX;
        let mut best_total = Duration::MAX;
        for _ in 0..RUNS {
            let start = Instant::now();
            let mut sched = Scheduler::new(&nodes, &existing);
            let built = Instant::now();
            let decisions = sched.schedule(&refs);
            let done = Instant::now();
            let placed = decisions
                .iter()
                .filter(|d| matches!(d.outcome, Outcome::Assign(_)))
                .count();
            assert_eq!(placed, TASKS, "{}: every task fits", s.name);
            best_schedule = best_schedule.min(done - built);
            best_total = best_total.min(done - start);
        }
        let rate = |d: Duration| TASKS as f64 / d.as_secs_f64();
        println!(
            "| {:<45} | {:>9.1} ms | {:>16.0} | {:>24.0} |",
            s.name,
            best_schedule.as_secs_f64() * 1e3,
            rate(best_schedule),
            rate(best_total)
        );
    }
}
