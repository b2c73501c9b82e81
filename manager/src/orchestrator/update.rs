//! The updater: replaces the tasks of an older spec slot by slot, as swarmkit's updater does
//! (`manager/orchestrator/update/updater.go`), with the service's `UpdateConfig` (its rollback
//! config while rolling back).
//!
//! Pure decision logic, and no state of its own that matters: everything it needs follows from
//! the store, so a new leader resumes an update where the old one left it.
//! - Which slots are *dirty*: those whose only tasks meant to run are of an older spec
//!   ([`super::is_outdated`], swarm's deep-equal), so slots already updated are never redone.
//! - Which tasks are *of this update*: those with the service's `spec_version`. Every change
//!   that outdates tasks, a rollback included, gets a fresh version ([`next_spec_version`]), so
//!   tasks made before it never count as this update's.
//! - Where the update is: `Service.update_status` (swarm's states and messages).
//! - A worker is busy while its slot's new task is on its way to RUNNING (or the old task is
//!   still stopping, stop-first), then for `delay` after the new task reached RUNNING.
//!
//! [`Memory`] only keeps what the store forgets (when a task was seen RUNNING once it has ended,
//! when a stop was first seen); a new leader starts with none and errs on the side of counting
//! a failure (see [`failed`]).
//!
//! Beyond swarm: a new task that stays below RUNNING longer than `monitor` plus its
//! healthcheck's start allowance (once STARTING), or that cannot be placed for longer than
//! `monitor`, counts as a failure, so an update never waits forever for a task that will not
//! come up.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use shoal_proto::v1::update_config::{FailureAction, Order};
use shoal_proto::v1::update_status::State;
use shoal_proto::v1::{Service, ServiceMode, Task, TaskState, UpdateConfig, UpdateStatus};

use super::{is_outdated, needs_new_tasks, new_task, Action, Plan};

/// The monitor period when the config leaves it at 0 (swarm's default).
pub const DEFAULT_MONITOR_NS: i64 = 5_000_000_000;

/// docker's healthcheck defaults, for fields left to the image (which the manager cannot see).
const DEFAULT_HEALTH_INTERVAL_NS: i64 = 30_000_000_000;
const DEFAULT_HEALTH_TIMEOUT_NS: i64 = 30_000_000_000;

const SECOND_NS: i64 = 1_000_000_000;

/// A slot: (slot number, "") for a replicated service, (0, node id) for a global one.
pub type SlotKey = (u64, String);

/// The slot a task belongs to.
pub fn slot_key(t: &Task) -> SlotKey {
    if t.slot == 0 {
        (0, t.node_id.clone())
    } else {
        (t.slot, String::new())
    }
}

/// What the orchestrator remembers between rounds that the store does not keep.
#[derive(Debug, Default, Clone)]
pub struct Memory {
    /// When each task was first seen asked to stop while still running (unix ns).
    stop_seen: HashMap<String, i64>,
    /// When each task reached RUNNING (its status timestamp then), kept after it ends.
    running_at: HashMap<String, i64>,
}

impl Memory {
    /// Notes what the round's tasks show; forgets tasks no longer in the store.
    pub fn observe<'a>(&mut self, tasks: impl Iterator<Item = &'a Task>, now_ns: i64) {
        let mut seen = HashSet::new();
        for t in tasks {
            seen.insert(t.id.as_str());
            let state = t.observed_state();
            if t.desired_state() >= TaskState::TaskShutdown && !state.is_terminal() {
                self.stop_seen.entry(t.id.clone()).or_insert(now_ns);
            }
            if state == TaskState::TaskRunning {
                let at = t.status.as_ref().map_or(now_ns, |s| s.timestamp);
                self.running_at.entry(t.id.clone()).or_insert(at);
            }
        }
        self.stop_seen.retain(|id, _| seen.contains(id.as_str()));
        self.running_at.retain(|id, _| seen.contains(id.as_str()));
    }

    /// When the task was first seen asked to stop, if it was.
    pub fn stop_seen(&self, task_id: &str) -> Option<i64> {
        self.stop_seen.get(task_id).copied()
    }

    /// When the task reached RUNNING, if it was seen there.
    pub fn running_at(&self, task_id: &str) -> Option<i64> {
        self.running_at.get(task_id).copied()
    }
}

