//! Following a rolling update or a rollback the way `docker service update` does without
//! `--detach`: per-slot progress, exit 0 when the update completes, an error naming the reason
//! when it pauses or rolls back.
//!
//! The decision part is pure: [`phase`] reads the service's update status against the one seen
//! before the request, and [`Follower::observe`] turns it (or, when no rolling update runs, the
//! convergence of the tasks) into an [`Outcome`]. [`follow`] is the thin driver that polls.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use shoal_proto::v1::{
    update_status, GetServiceRequest, ListServicesRequest, Service, ServiceMode, Task, UpdateStatus,
};

use crate::client::{status, Control};
use crate::commands::converge::{self, RestartRules, Snapshot, Tracker, Verdict, POLL};
use crate::output::progress::{self, Progress};

/// Where the service's update stands, in docker's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// No rolling update for this request (yet): only service-level fields changed, or the
    /// status is still the one from before the request.
    NoUpdate,
    /// Tasks are being replaced with the new spec.
    Updating,
    /// Tasks are being replaced with the previous spec; the message says why.
    RollingBack(String),
    /// Every slot runs the new spec.
    Completed,
    /// Every slot runs the previous spec again.
    RollbackCompleted(String),
    /// The update stopped after failures; the message names the task.
    Paused(String),
    /// The rollback stopped after failures.
    RollbackPaused(String),
}

/// Reads an update status. `before` is the status the service had before the request: a
/// finished status equal to it belongs to an earlier update, not to this one.
pub fn phase(now: Option<&UpdateStatus>, before: Option<&UpdateStatus>) -> Phase {
    use update_status::State;
    let Some(s) = now else {
        return Phase::NoUpdate;
    };
    let state = State::try_from(s.state).unwrap_or(State::Unknown);
    let finished = matches!(
        state,
        State::Completed | State::Paused | State::RollbackPaused | State::RollbackCompleted
    );
    if finished && Some(s) == before {
        return Phase::NoUpdate;
    }
    let msg = s.message.clone();
    match state {
        State::Unknown => Phase::NoUpdate,
        State::Updating => Phase::Updating,
        State::RollbackStarted => Phase::RollingBack(msg),
        State::Completed => Phase::Completed,
        State::RollbackCompleted => Phase::RollbackCompleted(msg),
        State::Paused => Phase::Paused(msg),
        State::RollbackPaused => Phase::RollbackPaused(msg),
    }
}

/// The follower's decision after one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Keep polling.
    Waiting,
    /// The update (or rollback, or plain convergence) finished well: exit 0.
    Done,
    /// It finished badly (paused, rolled back, cannot converge): exit non-zero with this.
    Failed(String),
}

/// Remembers, across polls, what a rolling update has shown so far.
#[derive(Debug)]
pub struct Follower {
    name: String,
    requested_rollback: bool,
    before: Option<UpdateStatus>,
    /// The reason of a rollback once one started ("rollback: MESSAGE").
    rollback: Option<String>,
    rolling_back: bool,
    tracker: Tracker,
}

impl Follower {
    /// A follower of service `name` for `service update` (`requested_rollback` false) or
    /// `service rollback`, given the status before the request and the restart rules.
    pub fn new(
        name: &str,
        requested_rollback: bool,
        before: Option<UpdateStatus>,
        rules: RestartRules,
    ) -> Self {
        Follower {
            name: name.to_string(),
            requested_rollback,
            before,
            rollback: None,
            rolling_back: requested_rollback,
            tracker: Tracker::new(rules),
        }
    }

    /// Takes one poll: the service's update status and its tasks' snapshot, seen at `now`.
    pub fn observe(
        &mut self,
        st: Option<&UpdateStatus>,
        snap: &Snapshot,
        now: Duration,
    ) -> Outcome {
        match phase(st, self.before.as_ref()) {
            Phase::NoUpdate => match self.tracker.observe(snap, now) {
                Verdict::Converged => Outcome::Done,
                Verdict::Failed(msg) => {
                    Outcome::Failed(format!("service {} cannot converge: {msg}", self.name))
                }
                Verdict::Converging | Verdict::Verifying => Outcome::Waiting,
            },
            Phase::Updating => Outcome::Waiting,
            Phase::RollingBack(msg) => {
                self.rolling_back = true;
                self.rollback.get_or_insert(msg);
                Outcome::Waiting
            }
            Phase::Completed => Outcome::Done,
            Phase::RollbackCompleted(_) if self.requested_rollback => Outcome::Done,
            Phase::RollbackCompleted(msg) => {
                // Docker exits 0 here (docker/cli#6752); a deploy that did not happen is an error.
                let why = self.rollback.clone().unwrap_or(msg);
                Outcome::Failed(format!("service update rolled back: {why}"))
            }
            Phase::Paused(msg) => Outcome::Failed(format!("service update paused: {msg}")),
            Phase::RollbackPaused(msg) => {
                Outcome::Failed(format!("service rollback paused: {msg}"))
            }
        }
    }

