//! Waiting for a service to converge, as `docker service create` does without `--detach`.
//!
//! The decision part is pure: [`snapshot`] reduces the task list to one line per slot (or node, for
//! a global service) and [`Tracker::observe`] decides, from successive snapshots and the time they
//! were taken, whether the service converged, is still converging, or cannot converge. [`wait`] is
//! the thin driver that polls the manager and draws progress.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use shoal_proto::v1::{
    ListServicesRequest, ListTasksRequest, ListTasksResponse, RestartCondition, Service,
    ServiceMode, Task, TaskState,
};

use crate::client::{status, Control};
use crate::output::progress::Progress;
use crate::output::short_id;

/// How often the task list is polled.
pub const POLL: Duration = Duration::from_millis(250);
/// How long every task must keep running before the service counts as converged.
pub const VERIFY: Duration = Duration::from_secs(1);
/// How long a pending task may show a scheduling error before giving up.
pub const PENDING_ERROR_GRACE: Duration = Duration::from_secs(10);
/// Slack beyond the restart delay for the orchestrator to start a replacement task.
const RESTART_GRACE: Duration = Duration::from_secs(5);

/// One slot of a replicated service (or one node of a global one) and its current task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// "1/3" for replicated slots, the node's hostname (or short ID) for global tasks.
    pub label: String,
    /// The slot's current task: the newest one that should run, else the newest one.
    pub task_id: String,
    /// Its state; `None` while the slot has no task yet.
    pub state: Option<TaskState>,
    /// Its error (why it failed or is pending), or empty.
    pub err: String,
    /// Its progress message, or empty.
    pub message: String,
    /// Its exit code, when it ended.
    pub exit_code: i32,
    /// How many tasks of this slot have ended (failed, completed, rejected, ...).
    pub ended: u64,
}

impl Slot {
    /// Why the slot's task is where it is: its error, else its exit code, else its message.
    pub fn why(&self) -> String {
        if !self.err.is_empty() {
            self.err.clone()
        } else if self.exit_code != 0 {
            format!("exit code {}", self.exit_code)
        } else {
            self.message.clone()
        }
    }
}

/// The state of a whole service at one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Slots in order.
    pub slots: Vec<Slot>,
    /// Slots whose current task runs.
    pub running: usize,
    /// Slots the service should have.
    pub desired: usize,
}

fn wants_running(t: &Task) -> bool {
    TaskState::try_from(t.desired_state).is_ok_and(|d| d <= TaskState::TaskRunning)
}

fn created(t: &Task) -> i64 {
    t.meta.map(|m| m.created_at).unwrap_or_default()
}

fn slot_of(label: String, tasks: &[&Task]) -> Slot {
    let newest = |pred: &dyn Fn(&Task) -> bool| {
        tasks
            .iter()
            .filter(|t| pred(t))
            .max_by_key(|t| (created(t), t.observed_state()))
            .copied()
    };
    let current = newest(&wants_running).or_else(|| newest(&|_| true));
    let ended = tasks
        .iter()
        .filter(|t| t.observed_state().is_terminal())
        .count() as u64;
    match current {
        Some(t) => {
            let st = t.status.clone().unwrap_or_default();
            Slot {
                label,
                task_id: t.id.clone(),
                state: Some(t.observed_state()),
                err: st.err,
                message: st.message,
                exit_code: st.exit_code,
                ended,
            }
        }
        None => Slot {
            label,
            task_id: String::new(),
            state: None,
            err: String::new(),
            message: String::new(),
            exit_code: 0,
            ended,
        },
    }
}

/// Reduces a service's tasks to one line per slot. `global_desired` is the manager's count of
/// eligible nodes for a global service; `node_names` maps node IDs to hostnames for labels.
///
/// Only tasks made from spec version `since` or later count (after an update, the old tasks do
/// not, even while they still run; 0 counts every task). Tasks without a spec version count.
pub fn snapshot(
    service: &Service,
    tasks: &[Task],
    global_desired: Option<u64>,
    node_names: &HashMap<String, String>,
    since: u64,
) -> Snapshot {
    snapshot_where(service, tasks, global_desired, node_names, &|t: &Task| {
        t.spec_version == 0 || t.spec_version >= since
    })
}

