//! The orchestrator: turns a service into the tasks it should have. Pure decision logic: it reads a
//! service, its tasks and the nodes, and returns a [`Plan`] that a driver writes to the store.
//!
//! A replicated service has slots `1..=replicas`; a global service has one slot per eligible node
//! (tasks have slot 0 and are keyed by node). Each slot holds at most one task meant to run (its
//! *current* task) plus a short history of ended tasks; a restart is a new task in the same slot.

pub mod restart;
pub mod update;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use shoal_proto::spec::port_protocol;
use shoal_proto::v1::{
    EndpointSpec, Meta, Node, NodeAvailability, NodeState, PortConfig, RestartPolicy, Service,
    ServiceMode, Task, TaskState, TaskStatus,
};

use crate::scheduler::constraint;
use restart::Restart;
use update::Memory;

/// How many ended tasks a slot keeps for `service ps` before the oldest are removed.
pub const TASK_HISTORY_LIMIT: usize = 5;

/// How long a task on a drained node keeps running while its replacement makes its way to
/// RUNNING elsewhere (pulling an image included); past this it is stopped anyway, since a drain
/// must end.
pub const DRAIN_HOLD_NS: i64 = 60_000_000_000;

/// How long a slot's replacement waits for its old task to stop (stop-first): swarm's
/// `defaultOldTaskTimeout`. Past it, or as soon as the old task's node is down, it starts anyway.
pub const OLD_TASK_TIMEOUT_NS: i64 = 60_000_000_000;

/// One change the orchestrator wants written to the store.
// `CreateTask(Task)` is the agreed interface (INTERFACES.md); plans are short-lived, so the size
// difference between variants costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create this task (new: to be allocated, then scheduled).
    CreateTask(Task),
    /// Move a task's desired state forward (to shut it down).
    SetDesired {
        /// The task.
        task_id: String,
        /// Its new desired state.
        desired: TaskState,
    },
    /// Delete an ended task from the store.
    RemoveTask(String),
    /// Write the service (its update status, or its spec for an automatic rollback); a
    /// whole-object put carrying the version it was read at.
    PutService(Box<Service>),
}

/// What to do for a service now, and when to look again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Shutdowns (by task id), then creations (by slot, then node id), then removals (by task id).
    pub actions: Vec<Action>,
    /// Reconcile again at this time (unix ns) even if nothing changes: a restart delay runs out.
    pub wake_at_ns: Option<i64>,
}

impl Plan {
    /// Whether there is nothing to do now.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// Newest last: by creation time, then id.
fn age_key(task: &Task) -> (i64, &str) {
    (task.meta.map_or(0, |m| m.created_at), task.id.as_str())
}

/// Collects actions while reconciling; sorts them once at the end.
#[derive(Default)]
struct Builder {
    shutdown: BTreeSet<String>,
    create: Vec<Task>,
    remove: BTreeSet<String>,
    wake_at_ns: Option<i64>,
}

impl Builder {
    fn shut_down(&mut self, task: &Task) {
        if task.desired_state() < TaskState::TaskShutdown {
            self.shutdown.insert(task.id.clone());
        }
    }

    fn wake_at(&mut self, at: i64) {
        self.wake_at_ns = Some(self.wake_at_ns.map_or(at, |w| w.min(at)));
    }

    fn finish(mut self) -> Plan {
        // A task removed outright needs no shutdown first.
        let remove = &self.remove;
        self.shutdown.retain(|id| !remove.contains(id));
        self.create
            .sort_by(|a, b| (a.slot, &a.node_id).cmp(&(b.slot, &b.node_id)));
        let actions = self
            .shutdown
            .into_iter()
            .map(|task_id| Action::SetDesired {
                task_id,
                desired: TaskState::TaskShutdown,
            })
            .chain(self.create.into_iter().map(Action::CreateTask))
            .chain(self.remove.into_iter().map(Action::RemoveTask))
            .collect();
        Plan {
            actions,
            wake_at_ns: self.wake_at_ns,
        }
    }
}

/// How one slot should be reconciled.
struct SlotGoal<'a> {
    /// The slot should hold a task meant to run (false: scaled away, or its node is no longer
    /// eligible for a global service).
    wanted: bool,
    /// The node of a running task is gone, down or drained: replace the task elsewhere.
    lost: &'a dyn Fn(&Task) -> bool,
    /// The task's node is up but drained: the task is lost, yet it keeps running until its
    /// replacement does (see [`hold_for_replacement`]).
    draining: &'a dyn Fn(&Task) -> bool,
    restart: &'a RestartPolicy,
    /// The task was made from an older spec of the service (see [`is_outdated`]).
    outdated: &'a dyn Fn(&Task) -> bool,
    /// When the orchestrator first saw this task asked to stop while it still ran.
    stop_seen: &'a dyn Fn(&Task) -> i64,
}

