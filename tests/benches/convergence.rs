//! End-to-end figures on a real one-host cluster in a test namespace: time from
//! `service create --replicas N IMAGE sleep 3600` to N containers RUNNING, time from `service rm`
//! to no container left, and memory (agent RSS and shim RSS per container, with 10 containers and
//! with all N running), each beside the load average of the machine when it was taken.
//!
//! Run (root): `cargo build --release --workspace --bins && cargo bench -p shoal-tests --bench convergence`
//! Optional: `SHOAL_BENCH_REPLICAS=100` (default 100), `SHOAL_BENCH_ROUNDS=3`,
//! `SHOAL_BENCH_KEEP=1` (copy the testbed's logs and data dirs aside on success and print where,
//! to read the agent's per-step timings: run with
//! `RUST_LOG=info,shoal_agent::executor=debug,shoal_agent::network=debug`).

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

/// The 1-minute load average (other work on the machine skews every figure).
fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Seconds since the epoch, to find a step in the kept logs.
fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The agent's RSS and the mean RSS of its shims (KiB), and how many shims were read.
fn memory(cluster: &Cluster) -> Result<(u64, f64, usize)> {
    let agent_pid = cluster.agents[0]
        .proc()
        .map(|p| p.pid() as i32)
        .unwrap_or(0);
    let agent = rss_kib(agent_pid).unwrap_or(0);
    let shims: Vec<u64> = cluster.agents[0]
        .containers()?
        .iter()
        .filter_map(|c| c.shim_pid.and_then(rss_kib))
        .collect();
    let mean = shims.iter().sum::<u64>() as f64 / shims.len().max(1) as f64;
    Ok((agent, mean, shims.len()))
}

/// Copies the testbed's directory (logs, data dirs; mount points skipped) beside it, before the
/// testbed removes it, and returns where.
fn keep(cluster: &Cluster) -> Result<std::path::PathBuf> {
    let dir = cluster.testbed().dir();
    let mut name = dir.file_name().unwrap_or_default().to_owned();
    name.push("-kept");
    let dest = dir.with_file_name(name);
    // `-x`: a namespace file or a mount left by a running process is not copied.
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg("-x")
        .arg(dir)
        .arg(&dest)
        .output()?;
    if !out.status.success() {
        eprintln!(
            "SHOAL_BENCH_KEEP: cp: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(dest)
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
    let (agent_rss, shim_rss, shims) = memory(&cluster)?;
    let idle_load = load1();
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
    let mut loads = Vec::new();
    let mut full = (0, 0.0, 0, 0.0);
    for round in 0..rounds {
        let name = format!("bench{round}");
        eprintln!("round {round}: service create at epoch {:.3}", now_epoch());
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
        let create_load = load1();
        let running = cluster.agents[0]
            .containers()?
            .iter()
            .filter(|c| c.pid.is_some_and(pid_alive))
            .count();
        ensure!(
            running == replicas,
            "{running} containers alive, expected {replicas}"
        );

        // Memory at the full count, after the starts have settled.
        std::thread::sleep(Duration::from_secs(2));
        let (agent, shim, count) = memory(&cluster)?;
        full = (agent, shim, count, load1());

        eprintln!(
            "round {round}: all running after {:.2} s; service rm at epoch {:.3}",
            create[round],
            now_epoch()
        );
        let t1 = Instant::now();
        cluster.ctl_ok(["service", "rm", &name])?;
        Testbed::wait_for(deadline, "no container left", || {
            Ok(cluster.agents[0].containers()?.is_empty())
        })?;
        remove.push(t1.elapsed().as_secs_f64());
        loads.push((create_load, load1()));
    }

    let (full_agent, full_shim, full_count, full_load) = full;
    println!("| figure | value | load (1 min) |");
    println!("|---|---|---|");
    println!(
        "| create --replicas {replicas} -> {replicas}/{replicas} RUNNING (median of {rounds}) | {:.2} s | {:.2?} |",
        median(&mut create.clone()),
        loads.iter().map(|l| l.0).collect::<Vec<_>>()
    );
    println!(
        "| service rm -> no container left (median of {rounds}) | {:.2} s | {:.2?} |",
        median(&mut remove.clone()),
        loads.iter().map(|l| l.1).collect::<Vec<_>>()
    );
    println!("| create, all rounds | {create:.2?} s | |");
    println!("| rm, all rounds | {remove:.2?} s | |");
    println!(
        "| agent RSS, 10 containers running | {:.1} MiB | {idle_load:.2} |",
        mib(agent_rss)
    );
    println!(
        "| shim RSS per container (mean of {shims}) | {:.2} MiB | {idle_load:.2} |",
        shim_rss / 1024.0
    );
    println!(
        "| agent RSS, {replicas} containers running (last round) | {:.1} MiB | {full_load:.2} |",
        mib(full_agent)
    );
    println!(
        "| shim RSS per container (mean of {full_count}) | {:.2} MiB | {full_load:.2} |",
        full_shim / 1024.0
    );
    println!("| manager RSS | {:.1} MiB | |", mib(manager_rss));
    if std::env::var_os("SHOAL_BENCH_KEEP").is_some_and(|v| v == "1") {
        println!(
            "testbed logs and data kept in {}",
            keep(&cluster)?.display()
        );
    }
    cluster.shutdown()
}