    /// The progress block: the rollback's reason once one started, the overall line, one line
    /// per slot, and the verify line at the end.
    pub fn lines(&self, snap: &Snapshot, outcome: &Outcome) -> Vec<String> {
        let verdict = match outcome {
            Outcome::Done => Verdict::Converged,
            Outcome::Waiting | Outcome::Failed(_) => Verdict::Converging,
        };
        let mut block = progress::lines(snap, &verdict);
        if self.rolling_back {
            block[0] = format!(
                "rolling back update: {} out of {} tasks",
                snap.running, snap.desired
            );
        }
        if let Some(why) = &self.rollback {
            block.insert(0, format!("rollback: {why}"));
        }
        block
    }
}

/// Whether a task runs the service's current task template: the updater's own test of an
/// up-to-date task. Tasks without a template fall back to the spec version.
pub fn is_current(service: &Service, t: &Task) -> bool {
    match &t.spec {
        Some(spec) => Some(spec) == service.spec.as_ref().and_then(|s| s.task.as_ref()),
        None => t.spec_version == 0 || t.spec_version >= service.spec_version,
    }
}

/// Polls the manager until the update of `service_id` completes, pauses, rolls back, or makes
/// no progress for `timeout`, drawing progress on stdout unless `quiet`.
pub async fn follow(
    c: &mut Control,
    service_id: &str,
    before: Option<UpdateStatus>,
    requested_rollback: bool,
    timeout: Duration,
    quiet: bool,
) -> Result<()> {
    let mut follower: Option<Follower> = None;
    let mut progress = Progress::new();
    let start = Instant::now();
    let mut last_change = Duration::ZERO;
    let mut last_key = String::new();
    let mut interval = tokio::time::interval(POLL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let svc = c
            .get_service(GetServiceRequest {
                name_or_id: service_id.to_string(),
            })
            .await
            .map_err(status)?
            .into_inner()
            .service
            .ok_or_else(|| anyhow!("service {service_id} is gone"))?;
        let name = svc
            .spec
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let f = follower.get_or_insert_with(|| {
            Follower::new(
                &name,
                requested_rollback,
                before.clone(),
                RestartRules::of(&svc),
            )
        });
        let resp = converge::service_tasks(c, &svc.id).await?;
        let global_desired = global_desired(c, &svc).await?;
        let snap = converge::snapshot_where(
            &svc,
            &resp.tasks,
            global_desired,
            &resp.node_names,
            &|t: &Task| is_current(&svc, t),
        );
        let now = start.elapsed();
        let outcome = f.observe(svc.update_status.as_ref(), &snap, now);
        if !quiet {
            progress.draw_lines(&f.lines(&snap, &outcome))?;
        }
        match outcome {
            Outcome::Done => return Ok(()),
            Outcome::Failed(msg) => return Err(anyhow!(msg)),
            Outcome::Waiting => {}
        }
        let key = progress_key(&svc, &snap);
        if key != last_key {
            last_key = key;
            last_change = now;
        }
        if now.saturating_sub(last_change) >= timeout {
            return Err(anyhow!(
                "service {name}: no progress for {}: {}",
                humantime::format_duration(timeout),
                Tracker::timeout_message(&snap, timeout)
            ));
        }
    }
}

/// What counts as progress: another update state, or a slot's task or state changing.
fn progress_key(svc: &Service, snap: &Snapshot) -> String {
    let state = svc.update_status.as_ref().map_or(0, |s| s.state);
    let slots: Vec<String> = snap
        .slots
        .iter()
        .map(|s| format!("{}:{:?}", s.task_id, s.state))
        .collect();
    format!("{state}|{}", slots.join(","))
}

