//! The leader-only loops that drive the pure orchestrator and scheduler: each reacts to store
//! events (never polls), computes decisions from a consistent read of the store and writes them
//! back through Raft.

use std::time::Duration;

use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::*;
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};

use crate::orchestrator::{self, Plan};
use crate::scheduler::{depends, Outcome, Scheduler};
use crate::store::Store;

/// Most actions in one Raft write: keeps entries small enough to replicate quickly.
const MAX_ACTIONS_PER_WRITE: usize = 1000;

/// Shortest pause between a store event and the round it starts: lets a burst settle.
const SETTLE: Duration = Duration::from_millis(2);

/// How long a loop waits after an event, given that its last round took `spent` to compute:
/// at least as long as the round took, so a loop whose rounds look at the whole state (100,000
/// tasks: tens of milliseconds) takes at most half a core whatever the rate of writes, each
/// round then covering every change since the last one; a round of a small cluster costs
/// microseconds and waits [`SETTLE`].
pub fn settle_after(spent: Duration) -> Duration {
    spent.max(SETTLE)
}

/// Waits for the next batch of store events (or a timer), then lets a burst settle for
/// [`settle_after`]`(spent)`, `spent` being what the last round took.
async fn next_round(
    events: &mut broadcast::Receiver<std::sync::Arc<Vec<crate::store::Event>>>,
    shutdown: &mut watch::Receiver<bool>,
    wake_at_ns: Option<i64>,
    spent: Duration,
) -> bool {
    let sleep = match wake_at_ns {
        Some(at) => {
            let d = (at - shoal_proto::now_ns()).max(0) as u64;
            Duration::from_nanos(d)
        }
        None => Duration::from_secs(3600),
    };
    tokio::select! {
        r = events.recv() => {
            if let Err(broadcast::error::RecvError::Closed) = r { return false; }
        }
        _ = tokio::time::sleep(sleep) => {}
        _ = shutdown.changed() => return false,
    }
    tokio::time::sleep(settle_after(spent)).await;
    while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) = events.try_recv() {}
    !*shutdown.borrow()
}

async fn write(store: &Store, actions: Vec<StoreAction>, what: &str) {
    for chunk in actions.chunks(MAX_ACTIONS_PER_WRITE) {
        if let Err(e) = store.propose(chunk.to_vec()).await {
            warn!(error = %e, what, "write failed");
        }
    }
}

fn plan_actions(plan: Plan, out: &mut Vec<StoreAction>) {
    for a in plan.actions {
        let action = match a {
            orchestrator::Action::CreateTask(t) => {
                info!(task.id = %t.id, service.name = %t.service_name, slot = t.slot, "task created");
                Action::CreateTask(t)
            }
            orchestrator::Action::SetDesired { task_id, desired } => {
                debug!(task.id = %task_id, desired = ?desired, "task desired state");
                Action::TaskDesired(TaskDesiredUpdate {
                    task_id,
                    desired_state: desired as i32,
                })
            }
            orchestrator::Action::RemoveTask(id) => {
                debug!(task.id = %id, "task removed");
                Action::RemoveTask(id)
            }
            orchestrator::Action::PutService(svc) => {
                let st = svc.update_status.clone().unwrap_or_default();
                info!(
                    service.id = %svc.id,
                    service.name = %svc.spec.as_ref().map(|s| s.name.as_str()).unwrap_or(""),
                    spec_version = svc.spec_version,
                    state = ?st.state(),
                    message = %st.message,
                    "service update status"
                );
                Action::UpdateService(*svc)
            }
        };
        out.push(StoreAction {
            action: Some(action),
        });
    }
}

