//! End-to-end scenarios of issue 11, "updates that never drop a request": a real HTTP app
//! (Debian's python3 in an image built with mmdebstrap, `shoal_tests::app_image`) with a
//! healthcheck, 4 replicas on 2 hosts behind the routing mesh, and a steady client at 50
//! requests/s from a test host outside the cluster (`shoal_tests::steady`). Rolling updates
//! start-first and stop-first, `service rollback`, a version whose healthcheck never passes (pause,
//! automatic rollback), `--force`, a leader killed mid-update, and a service that is never
//! healthy. Every request must be answered; no answer may come from a version that never became
//! healthy. Driven through shoalctl as a user would; traffic stays inside the testbed.
//!
//! The versions are the app's `VERSION` environment variable (`-e`, `--env-add`): one image,
//! several specs. `HEALTHY=never` makes `/healthz` fail, so that spec never becomes RUNNING.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::SocketAddrV4;
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::Value;
use shoal_tests::app_image::{self, HEALTH_CMD};
use shoal_tests::ha::Managers;
use shoal_tests::steady::{self, Answer, Report, SteadyClient, SteadyOptions};
use shoal_tests::testbed::{stderr_of, Cluster, ClusterOptions, Host, TaskRow, Testbed, DEADLINE};

/// The service's replicas (on two worker hosts).
const REPLICAS: usize = 4;
/// The published port of the routing mesh.
const PORT: u16 = 8080;
/// How long an update (or rollback) may take in all: generous, CI machines are slow.
const UPDATE_DEADLINE: Duration = Duration::from_secs(240);
/// How long a waiting `service update`/`rollback` may run before the test gives up on it.
const CTL_LONG: Duration = Duration::from_secs(300);

