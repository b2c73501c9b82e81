//! Failure detection, end to end, with default settings (heartbeat period 5 s): from the moment a
//! host dies (its agent and containers SIGKILLed) to its tasks' replacements RUNNING on the other
//! hosts, as `service ps` reports them.
//!
//! Run (root): `cargo build --workspace --bins && cargo bench -p shoal-tests --bench failure_detection`
//! Optional: `SHOAL_BENCH_WORKERS=4` (default 4), `SHOAL_BENCH_REPLICAS=8` (default 8),
//! `SHOAL_BENCH_ROUNDS=3` (default 3; each round kills a different worker, then brings it back).

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use shoal_tests::testbed::{Cluster, ClusterOptions, Testbed};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let workers = env_or("SHOAL_BENCH_WORKERS", 4).max(2);
    let replicas = env_or("SHOAL_BENCH_REPLICAS", 8);
    let rounds = env_or("SHOAL_BENCH_ROUNDS", 3).min(workers);
    let mut cluster = Cluster::start_with(Testbed::new("faildet")?, ClusterOptions::new(workers))?;
    let image = cluster.busybox_image();
    let deadline = Duration::from_secs(120);
    let n = replicas.to_string();
    cluster.ctl_ok([
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        &n,
        &image,
        "sleep",
        "3600",
    ])?;
    cluster.wait_running("web", replicas)?;

    let mut detect = Vec::new();
    for round in 0..rounds {
        let host = cluster.agents[round].host.name().to_string();
        let on_host = cluster
            .service_ps("web")?
            .iter()
            .filter(|t| t.node == host && t.is_running())
            .count();
        ensure!(on_host > 0, "{host} runs no task of web");

        let t0 = Instant::now();
        cluster.kill_agent_host(round)?;
        Testbed::wait_for(deadline, "replacements Running elsewhere", || {
            let tasks = cluster.service_ps("web")?;
            let wanted: Vec<_> = tasks.iter().filter(|t| t.desired_running()).collect();
            Ok(wanted.len() == replicas && wanted.iter().all(|t| t.is_running() && t.node != host))
        })?;
        let secs = t0.elapsed().as_secs_f64();
        eprintln!("round {round}: killed {host} ({on_host} tasks): replaced in {secs:.2} s");
        detect.push(secs);

        // Bring the host back and let the service settle before the next round.
        cluster.restart_agent(round)?;
        cluster.wait_nodes_ready(workers)?;
        Testbed::wait_for(deadline, "stale tasks ended", || {
            let tasks = cluster.service_ps("web")?;
            Ok(tasks.iter().filter(|t| t.is_running()).count() == replicas)
        })?;
    }

    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| host killed -> its {replicas}-replica service's replacements RUNNING, {workers} workers, heartbeat 5 s (median of {rounds}) | {:.2} s |",
        median(&mut detect.clone())
    );
    println!("| all rounds | {detect:.2?} s |");
    cluster.shutdown()
}
