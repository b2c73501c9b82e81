//! Rolling-update figures (issue 11, docs/BENCHMARKS.md):
//!
//! 1. Failed requests during a rolling update of the python3 app (4 replicas on 2 hosts, a
//!    healthcheck, the routing mesh) under a steady client at 50 and 500 requests/s, for
//!    stop-first and start-first. Goal: 0.
//! 2. Time to roll 100 replicas (busybox `sleep`, no healthcheck) with `--update-parallelism 10`
//!    and no delay: from `service update --force -d` to every wanted task being a new one and
//!    Running (goal < 10 s), and to `UpdateStatus` `completed` (which adds swarm's one monitor
//!    period after the last slot).
//!
//! Run (root): `cargo build --release --workspace --bins && cargo bench -p shoal-tests --bench rolling_update`
//! Optional: `SHOAL_BENCH_REPLICAS=100`, `SHOAL_BENCH_RATES=50,500`. Part 1 is skipped, with the
//! reason printed, when the Debian app image cannot be built (no mmdebstrap or no mirror).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Result};
use serde_json::Value;
use shoal_tests::app_image::{self, HEALTH_CMD};
use shoal_tests::steady::{SteadyClient, SteadyOptions};
use shoal_tests::testbed::{stderr_of, Cluster, ClusterOptions, TaskRow, Testbed};

