//! Tests of the healthcheck and update/rollback flags in the spec (create and update), and of
//! how updates and health show in `ls`, `ps` and `inspect`.

use std::collections::HashMap;

use clap::Parser;
use shoal_proto::v1::{
    update_config, update_status, HealthConfig, HealthStatus, Service, ServiceSummary, Task,
    TaskState, TaskStatus, UpdateConfig, UpdateStatus,
};

use super::*;
use crate::output::json as js;

fn create_args(args: &[&str]) -> CreateArgs {
    let mut all = vec!["shoalctl", "service", "create", "--name", "web"];
    all.extend_from_slice(args);
    all.push("busybox");
    match crate::cli::Cli::try_parse_from(all)
        .expect("parses")
        .command
    {
        crate::cli::Command::Service(crate::cli::ServiceCommand::Create(a)) => *a,
        _ => panic!("not create"),
    }
}

fn update_args(args: &[&str]) -> UpdateArgs {
    let mut all = vec!["shoalctl", "service", "update"];
    all.extend_from_slice(args);
    all.push("web");
    match crate::cli::Cli::try_parse_from(all)
        .expect("parses")
        .command
    {
        crate::cli::Command::Service(crate::cli::ServiceCommand::Update(a)) => *a,
        _ => panic!("not update"),
    }
}

fn health(spec: &ServiceSpec) -> Option<HealthConfig> {
    spec.task
        .as_ref()
        .and_then(|t| t.container.as_ref())
        .and_then(|c| c.healthcheck.clone())
}

fn updated(spec: &ServiceSpec, args: &[&str]) -> anyhow::Result<ServiceSpec> {
    let mut s = spec.clone();
    apply_update(&mut s, &update_args(args), &NetworkIds::new())?;
    Ok(s)
}

const S: i64 = 1_000_000_000;

#[test]
fn create_healthcheck() {
    let spec = build_spec(&create_args(&[])).expect("valid");
    assert_eq!(health(&spec), None, "no flags: the image's check applies");
    let spec = build_spec(&create_args(&[
        "--health-cmd",
        "wget -q -O- localhost",
        "--health-interval",
        "2s",
        "--health-retries",
        "5",
    ]))
    .expect("valid");
    assert_eq!(
        health(&spec),
        Some(HealthConfig {
            test: vec!["CMD-SHELL".into(), "wget -q -O- localhost".into()],
            interval_ns: 2 * S,
            retries: 5,
            ..Default::default()
        })
    );
    // Timing alone keeps the image's test (empty Test inherits).
    let spec = build_spec(&create_args(&["--health-timeout", "3s"])).expect("valid");
    assert_eq!(
        health(&spec),
        Some(HealthConfig {
            timeout_ns: 3 * S,
            ..Default::default()
        })
    );
    let spec = build_spec(&create_args(&["--no-healthcheck"])).expect("valid");
    assert_eq!(
        health(&spec).map(|h| h.test),
        Some(vec!["NONE".to_string()])
    );
    let e = build_spec(&create_args(&["--no-healthcheck", "--health-cmd", "true"]))
        .expect_err("conflict");
    assert_eq!(
        e.to_string(),
        "--no-healthcheck conflicts with --health-* options"
    );
}

#[test]
fn update_healthcheck_like_docker() {
    let base = build_spec(&create_args(&[
        "--health-cmd",
        "true",
        "--health-retries",
        "2",
    ]))
    .expect("valid");
    // A field given replaces that field only.
    let s = updated(&base, &["--health-interval", "7s"]).expect("valid");
    let h = health(&s).expect("check");
    assert_eq!(h.test, vec!["CMD-SHELL", "true"]);
    assert_eq!((h.interval_ns, h.retries), (7 * S, 2));
    // `--health-cmd ""` goes back to the image's test, the rest stays.
    let s = updated(&base, &["--health-cmd", ""]).expect("valid");
    let h = health(&s).expect("check");
    assert!(h.test.is_empty());
    assert_eq!(h.retries, 2);
    // --no-healthcheck replaces everything with NONE ...
    let none = updated(&base, &["--no-healthcheck"]).expect("valid");
    assert_eq!(
        health(&none),
        Some(HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        })
    );
    // ... and any health flag lifts NONE again.
    let s = updated(&none, &["--health-retries", "4"]).expect("valid");
    assert_eq!(
        health(&s),
        Some(HealthConfig {
            retries: 4,
            ..Default::default()
        })
    );
    let s = updated(&none, &["--health-cmd", "curl -f localhost"]).expect("valid");
    assert_eq!(
        health(&s).expect("check").test,
        vec!["CMD-SHELL", "curl -f localhost"]
    );
    // A service with no check of its own gets one from the flags.
    let plain = build_spec(&create_args(&[])).expect("valid");
    let s = updated(&plain, &["--health-start-period", "30s"]).expect("valid");
    assert_eq!(
        health(&s),
        Some(HealthConfig {
            start_period_ns: 30 * S,
            ..Default::default()
        })
    );
    assert!(updated(&base, &["--no-healthcheck", "--health-retries", "1"]).is_err());
    // Other flags leave the check alone.
    let s = updated(&base, &["--image", "busybox:2"]).expect("valid");
    assert_eq!(health(&s), health(&base));
}

