//! Start order (compose's `depends_on`): a service's pending tasks are held back from placement
//! until every service it depends on meets its condition. Pure: it reads services and tasks
//! through [`ServiceLookup`] and says which pending tasks may go and why the others wait.
//!
//! The order governs the first start only, as in compose: once a task of the service has run,
//! its later tasks (restarts, scale-ups, updates) are placed whatever its dependencies do.

use std::collections::HashMap;

use shoal_proto::v1::{DependencyCondition, Service, ServiceMode, Task, TaskState};

use crate::store::State;

/// The reads the start-order check needs.
pub trait ServiceLookup<'a> {
    /// A service by id.
    fn service(&self, id: &str) -> Option<&'a Service>;
    /// A service by its (stored) name.
    fn service_by_name(&self, name: &str) -> Option<&'a Service>;
    /// Every task of a service, whatever its state.
    fn tasks_of_service(&self, service_id: &str) -> Vec<&'a Task>;
}

impl<'a> ServiceLookup<'a> for &'a State {
    fn service(&self, id: &str) -> Option<&'a Service> {
        State::service(self, id)
    }

    fn service_by_name(&self, name: &str) -> Option<&'a Service> {
        State::service_by_name(self, name)
    }

    fn tasks_of_service(&self, service_id: &str) -> Vec<&'a Task> {
        State::tasks_of_service(self, service_id).collect()
    }
}

/// Pending tasks split by their services' dependencies.
#[derive(Debug, Default)]
pub struct HeldBack<'a> {
    /// Tasks that may be placed now.
    pub ready: Vec<&'a Task>,
    /// Tasks that wait, with the status message saying for what.
    pub waiting: Vec<(&'a Task, String)>,
}

/// Splits `pending` into the tasks that may be placed and those whose service still waits for
/// a dependency. Each service is judged once, however many of its tasks are pending.
pub fn hold_back<'a>(view: &impl ServiceLookup<'a>, pending: Vec<&'a Task>) -> HeldBack<'a> {
    let mut judged: HashMap<&'a str, Option<String>> = HashMap::new();
    let mut out = HeldBack::default();
    for task in pending {
        let wait = judged
            .entry(task.service_id.as_str())
            .or_insert_with(|| {
                view.service(&task.service_id)
                    .and_then(|svc| waiting_for(view, svc))
            })
            .clone();
        match wait {
            Some(why) => out.waiting.push((task, why)),
            None => out.ready.push(task),
        }
    }
    out
}

/// Why the pending tasks of `service` may not be placed yet, or `None` when they may.
pub fn waiting_for<'a>(view: &impl ServiceLookup<'a>, service: &Service) -> Option<String> {
    let deps = service.spec.as_ref().map(|s| s.depends_on.as_slice())?;
    if deps.is_empty()
        || view
            .tasks_of_service(&service.id)
            .iter()
            .any(|t| has_run(t))
    {
        return None;
    }
    deps.iter().find_map(|dep| {
        let Some(other) = view.service_by_name(&dep.service) else {
            // Stack deploy creates services in any order: the dependency may come next.
            return Some(format!("dependency {} does not exist", dep.service));
        };
        let condition = dep.condition();
        let tasks = view.tasks_of_service(&other.id);
        (!condition_met(other, &tasks, condition)).then(|| {
            format!(
                "waiting for dependency {} ({})",
                dep.service,
                compose_name(condition)
            )
        })
    })
}

/// Compose's name of a condition, as users wrote it.
pub fn compose_name(condition: DependencyCondition) -> &'static str {
    match condition {
        DependencyCondition::DependsStarted => "service_started",
        DependencyCondition::DependsHealthy => "service_healthy",
        DependencyCondition::DependsCompleted => "service_completed_successfully",
    }
}

/// Whether a task's container was started at some point (a task that failed before, pulling
/// its image say, has not run).
fn has_run(task: &Task) -> bool {
    let Some(st) = task.status.as_ref() else {
        return false;
    };
    match st.state() {
        TaskState::TaskRunning | TaskState::TaskComplete => true,
        // Ended after its process started: the pid stays in the status.
        s if s.is_terminal() => st.pid != 0,
        _ => false,
    }
}

