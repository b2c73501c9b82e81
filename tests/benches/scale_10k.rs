//! The control plane with published services at scale (issue 15, goal 2): simulated agents
//! (`shoal-loadgen`: real joins, certificates and mutual-TLS dispatcher sessions, tasks reported
//! RUNNING without containers) and services publishing an ingress-mode port each, so that every
//! node receives the routing mesh's view. Everything runs on 127.0.0.1 as plain processes; no
//! root needed.
//!
//! Each mode starts its own manager and agents, then creates the services and measures, from the
//! first `service create`: every task reported RUNNING, every agent holding its final ingress
//! view (`shoal-loadgen --ingress`), what the dispatcher sent the agents until then (messages,
//! bytes of protobuf, whole sets, deltas, resyncs), the CPU seconds of the leader and of the load
//! generator over that time (which of the two starved), the leader's peak RSS, the nodes the
//! leader marked down and the sessions lost. Modes, in one run:
//! - `subset`: the routing mesh split in subsets (`manager/src/dispatcher/subset.rs`), deltas;
//! - `allnodes`: split too, but every node told every node's ingress address (as before the
//!   third pass bounded them: `SHOAL_INGRESS_ALL_NODES=1`);
//! - `deltas`: every node holds every backend (`SHOAL_INGRESS_SUBSET=0`), deltas;
//! - `full`: every backend, whole sets on every change (`SHOAL_DISPATCHER_FULL_SETS=1` too).
//!
//! Run: `cargo build --release -p shoal-manager -p shoalctl -p shoal-tests && cargo bench -p shoal-tests --bench scale_10k`
//! Optional: `SHOAL_BENCH_AGENTS=1000`, `SHOAL_BENCH_REPLICAS=2000` (in all),
//! `SHOAL_BENCH_SERVICES=4` (publishing ports 30000, 30001, ...), `SHOAL_BENCH_MODES=subset,deltas,full`,
//! `SHOAL_BENCH_TIMEOUT=300` (seconds per wait), `SHOAL_BIN_DIR` (where the binaries are),
//! `SHOAL_BENCH_KEEP=1` (keep the logs, printed path), `SHOAL_BENCH_INGRESS_SUBNET=CIDR` (the
//! routing mesh replaced by an ingress network on that subnet, as an operator would with
//! `network rm ingress` and `network create --ingress --subnet`; by default 10.0.0.0/14 when
//! the agents and replicas need more addresses than the built-in /16 has, else the built-in one).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use shoal_tests::bench_support::{
    bin_dir, cpu_seconds, env_or, find, free_port, log_file, Children, LoadgenReader, RssPeak,
    Shoalctl,
};
use shoal_tests::testbed::NodeRow;

/// The figures of one mode.
struct Figures {
    mode: &'static str,
    setup: f64,
    running: f64,
    ingress: f64,
    wire: [u64; 5],
    leader_cpu: f64,
    loadgen_cpu: f64,
    leader_rss: f64,
    marked_down: usize,
    lost: usize,
    load: String,
}

/// The scenario's shape.
struct Shape {
    agents: usize,
    replicas: usize,
    services: usize,
    timeout: Duration,
    /// The subnet of a replacement ingress network; `None` keeps the built-in one.
    ingress_subnet: Option<String>,
}

/// Addresses the built-in ingress network (10.0.0.0/16) can hand out: all but the network,
/// broadcast and gateway addresses.
const BUILTIN_INGRESS_ADDRESSES: usize = 65_533;