/// The manager's count of nodes that should run a global service's task.
async fn global_desired(c: &mut Control, svc: &Service) -> Result<Option<u64>> {
    let global = svc
        .spec
        .as_ref()
        .is_some_and(|s| s.mode == ServiceMode::ModeGlobal as i32);
    if !global {
        return Ok(None);
    }
    let list = c
        .list_services(ListServicesRequest {})
        .await
        .map_err(status)?
        .into_inner();
    Ok(list
        .services
        .iter()
        .find(|s| s.service.as_ref().is_some_and(|x| x.id == svc.id))
        .map(|s| s.desired_tasks))
}

#[cfg(test)]
mod tests {
    use shoal_proto::v1::{ContainerSpec, ServiceSpec, TaskSpec, TaskState};

    use super::*;
    use crate::commands::converge::Slot;
    use update_status::State;

    fn st(state: State, message: &str, started_at: i64) -> UpdateStatus {
        UpdateStatus {
            state: state as i32,
            started_at,
            completed_at: 0,
            message: message.into(),
        }
    }

    fn slot(label: &str, state: TaskState) -> Slot {
        Slot {
            label: label.into(),
            task_id: format!("t{label}"),
            state: Some(state),
            err: String::new(),
            message: String::new(),
            exit_code: 0,
            ended: 0,
        }
    }

