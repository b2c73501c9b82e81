//! The scheduler: assigns pending tasks to nodes. Pure decision logic: it is built from the nodes
//! and tasks of the store, and returns decisions that a driver writes back.
//!
//! Tasks of the same service and spec form a batch: the static filters run once per node per
//! batch, and the batch's tasks are then placed one by one through heaps (see [`tree`]), so a
//! placement costs a few heap operations however many nodes there are.

pub mod constraint;
pub mod depends;
pub mod filter;
mod tree;

use std::collections::HashMap;
use std::sync::Arc;

use shoal_proto::v1::{Endpoint, Node, Resources, Task, TaskSpec, TaskState};

use filter::{
    first_failure, host_ports, reservations, FailureCounts, Filter, HostPort, NodeInfo,
    Requirements,
};
use tree::{Branch, Candidate};

/// What became of one pending task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Assign the task to this node id.
    Assign(String),
    /// No node can take the task now; the reason as docker prints it.
    NoFit(String),
}

/// The scheduler's decision for one pending task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The pending task.
    pub task_id: String,
    /// Where it goes, or why nowhere.
    pub outcome: Outcome,
}

/// A task counted on a node that may come back as pending (a global task with its node preset,
/// or a task this scheduler assigned); its counts are taken back before it is scheduled again.
#[derive(Debug, Clone)]
struct Counted {
    node: usize,
    service_id: Arc<str>,
    reserved: Resources,
    /// Empty for most tasks (no allocation then).
    host_ports: Vec<HostPort>,
}

/// Assigns pending tasks to nodes, keeping its own indexes of what each node holds.
#[derive(Debug, Clone)]
pub struct Scheduler {
    /// Sorted by node id, so a node's index breaks ties the way its id does.
    nodes: Vec<NodeInfo>,
    by_id: HashMap<String, usize>,
    /// Service id -> node index -> tasks of the service occupying the node.
    service_tasks: HashMap<String, HashMap<usize, u32>>,
    counted: HashMap<String, Counted>,
}

/// Whether a task takes room on its node: assigned there, meant to run, and not ended.
pub fn occupies_node(task: &Task) -> bool {
    !task.node_id.is_empty()
        && task.desired_state() <= TaskState::TaskRunning
        && !task.observed_state().is_terminal()
}

/// Pending tasks of one service with one spec, placed together.
struct Batch<'a> {
    service_id: &'a str,
    spec: Option<&'a TaskSpec>,
    /// The endpoint the tasks were allocated with (its host-mode ports take room on a node).
    endpoint: Option<&'a Endpoint>,
    /// Indexes into the pending slice.
    members: Vec<usize>,
}

