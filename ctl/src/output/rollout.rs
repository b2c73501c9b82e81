//! How healthchecks, update/rollback configs and update status print: docker's names and
//! spellings (`rollback_started`, `stop-first`, `Healthcheck.StartPeriod`, ...).

use serde_json::{json, Map, Value};
use shoal_proto::v1::{
    update_config, update_status, HealthConfig, HealthStatus, UpdateConfig, UpdateStatus,
};

use super::rfc3339;

/// Swarm's monitor period when the config leaves it at 0.
pub const DEFAULT_MONITOR_NS: i64 = 5_000_000_000;

/// Docker's lowercase name of an update state ("updating", "rollback_started", ...).
pub fn update_state_name(state: i32) -> &'static str {
    use update_status::State;
    match State::try_from(state).unwrap_or(State::Unknown) {
        State::Unknown => "",
        State::Updating => "updating",
        State::Paused => "paused",
        State::Completed => "completed",
        State::RollbackStarted => "rollback_started",
        State::RollbackPaused => "rollback_paused",
        State::RollbackCompleted => "rollback_completed",
    }
}

/// The state shown beside REPLICAS in `service ls` while an update is not completed
/// ("updating", "paused", ...); `None` when there is nothing to say.
pub fn unfinished_update(st: Option<&UpdateStatus>) -> Option<&'static str> {
    let name = update_state_name(st?.state);
    (!name.is_empty() && name != "completed").then_some(name)
}

/// "pause" | "continue" | "rollback".
pub fn failure_action_name(a: i32) -> &'static str {
    use update_config::FailureAction;
    match FailureAction::try_from(a).unwrap_or(FailureAction::Pause) {
        FailureAction::Pause => "pause",
        FailureAction::Continue => "continue",
        FailureAction::Rollback => "rollback",
    }
}

/// "stop-first" | "start-first".
pub fn order_name(o: i32) -> &'static str {
    use update_config::Order;
    match Order::try_from(o).unwrap_or(Order::StopFirst) {
        Order::StopFirst => "stop-first",
        Order::StartFirst => "start-first",
    }
}

/// The config in effect: the service's, or swarm's defaults when it has none; a monitor of 0
/// is the 5 s default.
pub fn effective(cfg: Option<&UpdateConfig>) -> UpdateConfig {
    let mut c = cfg.cloned().unwrap_or(UpdateConfig {
        parallelism: 1,
        ..Default::default()
    });
    if c.monitor_ns == 0 {
        c.monitor_ns = DEFAULT_MONITOR_NS;
    }
    c
}

/// `Spec.UpdateConfig` / `Spec.RollbackConfig` with docker's field names (durations in ns).
pub fn update_config_json(cfg: Option<&UpdateConfig>) -> Value {
    let c = effective(cfg);
    let mut m = Map::new();
    m.insert("Parallelism".into(), json!(c.parallelism));
    if c.delay_ns != 0 {
        m.insert("Delay".into(), json!(c.delay_ns));
    }
    m.insert(
        "FailureAction".into(),
        json!(failure_action_name(c.failure_action)),
    );
    m.insert("Monitor".into(), json!(c.monitor_ns));
    m.insert("MaxFailureRatio".into(), json!(c.max_failure_ratio));
    m.insert("Order".into(), json!(order_name(c.order)));
    Value::Object(m)
}

/// `ContainerSpec.Healthcheck` as docker writes it: zero fields left out (they inherit the
/// image's).
pub fn healthcheck_json(h: &HealthConfig) -> Value {
    let mut m = Map::new();
    if !h.test.is_empty() {
        m.insert("Test".into(), json!(h.test));
    }
    let fields = [
        ("Interval", h.interval_ns),
        ("Timeout", h.timeout_ns),
        ("StartPeriod", h.start_period_ns),
        ("StartInterval", h.start_interval_ns),
    ];
    for (k, v) in fields {
        if v != 0 {
            m.insert(k.into(), json!(v));
        }
    }
    if h.retries != 0 {
        m.insert("Retries".into(), json!(h.retries));
    }
    Value::Object(m)
}

/// The service's `UpdateStatus`: State, Message, StartedAt and (once finished) CompletedAt.
pub fn update_status_json(st: &UpdateStatus) -> Value {
    let mut m = Map::new();
    m.insert("State".into(), json!(update_state_name(st.state)));
    if st.started_at != 0 {
        m.insert("StartedAt".into(), json!(rfc3339(st.started_at)));
    }
    if st.completed_at != 0 {
        m.insert("CompletedAt".into(), json!(rfc3339(st.completed_at)));
    }
    m.insert("Message".into(), json!(st.message));
    Value::Object(m)
}