/// [`snapshot`] counting only the tasks `counts` accepts (say, those of the spec an update
/// goes to).
pub fn snapshot_where(
    service: &Service,
    tasks: &[Task],
    global_desired: Option<u64>,
    node_names: &HashMap<String, String>,
    counts: &dyn Fn(&Task) -> bool,
) -> Snapshot {
    let spec = service.spec.clone().unwrap_or_default();
    let mine: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.service_id == service.id)
        .filter(|t| counts(t))
        .collect();
    let slots: Vec<Slot> = if spec.mode == ServiceMode::ModeGlobal as i32 {
        // One line per node that should run a task.
        let mut by_node: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
        for t in &mine {
            by_node.entry(t.node_id.as_str()).or_default().push(t);
        }
        by_node
            .into_iter()
            .filter(|(_, ts)| ts.iter().any(|t| wants_running(t)))
            .map(|(node, ts)| {
                let label = node_names
                    .get(node)
                    .filter(|h| !h.is_empty())
                    .cloned()
                    .unwrap_or_else(|| short_id(node, false).to_string());
                slot_of(label, &ts)
            })
            .collect()
    } else {
        let n = spec.replicas;
        (1..=n)
            .map(|slot| {
                let ts: Vec<&Task> = mine.iter().filter(|t| t.slot == slot).copied().collect();
                slot_of(format!("{slot}/{n}"), &ts)
            })
            .collect()
    };
    let running = slots
        .iter()
        .filter(|s| s.state == Some(TaskState::TaskRunning))
        .count();
    let desired = match global_desired {
        Some(d) if spec.mode == ServiceMode::ModeGlobal as i32 => (d as usize).max(slots.len()),
        _ => slots.len(),
    };
    Snapshot {
        slots,
        running,
        desired,
    }
}

/// What the restart policy allows, from the service spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestartRules {
    /// Wire value of `RestartCondition`.
    pub condition: i32,
    /// 0 = unlimited.
    pub max_attempts: u64,
    /// Delay before a replacement starts.
    pub delay: Duration,
}

impl RestartRules {
    /// The rules of a service.
    pub fn of(service: &Service) -> Self {
        let r = service
            .spec
            .as_ref()
            .and_then(|s| s.task.as_ref())
            .and_then(|t| t.restart)
            .unwrap_or_default();
        RestartRules {
            condition: r.condition,
            max_attempts: r.max_attempts,
            delay: Duration::from_nanos(r.delay_ns.max(0).unsigned_abs()),
        }
    }
}

/// Where convergence stands after a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Tasks are still starting.
    Converging,
    /// Every task runs; waiting [`VERIFY`] to see that they stay up.
    Verifying,
    /// Every task has run for [`VERIFY`].
    Converged,
    /// It cannot converge; the message lists each stuck slot and its task's error.
    Failed(String),
}

/// Remembers, across polls, since when things have been true.
#[derive(Debug, Default)]
pub struct Tracker {
    rules: RestartRules,
    all_running_since: Option<Duration>,
    /// task id -> when its pending error was first seen.
    pending_error_since: HashMap<String, Duration>,
    /// task id -> when it was first seen ended without a replacement.
    ended_since: HashMap<String, Duration>,
}

fn describe(slot: &Slot) -> String {
    let state = slot.state.map(|s| s.display_name()).unwrap_or("new");
    let why = slot.why();
    if why.is_empty() {
        format!("{}: {state}", slot.label)
    } else {
        format!("{}: {state}: {why}", slot.label)
    }
}

/// A scheduling error shown by a task that waits for a node.
fn pending_error(slot: &Slot) -> Option<&str> {
    let waiting = slot.state.is_some_and(|s| s < TaskState::TaskAssigned);
    if !waiting {
        return None;
    }
    if !slot.err.is_empty() {
        Some(&slot.err)
    } else if slot.message.contains("no suitable node") {
        Some(&slot.message)
    } else {
        None
    }
}

impl Tracker {
    /// A tracker for a service with these restart rules.
    pub fn new(rules: RestartRules) -> Self {
        Tracker {
            rules,
            ..Default::default()
        }
    }

    /// Why an ended task will not be replaced, if the restart policy says so.
    fn no_restart(&self, slot: &Slot, state: TaskState, ended_for: Duration) -> Option<String> {
        let r = self.rules;
        if r.condition == RestartCondition::RestartNone as i32 {
            return Some("restart condition is none".into());
        }
        if r.condition == RestartCondition::RestartOnFailure as i32
            && state == TaskState::TaskComplete
        {
            return Some("exited 0 and the restart condition is on-failure".into());
        }
        if r.max_attempts > 0 {
            // Swarm allows max_attempts restarts after the first run. An orchestrator that counts
            // the first run as an attempt stops one task earlier: then no replacement shows up.
            let exhausted = slot.ended > r.max_attempts
                || (slot.ended >= r.max_attempts && ended_for > r.delay + RESTART_GRACE);
            if exhausted {
                return Some(format!("gave up after {} restart attempts", r.max_attempts));
            }
        }
        None
    }