/// A fresh `spec_version` for a service whose tasks a change outdates: above every version the
/// service, its previous spec and any of its tasks carry, so no task of another spec ever has
/// it (a rollback gets one too).
pub fn next_spec_version<'a>(service: &Service, tasks: impl Iterator<Item = &'a Task>) -> u64 {
    tasks
        .map(|t| t.spec_version)
        .chain([service.spec_version, service.previous_spec_version])
        .max()
        .unwrap_or(0)
        + 1
}

/// The config that applies now, with swarm's defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effective {
    /// Slots replaced at once; 0 = all.
    pub parallelism: u64,
    /// Pause of a worker after its slot's task runs, ns.
    pub delay_ns: i64,
    /// What a failure above the ratio does.
    pub failure_action: FailureAction,
    /// How long a new task's end still counts as a failure after it reached RUNNING, ns.
    pub monitor_ns: i64,
    /// Failures / slots dispatched above this fires the failure action.
    pub max_failure_ratio: f32,
    /// Stop the old task first, or start the new one first.
    pub order: Order,
}

impl Effective {
    /// Fills in swarm's defaults: an unset config is parallelism 1, pause, monitor 5 s,
    /// stop-first; a monitor of 0 is 5 s.
    pub fn of(config: Option<&UpdateConfig>) -> Effective {
        let c = config.copied().unwrap_or(UpdateConfig {
            parallelism: 1,
            ..Default::default()
        });
        Effective {
            parallelism: c.parallelism,
            delay_ns: c.delay_ns.max(0),
            failure_action: c.failure_action(),
            monitor_ns: if c.monitor_ns <= 0 {
                DEFAULT_MONITOR_NS
            } else {
                c.monitor_ns
            },
            max_failure_ratio: c.max_failure_ratio,
            order: c.order(),
        }
    }
}

/// Whether the service's last change is a rollback (then the rollback config applies).
pub fn rolling_back(service: &Service) -> bool {
    matches!(
        update_state(service),
        State::RollbackStarted | State::RollbackPaused | State::RollbackCompleted
    )
}

/// The state of the service's update (UNKNOWN when there is none).
pub fn update_state(service: &Service) -> State {
    service
        .update_status
        .as_ref()
        .map_or(State::Unknown, |s| s.state())
}

/// The config in force for the service now.
pub fn config_of(service: &Service) -> Effective {
    let spec = service.spec.as_ref();
    if rolling_back(service) {
        Effective::of(spec.and_then(|s| s.rollback.as_ref()))
    } else {
        Effective::of(spec.and_then(|s| s.update.as_ref()))
    }
}

/// How long a new task may stay STARTING before it counts as a failure: the monitor period
/// plus what its healthcheck needs to pass once (start period, one interval, one timeout).
fn start_allowance(task: &Task, monitor_ns: i64) -> i64 {
    let health = task
        .spec
        .as_ref()
        .and_then(|s| s.container.as_ref())
        .and_then(|c| c.healthcheck.as_ref());
    let disabled = health.is_some_and(|h| h.test.first().is_some_and(|t| t == "NONE"));
    if disabled {
        return monitor_ns;
    }
    let h = health.cloned().unwrap_or_default();
    let or = |v: i64, d: i64| if v > 0 { v } else { d };
    monitor_ns
        .saturating_add(h.start_period_ns.max(0))
        .saturating_add(or(h.interval_ns, DEFAULT_HEALTH_INTERVAL_NS))
        .saturating_add(or(h.timeout_ns, DEFAULT_HEALTH_TIMEOUT_NS))
}