#[test]
fn create_update_and_rollback_configs() {
    let spec = build_spec(&create_args(&[])).expect("valid");
    assert_eq!((spec.update, spec.rollback), (None, None));
    let spec = build_spec(&create_args(&[
        "--update-order",
        "start-first",
        "--update-failure-action",
        "rollback",
        "--rollback-parallelism",
        "3",
    ]))
    .expect("valid");
    assert_eq!(
        spec.update,
        Some(UpdateConfig {
            parallelism: 1,
            order: update_config::Order::StartFirst as i32,
            failure_action: update_config::FailureAction::Rollback as i32,
            ..Default::default()
        })
    );
    assert_eq!(
        spec.rollback,
        Some(UpdateConfig {
            parallelism: 3,
            ..Default::default()
        })
    );
}

#[test]
fn update_merges_configs() {
    let base = build_spec(&create_args(&[
        "--update-parallelism",
        "2",
        "--update-delay",
        "5s",
    ]))
    .expect("valid");
    let s = updated(
        &base,
        &[
            "--update-monitor",
            "20s",
            "--update-max-failure-ratio",
            "0.5",
            "--rollback-failure-action",
            "continue",
            "--rollback-order",
            "start-first",
        ],
    )
    .expect("valid");
    assert_eq!(
        s.update,
        Some(UpdateConfig {
            parallelism: 2,
            delay_ns: 5 * S,
            monitor_ns: 20 * S,
            max_failure_ratio: 0.5,
            ..Default::default()
        })
    );
    assert_eq!(
        s.rollback,
        Some(UpdateConfig {
            parallelism: 1,
            failure_action: update_config::FailureAction::Continue as i32,
            order: update_config::Order::StartFirst as i32,
            ..Default::default()
        })
    );
    let s = updated(&base, &["--update-parallelism", "0"]).expect("valid");
    assert_eq!(
        s.update.map(|u| (u.parallelism, u.delay_ns)),
        Some((0, 5 * S))
    );
}

#[test]
fn force_bumps_the_template_only() {
    let base = build_spec(&create_args(&[])).expect("valid");
    let once = updated(&base, &["--force"]).expect("valid");
    let twice = updated(&once, &["--force"]).expect("valid");
    let force = |s: &ServiceSpec| s.task.as_ref().map(|t| t.force_update);
    assert_eq!((force(&once), force(&twice)), (Some(1), Some(2)));
    let mut same = twice.clone();
    if let Some(t) = same.task.as_mut() {
        t.force_update = 0;
    }
    assert_eq!(same, base, "nothing else changes");
}

fn status(state: update_status::State, message: &str) -> UpdateStatus {
    UpdateStatus {
        state: state as i32,
        started_at: 1_500_000_000_000_000_000,
        completed_at: 0,
        message: message.into(),
    }
}

fn service_with(update_status: Option<UpdateStatus>) -> Service {
    Service {
        id: "0123456789abcdefghij".into(),
        spec: Some(build_spec(&create_args(&["--replicas", "4"])).expect("valid")),
        update_status,
        ..Default::default()
    }
}

#[test]
fn ls_shows_an_unfinished_update() {
    let sum = |st| ServiceSummary {
        service: Some(service_with(st)),
        running_tasks: 2,
        desired_tasks: 4,
    };
    let r = ServiceRow::of(&sum(Some(status(
        update_status::State::Updating,
        "update in progress",
    ))));
    assert_eq!(r.replicas, "2/4 (updating)");
    assert_eq!(r.json()["UpdateStatus"]["State"], "updating");
    assert_eq!(r.json()["UpdateStatus"]["Message"], "update in progress");
    let r = ServiceRow::of(&sum(Some(status(
        update_status::State::RollbackPaused,
        "rollback paused",
    ))));
    assert_eq!(r.replicas, "2/4 (rollback_paused)");
    let r = ServiceRow::of(&sum(Some(status(
        update_status::State::Completed,
        "update completed",
    ))));
    assert_eq!(r.replicas, "2/4");
    assert_eq!(r.json()["UpdateStatus"]["State"], "completed");
    let r = ServiceRow::of(&sum(None));
    assert_eq!(r.replicas, "2/4");
    assert!(r.json().get("UpdateStatus").is_none());
}