/// A task's health as `service ps` appends it to CURRENT STATE, the way `docker ps` does:
/// " (health: starting)", " (healthy)", " (unhealthy)"; empty without a healthcheck.
pub fn health_suffix(h: Option<&HealthStatus>) -> String {
    match h.map(|h| h.status.as_str()) {
        Some("starting") => " (health: starting)".into(),
        Some(s) if !s.is_empty() => format!(" ({s})"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dockers() {
        use update_status::State;
        let names: Vec<&str> = [
            State::Updating,
            State::Paused,
            State::Completed,
            State::RollbackStarted,
            State::RollbackPaused,
            State::RollbackCompleted,
        ]
        .iter()
        .map(|s| update_state_name(*s as i32))
        .collect();
        assert_eq!(
            names,
            [
                "updating",
                "paused",
                "completed",
                "rollback_started",
                "rollback_paused",
                "rollback_completed"
            ]
        );
        assert_eq!(update_state_name(State::Unknown as i32), "");
        assert_eq!(
            failure_action_name(update_config::FailureAction::Rollback as i32),
            "rollback"
        );
        assert_eq!(
            order_name(update_config::Order::StartFirst as i32),
            "start-first"
        );
    }

    #[test]
    fn unfinished_updates_only() {
        let st = |s: update_status::State| UpdateStatus {
            state: s as i32,
            ..Default::default()
        };
        assert_eq!(unfinished_update(None), None);
        assert_eq!(
            unfinished_update(Some(&st(update_status::State::Completed))),
            None
        );
        assert_eq!(
            unfinished_update(Some(&st(update_status::State::Updating))),
            Some("updating")
        );
        assert_eq!(
            unfinished_update(Some(&st(update_status::State::RollbackCompleted))),
            Some("rollback_completed")
        );
    }

    #[test]
    fn configs_show_what_applies() {
        assert_eq!(
            update_config_json(None),
            json!({"Parallelism": 1, "FailureAction": "pause", "Monitor": 5_000_000_000_i64,
                   "MaxFailureRatio": 0.0, "Order": "stop-first"})
        );
        let c = UpdateConfig {
            parallelism: 0,
            delay_ns: 2_000_000_000,
            failure_action: update_config::FailureAction::Rollback as i32,
            monitor_ns: 10_000_000_000,
            max_failure_ratio: 0.25,
            order: update_config::Order::StartFirst as i32,
        };
        assert_eq!(
            update_config_json(Some(&c)),
            json!({"Parallelism": 0, "Delay": 2_000_000_000_i64, "FailureAction": "rollback",
                   "Monitor": 10_000_000_000_i64, "MaxFailureRatio": 0.25,
                   "Order": "start-first"})
        );
    }

    #[test]
    fn healthcheck_and_status_documents() {
        let h = HealthConfig {
            test: vec!["CMD-SHELL".into(), "curl -f localhost".into()],
            interval_ns: 2_000_000_000,
            retries: 5,
            ..Default::default()
        };
        assert_eq!(
            healthcheck_json(&h),
            json!({"Test": ["CMD-SHELL", "curl -f localhost"], "Interval": 2_000_000_000_i64,
                   "Retries": 5})
        );
        let st = UpdateStatus {
            state: update_status::State::Paused as i32,
            started_at: 1_500_000_000_000_000_000,
            completed_at: 0,
            message: "update paused due to failure or early termination of task t1".into(),
        };
        let v = update_status_json(&st);
        assert_eq!(v["State"], "paused");
        assert_eq!(v["StartedAt"], "2017-07-14T02:40:00.000000000Z");
        assert!(v.get("CompletedAt").is_none());
        assert_eq!(
            v["Message"],
            "update paused due to failure or early termination of task t1"
        );
    }

    #[test]
    fn health_suffixes() {
        let h = |s: &str| HealthStatus {
            status: s.into(),
            ..Default::default()
        };
        assert_eq!(health_suffix(None), "");
        assert_eq!(health_suffix(Some(&h("starting"))), " (health: starting)");
        assert_eq!(health_suffix(Some(&h("unhealthy"))), " (unhealthy)");
        assert_eq!(health_suffix(Some(&h("healthy"))), " (healthy)");
        assert_eq!(health_suffix(Some(&h(""))), "");
    }
}