/// Whether `old`, a task of an older spec, keeps running because `replacement` (made from the
/// current spec) is not RUNNING yet: the updater's start-first order. It ends when the
/// replacement runs (or when a rollback makes `old` current again); a replacement that fails is
/// restarted by the restart policy while `old` keeps serving.
fn start_first_hold(old: &Task, replacement: &Task, goal: &SlotGoal) -> bool {
    goal.wanted
        && (goal.outdated)(old)
        && !(goal.outdated)(replacement)
        && !(goal.lost)(old)
        && !old.observed_state().is_terminal()
        && replacement.observed_state() != TaskState::TaskRunning
}

/// When a slot without a task meant to run may get its new one: an old-spec task of the slot
/// still stopping on its node (a stop-first update) is waited for, until it stops, its node is lost, or
/// [`OLD_TASK_TIMEOUT_NS`] after its stop was seen. `None`: now.
fn stop_first_wait(tasks: &[&Task], goal: &SlotGoal, now_ns: i64) -> Option<i64> {
    tasks
        .iter()
        .filter(|t| t.desired_state() >= TaskState::TaskShutdown && (goal.outdated)(t))
        .filter(|t| t.observed_state().is_active() && !(goal.lost)(t))
        .map(|t| (goal.stop_seen)(t).saturating_add(OLD_TASK_TIMEOUT_NS))
        .filter(|until| now_ns < *until)
        .max()
}

/// Whether `old`, a task of a drained node, keeps running for now because `replacement`, the
/// slot's current task, is on its way to RUNNING; `Err(at)` when it keeps running until `at`.
///
/// Drain stops a node's tasks only after their replacements run elsewhere (the wording;
/// swarm stops them at once), so a service does not lose capacity during a drain. The old task is
/// stopped anyway as soon as the replacement ended, found no node, or took longer than
/// [`DRAIN_HOLD_NS`].
fn hold_for_replacement(
    old: &Task,
    replacement: &Task,
    goal: &SlotGoal,
    now_ns: i64,
) -> Option<i64> {
    let st = replacement.status.as_ref();
    let state = replacement.observed_state();
    // Waiting for a node (or for an address) with an error: it may wait for a long time.
    let unschedulable = state < TaskState::TaskAssigned && st.is_some_and(|s| !s.err.is_empty());
    let until = replacement.meta.map_or(0, |m| m.created_at) + DRAIN_HOLD_NS;
    let hold = goal.wanted
        && (goal.draining)(old)
        && !old.observed_state().is_terminal()
        && state < TaskState::TaskRunning
        && !unschedulable
        && now_ns < until;
    hold.then_some(until)
}

/// Reconciles one slot (or one node of a global service); `new_task` makes its next task.
fn reconcile_slot(
    tasks: &mut [&Task],
    goal: &SlotGoal,
    now_ns: i64,
    plan: &mut Builder,
    new_task: &dyn Fn() -> Task,
) {
    tasks.sort_by(|a, b| age_key(a).cmp(&age_key(b)));
    let mut runnable = tasks
        .iter()
        .filter(|t| t.desired_state() <= TaskState::TaskRunning)
        .copied()
        .collect::<Vec<_>>();
    // The slot's current task: the newest made from the current spec, else the newest.
    let pick = runnable
        .iter()
        .rposition(|t| !(goal.outdated)(t))
        .or(runnable.len().checked_sub(1));
    let current = pick.map(|i| runnable.remove(i));
    // Two tasks meant to run in one slot: keep the current one, unless an older one is a
    // drained node's task, or an old-spec task of a start-first update, waiting for the
    // current one (its replacement) to run.
    for t in runnable {
        match current.and_then(|c| hold_for_replacement(t, c, goal, now_ns)) {
            Some(until) => plan.wake_at(until),
            None if current.is_some_and(|c| start_first_hold(t, c, goal)) => {}
            None => plan.shut_down(t),
        }
    }
    match current {
        _ if !goal.wanted => {
            if let Some(t) = current {
                plan.shut_down(t);
            }
        }
        None => match stop_first_wait(tasks, goal, now_ns) {
            Some(until) => plan.wake_at(until),
            None => plan.create.push(new_task()),
        },
        Some(t) if t.observed_state().is_terminal() => {
            match restart::decide(goal.restart, t, tasks, now_ns) {
                Restart::Now => {
                    plan.shut_down(t);
                    plan.create.push(new_task());
                }
                Restart::At(at) => plan.wake_at(at),
                Restart::Never => {}
            }
        }
        Some(t) if (goal.lost)(t) => {
            // A drained node's task runs on until its replacement does (next rounds decide);
            // a down or removed node's task is replaced at once.
            if !(goal.draining)(t) {
                plan.shut_down(t);
            }
            plan.create.push(new_task());
        }
        // A task of an older spec is the updater's to replace, at its pace (update.rs).
        Some(_) => {}
    }
    // History: ended tasks no longer meant to run, including those shut down just now.
    let mut history: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.observed_state().is_terminal())
        .filter(|t| t.desired_state() >= TaskState::TaskShutdown || plan.shutdown.contains(&t.id))
        .copied()
        .collect();
    if history.len() > TASK_HISTORY_LIMIT {
        let excess = history.len() - TASK_HISTORY_LIMIT;
        // Oldest first (tasks are sorted by age).
        for t in history.drain(..excess) {
            plan.remove.insert(t.id.clone());
        }
    }
}

