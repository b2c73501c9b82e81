//! End to end at scale: time from `service create --replicas 1000` to `service ls` showing
//! 1000/1000 across 1,000 simulated agents (`shoal-loadgen`: real joins, certificates and
//! dispatcher sessions, tasks reported RUNNING without containers). Everything runs on 127.0.0.1
//! as plain processes; no root needed.
//!
//! Run: `cargo build --release -p shoal-manager -p shoalctl -p shoal-tests && cargo bench -p shoal-tests --bench scale_1000`
//! Optional: `SHOAL_BENCH_AGENTS=1000`, `SHOAL_BENCH_REPLICAS` (default: one per agent),
//! `SHOAL_BENCH_ROUNDS=3`, `SHOAL_BIN_DIR` (where the binaries are; default: next to this bench).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use shoal_tests::bench_support::{
    bin_dir, env_or, find, free_port, log_file, median, wait_for, Children, LoadgenReader, Shoalctl,
};
use shoal_tests::testbed::{NodeRow, ServiceRow, TaskRow};

/// One round's figures, seconds from the `service create` call.
struct Round {
    create_rpc: f64,
    all_assigned: f64,
    all_reported: f64,
    converged: f64,
    removed: f64,
}

fn main() -> Result<()> {
    let agents = env_or("SHOAL_BENCH_AGENTS", 1000);
    let replicas = env_or("SHOAL_BENCH_REPLICAS", agents);
    let rounds = env_or("SHOAL_BENCH_ROUNDS", 3).max(1);
    let bins = bin_dir()?;
    let (manager, ctl, loadgen) = (
        find(&bins, "shoal-manager")?,
        find(&bins, "shoalctl")?,
        find(&bins, "shoal-loadgen")?,
    );
    let tmp = tempfile::Builder::new().prefix("shoal-scale-").tempdir()?;
    let mut children = Children::default();
    let result = run(
        tmp.path(),
        &mut children,
        (&manager, &ctl, &loadgen),
        agents,
        replicas,
        rounds,
    );
    drop(children);
    if let Err(e) = &result {
        eprintln!("bench failed: {e:#}");
        for log in ["manager.log", "loadgen.log"] {
            let text = std::fs::read_to_string(tmp.path().join(log)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            eprintln!("--- last lines of {log}:");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
    result
}

fn run(
    dir: &Path,
    children: &mut Children,
    (manager, ctl, loadgen): (&Path, &Path, &Path),
    agents: usize,
    replicas: usize,
    rounds: usize,
) -> Result<()> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let data = dir.join("manager");
    children.0.push(
        Command::new(manager)
            .args(["init", "--data-dir"])
            .arg(&data)
            .args(["--listen-addr", &addr])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(dir, "manager.log")?)
            .spawn()
            .context("starting shoal-manager")?,
    );
    let bench = Shoalctl {
        ctl: ctl.to_path_buf(),
        admin_conf: data.join("admin.conf"),
    };
    wait_for("the manager to answer shoalctl", || Ok(bench.answers()))?;
    let token = bench.run(["cluster", "join-token", "worker", "-q"])?;

    let started = Instant::now();
    let mut child = Command::new(loadgen)
        .args(["--manager", &addr, "--token", token.trim()])
        .args(["--agents", &agents.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file(dir, "loadgen.log")?)
        .spawn()
        .context("starting shoal-loadgen")?;
    let stdout = child.stdout.take().context("shoal-loadgen stdout")?;
    children.0.push(child);
    let view = LoadgenReader::spawn(stdout);
    let look = || view.look();
    wait_for(&format!("{agents} simulated sessions"), || {
        let v = look();
        if v.exited {
            bail!("shoal-loadgen exited (see loadgen.log)");
        }
        Ok(v.ready.is_some())
    })?;
    let sessions = started.elapsed().as_secs_f64();
    wait_for(&format!("{agents} Ready nodes"), || {
        let nodes: Vec<NodeRow> = bench.rows(&["node", "ls"])?;
        let ready = nodes
            .iter()
            .filter(|n| n.hostname.starts_with("sim-") && n.status == "Ready")
            .count();
        Ok(ready == agents)
    })?;
    let joined = started.elapsed().as_secs_f64();

    let n = replicas.to_string();
    let want = format!("{replicas}/{replicas}");
    let mut results = Vec::new();
    for round in 1..=rounds {
        let t0 = Instant::now();
        bench.run([
            "service",
            "create",
            "--detach",
            "--replicas",
            &n,
            "--name",
            "big",
            "busybox",
            "sleep",
            "3600",
        ])?;
        let create_rpc = t0.elapsed().as_secs_f64();
        wait_for(&format!("big {want}"), || {
            let rows: Vec<ServiceRow> = bench.rows(&["service", "ls"])?;
            Ok(rows.iter().any(|r| r.name == "big" && r.replicas == want))
        })?;
        let converged = t0.elapsed().as_secs_f64();
        if round == 1 {
            // Outside the timing: the figure is only worth something if the tasks really run
            // across the simulated nodes.
            let tasks: Vec<TaskRow> = bench.rows(&["service", "ps", "big"])?;
            let running: Vec<&TaskRow> = tasks
                .iter()
                .filter(|t| t.desired_running() && t.is_running())
                .collect();
            let nodes: std::collections::HashSet<&str> =
                running.iter().map(|t| t.node.as_str()).collect();
            ensure!(
                running.len() == replicas && nodes.len() == replicas.min(agents),
                "{} tasks running on {} nodes; expected {replicas} on {}",
                running.len(),
                nodes.len(),
                replicas.min(agents)
            );
        }
        let t1 = Instant::now();
        bench.run(["service", "rm", "big"])?;
        wait_for("every task of big gone from the agents", || {
            Ok(look().last_tasks() == (0, 0))
        })?;
        let removed = t1.elapsed().as_secs_f64();
        // Read after the fact: the load generator prints its counts every 10 ms.
        let since = |pred: fn(i64, i64, i64) -> bool| {
            let r = replicas as i64;
            look()
                .first_tasks(t0, |h, run| pred(h, run, r))
                .map_or(f64::NAN, |t| (t - t0).as_secs_f64())
        };
        let all_assigned = since(|h, _, r| h >= r);
        let all_reported = since(|_, run, r| run >= r);

        eprintln!(
            "round {round}: converged {converged:.2} s (create RPC {create_rpc:.2}, all assigned \
             {all_assigned:.2}, all reported RUNNING {all_reported:.2}); rm {removed:.2} s"
        );
        results.push(Round {
            create_rpc,
            all_assigned,
            all_reported,
            converged,
            removed,
        });
    }

    let col = |f: fn(&Round) -> f64| results.iter().map(f).collect::<Vec<f64>>();
    let rows = [
        ("the create call returns (--detach)", col(|r| r.create_rpc)),
        (
            "every task in its node's assignment set",
            col(|r| r.all_assigned),
        ),
        (
            "every task reported RUNNING by its agent",
            col(|r| r.all_reported),
        ),
        ("**`service ls` shows N/N**", col(|r| r.converged)),
        (
            "`service rm` -> no task left on any agent",
            col(|r| r.removed),
        ),
    ];
    println!("{agents} simulated agents: sessions established in {sessions:.1} s, all Ready in {joined:.1} s");
    println!();
    println!(
        "| from `service create --replicas {replicas}` to | median of {rounds} | all rounds (s) |"
    );
    println!("|---|---|---|");
    for (what, v) in rows {
        let all: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
        println!("| {what} | {:.2} s | {} |", median(&v), all.join(", "));
    }
    Ok(())
}