/// Whether a task of this update is a failure now; `Err(at)`: not yet, look again at `at`.
///
/// A task that ended (other than stopped on request) before RUNNING or within `monitor` of
/// reaching it fails; one whose RUNNING time this leader never saw (it ended before this leader
/// started) counts as a failure too. A task stuck below RUNNING fails as the module doc says.
fn failed(t: &Task, memory: &Memory, cfg: &Effective, now_ns: i64) -> Result<bool, i64> {
    let state = t.observed_state();
    let status = t.status.clone().unwrap_or_default();
    if state.is_terminal() {
        if state == TaskState::TaskShutdown {
            return Ok(false);
        }
        return Ok(match memory.running_at(&t.id) {
            Some(at) => status.timestamp < at.saturating_add(cfg.monitor_ns),
            None => true,
        });
    }
    if state == TaskState::TaskRunning || t.desired_state() > TaskState::TaskRunning {
        return Ok(false);
    }
    let deadline = if state == TaskState::TaskStarting {
        status
            .timestamp
            .saturating_add(start_allowance(t, cfg.monitor_ns))
    } else if state == TaskState::TaskPending && !status.err.is_empty() {
        t.meta
            .map_or(now_ns, |m| m.created_at)
            .saturating_add(cfg.monitor_ns)
    } else {
        return Ok(false);
    };
    if now_ns > deadline {
        Ok(true)
    } else {
        Err(deadline.saturating_add(1))
    }
}

/// One slot as the updater sees it.
#[derive(Default)]
struct Slot<'a> {
    tasks: Vec<&'a Task>,
}

impl<'a> Slot<'a> {
    /// Old-spec tasks meant to run that have not ended: what an update replaces.
    fn old_live(&self, service: &Service) -> Vec<&'a Task> {
        self.tasks
            .iter()
            .filter(|t| t.desired_state() <= TaskState::TaskRunning)
            .filter(|t| !t.observed_state().is_terminal() && is_outdated(service, t))
            .copied()
            .collect()
    }

    /// A task of the current spec meant to run (the newest).
    fn current(&self, service: &Service) -> Option<&'a Task> {
        self.tasks
            .iter()
            .filter(|t| t.desired_state() <= TaskState::TaskRunning && !is_outdated(service, t))
            .max_by_key(|t| (t.meta.map_or(0, |m| m.created_at), t.id.as_str()))
            .copied()
    }

    /// An old-spec task stopped for this slot's replacement that has not stopped yet on its
    /// node (one that never reached a node has nothing to wait for).
    fn stopping_old(&self, service: &Service) -> bool {
        self.tasks.iter().any(|t| {
            t.desired_state() >= TaskState::TaskShutdown
                && t.observed_state().is_active()
                && is_outdated(service, t)
        })
    }
}

/// Where one round leaves the update.
enum Verdict {
    /// Keep going (dispatch and wait).
    Go,
    /// Write this status and do nothing else this round.
    Status(UpdateStatus),
    /// Roll back automatically because of this task.
    Rollback(String),
}

fn status(state: State, message: String, started_at: i64, completed_at: i64) -> UpdateStatus {
    UpdateStatus {
        state: state as i32,
        started_at,
        completed_at,
        message,
    }
}