    fn snap(running: usize, desired: usize) -> Snapshot {
        let slots = (1..=desired)
            .map(|i| {
                let state = if i <= running {
                    TaskState::TaskRunning
                } else {
                    TaskState::TaskStarting
                };
                slot(&format!("{i}/{desired}"), state)
            })
            .collect();
        Snapshot {
            slots,
            running,
            desired,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn phases() {
        assert_eq!(phase(None, None), Phase::NoUpdate);
        let done = st(State::Completed, "update completed", 1);
        // The status of an earlier update is not this one's verdict ...
        assert_eq!(phase(Some(&done), Some(&done)), Phase::NoUpdate);
        let paused = st(State::Paused, "update paused due to failure of task x", 1);
        assert_eq!(phase(Some(&paused), Some(&paused)), Phase::NoUpdate);
        // ... but a new one is.
        let done2 = st(State::Completed, "update completed", 2);
        assert_eq!(phase(Some(&done2), Some(&done)), Phase::Completed);
        assert_eq!(phase(Some(&done), None), Phase::Completed);
        let updating = st(State::Updating, "update in progress", 1);
        assert_eq!(phase(Some(&updating), Some(&updating)), Phase::Updating);
        assert_eq!(
            phase(Some(&st(State::RollbackStarted, "why", 3)), None),
            Phase::RollingBack("why".into())
        );
        assert_eq!(
            phase(Some(&st(State::RollbackPaused, "why", 3)), None),
            Phase::RollbackPaused("why".into())
        );
        assert_eq!(
            phase(Some(&st(State::Unknown, "", 3)), None),
            Phase::NoUpdate
        );
    }

    #[test]
    fn update_completes() {
        let mut f = Follower::new("web", false, None, RestartRules::default());
        let updating = st(State::Updating, "update in progress", 5);
        assert_eq!(
            f.observe(Some(&updating), &snap(1, 4), secs(0)),
            Outcome::Waiting
        );
        // All running is not enough while the updater still works (monitor period).
        assert_eq!(
            f.observe(Some(&updating), &snap(4, 4), secs(9)),
            Outcome::Waiting
        );
        let done = st(State::Completed, "update completed", 5);
        assert_eq!(f.observe(Some(&done), &snap(4, 4), secs(10)), Outcome::Done);
        let block = f.lines(&snap(4, 4), &Outcome::Done);
        assert_eq!(block[0], "overall progress: 4 out of 4 tasks");
        assert_eq!(
            block.last().map(String::as_str),
            Some("verify: Service converged")
        );
    }

    #[test]
    fn update_pauses() {
        let before = st(State::Completed, "update completed", 1);
        let mut f = Follower::new("web", false, Some(before), RestartRules::default());
        let msg = "update paused due to failure or early termination of task abc";
        assert_eq!(
            f.observe(Some(&st(State::Paused, msg, 7)), &snap(1, 4), secs(3)),
            Outcome::Failed(format!("service update paused: {msg}"))
        );
    }

    #[test]
    fn automatic_rollback_is_an_error() {
        let mut f = Follower::new("web", false, None, RestartRules::default());
        let why = "update rolled back due to failure or early termination of task abc";
        let started = st(State::RollbackStarted, why, 7);
        assert_eq!(
            f.observe(Some(&started), &snap(2, 4), secs(3)),
            Outcome::Waiting
        );
        let block = f.lines(&snap(2, 4), &Outcome::Waiting);
        assert_eq!(block[0], format!("rollback: {why}"));
        assert_eq!(block[1], "rolling back update: 2 out of 4 tasks");
        let done = st(State::RollbackCompleted, "rollback completed", 7);
        assert_eq!(
            f.observe(Some(&done), &snap(4, 4), secs(9)),
            Outcome::Failed(format!("service update rolled back: {why}"))
        );
        // Seen only once finished: the completed message is all there is.
        let mut f = Follower::new("web", false, None, RestartRules::default());
        assert_eq!(
            f.observe(Some(&done), &snap(4, 4), secs(1)),
            Outcome::Failed("service update rolled back: rollback completed".into())
        );
    }

    #[test]
    fn requested_rollback() {
        let before = st(State::Completed, "update completed", 1);
        let mut f = Follower::new("web", true, Some(before), RestartRules::default());
        let started = st(State::RollbackStarted, "manually requested rollback", 8);
        assert_eq!(
            f.observe(Some(&started), &snap(0, 2), secs(0)),
            Outcome::Waiting
        );
        let block = f.lines(&snap(0, 2), &Outcome::Waiting);
        assert_eq!(block[0], "rollback: manually requested rollback");
        assert_eq!(block[1], "rolling back update: 0 out of 2 tasks");
        let done = st(State::RollbackCompleted, "rollback completed", 8);
        assert_eq!(f.observe(Some(&done), &snap(2, 2), secs(4)), Outcome::Done);
        let msg = "rollback paused due to failure or early termination of task x";
        let mut f = Follower::new("web", true, None, RestartRules::default());
        assert_eq!(
            f.observe(
                Some(&st(State::RollbackPaused, msg, 8)),
                &snap(0, 2),
                secs(4)
            ),
            Outcome::Failed(format!("service rollback paused: {msg}"))
        );
    }

    #[test]
    fn without_a_rolling_update_convergence_decides() {
        // Only replicas changed: no update status comes; the tasks converging is the end.
        let before = st(State::Completed, "update completed", 1);
        let mut f = Follower::new("web", false, Some(before.clone()), RestartRules::default());
        assert_eq!(
            f.observe(Some(&before), &snap(2, 3), secs(0)),
            Outcome::Waiting
        );
        assert_eq!(
            f.observe(Some(&before), &snap(3, 3), secs(1)),
            Outcome::Waiting
        );
        assert_eq!(
            f.observe(Some(&before), &snap(3, 3), secs(2)),
            Outcome::Done
        );
        // A paused update the next `service update` resumes: the old PAUSED is no verdict.
        let paused = st(State::Paused, "update paused", 1);
        let mut f = Follower::new("web", false, Some(paused.clone()), RestartRules::default());
        assert_eq!(
            f.observe(Some(&paused), &snap(1, 3), secs(0)),
            Outcome::Waiting
        );
        let updating = st(State::Updating, "update in progress", 2);
        assert_eq!(
            f.observe(Some(&updating), &snap(1, 3), secs(1)),
            Outcome::Waiting
        );
        // Tasks that cannot run end the wait with the reason.
        let rules = RestartRules {
            condition: shoal_proto::v1::RestartCondition::RestartNone as i32,
            ..Default::default()
        };
        let mut f = Follower::new("web", false, None, rules);
        let mut s = snap(0, 1);
        s.slots[0].state = Some(TaskState::TaskFailed);
        s.slots[0].exit_code = 1;
        match f.observe(None, &s, secs(1)) {
            Outcome::Failed(m) => assert!(m.starts_with("service web cannot converge"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn current_tasks_run_the_current_template() {
        let template = |image: &str| TaskSpec {
            container: Some(ContainerSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let svc = Service {
            spec: Some(ServiceSpec {
                task: Some(template("app:2")),
                ..Default::default()
            }),
            spec_version: 3,
            ..Default::default()
        };
        let task = |spec: Option<TaskSpec>, version| Task {
            spec,
            spec_version: version,
            ..Default::default()
        };
        assert!(is_current(&svc, &task(Some(template("app:2")), 1)));
        assert!(!is_current(&svc, &task(Some(template("app:1")), 3)));
        assert!(is_current(&svc, &task(None, 3)));
        assert!(!is_current(&svc, &task(None, 2)));
    }
}