    /// Takes one snapshot, seen at `now` (time since the wait began), and says where things stand.
    pub fn observe(&mut self, snap: &Snapshot, now: Duration) -> Verdict {
        let mut stuck = Vec::new();
        for slot in &snap.slots {
            let Some(state) = slot.state else { continue };
            if state.is_terminal() {
                let since = *self.ended_since.entry(slot.task_id.clone()).or_insert(now);
                if let Some(why) = self.no_restart(slot, state, now.saturating_sub(since)) {
                    stuck.push(format!("{} ({why})", describe(slot)));
                }
            } else if let Some(err) = pending_error(slot) {
                let since = *self
                    .pending_error_since
                    .entry(slot.task_id.clone())
                    .or_insert(now);
                if now.saturating_sub(since) > PENDING_ERROR_GRACE {
                    stuck.push(format!("{}: {err}", slot.label));
                }
            }
        }
        if !stuck.is_empty() {
            return Verdict::Failed(stuck.join("; "));
        }
        let all_running = snap.running == snap.desired && snap.slots.len() == snap.desired;
        if !all_running {
            self.all_running_since = None;
            return Verdict::Converging;
        }
        let since = *self.all_running_since.get_or_insert(now);
        if now.saturating_sub(since) >= VERIFY {
            Verdict::Converged
        } else {
            Verdict::Verifying
        }
    }

    /// The error for a wait that ran out of time: the slots not running, with their errors.
    pub fn timeout_message(snap: &Snapshot, timeout: Duration) -> String {
        let waiting: Vec<String> = snap
            .slots
            .iter()
            .filter(|s| s.state != Some(TaskState::TaskRunning))
            .map(describe)
            .collect();
        let mut msg = format!(
            "timed out after {} ({} of {} tasks running)",
            humantime::format_duration(timeout),
            snap.running,
            snap.desired
        );
        if !waiting.is_empty() {
            msg.push_str(": ");
            msg.push_str(&waiting.join("; "));
        }
        msg
    }
}

/// Polls the manager until the service converges, cannot converge, or `timeout` passes, drawing
/// progress on stdout.
pub async fn wait(control: &mut Control, service: &Service, timeout: Duration) -> Result<()> {
    wait_since(control, service, timeout, 0).await
}

async fn wait_since(
    control: &mut Control,
    service: &Service,
    timeout: Duration,
    since: u64,
) -> Result<()> {
    let name = service
        .spec
        .as_ref()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let global = service
        .spec
        .as_ref()
        .is_some_and(|s| s.mode == ServiceMode::ModeGlobal as i32);
    let mut tracker = Tracker::new(RestartRules::of(service));
    let mut progress = Progress::new();
    let start = Instant::now();
    let mut interval = tokio::time::interval(POLL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let resp = service_tasks(control, &service.id).await?;
        let global_desired = if global {
            let list = control
                .list_services(ListServicesRequest {})
                .await
                .map_err(status)?
                .into_inner();
            list.services
                .iter()
                .find(|s| s.service.as_ref().is_some_and(|x| x.id == service.id))
                .map(|s| s.desired_tasks)
        } else {
            None
        };
        let snap = snapshot(
            service,
            &resp.tasks,
            global_desired,
            &resp.node_names,
            since,
        );
        let verdict = tracker.observe(&snap, start.elapsed());
        progress.draw(&snap, &verdict)?;
        match verdict {
            Verdict::Converged => return Ok(()),
            Verdict::Failed(msg) => return Err(anyhow!("service {name} cannot converge: {msg}")),
            Verdict::Converging | Verdict::Verifying => {}
        }
        if start.elapsed() >= timeout {
            return Err(anyhow!(
                "service {name}: {}",
                Tracker::timeout_message(&snap, timeout)
            ));
        }
    }
}