/// Makes a new task for `service` (NEW: the allocator gives it its addresses, then it is pending) in `slot` (global: bound to `node_id`).
pub(crate) fn new_task(service: &Service, slot: u64, node_id: &str, now_ns: i64) -> Task {
    Task {
        id: shoal_proto::new_id(),
        meta: Some(Meta::new_at(now_ns)),
        service_id: service.id.clone(),
        service_name: service
            .spec
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default(),
        slot,
        node_id: node_id.to_string(),
        spec: service.spec.as_ref().and_then(|s| s.task.clone()),
        spec_version: service.spec_version,
        status: Some(TaskStatus {
            state: TaskState::TaskNew as i32,
            timestamp: now_ns,
            message: "new task".to_string(),
            ..Default::default()
        }),
        desired_state: TaskState::TaskRunning as i32,
        ..Default::default()
    }
}

/// What of an endpoint spec a task depends on: whether it joins `ingress` (the service
/// publishes ingress-mode ports) and the host-mode ports its node publishes.
fn endpoint_needs(spec: Option<&EndpointSpec>) -> (bool, Vec<(String, u32, u32)>) {
    let ports = spec.map(|e| e.ports.as_slice()).unwrap_or_default();
    let ingress = ports.iter().any(PortConfig::is_ingress);
    let mut host: Vec<(String, u32, u32)> = ports
        .iter()
        .filter(|p| !p.is_ingress())
        .map(|p| {
            let proto = port_protocol(&p.protocol);
            (proto.to_string(), p.target_port, p.published_port)
        })
        .collect();
    host.sort();
    (ingress, host)
}

/// Whether going from spec `old` to `new` makes the service's tasks outdated (see
/// [`is_outdated`]): the task template changed, or the ports now need another network set or
/// other host-mode ports. Such a change is a new `spec_version`; others (replicas, ingress port
/// numbers, labels) are not, and keep the running tasks.
pub fn needs_new_tasks(
    old: &shoal_proto::v1::ServiceSpec,
    new: &shoal_proto::v1::ServiceSpec,
) -> bool {
    old.task != new.task
        || endpoint_needs(old.endpoint.as_ref()) != endpoint_needs(new.endpoint.as_ref())
}

/// Whether `task` was made from a spec its service no longer has: its task template differs,
/// or (once allocated) the service's ports now need another network set (ingress joined or
/// left) or other host-mode ports. Other port changes leave tasks alone: the routing mesh
/// follows the service's endpoint.
pub fn is_outdated(service: &Service, task: &Task) -> bool {
    let spec = service.spec.as_ref();
    if task.spec.as_ref() != spec.and_then(|s| s.task.as_ref()) {
        return true;
    }
    if task.observed_state() == TaskState::TaskNew {
        return false; // the allocator gives it the service's current endpoint
    }
    let had = endpoint_needs(task.endpoint.as_ref().and_then(|e| e.spec.as_ref()));
    had != endpoint_needs(spec.and_then(|s| s.endpoint.as_ref()))
}

fn node_state(node: &Node) -> NodeState {
    node.status
        .as_ref()
        .map_or(NodeState::NodeUnknown, |s| s.state())
}

fn node_availability(node: &Node) -> NodeAvailability {
    node.spec
        .as_ref()
        .map_or(NodeAvailability::AvailabilityActive, |s| s.availability())
}

/// Reconciles a service (replicated or global) with its tasks and the cluster's nodes, with
/// nothing remembered from earlier rounds (see [`reconcile_with`]).
pub fn reconcile_service(service: &Service, tasks: &[&Task], nodes: &[&Node], now_ns: i64) -> Plan {
    reconcile_with(service, tasks, nodes, now_ns, &Memory::default())
}