/// Reconciles every service into tasks, and rolls out its spec changes (the updater), until
/// shutdown.
pub async fn run_orchestrator(store: Store, mut shutdown: watch::Receiver<bool>) {
    let mut events = store.watch();
    let mut wake_at: Option<i64> = None;
    let mut memory = orchestrator::update::Memory::default();
    loop {
        let now = shoal_proto::now_ns();
        let mut actions = Vec::new();
        // A service write is a compare-and-set: it goes with its service's task decisions in a
        // write of their own, so a lost race drops only that service's round.
        let mut own_writes: Vec<Vec<StoreAction>> = Vec::new();
        let mut next_wake: Option<i64> = None;
        let started = std::time::Instant::now();
        store.read(|s| {
            memory.observe(s.tasks(), now);
            let nodes: Vec<&Node> = s.nodes().collect();
            for svc in s.services() {
                let tasks: Vec<&Task> = s.tasks_of_service(&svc.id).collect();
                let plan = orchestrator::plan_service(svc, &tasks, &nodes, now, &memory);
                if let Some(w) = plan.wake_at_ns {
                    next_wake = Some(next_wake.map_or(w, |n: i64| n.min(w)));
                }
                if plan
                    .actions
                    .iter()
                    .any(|a| matches!(a, orchestrator::Action::PutService(_)))
                {
                    let mut own = Vec::new();
                    plan_actions(plan, &mut own);
                    own_writes.push(own);
                } else {
                    plan_actions(plan, &mut actions);
                }
            }
            // Tasks whose service is gone.
            let mut orphans: std::collections::BTreeMap<&str, Vec<&Task>> = Default::default();
            for t in s.tasks() {
                if s.service(&t.service_id).is_none() {
                    orphans.entry(t.service_id.as_str()).or_default().push(t);
                }
            }
            for tasks in orphans.values() {
                plan_actions(orchestrator::reconcile_removed(tasks), &mut actions);
            }
        });
        let spent = started.elapsed();
        wake_at = next_wake.or(wake_at.filter(|w| *w > now));
        if !actions.is_empty() {
            write(&store, actions, "orchestrator").await;
        }
        for own in own_writes {
            write(&store, own, "updater").await;
        }
        if !next_round(&mut events, &mut shutdown, wake_at, spent).await {
            return;
        }
    }
}

/// Places pending tasks on nodes until shutdown.
pub async fn run_scheduler(store: Store, mut shutdown: watch::Receiver<bool>) {
    let mut events = store.watch();
    loop {
        let now = shoal_proto::now_ns();
        let started = std::time::Instant::now();
        let actions: Vec<StoreAction> = store.read(|s| {
            let pending: Vec<&Task> = s
                .tasks()
                .filter(|t| {
                    t.status.as_ref().map(|st| st.state) == Some(TaskState::TaskPending as i32)
                        && t.desired_state <= TaskState::TaskRunning as i32
                })
                .collect();
            if pending.is_empty() {
                return Vec::new();
            }
            // Tasks whose services wait for a dependency (depends_on) are not placed yet; any
            // store event (a dependency's task changing state) brings them up again.
            let held = depends::hold_back(&s, pending);
            let mut actions = Vec::new();
            for (task, why) in held.waiting {
                // Written once: an unchanged message would only wake this loop again.
                let unchanged = task
                    .status
                    .as_ref()
                    .is_some_and(|st| st.message == why && st.err.is_empty());
                if !unchanged {
                    info!(task.id = %task.id, service.name = %task.service_name, reason = %why, "task waits for a dependency");
                    actions.push(StoreAction {
                        action: Some(Action::TaskStatus(TaskStatusUpdate {
                            task_id: task.id.clone(),
                            status: Some(TaskStatus {
                                state: TaskState::TaskPending as i32,
                                timestamp: now,
                                message: why,
                                ..Default::default()
                            }),
                        })),
                    });
                }
            }
            let pending = held.ready;
            if pending.is_empty() {
                return actions;
            }
            let mut sched = Scheduler::new(s.nodes(), s.tasks());
            for d in sched.schedule(&pending) {
                match d.outcome {
                    Outcome::Assign(node_id) => {
                        debug!(task.id = %d.task_id, node.id = %node_id, "task assigned");
                        actions.push(StoreAction {
                            action: Some(Action::TaskAssign(TaskAssignment {
                                task_id: d.task_id,
                                node_id,
                            })),
                        });
                    }
                    Outcome::NoFit(reason) => {
                        // Only write when the reason changed, or every write would wake us again.
                        let unchanged = s
                            .task(&d.task_id)
                            .and_then(|t| t.status.as_ref())
                            .is_some_and(|st| st.err == reason);
                        if !unchanged {
                            info!(task.id = %d.task_id, %reason, "task cannot be placed");
                            actions.push(StoreAction {
                                action: Some(Action::TaskStatus(TaskStatusUpdate {
                                    task_id: d.task_id,
                                    status: Some(TaskStatus {
                                        state: TaskState::TaskPending as i32,
                                        timestamp: now,
                                        message: "pending task scheduling".into(),
                                        err: reason,
                                        ..Default::default()
                                    }),
                                })),
                            });
                        }
                    }
                }
            }
            actions
        });
        let spent = started.elapsed();
        if !actions.is_empty() {
            write(&store, actions, "scheduler").await;
        }
        if !next_round(&mut events, &mut shutdown, None, spent).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_waits_at_least_as_long_as_its_last_round_took() {
        // A small cluster's round costs next to nothing: only the burst is let settle.
        assert_eq!(settle_after(Duration::ZERO), SETTLE);
        assert_eq!(settle_after(Duration::from_micros(300)), SETTLE);
        // A round over 100,000 tasks: the loop then runs at most half the time.
        assert_eq!(
            settle_after(Duration::from_millis(40)),
            Duration::from_millis(40)
        );
    }
}