/// Every task of a service, with the names of their nodes.
pub async fn service_tasks(c: &mut Control, service_id: &str) -> Result<ListTasksResponse> {
    Ok(c.list_tasks(ListTasksRequest {
        service: service_id.to_string(),
        node: String::new(),
    })
    .await
    .map_err(status)?
    .into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{Meta, RestartPolicy, ServiceSpec, TaskSpec, TaskStatus};

    fn service(replicas: u64, condition: RestartCondition, max_attempts: u64) -> Service {
        Service {
            id: "svc".into(),
            spec: Some(ServiceSpec {
                name: "web".into(),
                replicas,
                task: Some(TaskSpec {
                    restart: Some(RestartPolicy {
                        condition: condition as i32,
                        delay_ns: 1_000_000_000,
                        max_attempts,
                        window_ns: 0,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn task(id: &str, slot: u64, created: i64, state: TaskState, desired: TaskState) -> Task {
        Task {
            id: id.into(),
            service_id: "svc".into(),
            slot,
            node_id: format!("node{slot}"),
            meta: Some(Meta {
                created_at: created,
                ..Default::default()
            }),
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            desired_state: desired as i32,
            ..Default::default()
        }
    }

    use TaskState::{TaskFailed as Failed, TaskPending as Pending, TaskRunning as Running};
    use TaskState::{TaskShutdown as Shutdown, TaskStarting as Starting};

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn current_task_is_newest_wanted_one() {
        let svc = service(2, RestartCondition::RestartAny, 0);
        let tasks = vec![
            task("old", 1, 1, Failed, Shutdown),
            task("new", 1, 2, Starting, Running),
            task("b", 2, 1, Running, Running),
            task("gone", 3, 1, Running, Shutdown),
        ];
        let snap = snapshot(&svc, &tasks, None, &HashMap::new(), 0);
        assert_eq!(snap.slots.len(), 2);
        assert_eq!(snap.slots[0].label, "1/2");
        assert_eq!(snap.slots[0].task_id, "new");
        assert_eq!(snap.slots[0].ended, 1);
        assert_eq!(snap.running, 1);
        assert_eq!(snap.desired, 2);
    }

    #[test]
    fn after_an_update_only_new_spec_tasks_count() {
        let mut svc = service(2, RestartCondition::RestartAny, 0);
        svc.spec_version = 2;
        let versioned = |id: &str, slot, created, state, desired, v| Task {
            spec_version: v,
            ..task(id, slot, created, state, desired)
        };
        let tasks = vec![
            versioned("old1", 1, 1, Running, Running, 1),
            versioned("old2", 2, 1, Running, Shutdown, 1),
            versioned("new2", 2, 2, Starting, Running, 2),
        ];
        let none = HashMap::new();
        let snap = snapshot(&svc, &tasks, None, &none, 2);
        assert_eq!(snap.slots[0].state, None, "old1 is of the old spec");
        assert_eq!(snap.slots[1].task_id, "new2");
        assert_eq!(snap.running, 0);
        // a replicas-only update keeps the spec version: the running tasks count
        let snap = snapshot(&svc, &tasks, None, &none, 1);
        assert_eq!(snap.slots[0].task_id, "old1");
        assert_eq!(snap.running, 1);
    }

    #[test]
    fn converges_after_a_stable_second() {
        let svc = service(2, RestartCondition::RestartAny, 0);
        let mut tr = Tracker::new(RestartRules::of(&svc));
        let half = vec![
            task("a", 1, 1, Running, Running),
            task("b", 2, 1, Pending, Running),
        ];
        let all = vec![
            task("a", 1, 1, Running, Running),
            task("b", 2, 1, Running, Running),
        ];
        let none = HashMap::new();
        assert_eq!(
            tr.observe(&snapshot(&svc, &half, None, &none, 0), secs(0.0)),
            Verdict::Converging
        );
        assert_eq!(
            tr.observe(&snapshot(&svc, &all, None, &none, 0), secs(0.25)),
            Verdict::Verifying
        );
        // a task dropping out resets the verification
        assert_eq!(
            tr.observe(&snapshot(&svc, &half, None, &none, 0), secs(0.5)),
            Verdict::Converging
        );
        assert_eq!(
            tr.observe(&snapshot(&svc, &all, None, &none, 0), secs(0.75)),
            Verdict::Verifying
        );
        assert_eq!(
            tr.observe(&snapshot(&svc, &all, None, &none, 0), secs(1.5)),
            Verdict::Verifying
        );
        assert_eq!(
            tr.observe(&snapshot(&svc, &all, None, &none, 0), secs(1.75)),
            Verdict::Converged
        );
    }

    #[test]
    fn zero_replicas_converge() {
        let svc = service(0, RestartCondition::RestartAny, 0);
        let mut tr = Tracker::new(RestartRules::of(&svc));
        let snap = snapshot(&svc, &[], None, &HashMap::new(), 0);
        assert_eq!(tr.observe(&snap, secs(0.0)), Verdict::Verifying);
        assert_eq!(tr.observe(&snap, secs(1.0)), Verdict::Converged);
    }

    #[test]
    fn failed_task_without_restart_fails_at_once() {
        let svc = service(1, RestartCondition::RestartNone, 0);
        let mut tr = Tracker::new(RestartRules::of(&svc));
        let mut t = task("a", 1, 1, Failed, Shutdown);
        if let Some(s) = t.status.as_mut() {
            s.exit_code = 3;
        }
        let v = tr.observe(&snapshot(&svc, &[t], None, &HashMap::new(), 0), secs(0.0));
        assert_eq!(
            v,
            Verdict::Failed("1/1: failed: exit code 3 (restart condition is none)".into())
        );
    }

    #[test]
    fn failed_task_with_restart_any_keeps_waiting() {
        let svc = service(1, RestartCondition::RestartAny, 0);
        let mut tr = Tracker::new(RestartRules::of(&svc));
        let t = task("a", 1, 1, Failed, Shutdown);
        let snap = snapshot(&svc, &[t], None, &HashMap::new(), 0);
        assert_eq!(tr.observe(&snap, secs(0.0)), Verdict::Converging);
        assert_eq!(tr.observe(&snap, secs(60.0)), Verdict::Converging);
    }

    #[test]
    fn max_attempts_exhausted() {
        let svc = service(1, RestartCondition::RestartOnFailure, 2);
        let none = HashMap::new();
        // swarm semantics: first run + 2 restarts = 3 ended tasks -> fail at once
        let three = vec![
            task("a", 1, 1, Failed, Shutdown),
            task("b", 1, 2, Failed, Shutdown),
            task("c", 1, 3, Failed, Shutdown),
        ];
        let mut tr = Tracker::new(RestartRules::of(&svc));
        assert!(matches!(
            tr.observe(&snapshot(&svc, &three, None, &none, 0), secs(0.0)),
            Verdict::Failed(m) if m.contains("gave up after 2 restart attempts")
        ));
        // 2 ended tasks and no replacement after delay + grace -> fail as well
        let two = &three[..2];
        let mut tr = Tracker::new(RestartRules::of(&svc));
        assert_eq!(
            tr.observe(&snapshot(&svc, two, None, &none, 0), secs(0.0)),
            Verdict::Converging
        );
        assert_eq!(
            tr.observe(&snapshot(&svc, two, None, &none, 0), secs(5.0)),
            Verdict::Converging
        );
        assert!(matches!(
            tr.observe(&snapshot(&svc, two, None, &none, 0), secs(6.5)),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn pending_error_fails_after_ten_seconds() {
        let svc = service(1, RestartCondition::RestartAny, 0);
        let mut t = task("a", 1, 1, Pending, Running);
        if let Some(s) = t.status.as_mut() {
            s.err = "no suitable node (insufficient resources on 1 node)".into();
        }
        let snap = snapshot(&svc, &[t], None, &HashMap::new(), 0);
        let mut tr = Tracker::new(RestartRules::of(&svc));
        assert_eq!(tr.observe(&snap, secs(1.0)), Verdict::Converging);
        assert_eq!(tr.observe(&snap, secs(10.0)), Verdict::Converging);
        assert_eq!(
            tr.observe(&snap, secs(11.5)),
            Verdict::Failed("1/1: no suitable node (insufficient resources on 1 node)".into())
        );
    }

    #[test]
    fn global_service_by_node() {
        let mut svc = service(0, RestartCondition::RestartAny, 0);
        if let Some(s) = svc.spec.as_mut() {
            s.mode = ServiceMode::ModeGlobal as i32;
        }
        let tasks = vec![
            task("a", 0, 1, Running, Running),
            Task {
                node_id: "nodeB".into(),
                ..task("b", 0, 1, Starting, Running)
            },
        ];
        let names: HashMap<String, String> = [("node0".to_string(), "host-a".to_string())].into();
        let snap = snapshot(&svc, &tasks, Some(3), &names, 0);
        assert_eq!(snap.slots[0].label, "host-a");
        assert_eq!(snap.slots[1].label, "nodeB");
        assert_eq!((snap.running, snap.desired), (1, 3));
        let msg = Tracker::timeout_message(&snap, Duration::from_secs(120));
        assert_eq!(
            msg,
            "timed out after 2m (1 of 3 tasks running): nodeB: starting"
        );
    }
}