/// Reconciles a service (replicated or global) with its tasks and the cluster's nodes: scale,
/// restarts, lost nodes. Tasks of an older spec are left to the updater ([`plan_service`]).
pub fn reconcile_with(
    service: &Service,
    tasks: &[&Task],
    nodes: &[&Node],
    now_ns: i64,
    memory: &Memory,
) -> Plan {
    let Some(spec) = service.spec.as_ref() else {
        // A service without a spec is not something to act on.
        return Plan::default();
    };
    let restart_policy = spec
        .task
        .as_ref()
        .and_then(|t| t.restart)
        .unwrap_or_default();
    let outdated = |t: &Task| is_outdated(service, t);
    let stop_seen = |t: &Task| memory.stop_seen(&t.id).unwrap_or(now_ns);
    let mut plan = Builder::default();
    match spec.mode() {
        ServiceMode::ModeReplicated => {
            let by_id: HashMap<&str, &Node> = nodes.iter().map(|n| (n.id.as_str(), *n)).collect();
            // A task is lost when its node left, is down, or is being drained.
            let lost = |t: &Task| {
                !t.node_id.is_empty()
                    && by_id.get(t.node_id.as_str()).is_none_or(|n| {
                        node_state(n) == NodeState::NodeDown
                            || node_availability(n) == NodeAvailability::AvailabilityDrain
                    })
            };
            let draining = |t: &Task| {
                by_id.get(t.node_id.as_str()).is_some_and(|n| {
                    node_state(n) == NodeState::NodeReady
                        && node_availability(n) == NodeAvailability::AvailabilityDrain
                })
            };
            let mut slots: BTreeMap<u64, Vec<&Task>> =
                (1..=spec.replicas).map(|s| (s, Vec::new())).collect();
            for t in tasks {
                slots.entry(t.slot).or_default().push(t);
            }
            for (slot, mut slot_tasks) in slots {
                let goal = SlotGoal {
                    wanted: (1..=spec.replicas).contains(&slot),
                    lost: &lost,
                    draining: &draining,
                    restart: &restart_policy,
                    outdated: &outdated,
                    stop_seen: &stop_seen,
                };
                let make = || new_task(service, slot, "", now_ns);
                reconcile_slot(&mut slot_tasks, &goal, now_ns, &mut plan, &make);
            }
        }
        ServiceMode::ModeGlobal => {
            let constraints = spec
                .task
                .as_ref()
                .and_then(|t| t.placement.as_ref())
                .map(|p| constraint::parse_all(&p.constraints));
            let mut per_node: BTreeMap<&str, (bool, Vec<&Task>)> = BTreeMap::new();
            for n in nodes {
                let eligible = node_state(n) == NodeState::NodeReady
                    && node_availability(n) != NodeAvailability::AvailabilityDrain
                    && match &constraints {
                        None => true,
                        Some(Ok(cs)) => constraint::matches_all(cs, n),
                        // Validation refuses bad constraints; if one slips through, no node fits.
                        Some(Err(_)) => false,
                    };
                per_node.insert(&n.id, (eligible, Vec::new()));
            }
            for t in tasks {
                per_node
                    .entry(t.node_id.as_str())
                    .or_insert((false, Vec::new()))
                    .1
                    .push(t);
            }
            let never_lost = |_: &Task| false;
            for (node_id, (eligible, mut node_tasks)) in per_node {
                let goal = SlotGoal {
                    wanted: eligible,
                    lost: &never_lost,
                    draining: &never_lost,
                    restart: &restart_policy,
                    outdated: &outdated,
                    stop_seen: &stop_seen,
                };
                let make = || new_task(service, 0, node_id, now_ns);
                reconcile_slot(&mut node_tasks, &goal, now_ns, &mut plan, &make);
            }
        }
    }
    plan.finish()
}

/// Everything to do for a service now: reconciliation first, then the rolling update of the
/// slots reconciliation left alone (the one place the two are coordinated).
pub fn plan_service(
    service: &Service,
    tasks: &[&Task],
    nodes: &[&Node],
    now_ns: i64,
    memory: &Memory,
) -> Plan {
    let mut plan = reconcile_with(service, tasks, nodes, now_ns, memory);
    // Slots getting a new task from reconciliation (restart, lost node, stop-first
    // replacement): busy this round, whatever the updater would do with them.
    let touched: BTreeSet<update::SlotKey> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::CreateTask(t) => Some(update::slot_key(t)),
            _ => None,
        })
        .collect();
    let more = update::plan_update(service, tasks, now_ns, memory, &touched);
    plan.actions.extend(more.actions);
    plan.wake_at_ns = match (plan.wake_at_ns, more.wake_at_ns) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    plan
}

/// Winds down the tasks of a service that no longer exists: tasks still meant to run are shut
/// down, and tasks that ended (or never reached a node) are removed.
pub fn reconcile_removed(tasks: &[&Task]) -> Plan {
    let mut plan = Builder::default();
    for t in tasks {
        if t.observed_state().is_terminal() || t.node_id.is_empty() {
            plan.remove.insert(t.id.clone());
        } else {
            plan.shut_down(t);
        }
    }
    plan.finish()
}

#[cfg(test)]
mod tests;