const DEADLINE: Duration = Duration::from_secs(300);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ctl_long(c: &Cluster, args: &[String]) -> Result<std::process::Output> {
    let mut all: Vec<OsString> = vec!["--config".into(), c.admin_conf().into_os_string()];
    all.extend(args.iter().map(OsString::from));
    c.manager.run_timeout(&c.bins.ctl, all, DEADLINE)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// `UpdateStatus.State` of a service from `service inspect --format json`.
fn update_state(c: &Cluster, service: &str) -> Result<String> {
    let text = c.ctl_ok(["service", "inspect", service, "--format", "json"])?;
    let doc: Value = serde_json::from_str(text.trim()).or_else(|_| {
        text.lines()
            .find(|l| !l.trim().is_empty())
            .ok_or_else(|| anyhow!("empty inspect output"))
            .and_then(|l| Ok(serde_json::from_str(l)?))
    })?;
    let doc = match doc {
        Value::Array(mut a) if !a.is_empty() => a.remove(0),
        d => d,
    };
    Ok(doc["UpdateStatus"]["State"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

fn wanted(c: &Cluster, service: &str) -> Result<Vec<TaskRow>> {
    Ok(c.service_ps(service)?
        .into_iter()
        .filter(|t| t.desired_running())
        .collect())
}

/// One row of part 1.
struct UpdateRun {
    order: &'static str,
    rate: u32,
    requests: usize,
    failed: usize,
    achieved: f64,
    slowest: Duration,
    took: Duration,
}

fn failed_requests(rates: &[u32]) -> Result<Vec<UpdateRun>> {
    if let Err(e) = app_image::prepare() {
        if app_image::is_unavailable(&e) {
            eprintln!("skipping the failed-requests figure: {e:#}");
            return Ok(Vec::new());
        }
        return Err(e);
    }
    let c = Cluster::start_with(Testbed::new("bench-upd")?, ClusterOptions::new(2))?;
    let image = app_image::push_app_to(&c)?;
    let client_host = c.testbed().add_host("cl")?;
    let targets: Vec<SocketAddrV4> = c
        .agents
        .iter()
        .map(|a| SocketAddrV4::new(a.host.ip(), 8080))
        .collect();
    let mut args = strings(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "4",
        "-p",
        "8080:80",
        "-e",
        "VERSION=0",
        "--health-cmd",
        HEALTH_CMD,
        "--health-interval",
        "1s",
        "--health-retries",
        "2",
    ]);
    args.push(image);
    let out = ctl_long(&c, &args)?;
    ensure!(out.status.success(), "create: {}", stderr_of(&out));
    c.wait_running("web", 4)?;

    let mut runs = Vec::new();
    let mut version = 0;
    for order in ["stop-first", "start-first"] {
        for &rate in rates {
            version += 1;
            let client = SteadyClient::start(
                &client_host.netns_path(),
                &targets,
                SteadyOptions {
                    rate,
                    ..SteadyOptions::default()
                },
            )?;
            // A second of steady traffic before and after the update.
            std::thread::sleep(Duration::from_secs(1));
            let t0 = Instant::now();
            let out = ctl_long(
                &c,
                &strings(&[
                    "service",
                    "update",
                    "--update-order",
                    order,
                    "--env-add",
                    &format!("VERSION={version}"),
                    "web",
                ]),
            )?;
            let took = t0.elapsed();
            ensure!(
                out.status.success(),
                "update to {version}: {}",
                stderr_of(&out)
            );
            std::thread::sleep(Duration::from_secs(1));
            let report = client.stop()?;
            println!("{order} at {rate}/s: {}", report.summary());
            runs.push(UpdateRun {
                order,
                rate,
                requests: report.samples.len(),
                failed: report.failures().len(),
                achieved: report.rate(),
                slowest: report.max_latency(),
                took,
            });
        }
    }
    c.shutdown()?;
    Ok(runs)
}

/// Part 2: (time until every wanted task is new and Running, time until `completed`).
fn roll_replicas(replicas: usize) -> Result<(Duration, Duration)> {
    let c = Cluster::start_with(Testbed::new("bench-roll")?, ClusterOptions::new(2))?;
    let image = c.busybox_image();
    let n = replicas.to_string();
    c.ctl_ok([
        "service",
        "create",
        "-d",
        "--name",
        "roll",
        "--replicas",
        &n,
        "--update-parallelism",
        "10",
        "--update-delay",
        "0s",
        &image,
        "sleep",
        "3600",
    ])?;
    Testbed::wait_for(DEADLINE, "all replicas Running", || {
        let rows = wanted(&c, "roll")?;
        Ok(rows.len() == replicas && rows.iter().all(TaskRow::is_running))
    })?;
    let before: BTreeSet<String> = wanted(&c, "roll")?.into_iter().map(|t| t.id).collect();
    let t0 = Instant::now();
    c.ctl_ok(["service", "update", "-d", "--force", "roll"])?;
    Testbed::wait_for(DEADLINE, "every replica replaced and Running", || {
        let rows = wanted(&c, "roll")?;
        Ok(rows.len() == replicas
            && rows
                .iter()
                .all(|t| t.is_running() && !before.contains(&t.id)))
    })?;
    let rolled = t0.elapsed();
    Testbed::wait_for(DEADLINE, "UpdateStatus completed", || {
        Ok(update_state(&c, "roll")? == "completed")
    })?;
    let completed = t0.elapsed();
    c.shutdown()?;
    Ok((rolled, completed))
}

fn main() -> Result<()> {
    let replicas: usize = env_or("SHOAL_BENCH_REPLICAS", 100);
    let rates: Vec<u32> = std::env::var("SHOAL_BENCH_RATES")
        .unwrap_or_else(|_| "50,500".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let runs = failed_requests(&rates)?;
    let (rolled, completed) = roll_replicas(replicas)?;

    println!("| figure | value |");
    println!("|---|---|");
    for r in &runs {
        println!(
            "| rolling update of 4 python3 replicas, {}, {} req/s asked ({:.0} achieved): failed requests | {} of {} (slowest {:.0} ms, update took {:.1} s) |",
            r.order,
            r.rate,
            r.achieved,
            r.failed,
            r.requests,
            r.slowest.as_secs_f64() * 1000.0,
            r.took.as_secs_f64()
        );
    }
    println!(
        "| roll {replicas} replicas, parallelism 10, no delay: all replaced and Running | {:.2} s |",
        rolled.as_secs_f64()
    );
    println!(
        "| roll {replicas} replicas: until UpdateStatus completed (+ one monitor period) | {:.2} s |",
        completed.as_secs_f64()
    );
    Ok(())
}
