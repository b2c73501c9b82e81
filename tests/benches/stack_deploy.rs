//! Stack deploy figure (issue 12, docs/BENCHMARKS.md): `shoalctl stack deploy` of a 10-service
//! stack (busybox `sleep`, one replica each, the stack's default overlay network) on 3 worker
//! hosts, time from the command's start to every task Running as `stack ps` shows it. The image
//! is pulled on every host by a first deploy that is not timed; each trial then removes the stack
//! (and waits until nothing of it is left) and deploys it again. Goal: < 5 s.
//!
//! Run (root): `cargo build --release --workspace --bins && cargo bench -p shoal-tests --bench stack_deploy`
//! Optional: `SHOAL_BENCH_TRIALS=5`, `SHOAL_BENCH_SERVICES=10`. The time includes shoalctl's
//! process starts (a few ms each), as a user would see it.

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use serde_json::Value;
use shoal_tests::bench_support::{env_or, median};
use shoal_tests::stack_support::busybox_compose;
use shoal_tests::testbed::{Cluster, ClusterOptions, Testbed};

/// The stack's name.
const STACK: &str = "bench";
/// How long one deploy or removal may take before the bench gives up.
const DEADLINE: Duration = Duration::from_secs(180);

/// Running tasks (wanted and Running) of the stack, per `stack ps --format json`.
fn running(c: &Cluster) -> Result<usize> {
    let rows = c.ctl_json(["stack", "ps", STACK])?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_ascii_lowercase();
    Ok(rows
        .iter()
        .filter(|r| {
            text(&r["DesiredState"]).starts_with("running")
                && text(&r["CurrentState"]).starts_with("running")
        })
        .count())
}

/// Deploys the stack and returns how long until `n` tasks run.
fn deploy(c: &Cluster, compose: &str, n: usize) -> Result<Duration> {
    let start = Instant::now();
    c.ctl_ok(["stack", "deploy", "-c", compose, STACK])?;
    loop {
        // `stack ps` fails until the stack exists: that counts as "not yet".
        if running(c).unwrap_or(0) == n {
            return Ok(start.elapsed());
        }
        if start.elapsed() > DEADLINE {
            bail!("{n} tasks of stack {STACK} not running after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes the stack and waits until no service, network or container of it is left.
fn remove(c: &Cluster) -> Result<()> {
    c.ctl_ok(["stack", "rm", STACK])?;
    Testbed::wait_for(DEADLINE, "the stack to be gone", || {
        let services = c.ctl_json(["service", "ls"])?;
        let networks = c.ctl_json(["network", "ls"])?;
        let prefix = format!("{STACK}_");
        let named = |rows: &[Value]| {
            rows.iter()
                .any(|r| r["Name"].as_str().unwrap_or_default().starts_with(&prefix))
        };
        Ok(!named(&services) && !named(&networks) && c.containers()?.is_empty())
    })
}

fn main() -> Result<()> {
    let trials = env_or("SHOAL_BENCH_TRIALS", 5).max(1);
    let n = env_or("SHOAL_BENCH_SERVICES", 10).max(1);
    let c = Cluster::start_with(Testbed::new("benchstk")?, ClusterOptions::new(3))?;
    let compose = c.testbed().dir().join("stack.yml");
    fs::write(&compose, busybox_compose(&c.busybox_image(), n))?;
    let compose = compose.to_string_lossy().into_owned();

    // Untimed: pulls the image on every host (10 services spread over the 3).
    let warm = deploy(&c, &compose, n)?;
    let per_node = c.containers()?.iter().fold([0usize; 3], |mut acc, (i, _)| {
        acc[*i] += 1;
        acc
    });
    ensure!(
        per_node.iter().all(|&k| k > 0),
        "the warm-up left a host without a task (the image is not on every host): {per_node:?}"
    );
    println!("warm-up deploy (image pulls included): {warm:.2?}");
    remove(&c)?;

    println!("{:>6} | {:>10}", "trial", "seconds");
    println!("{:->6}-+-{:->10}", "", "");
    let mut times = Vec::new();
    for trial in 1..=trials {
        let took = deploy(&c, &compose, n)?;
        println!("{trial:>6} | {:>10.3}", took.as_secs_f64());
        times.push(took.as_secs_f64());
        remove(&c)?;
    }
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    let max = times.iter().copied().fold(0.0, f64::max);
    println!(
        "stack deploy of {n} services on 3 hosts -> all Running, {trials} trials: median {:.3} s, \
         min {min:.3} s, max {max:.3} s (goal < 5 s)",
        median(&times)
    );
    c.shutdown()
}