/// How often progress is shown while waiting for the tasks.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Polls `check` every 50 ms until it says yes, fails, or `timeout` passes.
fn wait(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn main() -> Result<()> {
    let shape = Shape {
        agents: env_or("SHOAL_BENCH_AGENTS", 1000),
        replicas: env_or("SHOAL_BENCH_REPLICAS", 2000),
        services: env_or("SHOAL_BENCH_SERVICES", 4).max(1),
        timeout: Duration::from_secs(env_or("SHOAL_BENCH_TIMEOUT", 300) as u64),
        ingress_subnet: None,
    };
    let shape = Shape {
        ingress_subnet: std::env::var("SHOAL_BENCH_INGRESS_SUBNET")
            .ok()
            .or_else(|| {
                (shape.agents + shape.replicas > BUILTIN_INGRESS_ADDRESSES)
                    .then(|| "10.0.0.0/14".to_string())
            }),
        ..shape
    };
    ensure!(
        shape.replicas.is_multiple_of(shape.services),
        "SHOAL_BENCH_REPLICAS must be a multiple of SHOAL_BENCH_SERVICES"
    );
    let modes = std::env::var("SHOAL_BENCH_MODES").unwrap_or_else(|_| "subset,deltas,full".into());
    let bins = bin_dir()?;
    let bins = (
        find(&bins, "shoal-manager")?,
        find(&bins, "shoalctl")?,
        find(&bins, "shoal-loadgen")?,
    );
    let keep = std::env::var_os("SHOAL_BENCH_KEEP").is_some();
    let mut results = Vec::new();
    for mode in modes.split(',').map(str::trim) {
        let (mode, env): (&'static str, &[(&str, &str)]) = match mode {
            "subset" => ("subset", &[]),
            "allnodes" => ("allnodes", &[("SHOAL_INGRESS_ALL_NODES", "1")]),
            "deltas" => ("deltas", &[("SHOAL_INGRESS_SUBSET", "0")]),
            "full" => (
                "full",
                &[
                    ("SHOAL_INGRESS_SUBSET", "0"),
                    ("SHOAL_DISPATCHER_FULL_SETS", "1"),
                ],
            ),
            other => bail!("unknown mode {other:?} (subset, allnodes, deltas, full)"),
        };
        let tmp = tempfile::Builder::new()
            .prefix(&format!("shoal-scale10k-{mode}-"))
            .tempdir()?;
        let mut children = Children::default();
        let result = run(tmp.path(), &mut children, &bins, &shape, mode, env);
        drop(children);
        match result {
            Ok(f) => {
                print_one(&f);
                results.push(f);
            }
            Err(e) => {
                eprintln!("{mode}: bench failed: {e:#}");
                for log in ["manager.log", "loadgen.log"] {
                    let text = std::fs::read_to_string(tmp.path().join(log)).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(15).collect();
                    eprintln!("--- last lines of {log}:");
                    for l in tail.iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
        if keep {
            eprintln!("{mode}: logs kept in {}", tmp.keep().display());
        }
    }
    println!();
    println!(
        "{} agents, {} replicas in {} published services, ingress subnet {}",
        shape.agents,
        shape.replicas,
        shape.services,
        shape
            .ingress_subnet
            .as_deref()
            .unwrap_or("10.0.0.0/16 (built in)")
    );
    println!();
    println!("| mode | setup | all RUNNING | all ingress views final | messages | MB sent | whole sets | deltas | resyncs | leader CPU | loadgen CPU | leader RSS peak | marked down | lost | load |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for f in &results {
        println!(
            "| {} | {:.1} s | {:.2} s | {:.2} s | {} | {:.1} | {} | {} | {} | {:.1} s | {:.1} s | {:.0} MiB | {} | {} | {} |",
            f.mode,
            f.setup,
            f.running,
            f.ingress,
            f.wire[0],
            f.wire[1] as f64 / 1e6,
            f.wire[2],
            f.wire[3],
            f.wire[4],
            f.leader_cpu,
            f.loadgen_cpu,
            f.leader_rss,
            f.marked_down,
            f.lost,
            f.load
        );
    }
    ensure!(!results.is_empty(), "no mode completed");
    Ok(())
}

fn print_one(f: &Figures) {
    eprintln!(
        "{}: setup {:.1} s, RUNNING {:.2} s, ingress final {:.2} s, {} msgs {:.1} MB ({} whole, {} deltas, {} resyncs), leader CPU {:.1} s, loadgen CPU {:.1} s, leader RSS {:.0} MiB, marked down {}, lost {}, load {}",
        f.mode, f.setup, f.running, f.ingress, f.wire[0], f.wire[1] as f64 / 1e6, f.wire[2], f.wire[3], f.wire[4],
        f.leader_cpu, f.loadgen_cpu, f.leader_rss, f.marked_down, f.lost, f.load
    );
}

fn run(
    dir: &Path,
    children: &mut Children,
    (manager, ctl, loadgen): &(PathBuf, PathBuf, PathBuf),
    shape: &Shape,
    mode: &'static str,
    env: &[(&str, &str)],
) -> Result<Figures> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let data = dir.join("manager");
    let leader = Command::new(manager)
        .args(["init", "--data-dir"])
        .arg(&data)
        .args(["--listen-addr", &addr])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(dir, "manager.log")?)
        .spawn()
        .context("starting shoal-manager")?;
    let leader_pid = leader.id();
    children.0.push(leader);
    let ctl = Shoalctl {
        ctl: ctl.clone(),
        admin_conf: data.join("admin.conf"),
    };
    wait("the manager to answer shoalctl", shape.timeout, || {
        Ok(ctl.answers())
    })?;
    if let Some(subnet) = &shape.ingress_subnet {
        ctl.run(["network", "rm", "ingress"])?;
        ctl.run([
            "network",
            "create",
            "--driver",
            "overlay",
            "--ingress",
            "--subnet",
            subnet,
            "bench-ingress",
        ])?;
    }
    let token = ctl.run(["cluster", "join-token", "worker", "-q"])?;

    let started = Instant::now();
    let mut child = Command::new(loadgen)
        .args(["--manager", &addr, "--token", token.trim()])
        .args(["--agents", &shape.agents.to_string()])
        .args(["--ingress", &shape.replicas.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file(dir, "loadgen.log")?)
        .spawn()
        .context("starting shoal-loadgen")?;
    let loadgen_pid = child.id();
    let stdout = child.stdout.take().context("shoal-loadgen stdout")?;
    children.0.push(child);
    let view = LoadgenReader::spawn(stdout);
    let look = || view.look();
    wait(
        &format!("{} simulated sessions", shape.agents),
        shape.timeout,
        || {
            let v = look();
            ensure!(!v.exited, "shoal-loadgen exited (see loadgen.log)");
            Ok(v.ready.is_some())
        },
    )?;
    wait(
        &format!("{} Ready nodes", shape.agents),
        shape.timeout,
        || {
            let out = ctl.run(["node", "ls", "--format", "json"])?;
            let ready = out
                .lines()
                .filter_map(|l| serde_json::from_str::<NodeRow>(l).ok())
                .filter(|n| n.hostname.starts_with("sim-") && n.status == "Ready")
                .count();
            Ok(ready == shape.agents)
        },
    )?;
    let setup = started.elapsed().as_secs_f64();

    let down_before = marked_down(dir);
    let lost_before = look().lost;
    let (leader_cpu0, loadgen_cpu0) = (cpu_seconds(leader_pid)?, cpu_seconds(loadgen_pid)?);
    let rss = RssPeak::start(leader_pid);
    let per = (shape.replicas / shape.services).to_string();
    let t0 = Instant::now();
    for i in 0..shape.services {
        let publish = format!("{}:80", 30000 + i);
        let name = format!("pub{i}");
        ctl.run([
            "service",
            "create",
            "--detach",
            "--replicas",
            &per,
            "--name",
            &name,
            "--publish",
            &publish,
            "busybox",
            "sleep",
            "3600",
        ])?;
    }
    let want = shape.replicas as i64;
    let mut shown = Instant::now();
    let result = wait(
        "every task RUNNING and every ingress view final",
        shape.timeout,
        || {
            let v = look();
            ensure!(!v.exited, "shoal-loadgen exited (see loadgen.log)");
            if shown.elapsed() >= PROGRESS_EVERY {
                shown = Instant::now();
                let (held, running) = v.last_tasks();
                let w = v.wire.last().map_or([0; 5], |w| w.1);
                eprintln!(
                    "{mode}: {:>5.1} s: {held} held, {running} RUNNING, {} ingress views final, {:.0} MB sent, leader CPU {:.1} s",
                    t0.elapsed().as_secs_f64(),
                    v.ingress.last().map_or(0, |i| i.1),
                    w[1] as f64 / 1e6,
                    cpu_seconds(leader_pid).unwrap_or(f64::NAN) - leader_cpu0,
                );
            }
            let running = v.last_tasks().1 >= want;
            let ingress = v.ingress.last().is_some_and(|i| i.1 >= shape.agents);
            Ok(running && ingress)
        },
    );
    let (leader_cpu, loadgen_cpu) = (
        cpu_seconds(leader_pid)? - leader_cpu0,
        cpu_seconds(loadgen_pid)? - loadgen_cpu0,
    );
    let leader_rss = rss.stop();
    let v = look();
    if let Err(e) = result {
        let running = v.last_tasks().1;
        let ingress = v.ingress.last().map_or(0, |i| i.1);
        let w = v.wire.last().map_or([0; 5], |w| w.1);
        bail!(
            "{mode}: {e:#}; {running}/{want} running, {ingress}/{} ingress views final, wire {w:?}, leader CPU {leader_cpu:.1} s, loadgen CPU {loadgen_cpu:.1} s",
            shape.agents
        );
    }
    let first = |at: Option<Instant>| at.map_or(f64::NAN, |t| (t - t0).as_secs_f64());
    let running = first(v.first_tasks(t0, |_, running| running >= want));
    let ingress_at = v
        .ingress
        .iter()
        .find(|i| i.0 >= t0 && i.1 >= shape.agents)
        .map(|i| i.0);
    let ingress = first(ingress_at);
    let at_start = v.wire_at(t0);
    let at_end = v.wire_at(ingress_at.unwrap_or_else(Instant::now));
    let mut wire = [0u64; 5];
    for (i, w) in wire.iter_mut().enumerate() {
        *w = at_end[i].saturating_sub(at_start[i]);
    }
    Ok(Figures {
        mode,
        setup,
        running,
        ingress,
        wire,
        leader_cpu,
        loadgen_cpu,
        leader_rss,
        marked_down: marked_down(dir).saturating_sub(down_before),
        lost: v.lost.saturating_sub(lost_before),
        load: load_average(),
    })
}

/// How many times the manager has marked a node down so far (its log).
fn marked_down(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("manager.log"))
        .map(|t| t.matches("missed its heartbeats").count())
        .unwrap_or(0)
}