/// How many tasks a service must have for its condition to hold: its replicas, or at least one
/// (a global service's count follows its nodes; before its tasks exist there are none).
fn wanted(service: &Service) -> usize {
    let spec = service.spec.as_ref();
    match spec.map(|s| s.mode()) {
        Some(ServiceMode::ModeReplicated) | None => {
            usize::try_from(spec.map_or(1, |s| s.replicas)).unwrap_or(usize::MAX)
        }
        Some(ServiceMode::ModeGlobal) => 1,
    }
}

/// Whether a dependency meets `condition`, judged from its tasks.
pub fn condition_met(service: &Service, tasks: &[&Task], condition: DependencyCondition) -> bool {
    let wanted = wanted(service);
    if wanted == 0
        && service
            .spec
            .as_ref()
            .is_some_and(|s| s.mode() == ServiceMode::ModeReplicated)
    {
        // Scaled to zero: nothing is meant to run, so nothing is waited for.
        return true;
    }
    match condition {
        DependencyCondition::DependsStarted | DependencyCondition::DependsHealthy => {
            let active: Vec<&&Task> = tasks
                .iter()
                .filter(|t| t.desired_state() <= TaskState::TaskRunning)
                .collect();
            active.len() >= wanted.max(1)
                && active.iter().all(|t| {
                    let Some(st) = t.status.as_ref() else {
                        return false;
                    };
                    st.state() == TaskState::TaskRunning
                        && (condition == DependencyCondition::DependsStarted
                            // Without a healthcheck the agent reports no health: running is
                            // as healthy as it gets.
                            || st.health.as_ref().is_none_or(|h| h.status == "healthy"))
                })
        }
        DependencyCondition::DependsCompleted => {
            // The newest task of each slot (global: each node) tells how that slot ended.
            let mut newest: HashMap<(u64, &str), &Task> = HashMap::new();
            let replicated = service
                .spec
                .as_ref()
                .is_none_or(|s| s.mode() == ServiceMode::ModeReplicated);
            for t in tasks {
                // Slots above the replica count are leftovers of a scale-down.
                if replicated && usize::try_from(t.slot).map_or(true, |s| s > wanted) {
                    continue;
                }
                let key = (t.slot, if t.slot > 0 { "" } else { t.node_id.as_str() });
                let e = newest.entry(key).or_insert(t);
                if created_at(t) > created_at(e) {
                    *e = t;
                }
            }
            newest.len() >= wanted.max(1)
                && newest.values().all(|t| {
                    t.status.as_ref().is_some_and(|st| {
                        st.state() == TaskState::TaskComplete && st.exit_code == 0
                    })
                })
        }
    }
}