/// The healthcheck flags of every app service: `/healthz` every second, two failures in a row
/// make a task unhealthy.
fn health_flags() -> Vec<String> {
    [
        "--health-cmd",
        HEALTH_CMD,
        "--health-interval",
        "1s",
        "--health-timeout",
        "3s",
        "--health-retries",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Skips (prints why, returns `None`) when the app image cannot be built on this machine.
fn app_base_or_skip(test: &str) -> Result<Option<()>> {
    match app_image::prepare() {
        Ok(_) => Ok(Some(())),
        Err(e) if app_image::is_unavailable(&e) => {
            eprintln!("skipping {test}: {e:#}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A cluster of one manager and two workers with the app image pushed, and a client host.
struct Bed {
    c: Cluster,
    image: String,
    client: Host,
    targets: Vec<SocketAddrV4>,
}

impl Bed {
    fn start(name: &str) -> Result<Bed> {
        let c = Cluster::start_with(Testbed::new(name)?, ClusterOptions::new(2))?;
        let image = app_image::push_app_to(&c)?;
        // A host on the switch that is no node: the client reaches the service as a user would.
        let client = c.testbed().add_host("cl")?;
        let targets = c
            .agents
            .iter()
            .map(|a| SocketAddrV4::new(a.host.ip(), PORT))
            .collect();
        Ok(Bed {
            c,
            image,
            client,
            targets,
        })
    }

    /// `service create --name web --replicas 4 -p 8080:80 -e VERSION=v1 <health> EXTRA IMAGE`,
    /// waiting for 4 Running tasks on both hosts and the mesh answering from all of them.
    fn create_web(&self, extra: &[&str]) -> Result<Vec<TaskRow>> {
        let mut args: Vec<String> = [
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            &REPLICAS.to_string(),
            "-p",
            &format!("{PORT}:80"),
            "-e",
            "VERSION=v1",
            "--stop-grace-period",
            "10s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(health_flags());
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(self.image.clone());
        let out = ctl_long(&self.c, &args)?;
        ensure!(
            out.status.success(),
            "service create web: {}",
            stderr_of(&out)
        );
        let tasks = self.c.wait_running("web", REPLICAS)?;
        let nodes: BTreeSet<&str> = tasks.iter().map(|t| t.node.as_str()).collect();
        ensure!(
            nodes.len() == 2,
            "4 replicas should spread over both hosts, got {nodes:?}"
        );
        self.wait_versions("v1", &tasks)?;
        Ok(tasks)
    }

    /// Waits until the mesh has answered `version` from every one of `tasks` (by hostname).
    fn wait_versions(&self, version: &str, tasks: &[TaskRow]) -> Result<()> {
        let want: BTreeSet<String> = tasks.iter().map(|t| hostname_of(&t.id)).collect();
        let mut seen = BTreeSet::new();
        let mut i = 0usize;
        Testbed::wait_for(
            DEADLINE,
            &format!("the mesh to answer {version} from {want:?}"),
            || {
                let target = self.targets[i % self.targets.len()];
                i += 1;
                match steady::get_from(&self.client.netns_path(), target, Duration::from_secs(2))? {
                    Answer::Ok { version: v, host } if v == version => {
                        seen.insert(host);
                    }
                    other => bail!("{target}: {other:?}"),
                }
                Ok(want.is_subset(&seen))
            },
        )
    }

    /// Starts the steady client: 50 requests/s, round robin over both nodes' published port.
    fn client(&self) -> Result<SteadyClient> {
        self.client_at(50)
    }

    fn client_at(&self, rate: u32) -> Result<SteadyClient> {
        SteadyClient::start(
            &self.client.netns_path(),
            &self.targets,
            SteadyOptions {
                rate,
                ..SteadyOptions::default()
            },
        )
    }
}

/// A task's hostname as the app reports it: the first 12 characters of its id.
fn hostname_of(task_id: &str) -> String {
    task_id.chars().take(12).collect()
}

/// shoalctl on the manager host with a long timeout (a waiting `service update` runs for as
/// long as the update does).
fn ctl_long<S: AsRef<str>>(c: &Cluster, args: &[S]) -> Result<Output> {
    let mut all: Vec<OsString> = vec!["--config".into(), c.admin_conf().into_os_string()];
    all.extend(args.iter().map(|a| OsString::from(a.as_ref())));
    c.manager.run_timeout(&c.bins.ctl, all, CTL_LONG)
}

/// The one service document in `service inspect NAME --format json` output (an array of one, or
/// one object per line).
fn inspect_doc(text: &str) -> Result<Value> {
    let whole = serde_json::from_str::<Value>(text.trim()).or_else(|_| {
        let line = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .ok_or_else(|| anyhow!("empty inspect output"))?;
        serde_json::from_str::<Value>(line).with_context(|| format!("not JSON: {text:?}"))
    })?;
    match whole {
        Value::Array(mut docs) if !docs.is_empty() => Ok(docs.remove(0)),
        Value::Array(_) => bail!("inspect printed an empty array"),
        doc => Ok(doc),
    }
}

/// `UpdateStatus.State` and `.Message` of a service ("" when it has none).
fn update_status_of(doc: &Value) -> (String, String) {
    let st = &doc["UpdateStatus"];
    (
        st["State"].as_str().unwrap_or_default().to_string(),
        st["Message"].as_str().unwrap_or_default().to_string(),
    )
}

fn update_status(c: &Cluster, service: &str) -> Result<(String, String)> {
    let text = c.ctl_ok(["service", "inspect", service, "--format", "json"])?;
    Ok(update_status_of(&inspect_doc(&text)?))
}

/// Waits until the service's `UpdateStatus.State` is `state`; fails at once on a state that
/// can no longer lead there (`paused` while waiting for `completed`…).
fn wait_update_state(c: &Cluster, service: &str, state: &str) -> Result<()> {
    Testbed::wait_for(
        UPDATE_DEADLINE,
        &format!("{service}: update {state}"),
        || {
            let (now, msg) = update_status(c, service)?;
            check_state(&now, &msg, state)
        },
    )
}

/// `Ok(true)` at `want`, a `Fatal` error on a dead end, `Ok(false)` otherwise.
fn check_state(now: &str, msg: &str, want: &str) -> Result<bool> {
    if now == want {
        return Ok(true);
    }
    let dead_end = match want {
        "completed" => [
            "paused",
            "rollback_started",
            "rollback_paused",
            "rollback_completed",
        ]
        .contains(&now),
        "rollback_completed" => ["paused", "rollback_paused", "completed"].contains(&now),
        "paused" => ["completed", "rollback_completed"].contains(&now),
        _ => false,
    };
    if dead_end {
        return Err(shoal_tests::testbed::fatal(format!(
            "update state {now:?} ({msg}) while waiting for {want:?}"
        )));
    }
    Ok(false)
}

/// Waits until the client has sent `n` requests after `t`, and returns a snapshot.
fn wait_samples_after(client: &SteadyClient, t: Instant, n: usize) -> Result<Report> {
    let mut report = client.snapshot();
    Testbed::wait_for(DEADLINE, &format!("{n} more requests"), || {
        report = client.snapshot();
        Ok(report.sent_after(t).count() >= n)
    })?;
    Ok(report)
}

/// Waits until, among answers sent after `t`, every one of `want` tasks has answered `version`,
/// failing at once if any answer after `t` is another version or failed.
fn wait_all_answer_after(
    client: &SteadyClient,
    t: Instant,
    version: &str,
    want: &BTreeSet<String>,
) -> Result<()> {
    Testbed::wait_for(
        DEADLINE,
        &format!("every {version} task to answer after the update"),
        || {
            let report = client.snapshot();
            let mut seen = BTreeSet::new();
            for s in report.sent_after(t) {
                match &s.answer {
                    Answer::Ok { version: v, host } if v == version => {
                        seen.insert(host.clone());
                    }
                    other => {
                        return Err(shoal_tests::testbed::fatal(format!(
                            "after the update, a request got {other:?} (want only {version}); {}",
                            report.summary()
                        )))
                    }
                }
            }
            Ok(want.is_subset(&seen))
        },
    )
}

/// Fails on any failed request, and on any answer from a version in `never`.
fn check_report(report: &Report, never: &[&str]) -> Result<()> {
    ensure!(
        report.failures().is_empty(),
        "requests failed: {}",
        report.summary()
    );
    for v in never {
        ensure!(
            !report.versions().contains_key(*v),
            "version {v} answered requests: {}",
            report.summary()
        );
    }
    ensure!(
        report.samples.len() > 100,
        "too few requests to judge: {}",
        report.summary()
    );
    Ok(())
}

/// The hostnames of the wanted, running tasks of `service`.
fn running_hosts(c: &Cluster, service: &str) -> Result<BTreeSet<String>> {
    Ok(c.wait_running(service, REPLICAS)?
        .iter()
        .map(|t| hostname_of(&t.id))
        .collect())
}

/// A rolling update v1 -> v2 with `order` under a steady client: `service update` waits and
/// exits 0, the state is `completed`, no request fails and every answer after it is v2.
fn rolling_update(name: &str, order: &str) -> Result<()> {
    if app_base_or_skip(name)?.is_none() {
        return Ok(());
    }
    let bed = Bed::start(name)?;
    bed.create_web(&["--update-order", order])?;
    let client = bed.client()?;
    wait_samples_after(&client, client.started(), 50)?;

    let out = ctl_long(
        &bed.c,
        &["service", "update", "--env-add", "VERSION=v2", "web"],
    )?;
    ensure!(
        out.status.success(),
        "service update ({order}) failed: {}",
        stderr_of(&out)
    );
    wait_update_state(&bed.c, "web", "completed")?;
    let done = Instant::now();
    let v2 = running_hosts(&bed.c, "web")?;
    wait_all_answer_after(&client, done, "v2", &v2)?;
    wait_samples_after(&client, done, 100)?;
    let report = client.stop()?;
    check_report(&report, &[])?;
    ensure!(
        report.sent_after(done).all(|s| s.version() == Some("v2")),
        "an answer after completion was not v2: {}",
        report.summary()
    );
    eprintln!("{name}: {}", report.summary());
    bed.c.shutdown()
}

#[test]
fn start_first_rolling_update_drops_nothing() -> Result<()> {
    rolling_update("upd-start", "start-first")
}

#[test]
fn stop_first_rolling_update_drops_nothing() -> Result<()> {
    rolling_update("upd-stop", "stop-first")
}

/// v1 -> v2, then `service rollback`: back to v1 (`rollback_completed`), nothing dropped.
#[test]
fn rollback_returns_to_the_previous_version_without_dropping() -> Result<()> {
    let name = "upd-rollback";
    if app_base_or_skip(name)?.is_none() {
        return Ok(());
    }
    let bed = Bed::start(name)?;
    bed.create_web(&[
        "--update-order",
        "start-first",
        "--rollback-order",
        "start-first",
    ])?;
    let client = bed.client()?;
    wait_samples_after(&client, client.started(), 50)?;
    let out = ctl_long(
        &bed.c,
        &["service", "update", "--env-add", "VERSION=v2", "web"],
    )?;
    ensure!(out.status.success(), "service update: {}", stderr_of(&out));
    wait_update_state(&bed.c, "web", "completed")?;
    let updated = Instant::now();
    wait_all_answer_after(&client, updated, "v2", &running_hosts(&bed.c, "web")?)?;

    let out = ctl_long(&bed.c, &["service", "rollback", "web"])?;
    ensure!(
        out.status.success(),
        "service rollback: {}",
        stderr_of(&out)
    );
    wait_update_state(&bed.c, "web", "rollback_completed")?;
    let done = Instant::now();
    wait_all_answer_after(&client, done, "v1", &running_hosts(&bed.c, "web")?)?;
    wait_samples_after(&client, done, 100)?;
    let report = client.stop()?;
    check_report(&report, &[])?;
    ensure!(
        report.sent_after(done).all(|s| s.version() == Some("v1")),
        "an answer after the rollback was not v1: {}",
        report.summary()
    );
    eprintln!("{name}: {}", report.summary());
    bed.c.shutdown()
}

/// The flags of a version whose healthcheck never passes.
const BAD: [&str; 4] = ["--env-add", "VERSION=bad", "--env-add", "HEALTHY=never"];

/// An update to a never-healthy version with the default failure action: `service update` exits
/// non-zero saying "paused", the state is `paused`, the old version keeps answering every
/// request and the bad one answers none.
#[test]
fn never_healthy_update_pauses_without_dropping() -> Result<()> {
    let name = "upd-pause";
    if app_base_or_skip(name)?.is_none() {
        return Ok(());
    }
    let bed = Bed::start(name)?;
    bed.create_web(&[])?;
    let client = bed.client()?;
    wait_samples_after(&client, client.started(), 50)?;
    let mut args = vec!["service", "update"];
    args.extend(BAD);
    args.push("web");
    let out = ctl_long(&bed.c, &args)?;
    ensure!(
        !out.status.success(),
        "an update to a never-healthy version succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = stderr_of(&out);
    ensure!(err.contains("paused"), "expected \"paused\" in: {err}");
    wait_update_state(&bed.c, "web", "paused")?;
    let paused = Instant::now();
    // Paused stays paused: the old tasks keep serving, the bad slot keeps failing its checks.
    wait_samples_after(&client, paused, 250)?;
    let (state, msg) = update_status(&bed.c, "web")?;
    ensure!(state == "paused", "state {state:?} ({msg}) after pausing");
    let report = client.stop()?;
    check_report(&report, &["bad"])?;
    ensure!(
        report.sent_after(paused).all(|s| s.version() == Some("v1")),
        "after the pause, answers must all be v1: {}",
        report.summary()
    );
    eprintln!("{name}: {}", report.summary());
    bed.c.shutdown()
}

/// The same with `--update-failure-action rollback`: the update rolls itself back to v1
/// (`rollback_completed`), `service update` exits non-zero, nothing is dropped and the bad
/// version answers nothing.
#[test]
fn never_healthy_update_rolls_back_without_dropping() -> Result<()> {
    let name = "upd-autorb";
    if app_base_or_skip(name)?.is_none() {
        return Ok(());
    }
    let bed = Bed::start(name)?;
    bed.create_web(&["--update-failure-action", "rollback"])?;
    let client = bed.client()?;
    wait_samples_after(&client, client.started(), 50)?;
    let mut args = vec!["service", "update"];
    args.extend(BAD);
    args.push("web");
    let out = ctl_long(&bed.c, &args)?;
    ensure!(
        !out.status.success(),
        "an update that rolled back exited 0: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = stderr_of(&out);
    ensure!(err.contains("roll"), "expected a rollback in: {err}");
    wait_update_state(&bed.c, "web", "rollback_completed")?;
    let done = Instant::now();
    wait_all_answer_after(&client, done, "v1", &running_hosts(&bed.c, "web")?)?;
    wait_samples_after(&client, done, 100)?;
    let report = client.stop()?;
    check_report(&report, &["bad"])?;
    eprintln!("{name}: {}", report.summary());
    bed.c.shutdown()
}

/// `service update --force` with an unchanged spec replaces every task (no task id survives)
/// without dropping a request.
#[test]
fn force_replaces_every_task_without_dropping() -> Result<()> {
    let name = "upd-force";
    if app_base_or_skip(name)?.is_none() {
        return Ok(());
    }
    let bed = Bed::start(name)?;
    let before: BTreeSet<String> = bed
        .create_web(&["--update-order", "start-first"])?
        .iter()
        .map(|t| t.id.clone())
        .collect();
    let client = bed.client()?;
    wait_samples_after(&client, client.started(), 50)?;
    let out = ctl_long(&bed.c, &["service", "update", "--force", "web"])?;
    ensure!(
        out.status.success(),
        "service update --force: {}",
        stderr_of(&out)
    );
    wait_update_state(&bed.c, "web", "completed")?;
    let done = Instant::now();
    let after: BTreeSet<String> = bed
        .c
        .wait_running("web", REPLICAS)?
        .iter()
        .map(|t| t.id.clone())
        .collect();
    ensure!(
        before.is_disjoint(&after),
        "--force left tasks in place: before {before:?}, after {after:?}"
    );
    let hosts = after.iter().map(|id| hostname_of(id)).collect();
    wait_all_answer_after(&client, done, "v1", &hosts)?;
    wait_samples_after(&client, done, 100)?;
    let report = client.stop()?;
    check_report(&report, &[])?;
    eprintln!("{name}: {}", report.summary());
    bed.c.shutdown()
}

/// A service whose healthcheck never passes never shows Running (in `service ls` nor `ps`),
/// and its tasks fail with "unhealthy". busybox, so this one needs no Debian image.
#[test]
fn always_unhealthy_service_never_runs() -> Result<()> {
    let c = Cluster::start_with(Testbed::new("upd-sick")?, ClusterOptions::new(2))?;
    let image = c.busybox_image();
    c.ctl_ok([
        "service",
        "create",
        "-d",
        "--name",
        "sick",
        "--replicas",
        "2",
        "--health-cmd",
        "exit 1",
        "--health-interval",
        "1s",
        "--health-retries",
        "2",
        // busybox sleep as pid 1 ignores SIGTERM: do not wait 10 s for each SIGKILL.
        "--stop-grace-period",
        "2s",
        &image,
        "sleep",
        "3600",
    ])?;
    let never_running = |c: &Cluster| -> Result<Vec<TaskRow>> {
        let rows: Vec<TaskRow> = c
            .ctl_json(["service", "ps", "--no-trunc", "sick"])?
            .into_iter()
            .map(serde_json::from_value)
            .collect::<std::result::Result<_, _>>()?;
        if let Some(t) = rows.iter().find(|t| t.is_running()) {
            return Err(shoal_tests::testbed::fatal(format!(
                "task {} of an always-unhealthy service shows {:?}",
                t.id, t.current_state
            )));
        }
        let ls = c.service_ls()?;
        let row = ls
            .iter()
            .find(|r| r.name == "sick")
            .ok_or_else(|| anyhow!("sick missing from service ls"))?;
        if !row.replicas.starts_with("0/") {
            return Err(shoal_tests::testbed::fatal(format!(
                "service ls counts running replicas of an always-unhealthy service: {:?}",
                row.replicas
            )));
        }
        Ok(rows)
    };
    Testbed::wait_for(DEADLINE, "a sick task to fail as unhealthy", || {
        let rows = never_running(&c)?;
        Ok(rows
            .iter()
            .any(|t| t.is_failed() && t.error.contains("unhealthy")))
    })?;
    Testbed::holds_for(
        Duration::from_secs(10),
        "the sick service never shows a running task",
        || never_running(&c).map(|_| true),
    )?;
    c.shutdown()
}

/// Three managers, two workers: a slow update (`--update-delay`) whose leader is killed after at
/// least one slot was updated; the update completes under the new leader, the slots updated
/// before the kill keep their tasks, and no request is dropped.
#[test]
fn update_survives_leader_kill_without_restarting_updated_slots() -> Result<()> {
    let name = "upd-failover";
    if app_base_or_skip(name)?.is_none() {
        return Ok(());
    }
    let mut m = Managers::start(Testbed::new(name)?, 3, &[])?;
    let (registry, _busybox) = m.start_registry()?;
    let reg_host = m.testbed().host("reg")?;
    let image = app_image::push_app(&m.bins.fixture, &reg_host)?;
    let leader = m.wait_converged(&[0, 1, 2])?;
    let via = (leader + 1) % 3;
    let mut workers = Vec::new();
    for w in ["w1", "w2"] {
        workers.push(m.add_agent(w, &registry, via)?.0);
    }
    Testbed::wait_for(DEADLINE, "both workers Ready", || {
        let out = m.ctl_ok(via, ["node", "ls", "--format", "json"])?;
        Ok(["\"w1\"", "\"w2\""].iter().all(|w| {
            out.lines()
                .any(|l| l.contains(w) && l.contains("\"Ready\""))
        }))
    })?;

    let mut args: Vec<String> = [
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "4",
        "-p",
        "8080:80",
        "-e",
        "VERSION=v1",
        "--stop-grace-period",
        "10s",
        "--update-order",
        "start-first",
        "--update-delay",
        "6s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(health_flags());
    args.push(image);
    m.ctl_ok(via, &args)?;
    let ps = |m: &Managers, i: usize| -> Result<Vec<TaskRow>> {
        m.ctl_ok(i, ["service", "ps", "web", "--format", "json"])?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("bad ps row {l:?}")))
            .collect()
    };
    let wanted = |rows: Vec<TaskRow>| -> Vec<TaskRow> {
        rows.into_iter().filter(|t| t.desired_running()).collect()
    };
    Testbed::wait_for(UPDATE_DEADLINE, "4 web tasks Running", || {
        let rows = wanted(ps(&m, via)?);
        Ok(rows.len() == REPLICAS && rows.iter().all(TaskRow::is_running))
    })?;
    let client_host = m.testbed().add_host("cl")?;
    let targets: Vec<SocketAddrV4> = workers
        .iter()
        .map(|h| SocketAddrV4::new(h.ip(), PORT))
        .collect();
    let client = SteadyClient::start(
        &client_host.netns_path(),
        &targets,
        SteadyOptions::default(),
    )?;
    Testbed::wait_for(DEADLINE, "all 4 v1 tasks to answer", || {
        Ok(client.snapshot().hosts_of("v1").len() >= REPLICAS)
    })?;

    m.ctl_ok(
        via,
        ["service", "update", "-d", "--env-add", "VERSION=v2", "web"],
    )?;
    // At least one slot updated (a v2 task answered), not all of them: kill the leader then.
    let mut updated = Vec::new();
    Testbed::wait_for(UPDATE_DEADLINE, "a first slot updated", || {
        updated = client.snapshot().hosts_of("v2");
        Ok(!updated.is_empty())
    })?;
    let (state, msg) = update_status_of(&inspect_doc(
        &m.ctl_ok(via, ["service", "inspect", "web", "--format", "json"])?,
    )?);
    ensure!(
        state == "updating" && updated.len() < REPLICAS,
        "the update went too fast to kill the leader mid-way: {state:?} ({msg}), v2 tasks {updated:?}"
    );
    let leader = m
        .leader(via)?
        .ok_or_else(|| anyhow!("no leader before the kill"))?;
    m.kill(leader)?;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let new_leader = m.wait_converged(&survivors)?;
    Testbed::wait_for(
        UPDATE_DEADLINE,
        "the update to complete after failover",
        || {
            let text = m.ctl_ok(
                new_leader,
                ["service", "inspect", "web", "--format", "json"],
            )?;
            let (now, msg) = update_status_of(&inspect_doc(&text)?);
            check_state(&now, &msg, "completed")
        },
    )?;
    let done = Instant::now();
    let rows = wanted(ps(&m, new_leader)?);
    ensure!(rows.len() == REPLICAS, "after the update: {rows:?}");
    let now: BTreeSet<String> = rows.iter().map(|t| hostname_of(&t.id)).collect();
    for host in &updated {
        ensure!(
            now.contains(host),
            "slot of task {host} was updated before the kill but restarted after it: now {now:?}"
        );
    }
    wait_all_answer_after(&client, done, "v2", &now)?;
    wait_samples_after(&client, done, 100)?;
    let report = client.stop()?;
    check_report(&report, &[])?;
    eprintln!(
        "upd-failover: killed m{} with {updated:?} updated; {}",
        leader + 1,
        report.summary()
    );
    m.shutdown()
}