#[test]
fn ps_shows_health() {
    let task = |id: &str, slot, state: TaskState, health: Option<&str>| Task {
        id: id.into(),
        slot,
        status: Some(TaskStatus {
            state: state as i32,
            timestamp: 1_000_000_000,
            health: health.map(|h| HealthStatus {
                status: h.into(),
                failing_streak: 1,
                log: vec![shoal_proto::v1::HealthResult {
                    start: 2_000_000_000,
                    end: 2_100_000_000,
                    exit_code: 1,
                    output: "connection refused".into(),
                }],
            }),
            ..Default::default()
        }),
        desired_state: TaskState::TaskRunning as i32,
        ..Default::default()
    };
    let tasks = vec![
        task("t1", 1, TaskState::TaskStarting, Some("starting")),
        task("t2", 2, TaskState::TaskRunning, Some("healthy")),
        task("t3", 3, TaskState::TaskStarting, Some("unhealthy")),
        task("t4", 4, TaskState::TaskRunning, None),
    ];
    let rows = task_rows("web", &tasks, &HashMap::new(), 6_000_000_000, false);
    let states: Vec<&str> = rows.iter().map(|r| r.current_state.as_str()).collect();
    assert_eq!(
        states,
        [
            "Starting 5 seconds ago (health: starting)",
            "Running 5 seconds ago (healthy)",
            "Starting 5 seconds ago (unhealthy)",
            "Running 5 seconds ago",
        ]
    );
    assert_eq!(rows[0].json()["Health"], "starting");
    assert_eq!(rows[3].json()["Health"], "");
    // The whole health, in docker's State.Health shape: streak and the last probes' outputs.
    let detail = &rows[2].json()["HealthDetail"];
    assert_eq!(detail["Status"], "unhealthy");
    assert_eq!(detail["FailingStreak"], 1);
    assert_eq!(detail["Log"][0]["ExitCode"], 1);
    assert_eq!(detail["Log"][0]["Output"], "connection refused");
    assert!(rows[3].json()["HealthDetail"].is_null());
}

#[test]
fn inspect_shows_update_state_configs_and_health() {
    let mut svc = service_with(Some(UpdateStatus {
        completed_at: 1_500_000_060_000_000_000,
        ..status(
            update_status::State::RollbackCompleted,
            "rollback completed",
        )
    }));
    let mut prev = svc.spec.clone().expect("spec");
    prev.replicas = 2;
    svc.previous_spec = Some(Box::new(prev));
    if let Some(spec) = svc.spec.as_mut() {
        spec.update = Some(UpdateConfig {
            parallelism: 2,
            delay_ns: 10 * S,
            failure_action: update_config::FailureAction::Rollback as i32,
            monitor_ns: 0,
            max_failure_ratio: 0.2,
            order: update_config::Order::StartFirst as i32,
        });
        if let Some(c) = spec.task.as_mut().and_then(|t| t.container.as_mut()) {
            c.healthcheck = Some(HealthConfig {
                test: vec!["CMD-SHELL".into(), "true".into()],
                interval_ns: 2 * S,
                ..Default::default()
            });
        }
    }
    let v = js::service(&svc);
    assert_eq!(v["UpdateStatus"]["State"], "rollback_completed");
    assert_eq!(v["UpdateStatus"]["Message"], "rollback completed");
    assert_eq!(
        v["UpdateStatus"]["StartedAt"],
        "2017-07-14T02:40:00.000000000Z"
    );
    assert_eq!(
        v["UpdateStatus"]["CompletedAt"],
        "2017-07-14T02:41:00.000000000Z"
    );
    let u = &v["Spec"]["UpdateConfig"];
    assert_eq!(u["Parallelism"], 2);
    assert_eq!(u["Delay"], 10 * S);
    assert_eq!(u["FailureAction"], "rollback");
    assert_eq!(u["Monitor"], 5 * S);
    assert_eq!(u["Order"], "start-first");
    assert_eq!(v["Spec"]["RollbackConfig"]["FailureAction"], "pause");
    assert_eq!(v["Spec"]["RollbackConfig"]["Parallelism"], 1);
    let h = &v["Spec"]["TaskTemplate"]["ContainerSpec"]["Healthcheck"];
    assert_eq!(h["Test"], serde_json::json!(["CMD-SHELL", "true"]));
    assert_eq!(h["Interval"], 2 * S);
    assert!(h.get("Retries").is_none());
    assert_eq!(v["PreviousSpec"]["Mode"]["Replicated"]["Replicas"], 2);
    assert!(v["PreviousSpec"].get("PreviousSpec").is_none());
    assert!(js::service(&service_with(None))
        .get("UpdateStatus")
        .is_none());
    assert!(js::service(&service_with(None))
        .get("PreviousSpec")
        .is_none());

    let text = pretty(&svc);
    for line in [
        "UpdateStatus:",
        " State:         rollback_completed",
        " Started:       2017-07-14T02:40:00.000000000Z",
        " Completed:     2017-07-14T02:41:00.000000000Z",
        " Message:       rollback completed",
        "UpdateConfig:",
        " Parallelism:   2",
        " Delay:         10s",
        " On failure:    rollback",
        " Monitoring Period: 5s",
        " Max failure ratio: 0.2",
        " Update order:  start-first",
        "RollbackConfig:",
        " Rollback order: stop-first",
        "Healthcheck:",
        " Test:          CMD-SHELL true",
        " Interval:      2s",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing in\n{text}"
        );
    }
}