impl Scheduler {
    /// Builds the scheduler's view from all nodes and all current tasks.
    pub fn new<'a>(
        nodes: impl IntoIterator<Item = &'a Node>,
        tasks: impl IntoIterator<Item = &'a Task>,
    ) -> Self {
        let mut nodes: Vec<NodeInfo> = nodes.into_iter().map(NodeInfo::new).collect();
        nodes.sort_by(|a, b| a.node.id.cmp(&b.node.id));
        let by_id = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.node.id.clone(), i))
            .collect();
        let mut sched = Scheduler {
            nodes,
            by_id,
            service_tasks: HashMap::new(),
            counted: HashMap::new(),
        };
        for task in tasks {
            let Some(&node) = sched.by_id.get(&task.node_id) else {
                continue;
            };
            let ports = host_ports(task.endpoint.as_ref());
            if !occupies_node(task) {
                // A task told to shut down still holds its host ports until it has stopped.
                if !task.observed_state().is_terminal() {
                    add_host_ports(&mut sched.nodes[node], &ports);
                }
                continue;
            }
            let reserved = task.spec.as_ref().map(reservations).unwrap_or_default();
            sched.add(node, &task.service_id, reserved, &ports);
            if task.observed_state() < TaskState::TaskAssigned {
                sched.counted.insert(
                    task.id.clone(),
                    Counted {
                        node,
                        service_id: Arc::from(task.service_id.as_str()),
                        reserved,
                        host_ports: ports,
                    },
                );
            }
        }
        sched
    }

    /// Decides a node for each pending task (one decision per task, in the order given), and
    /// counts every assignment so later decisions see it.
    pub fn schedule(&mut self, pending: &[&Task]) -> Vec<Decision> {
        let mut out: Vec<Option<Outcome>> = vec![None; pending.len()];
        if !self.counted.is_empty() {
            for task in pending {
                if let Some(c) = self.counted.remove(&task.id) {
                    self.remove(c);
                }
            }
        }

        // Tasks bound to a node (global services) first: they have nowhere else to go.
        let mut batches: Vec<Batch> = Vec::new();
        let mut batch_index: HashMap<(&str, u64), Vec<usize>> = HashMap::new();
        for (i, task) in pending.iter().enumerate() {
            if !task.node_id.is_empty() {
                out[i] = Some(self.schedule_on_node(task));
                continue;
            }
            let same = batch_index
                .entry((task.service_id.as_str(), task.spec_version))
                .or_default();
            match same.iter().copied().find(|&b| {
                batches[b].spec == task.spec.as_ref()
                    && batches[b].endpoint == task.endpoint.as_ref()
            }) {
                Some(b) => batches[b].members.push(i),
                None => {
                    same.push(batches.len());
                    batches.push(Batch {
                        service_id: &task.service_id,
                        spec: task.spec.as_ref(),
                        endpoint: task.endpoint.as_ref(),
                        members: vec![i],
                    });
                }
            }
        }
        let mut eligible = HashMap::new();
        for batch in &batches {
            self.schedule_batch(batch, pending, &mut out, &mut eligible);
        }

        pending
            .iter()
            .zip(out)
            .map(|(task, outcome)| Decision {
                task_id: task.id.clone(),
                // Every pending task went through a batch or the node-bound path.
                outcome: outcome.unwrap_or_else(|| Outcome::NoFit("not scheduled".to_string())),
            })
            .collect()
    }

    /// Checks a task bound to its node against that node alone.
    fn schedule_on_node(&mut self, task: &Task) -> Outcome {
        let mut req = match Requirements::from_spec(task.spec.as_ref()) {
            Ok(r) => r,
            Err(e) => return Outcome::NoFit(format!("no suitable node ({e})")),
        };
        req.host_ports = host_ports(task.endpoint.as_ref());
        let Some(&node) = self.by_id.get(&task.node_id) else {
            return Outcome::NoFit(FailureCounts::default().reason());
        };
        let service_tasks = self.service_count(&task.service_id, node);
        match first_failure(&self.nodes[node], &req, service_tasks) {
            Some(f) => {
                let mut failures = FailureCounts::default();
                failures.add(f);
                Outcome::NoFit(failures.reason())
            }
            None => {
                self.assign(node, task, &req);
                Outcome::Assign(task.node_id.clone())
            }
        }
    }

    /// Places a batch of identical tasks: filters once per node, then heap placements.
    /// `eligible` caches, per constraint list, the nodes that pass the static filters.
    fn schedule_batch(
        &mut self,
        batch: &Batch,
        pending: &[&Task],
        out: &mut [Option<Outcome>],
        eligible: &mut HashMap<Vec<String>, Vec<usize>>,
    ) {
        let mut req = match Requirements::from_spec(batch.spec) {
            Ok(r) => r,
            Err(e) => {
                for &i in &batch.members {
                    out[i] = Some(Outcome::NoFit(format!("no suitable node ({e})")));
                }
                return;
            }
        };
        req.host_ports = host_ports(batch.endpoint);
        let Scheduler {
            nodes,
            service_tasks,
            counted,
            ..
        } = self;
        let eligible = eligible
            .entry(req.constraints_key.clone())
            .or_insert_with(|| {
                (0..nodes.len())
                    .filter(|&n| Filter::STATIC.iter().all(|f| f.passes(&nodes[n], &req, 0)))
                    .collect()
            });
        let counts = service_tasks
            .entry(batch.service_id.to_string())
            .or_default();
        let dynamic = Filter::dynamic_for(&req);
        let candidates: Vec<Candidate> = eligible
            .iter()
            .filter_map(|&node| {
                let info = &nodes[node];
                let service_tasks = counts.get(&node).copied().unwrap_or(0);
                dynamic
                    .iter()
                    .all(|f| f.passes(info, &req, service_tasks))
                    .then_some(Candidate {
                        node,
                        service_tasks,
                        tasks: info.tasks,
                    })
            })
            .collect();
        let mut tree = Branch::build(nodes, &req.spread, candidates, batch.members.len());
        let service_id: Arc<str> = Arc::from(batch.service_id);
        let reserved = req.reserved();
        let mut no_fit: Option<String> = None;
        for &i in &batch.members {
            let task = pending[i];
            let placed = tree.place(&mut |node, service_tasks| {
                let fits = dynamic
                    .iter()
                    .all(|f| f.passes(&nodes[node], &req, service_tasks));
                if !fits {
                    return None;
                }
                counted.insert(
                    task.id.clone(),
                    Counted {
                        node,
                        service_id: service_id.clone(),
                        reserved,
                        host_ports: req.host_ports.clone(),
                    },
                );
                let info = &mut nodes[node];
                add_host_ports(info, &req.host_ports);
                Some(record(info, counts, node, reserved))
            });
            out[i] = Some(match placed {
                Some(node) => Outcome::Assign(nodes[node].node.id.clone()),
                None => Outcome::NoFit(
                    no_fit
                        .get_or_insert_with(|| explain(nodes, counts, &req))
                        .clone(),
                ),
            });
        }
    }

    fn service_count(&self, service_id: &str, node: usize) -> u32 {
        self.service_tasks
            .get(service_id)
            .and_then(|c| c.get(&node))
            .copied()
            .unwrap_or(0)
    }

    /// Records `task` on `node`.
    fn assign(&mut self, node: usize, task: &Task, req: &Requirements) {
        let reserved = req.reserved();
        self.counted.insert(
            task.id.clone(),
            Counted {
                node,
                service_id: Arc::from(task.service_id.as_str()),
                reserved,
                host_ports: req.host_ports.clone(),
            },
        );
        self.add(node, &task.service_id, reserved, &req.host_ports);
    }

    fn add(&mut self, node: usize, service_id: &str, reserved: Resources, ports: &[HostPort]) {
        let counts = match self.service_tasks.get_mut(service_id) {
            Some(c) => c,
            None => self
                .service_tasks
                .entry(service_id.to_string())
                .or_default(),
        };
        add_host_ports(&mut self.nodes[node], ports);
        record(&mut self.nodes[node], counts, node, reserved);
    }

    fn remove(&mut self, c: Counted) {
        if let Some(count) = self
            .service_tasks
            .get_mut(&*c.service_id)
            .and_then(|s| s.get_mut(&c.node))
        {
            *count = count.saturating_sub(1);
        }
        if let Some(info) = self.nodes.get_mut(c.node) {
            info.tasks = info.tasks.saturating_sub(1);
            info.free_cpu += c.reserved.nano_cpus;
            info.free_memory += c.reserved.memory_bytes;
            for port in &c.host_ports {
                if let Some(n) = info.host_ports.get_mut(port) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        info.host_ports.remove(port);
                    }
                }
            }
        }
    }
}

/// Why no node takes a task now: every node's first failing filter, counted.
fn explain(nodes: &[NodeInfo], service_tasks: &HashMap<usize, u32>, req: &Requirements) -> String {
    let mut failures = FailureCounts::default();
    for (node, info) in nodes.iter().enumerate() {
        let count = service_tasks.get(&node).copied().unwrap_or(0);
        if let Some(f) = first_failure(info, req, count) {
            failures.add(f);
        }
    }
    failures.reason()
}

/// Marks `ports` taken on a node.
fn add_host_ports(info: &mut NodeInfo, ports: &[HostPort]) {
    for port in ports {
        *info.host_ports.entry(*port).or_insert(0) += 1;
    }
}

/// Counts one more task of a service on a node; returns its new (service tasks, tasks) counts.
fn record(
    info: &mut NodeInfo,
    service_tasks: &mut HashMap<usize, u32>,
    node: usize,
    reserved: Resources,
) -> (u32, u32) {
    let count = service_tasks.entry(node).or_insert(0);
    *count += 1;
    info.tasks += 1;
    info.free_cpu -= reserved.nano_cpus;
    info.free_memory -= reserved.memory_bytes;
    (*count, info.tasks)
}

#[cfg(test)]
mod tests;
