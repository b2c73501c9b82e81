//! End-to-end figures on a real one-host cluster in a test namespace: time from
//! `service create --replicas N IMAGE sleep 3600` to N containers RUNNING, time from `service rm`
//! to no container left, and idle memory (agent RSS, shim RSS per container).
//!
//! Run (root): `cargo build --release --workspace --bins && cargo bench -p shoal-tests --bench convergence`
//! Optional: `SHOAL_BENCH_REPLICAS=100` (default 100), `SHOAL_BENCH_ROUNDS=3`.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use shoal_tests::testbed::{pid_alive, Cluster, Testbed};

fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let replicas: usize = std::env::var("SHOAL_BENCH_REPLICAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let rounds: usize = std::env::var("SHOAL_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let cluster = Cluster::start(Testbed::new("bench")?, 0)?;
    let image = cluster.busybox_image();
    let deadline = Duration::from_secs(120);

    // Idle memory with 10 containers.
    let n = replicas.to_string();
    cluster.ctl_ok([
        "service",
        "create",
        "--detach",
        "--name",
        "idle",
        "--replicas",
        "10",
        &image,
        "sleep",
        "3600",
    ])?;
    Testbed::wait_for(deadline, "10 idle containers", || {
        Ok(cluster.agents[0]
            .containers()?
            .iter()
            .filter(|c| c.pid.is_some_and(pid_alive))
            .count()
            == 10)
    })?;
    std::thread::sleep(Duration::from_secs(2)); // let the agent settle before reading RSS
    let agent_pid = cluster.agents[0]
        .proc()
        .map(|p| p.pid() as i32)
        .unwrap_or(0);
    let agent_rss = rss_kib(agent_pid).unwrap_or(0);
    let shims: Vec<u64> = cluster.agents[0]
        .containers()?
        .iter()
        .filter_map(|c| c.shim_pid.and_then(rss_kib))
        .collect();
    let manager_rss = cluster
        .manager_proc()
        .and_then(|p| rss_kib(p.pid() as i32))
        .unwrap_or(0);
    cluster.ctl_ok(["service", "rm", "idle"])?;
    Testbed::wait_for(deadline, "idle containers removed", || {
        Ok(cluster.agents[0].containers()?.is_empty())
    })?;

    let mut create = Vec::new();
    let mut remove = Vec::new();
    for round in 0..rounds {
        let name = format!("bench{round}");
        let t0 = Instant::now();
        cluster.ctl_ok([
            "service",
            "create",
            "--detach",
            "--name",
            &name,
            "--replicas",
            &n,
            &image,
            "sleep",
            "3600",
        ])?;
        Testbed::wait_for(deadline, "all replicas running", || {
            let rows = cluster.service_ls()?;
            Ok(rows
                .iter()
                .any(|r| r.name == name && r.replicas == format!("{replicas}/{replicas}")))
        })?;
        create.push(t0.elapsed().as_secs_f64());
        let running = cluster.agents[0]
            .containers()?
            .iter()
            .filter(|c| c.pid.is_some_and(pid_alive))
            .count();
        ensure!(
            running == replicas,
            "{running} containers alive, expected {replicas}"
        );

        let t1 = Instant::now();
        cluster.ctl_ok(["service", "rm", &name])?;
        Testbed::wait_for(deadline, "no container left", || {
            Ok(cluster.agents[0].containers()?.is_empty())
        })?;
        remove.push(t1.elapsed().as_secs_f64());
    }

    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| create --replicas {replicas} -> {replicas}/{replicas} RUNNING (median of {rounds}) | {:.2} s |",
        median(&mut create.clone())
    );
    println!(
        "| service rm -> no container left (median of {rounds}) | {:.2} s |",
        median(&mut remove.clone())
    );
    println!("| create, all rounds | {create:.2?} s |");
    println!("| rm, all rounds | {remove:.2?} s |");
    println!(
        "| agent RSS, 10 containers running | {:.1} MiB |",
        agent_rss as f64 / 1024.0
    );
    println!(
        "| shim RSS per container (mean of {}) | {:.2} MiB |",
        shims.len(),
        shims.iter().sum::<u64>() as f64 / shims.len().max(1) as f64 / 1024.0
    );
    println!("| manager RSS | {:.1} MiB |", manager_rss as f64 / 1024.0);
    cluster.shutdown()
}