/// The updater's decisions for a service now. `touched` are the slots reconciliation gives a
/// new task this round (restart, lost node, stop-first replacement): busy, left alone.
pub fn plan_update(
    service: &Service,
    tasks: &[&Task],
    now_ns: i64,
    memory: &Memory,
    touched: &BTreeSet<SlotKey>,
) -> Plan {
    let mut plan = Plan::default();
    let Some(spec) = service.spec.as_ref() else {
        return plan;
    };
    let state = update_state(service);
    // Paused stays paused until the next `service update` (which resets the status).
    if matches!(state, State::Paused | State::RollbackPaused) {
        return plan;
    }
    let cfg = config_of(service);
    let replicated = spec.mode() == ServiceMode::ModeReplicated;
    let mut slots: BTreeMap<SlotKey, Slot> = BTreeMap::new();
    for t in tasks {
        let key = slot_key(t);
        if replicated && !(1..=spec.replicas).contains(&key.0) {
            continue; // scaled away: reconciliation's
        }
        slots.entry(key).or_default().tasks.push(t);
    }
    let wake = |plan: &mut Plan, at: i64| {
        plan.wake_at_ns = Some(plan.wake_at_ns.map_or(at, |w| w.min(at)));
    };

    // Each slot: dirty (to replace), busy (its worker replacing it or resting), or done.
    let mut dirty: Vec<(&SlotKey, &Slot)> = Vec::new();
    let mut busy = 0u64;
    let mut dispatched = 0u64;
    let mut last_running: Option<i64> = None;
    for (key, slot) in &slots {
        let current = slot.current(service);
        let old_live = slot.old_live(service);
        let mine = current.filter(|t| t.spec_version == service.spec_version);
        if slot
            .tasks
            .iter()
            .any(|t| t.spec_version == service.spec_version)
            || (current.is_none() && slot.stopping_old(service))
        {
            dispatched += 1;
        }
        if touched.contains(key) {
            busy += 1; // reconciliation gives it a new task this round
            continue;
        }
        match (current, mine) {
            // Stop-first: the old task is stopping; reconciliation starts the new one after.
            (None, _) if slot.stopping_old(service) => busy += 1,
            (None, _) if !old_live.is_empty() => dirty.push((key, slot)),
            (None, _) => {}
            (Some(_), None) => {}
            (Some(t), Some(_)) if t.observed_state() == TaskState::TaskRunning => {
                let at = t.status.as_ref().map_or(now_ns, |s| s.timestamp);
                last_running = Some(last_running.map_or(at, |l| l.max(at)));
                // The worker rests `delay` after its slot's task runs.
                let rest_until = at.saturating_add(cfg.delay_ns);
                if now_ns < rest_until {
                    busy += 1;
                    wake(&mut plan, rest_until);
                }
            }
            (Some(t), Some(_)) => {
                // On its way to RUNNING; a stuck task frees its worker (it counts as failed).
                if !matches!(failed(t, memory, &cfg, now_ns), Ok(true))
                    && !t.observed_state().is_terminal()
                {
                    busy += 1;
                }
            }
        }
    }

    let in_update = matches!(state, State::Updating | State::RollbackStarted);
    if !in_update && dirty.is_empty() {
        // Nothing to update and no update under way (new tasks of a created or scaled
        // service are not an update).
        return Plan {
            actions: Vec::new(),
            wake_at_ns: None,
        };
    }
    let mut started_at = service.update_status.as_ref().map_or(0, |s| s.started_at);
    let mut state = state;
    let mut started = false;
    if !in_update {
        // A new update: tasks of the spec differ from the service's.
        state = State::Updating;
        started_at = now_ns;
        started = true;
    }

    // Failures among this update's tasks that ended (or stuck) since it started.
    let mut failures: Vec<(i64, &str)> = Vec::new();
    if cfg.failure_action != FailureAction::Continue {
        for t in tasks
            .iter()
            .filter(|t| t.spec_version == service.spec_version)
        {
            if is_outdated(service, t) {
                continue;
            }
            let at = t.status.as_ref().map_or(0, |s| s.timestamp);
            if t.observed_state().is_terminal() && at < started_at {
                continue; // ended before this update (a paused one resumed)
            }
            match failed(t, memory, &cfg, now_ns) {
                Ok(true) => failures.push((at, t.id.as_str())),
                Ok(false) => {}
                Err(recheck) => wake(&mut plan, recheck),
            }
            // A running task is watched until its monitor window closes.
            if let Some(run_at) = memory.running_at(&t.id) {
                if t.observed_state() == TaskState::TaskRunning {
                    let until = run_at.saturating_add(cfg.monitor_ns);
                    if now_ns < until {
                        wake(&mut plan, until.saturating_add(1));
                    }
                }
            }
        }
    }
    failures.sort();
    let ratio = failures.len() as f64 / dispatched.max(1) as f64;
    let verdict = match failures.first() {
        Some((_, id)) if ratio > f64::from(cfg.max_failure_ratio) => {
            let why = format!("due to failure or early termination of task {id}");
            match (state, cfg.failure_action) {
                // Never roll back a rollback.
                (State::RollbackStarted, _) => Verdict::Status(status(
                    State::RollbackPaused,
                    format!("rollback paused {why}"),
                    started_at,
                    0,
                )),
                (_, FailureAction::Rollback) if service.previous_spec.is_some() => {
                    Verdict::Rollback(format!("update rolled back {why}"))
                }
                (_, FailureAction::Rollback) => Verdict::Status(status(
                    State::Paused,
                    format!("update paused {why} (no previous spec to roll back to)"),
                    started_at,
                    0,
                )),
                _ => Verdict::Status(status(
                    State::Paused,
                    format!("update paused {why}"),
                    started_at,
                    0,
                )),
            }
        }
        _ => Verdict::Go,
    };
    match verdict {
        Verdict::Status(st) => {
            plan.wake_at_ns = None;
            plan.actions.push(put_status(service, st, now_ns));
            return plan;
        }
        Verdict::Rollback(message) => {
            plan.wake_at_ns = None;
            plan.actions.push(Action::PutService(Box::new(auto_rollback(
                service, tasks, message, now_ns,
            ))));
            return plan;
        }
        Verdict::Go => {}
    }

    // Dispatch dirty slots to free workers.
    let free = if cfg.parallelism == 0 {
        usize::MAX
    } else {
        cfg.parallelism.saturating_sub(busy) as usize
    };
    let n_dirty = dirty.len();
    for (key, slot) in dirty.into_iter().take(free) {
        match cfg.order {
            Order::StopFirst => {
                for t in slot.old_live(service) {
                    plan.actions.push(Action::SetDesired {
                        task_id: t.id.clone(),
                        desired: TaskState::TaskShutdown,
                    });
                }
            }
            // The old task stops once this one runs (reconciliation's start-first hold).
            Order::StartFirst => plan
                .actions
                .push(Action::CreateTask(new_task(service, key.0, &key.1, now_ns))),
        }
    }

    // Done: nothing dirty or in flight, and one more monitor period after the last task ran.
    if n_dirty == 0 && busy == 0 {
        let settle = if cfg.delay_ns >= cfg.monitor_ns {
            cfg.delay_ns.saturating_add(SECOND_NS)
        } else {
            cfg.monitor_ns
        };
        let done_at = last_running.map_or(now_ns, |l| l.saturating_add(settle));
        if now_ns >= done_at {
            let (st, msg) = if state == State::RollbackStarted {
                (State::RollbackCompleted, "rollback completed")
            } else {
                (State::Completed, "update completed")
            };
            plan.actions.push(put_status(
                service,
                status(st, msg.to_string(), started_at, now_ns),
                now_ns,
            ));
            plan.wake_at_ns = None;
            return plan;
        }
        wake(&mut plan, done_at);
    }
    if started {
        // Written before the tasks it dispatches (one Raft write, so together or not at all).
        plan.actions.insert(
            0,
            put_status(
                service,
                status(state, "update in progress".into(), started_at, 0),
                now_ns,
            ),
        );
    }
    plan
}

/// The service with a new update status.
fn put_status(service: &Service, st: UpdateStatus, now_ns: i64) -> Action {
    let mut s = service.clone();
    s.update_status = Some(st);
    if let Some(m) = s.meta.as_mut() {
        m.updated_at = now_ns;
    }
    Action::PutService(Box::new(s))
}

/// The service rolled back to its previous spec by the updater: the previous spec is cleared
/// (as swarm does), and the spec gets a fresh version if it outdates the tasks.
fn auto_rollback(service: &Service, tasks: &[&Task], message: String, now_ns: i64) -> Service {
    let mut s = service.clone();
    let previous = s.previous_spec.take().map(|b| *b);
    let outdates = match (service.spec.as_ref(), previous.as_ref()) {
        (Some(cur), Some(prev)) => needs_new_tasks(cur, prev),
        _ => true,
    };
    if outdates {
        s.spec_version = next_spec_version(service, tasks.iter().copied());
    }
    s.spec = previous;
    s.previous_spec_version = 0;
    s.update_status = Some(status(State::RollbackStarted, message, now_ns, 0));
    if let Some(m) = s.meta.as_mut() {
        m.updated_at = now_ns;
    }
    s
}