fn created_at(t: &Task) -> i64 {
    t.meta.as_ref().map_or(0, |m| m.created_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{HealthStatus, Meta, ServiceDependency, ServiceSpec, TaskStatus};

    #[derive(Default)]
    struct Fixture {
        services: Vec<Service>,
        tasks: Vec<Task>,
    }

    impl<'a> ServiceLookup<'a> for &'a Fixture {
        fn service(&self, id: &str) -> Option<&'a Service> {
            self.services.iter().find(|s| s.id == id)
        }
        fn service_by_name(&self, name: &str) -> Option<&'a Service> {
            self.services
                .iter()
                .find(|s| s.spec.as_ref().is_some_and(|sp| sp.name == name))
        }
        fn tasks_of_service(&self, service_id: &str) -> Vec<&'a Task> {
            self.tasks
                .iter()
                .filter(|t| t.service_id == service_id)
                .collect()
        }
    }

    fn service(name: &str, replicas: u64, deps: &[(&str, DependencyCondition)]) -> Service {
        Service {
            id: format!("id-{name}"),
            spec: Some(ServiceSpec {
                name: name.into(),
                replicas,
                depends_on: deps
                    .iter()
                    .map(|(s, c)| ServiceDependency {
                        service: s.to_string(),
                        condition: *c as i32,
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn task(service: &str, slot: u64, state: TaskState) -> Task {
        Task {
            id: format!("{service}.{slot}.{}", state as i32),
            service_id: format!("id-{service}"),
            service_name: service.into(),
            slot,
            desired_state: TaskState::TaskRunning as i32,
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn health(mut t: Task, status: &str) -> Task {
        if let Some(st) = t.status.as_mut() {
            st.health = Some(HealthStatus {
                status: status.into(),
                ..Default::default()
            });
        }
        t
    }

    fn exited(mut t: Task, code: i32, created_at: i64) -> Task {
        if let Some(st) = t.status.as_mut() {
            st.exit_code = code;
            st.pid = 42;
        }
        t.meta = Some(Meta {
            created_at,
            ..Default::default()
        });
        t.id = format!("{}-{created_at}", t.id);
        t
    }

    use DependencyCondition::*;
    use TaskState::*;

    /// The wait message of `app` (one pending task) in a cluster of `db` tasks.
    fn wait_of(condition: DependencyCondition, db_replicas: u64, db: Vec<Task>) -> Option<String> {
        let mut f = Fixture {
            services: vec![
                service("app", 1, &[("db", condition)]),
                service("db", db_replicas, &[]),
            ],
            tasks: db,
        };
        f.tasks.push(task("app", 1, TaskPending));
        let f = &f;
        let pending: Vec<&Task> = f.tasks.iter().filter(|t| t.service_name == "app").collect();
        let held = hold_back(&f, pending);
        held.waiting.first().map(|(_, why)| why.clone())
    }

    #[test]
    fn started_waits_for_every_replica_to_run() {
        let cases: Vec<(&str, Vec<Task>, bool)> = vec![
            ("no tasks yet", vec![], false),
            (
                "one of two running",
                vec![task("db", 1, TaskRunning)],
                false,
            ),
            (
                "one running, one starting",
                vec![task("db", 1, TaskRunning), task("db", 2, TaskStarting)],
                false,
            ),
            (
                "both running",
                vec![task("db", 1, TaskRunning), task("db", 2, TaskRunning)],
                true,
            ),
            (
                "a failed one still desired running",
                vec![
                    task("db", 1, TaskRunning),
                    task("db", 2, TaskRunning),
                    task("db", 2, TaskFailed),
                ],
                false,
            ),
        ];
        for (what, db, met) in cases {
            let wait = wait_of(DependsStarted, 2, db);
            assert_eq!(wait.is_none(), met, "{what}: {wait:?}");
            if let Some(w) = wait {
                assert_eq!(w, "waiting for dependency db (service_started)", "{what}");
            }
        }
    }

    #[test]
    fn healthy_waits_for_the_healthcheck_when_there_is_one() {
        let unhealthy = vec![health(task("db", 1, TaskRunning), "unhealthy")];
        assert_eq!(
            wait_of(DependsHealthy, 1, unhealthy).as_deref(),
            Some("waiting for dependency db (service_healthy)")
        );
        let healthy = vec![health(task("db", 1, TaskRunning), "healthy")];
        assert_eq!(wait_of(DependsHealthy, 1, healthy), None);
        // No healthcheck: running is enough.
        assert_eq!(
            wait_of(DependsHealthy, 1, vec![task("db", 1, TaskRunning)]),
            None
        );
        // Still starting (the agent holds a task with a healthcheck in STARTING until healthy).
        let starting = vec![health(task("db", 1, TaskStarting), "starting")];
        assert!(wait_of(DependsHealthy, 1, starting).is_some());
    }

    #[test]
    fn completed_waits_for_a_zero_exit_in_every_slot() {
        let done = |code, at| exited(task("db", 1, TaskComplete), code, at);
        assert!(wait_of(DependsCompleted, 1, vec![task("db", 1, TaskRunning)]).is_some());
        assert!(wait_of(DependsCompleted, 1, vec![done(1, 1)]).is_some());
        assert_eq!(
            wait_of(DependsCompleted, 1, vec![done(0, 1)]),
            None,
            "completed with 0"
        );
        // A failed attempt followed by a successful one counts as completed, not the other way.
        let failed_then_ok = vec![exited(task("db", 1, TaskFailed), 1, 1), done(0, 2)];
        assert_eq!(wait_of(DependsCompleted, 1, failed_then_ok), None);
        let ok_then_running = vec![done(0, 1), exited(task("db", 1, TaskRunning), 0, 2)];
        assert!(wait_of(DependsCompleted, 1, ok_then_running).is_some());
        let leftover = exited(task("db", 2, TaskShutdown), 0, 3);
        assert_eq!(
            wait_of(DependsCompleted, 1, vec![done(0, 1), leftover]),
            None
        );
        assert_eq!(
            wait_of(DependsCompleted, 1, vec![]).as_deref(),
            Some("waiting for dependency db (service_completed_successfully)")
        );
    }

    #[test]
    fn a_missing_dependency_is_not_met_and_says_so() {
        let f = Fixture {
            services: vec![service("app", 1, &[("db", DependsStarted)])],
            tasks: vec![task("app", 1, TaskPending)],
        };
        let f = &f;
        let held = hold_back(&f, f.tasks.iter().collect());
        assert!(held.ready.is_empty());
        assert_eq!(held.waiting[0].1, "dependency db does not exist");
    }

    #[test]
    fn a_service_that_has_run_no_longer_waits() {
        let mut f = Fixture {
            services: vec![
                service("app", 2, &[("db", DependsStarted)]),
                service("web", 1, &[]),
                service("db", 1, &[]),
            ],
            tasks: vec![
                // db has failed since app started; app's replacement and scale-up go anyway.
                task("db", 1, TaskFailed),
                exited(task("app", 1, TaskFailed), 137, 1),
                task("app", 1, TaskPending),
                task("app", 2, TaskPending),
                task("web", 1, TaskPending),
            ],
        };
        f.tasks[1].desired_state = TaskShutdown as i32;
        let f = &f;
        let pending: Vec<&Task> = f
            .tasks
            .iter()
            .filter(|t| t.status.as_ref().is_some_and(|s| s.state() == TaskPending))
            .collect();
        let held = hold_back(&f, pending);
        assert!(held.waiting.is_empty(), "{:?}", held.waiting);
        assert_eq!(held.ready.len(), 3);
    }

    #[test]
    fn every_dependency_must_be_met_and_the_first_unmet_one_is_named() {
        let f = Fixture {
            services: vec![
                service(
                    "app",
                    1,
                    &[("db", DependsStarted), ("migrate", DependsCompleted)],
                ),
                service("db", 1, &[]),
                service("migrate", 1, &[]),
            ],
            tasks: vec![
                task("db", 1, TaskRunning),
                task("migrate", 1, TaskRunning),
                task("app", 1, TaskPending),
            ],
        };
        let f = &f;
        let held = hold_back(&f, vec![&f.tasks[2]]);
        assert_eq!(
            held.waiting[0].1,
            "waiting for dependency migrate (service_completed_successfully)"
        );
    }

    #[test]
    fn the_store_state_answers_the_lookups() {
        use shoal_proto::v1::{store_action::Action, StoreAction, StoreRequest};
        let mut state = State::default();
        let mut db = task("db", 1, TaskRunning);
        db.id = "db1".into();
        let mut app = task("app", 1, TaskPending);
        app.id = "app1".into();
        let actions = [
            Action::CreateService(service("db", 1, &[])),
            Action::CreateService(service("app", 1, &[("db", DependsStarted)])),
            Action::CreateTask(db),
            Action::CreateTask(app),
        ];
        let req = StoreRequest {
            request_id: 1,
            actions: actions
                .into_iter()
                .map(|a| StoreAction { action: Some(a) })
                .collect(),
        };
        if let Err(e) = state.apply_request(1, &req) {
            panic!("apply failed: {e}");
        }
        let s = &state;
        let pending: Vec<&Task> = s.task("app1").into_iter().collect();
        let held = hold_back(&s, pending);
        assert!(held.waiting.is_empty(), "{:?}", held.waiting);
        assert_eq!(held.ready.len(), 1);
    }

    #[test]
    fn a_dependency_scaled_to_zero_is_not_waited_for() {
        assert_eq!(wait_of(DependsStarted, 0, vec![]), None);
    }
}
