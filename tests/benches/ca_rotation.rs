//! Certificates at scale (issue 10, "Figures"): CA rotation and renewal with 1,000 simulated
//! agents (`shoal-loadgen`: real joins, certificates, dispatcher sessions, renewals and trust
//! updates as a real agent does them, tasks reported RUNNING without containers). Everything runs
//! on 127.0.0.1 as plain processes; no root needed.
//!
//! Part 1, rotation: per round, `shoalctl cluster ca --rotate` timed from the call until it
//! returns (the rotation is complete) and until the load generator holds every node's certificate
//! from the new CA; sessions lost (must be 0), renewals, the leader's CPU seconds and peak RSS
//! during the rotation.
//! Part 2, renewal: a fresh manager with short-lived certificates, watched for a while: renewals
//! per second, the most in any 1 s window, sessions lost, the leader's CPU.
//!
//! Run: `cargo build --release -p shoal-manager -p shoalctl -p shoal-tests && cargo bench -p shoal-tests --bench ca_rotation`
//! Optional: `SHOAL_BENCH_AGENTS=1000`, `SHOAL_BENCH_REPLICAS` (a service with that many tasks, so
//! sessions carry tasks; default one per agent, 0 for none), `SHOAL_BENCH_ROUNDS=3`,
//! `SHOAL_BENCH_CERT_EXPIRY=90d` (part 1), `SHOAL_BENCH_RENEW_EXPIRY=2m` and
//! `SHOAL_BENCH_RENEW_SECS=180` (part 2; 0 skips it), `SHOAL_BENCH_KEEP=1` (keep the logs),
//! `SHOAL_BIN_DIR` (where the binaries are; default: next to this bench).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use shoal_tests::bench_support::{
    bin_dir, cpu_seconds, env_or, find, free_port, log_file, median, wait_for, Children, Perf,
    RssPeak, Shoalctl, DEADLINE, POLL,
};
use shoal_tests::testbed::{NodeRow, ServiceRow};

/// How long one rotation may take before the bench gives up on it.
const ROTATION_DEADLINE: Duration = Duration::from_secs(600);
/// How long the idle leader's CPU use is measured.
const IDLE: Duration = Duration::from_secs(10);

fn env_str(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// The binaries, in the order `(manager, shoalctl, loadgen)`.
struct Bins {
    manager: PathBuf,
    ctl: PathBuf,
    loadgen: PathBuf,
}

/// What the load generator printed, with when.
#[derive(Default)]
struct LoadgenView {
    ready: Option<usize>,
    /// (when, tasks held, tasks reported running), one per `tasks` line.
    tasks: Vec<(Instant, i64, i64)>,
    /// (when, renewals so far), one per `renewed` line.
    renewed: Vec<(Instant, usize)>,
    /// Sessions lost so far.
    lost: usize,
    /// Failed attempts to open a session again so far.
    retried: usize,
    /// Per CA fingerprint: (when, nodes holding a certificate it issued).
    issued: HashMap<String, Vec<(Instant, i64)>>,
    exited: bool,
}

impl LoadgenView {
    fn last_tasks(&self) -> (i64, i64) {
        self.tasks.last().map_or((0, 0), |t| (t.1, t.2))
    }

    fn renewed(&self) -> usize {
        self.renewed.last().map_or(0, |r| r.1)
    }

    /// Nodes holding a certificate from CA `fp` now.
    fn issued_now(&self, fp: &str) -> i64 {
        self.issued
            .get(fp)
            .and_then(|v| v.last())
            .map_or(0, |x| x.1)
    }

    /// First moment at or after `since` when at least `n` nodes held a certificate from `fp`.
    fn issued_first(&self, fp: &str, n: i64, since: Instant) -> Option<Instant> {
        self.issued
            .get(fp)?
            .iter()
            .find(|x| x.0 >= since && x.1 >= n)
            .map(|x| x.0)
    }

    /// Renewals between `from` and `to`, and the most in any 1 s window there.
    fn renewals_between(&self, from: Instant, to: Instant) -> (usize, usize) {
        let mut base = 0;
        let mut points = Vec::new();
        for &(t, n) in &self.renewed {
            if t < from {
                base = n;
            } else if t <= to {
                points.push((t, n));
            }
        }
        let total = points.last().map_or(0, |p| p.1 - base);
        // The count just before each window start is the last count before it.
        let mut max = 0;
        let mut before = base;
        for (i, &(t, n_at)) in points.iter().enumerate() {
            let end = t + Duration::from_secs(1);
            let last_in = points[i..]
                .iter()
                .take_while(|p| p.0 < end)
                .last()
                .map_or(n_at, |p| p.1);
            max = max.max(last_in - before);
            before = n_at;
        }
        (total, max)
    }
}

type View = Arc<Mutex<LoadgenView>>;

fn look(view: &View) -> MutexGuard<'_, LoadgenView> {
    view.lock().unwrap_or_else(|p| p.into_inner())
}

/// `cluster ca --rotate` through `ctl`, its progress to `log`; returns the new CA's fingerprint.
fn rotate(ctl: &Shoalctl, log: std::fs::File) -> Result<String> {
    let mut child = Command::new(&ctl.ctl)
        .arg("--config")
        .arg(&ctl.admin_conf)
        .args(["cluster", "ca", "--rotate"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("running shoalctl cluster ca --rotate")?;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            let mut out = String::new();
            if let Some(mut s) = child.stdout.take() {
                std::io::Read::read_to_string(&mut s, &mut out)?;
            }
            if !status.success() {
                bail!("shoalctl cluster ca --rotate failed ({status}): see the rotate log");
            }
            return out
                .lines()
                .last()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .ok_or_else(|| anyhow!("shoalctl cluster ca --rotate printed no fingerprint"));
        }
        if start.elapsed() > ROTATION_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the rotation did not complete within {ROTATION_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A manager with `agents` simulated agents (and a service of `replicas` tasks) up and Ready.
struct Cluster {
    bench: Shoalctl,
    view: View,
    manager_pid: u32,
    loadgen_pid: u32,
    /// Seconds from starting the load generator to every node Ready.
    setup: f64,
}

fn start_cluster(
    dir: &Path,
    children: &mut Children,
    bins: &Bins,
    cert_expiry: &str,
    agents: usize,
    replicas: usize,
) -> Result<Cluster> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let data = dir.join("manager");
    let manager = Command::new(&bins.manager)
        .args(["init", "--data-dir"])
        .arg(&data)
        .args(["--listen-addr", &addr, "--cert-expiry", cert_expiry])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(dir, "manager.log")?)
        .spawn()
        .context("starting shoal-manager")?;
    let manager_pid = manager.id();
    children.0.push(manager);
    let bench = Shoalctl {
        ctl: bins.ctl.clone(),
        admin_conf: data.join("admin.conf"),
    };
    wait_for("the manager to answer shoalctl", || Ok(bench.answers()))?;
    let token = bench.run(["cluster", "join-token", "worker", "-q"])?;

    let started = Instant::now();
    let mut child = Command::new(&bins.loadgen)
        .args(["--manager", &addr, "--token", token.trim()])
        .args(["--agents", &agents.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file(dir, "loadgen.log")?)
        .spawn()
        .context("starting shoal-loadgen")?;
    let stdout = child.stdout.take().context("shoal-loadgen stdout")?;
    let loadgen_pid = child.id();
    children.0.push(child);
    let view: View = Arc::default();
    {
        let view = view.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let now = Instant::now();
                let words: Vec<&str> = line.split_whitespace().collect();
                let mut v = look(&view);
                match words.as_slice() {
                    ["ready", n] => v.ready = n.parse().ok(),
                    ["tasks", held, running] => {
                        if let (Ok(h), Ok(r)) = (held.parse(), running.parse()) {
                            v.tasks.push((now, h, r));
                        }
                    }
                    ["renewed", n] => {
                        if let Ok(n) = n.parse() {
                            v.renewed.push((now, n));
                        }
                    }
                    ["lost", n] => v.lost = n.parse().unwrap_or(v.lost),
                    ["retried", n] => v.retried = n.parse().unwrap_or(v.retried),
                    ["issued", fp, n] => {
                        if let Ok(n) = n.parse() {
                            v.issued.entry(fp.to_string()).or_default().push((now, n));
                        }
                    }
                    _ => {}
                }
            }
            look(&view).exited = true;
        });
    }
    wait_for(&format!("{agents} simulated sessions"), || {
        let v = look(&view);
        if v.exited {
            bail!("shoal-loadgen exited (see loadgen.log)");
        }
        Ok(v.ready.is_some())
    })?;
    wait_for(&format!("{agents} Ready nodes"), || {
        let nodes: Vec<NodeRow> = bench.rows(&["node", "ls"])?;
        let ready = nodes
            .iter()
            .filter(|n| n.hostname.starts_with("sim-") && n.status == "Ready")
            .count();
        Ok(ready == agents)
    })?;
    let setup = started.elapsed().as_secs_f64();
    if replicas > 0 {
        bench.run([
            "service",
            "create",
            "--detach",
            "--replicas",
            &replicas.to_string(),
            "--name",
            "load",
            "busybox",
            "sleep",
            "3600",
        ])?;
        let cluster = Cluster {
            bench,
            view,
            manager_pid,
            loadgen_pid,
            setup,
        };
        tasks_all_running(&cluster, replicas)?;
        return Ok(cluster);
    }
    Ok(Cluster {
        bench,
        view,
        manager_pid,
        loadgen_pid,
        setup,
    })
}

/// Waits until `service ls` shows every task running and the agents report them all running.
fn tasks_all_running(c: &Cluster, replicas: usize) -> Result<()> {
    if replicas == 0 {
        return Ok(());
    }
    let want = format!("{replicas}/{replicas}");
    let r = replicas as i64;
    let start = Instant::now();
    loop {
        let rows: Vec<ServiceRow> = c.bench.rows(&["service", "ls"])?;
        let shown = rows
            .iter()
            .find(|s| s.name == "load")
            .map(|s| s.replicas.clone())
            .unwrap_or_default();
        let held = look(&c.view).last_tasks();
        // Tasks of a node marked down stay in its assignment set, shut down, beside their
        // replacements: count what runs.
        if shown == want && held.1 == r {
            return Ok(());
        }
        if start.elapsed() > DEADLINE {
            bail!(
                "after {DEADLINE:?}, `service ls` shows load {shown} and the agents hold {} tasks, \
                 {} reported running; expected {want} and {replicas}",
                held.0,
                held.1
            );
        }
        std::thread::sleep(POLL);
    }
}

/// The leader's CPU use with the cluster idle (certificates far from renewal), as a share of one
/// core over `over`: the baseline the figures above it sit on.
fn idle_share(pid: u32, over: Duration) -> Result<f64> {
    let cpu0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    std::thread::sleep(over);
    Ok((cpu_seconds(pid)? - cpu0) / t0.elapsed().as_secs_f64())
}

/// How many times the manager has marked a node down for missed heartbeats so far (its log).
fn marked_down(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("manager.log"))
        .map(|t| t.matches("missed its heartbeats: marking it down").count())
        .unwrap_or(0)
}

/// One rotation's figures.
struct Rotation {
    /// Seconds from the call until it returned (the rotation complete); when the call failed,
    /// until `cluster ca` showed no rotation under way.
    complete: f64,
    /// Why `cluster ca --rotate` failed, if it did.
    rotate_error: Option<String>,
    /// Seconds until the first and the last node held a certificate from the new CA.
    first_renewed: f64,
    all_renewed: f64,
    renewals: usize,
    lost: usize,
    retried: usize,
    /// Nodes the manager marked down for missed heartbeats.
    down: usize,
    /// Set when the service's tasks were not all running again after the round.
    tasks_error: Option<String>,
    cpu: f64,
    loadgen_cpu: f64,
    rss_peak: f64,
}

/// The renewal part's figures.
struct Renewal {
    expiry: String,
    secs: f64,
    renewals: usize,
    max_per_second: usize,
    lost: usize,
    retried: usize,
    down: usize,
    cpu: f64,
    /// The leader's CPU share before the watch, when no certificate is near renewal yet.
    idle: f64,
    loadgen_cpu: f64,
    rss_peak: f64,
}

fn main() -> Result<()> {
    let agents = env_or("SHOAL_BENCH_AGENTS", 1000);
    let replicas = env_or("SHOAL_BENCH_REPLICAS", agents);
    let rounds = env_or("SHOAL_BENCH_ROUNDS", 3).max(1);
    let expiry = env_str("SHOAL_BENCH_CERT_EXPIRY", "90d");
    let renew_expiry = env_str("SHOAL_BENCH_RENEW_EXPIRY", "2m");
    let renew_secs = env_or("SHOAL_BENCH_RENEW_SECS", 180);
    let keep = std::env::var_os("SHOAL_BENCH_KEEP").is_some();
    let dir = bin_dir()?;
    let bins = Bins {
        manager: find(&dir, "shoal-manager")?,
        ctl: find(&dir, "shoalctl")?,
        loadgen: find(&dir, "shoal-loadgen")?,
    };
    let tmp = tempfile::Builder::new().prefix("shoal-ca-").tempdir()?;
    let (rotation_dir, renewal_dir) = (tmp.path().join("rotation"), tmp.path().join("renewal"));
    std::fs::create_dir_all(&rotation_dir)?;
    std::fs::create_dir_all(&renewal_dir)?;

    let mut children = Children::default();
    let rotations = run_rotations(
        &rotation_dir,
        &mut children,
        &bins,
        &expiry,
        agents,
        replicas,
        rounds,
    );
    drop(children);
    let rotations = match rotations {
        Ok(r) => r,
        Err(e) => return failed(e, &rotation_dir, tmp, keep),
    };
    let mut renewal = None;
    if renew_secs > 0 {
        let mut children = Children::default();
        let r = run_renewal(
            &renewal_dir,
            &mut children,
            &bins,
            &renew_expiry,
            agents,
            replicas,
            Duration::from_secs(renew_secs as u64),
        );
        drop(children);
        match r {
            Ok(r) => renewal = Some(r),
            Err(e) => return failed(e, &renewal_dir, tmp, keep),
        }
    }
    if keep {
        eprintln!("logs kept in {}", tmp.keep().display());
    }

    let (setup, idle, rounds_data) = rotations;
    println!(
        "{agents} simulated agents, a service of {replicas} tasks; all Ready in {setup:.1} s; \
         idle leader CPU {:.1} % of a core",
        100.0 * idle
    );
    println!();
    let col = |f: fn(&Rotation) -> f64| rounds_data.iter().map(f).collect::<Vec<f64>>();
    let rows: [(&str, Vec<f64>, usize); 10] = [
        (
            "**`cluster ca --rotate` returns (rotation complete)**",
            col(|r| r.complete),
            2,
        ),
        (
            "first node holds a certificate from the new CA",
            col(|r| r.first_renewed),
            2,
        ),
        (
            "every node holds a certificate from the new CA (as the agents saw it)",
            col(|r| r.all_renewed),
            2,
        ),
        (
            "renewals during the rotation",
            col(|r| r.renewals as f64),
            0,
        ),
        (
            "**sessions lost** (ended for another reason than new credentials)",
            col(|r| r.lost as f64),
            0,
        ),
        (
            "failed attempts to reopen a session",
            col(|r| r.retried as f64),
            0,
        ),
        (
            "nodes marked down (missed heartbeats)",
            col(|r| r.down as f64),
            0,
        ),
        ("leader CPU during the rotation (s)", col(|r| r.cpu), 1),
        (
            "load generator CPU during the rotation (s)",
            col(|r| r.loadgen_cpu),
            1,
        ),
        (
            "leader peak RSS during the rotation (MiB)",
            col(|r| r.rss_peak),
            0,
        ),
    ];
    println!("| CA rotation, {agents} agents, certificates of {expiry} | median of {rounds} | all rounds |");
    println!("|---|---|---|");
    for (what, v, prec) in rows {
        let all: Vec<String> = v.iter().map(|x| format!("{x:.prec$}")).collect();
        println!("| {what} | {:.prec$} | {} |", median(&v), all.join(", "));
    }
    for (i, r) in rounds_data.iter().enumerate() {
        if let Some(e) = &r.rotate_error {
            println!("round {}: `cluster ca --rotate` failed: {e}", i + 1);
        }
        if let Some(e) = &r.tasks_error {
            println!("round {}: {e}", i + 1);
        }
    }
    if let Some(r) = renewal {
        println!();
        println!(
            "| renewal, {agents} agents, certificates of {}, watched {:.0} s | |",
            r.expiry, r.secs
        );
        println!("|---|---|");
        println!("| renewals | {} |", r.renewals);
        println!(
            "| renewals per second (mean) | {:.1} |",
            r.renewals as f64 / r.secs
        );
        println!("| most renewals in any 1 s window | {} |", r.max_per_second);
        println!("| **sessions lost** | {} |", r.lost);
        println!("| failed attempts to reopen a session | {} |", r.retried);
        println!("| nodes marked down (missed heartbeats) | {} |", r.down);
        println!(
            "| leader CPU (s, and share of one core) | {:.1} ({:.1} %) |",
            r.cpu,
            100.0 * r.cpu / r.secs
        );
        println!(
            "| leader CPU before the first renewal (share of one core) | {:.1} % |",
            100.0 * r.idle
        );
        println!("| leader peak RSS (MiB) | {:.0} |", r.rss_peak);
        println!("| load generator CPU (s) | {:.1} |", r.loadgen_cpu);
    }
    let lost: usize = rounds_data.iter().map(|r| r.lost + r.down).sum();
    if lost > 0 {
        bail!("{lost} sessions lost or nodes marked down during the rotations");
    }
    Ok(())
}

/// Prints the end of the logs of a failed part, then returns its error.
fn failed(e: anyhow::Error, dir: &Path, tmp: tempfile::TempDir, keep: bool) -> Result<()> {
    eprintln!("bench failed: {e:#}");
    for log in ["manager.log", "loadgen.log"] {
        let text = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        eprintln!("--- last lines of {log}:");
        for l in tail.iter().rev() {
            eprintln!("{l}");
        }
    }
    if keep {
        eprintln!("logs kept in {}", tmp.keep().display());
    }
    Err(e)
}

fn run_rotations(
    dir: &Path,
    children: &mut Children,
    bins: &Bins,
    expiry: &str,
    agents: usize,
    replicas: usize,
    rounds: usize,
) -> Result<(f64, f64, Vec<Rotation>)> {
    let c = start_cluster(dir, children, bins, expiry, agents, replicas)?;
    let idle = idle_share(c.manager_pid, IDLE)?;
    let mut results = Vec::new();
    for round in 1..=rounds {
        let (renewed0, lost0, retried0) = {
            let v = look(&c.view);
            (v.renewed(), v.lost, v.retried)
        };
        let down0 = marked_down(dir);
        let (cpu0, lcpu0) = (cpu_seconds(c.manager_pid)?, cpu_seconds(c.loadgen_pid)?);
        let rss = RssPeak::start(c.manager_pid);
        let perf = Perf::start(c.manager_pid, &dir.join(format!("perf-{round}.data")))?;
        let log = format!("rotate-{round}.log");
        let t0 = Instant::now();
        let (fp, rotate_error) = match rotate(&c.bench, log_file(dir, &log)?) {
            Ok(fp) => (fp, None),
            Err(e) => {
                // The rotation goes on without its caller: time it from the cluster's side.
                let text = std::fs::read_to_string(dir.join(&log)).unwrap_or_default();
                let why = text.lines().last().unwrap_or_default().to_string();
                eprintln!("round {round}: {e:#}: {why}");
                let mut fp = String::new();
                wait_for("the rotation to complete", || {
                    // A busy manager may not answer every poll: only an answer counts.
                    let Ok(out) = c.bench.run(["cluster", "ca", "--format", "json"]) else {
                        return Ok(false);
                    };
                    let v: serde_json::Value = serde_json::from_str(out.trim())?;
                    fp = v["CAFingerprint"].as_str().unwrap_or_default().to_string();
                    Ok(v["Rotation"].is_null())
                })?;
                (fp, Some(why))
            }
        };
        let complete = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds(c.manager_pid)? - cpu0;
        let loadgen_cpu = cpu_seconds(c.loadgen_pid)? - lcpu0;
        let rss_peak = rss.stop();
        drop(perf);
        let n = agents as i64;
        wait_for("every simulated node on the new CA", || {
            Ok(look(&c.view).issued_now(&fp) >= n)
        })?;
        let (first_renewed, all_renewed) = {
            let v = look(&c.view);
            let at = |k| {
                v.issued_first(&fp, k, t0)
                    .map_or(f64::NAN, |t| (t - t0).as_secs_f64())
            };
            (at(1), at(n))
        };
        // Outside the timing: the tasks are still there and running, as the agents see them.
        let tasks_error = tasks_all_running(&c, replicas)
            .err()
            .map(|e| format!("{e:#}"));
        if let Some(e) = &tasks_error {
            eprintln!("round {round}: {e}");
        }
        let down = marked_down(dir) - down0;
        let (renewals, lost, retried) = {
            let v = look(&c.view);
            (v.renewed() - renewed0, v.lost - lost0, v.retried - retried0)
        };
        eprintln!(
            "round {round}: rotation complete in {complete:.2} s (first node renewed \
             {first_renewed:.2} s, all {all_renewed:.2} s); {renewals} renewals, {lost} sessions \
             lost, {retried} failed reconnects, {down} nodes marked down, leader CPU {cpu:.1} s, loadgen CPU \
             {loadgen_cpu:.1} s, peak RSS {rss_peak:.0} MiB"
        );
        results.push(Rotation {
            complete,
            rotate_error,
            first_renewed,
            all_renewed,
            renewals,
            lost,
            retried,
            down,
            tasks_error,
            cpu,
            loadgen_cpu,
            rss_peak,
        });
    }
    Ok((c.setup, idle, results))
}

fn run_renewal(
    dir: &Path,
    children: &mut Children,
    bins: &Bins,
    expiry: &str,
    agents: usize,
    replicas: usize,
    watch: Duration,
) -> Result<Renewal> {
    let c = start_cluster(dir, children, bins, expiry, agents, replicas)?;
    let idle = idle_share(c.manager_pid, IDLE)?;
    let (lost0, retried0) = {
        let v = look(&c.view);
        (v.lost, v.retried)
    };
    let (cpu0, lcpu0) = (cpu_seconds(c.manager_pid)?, cpu_seconds(c.loadgen_pid)?);
    let down0 = marked_down(dir);
    let rss = RssPeak::start(c.manager_pid);
    let t0 = Instant::now();
    while t0.elapsed() < watch {
        if look(&c.view).exited {
            bail!("shoal-loadgen exited (see loadgen.log)");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let t1 = Instant::now();
    let cpu = cpu_seconds(c.manager_pid)? - cpu0;
    let loadgen_cpu = cpu_seconds(c.loadgen_pid)? - lcpu0;
    let rss_peak = rss.stop();
    let down = marked_down(dir) - down0;
    if let Err(e) = tasks_all_running(&c, replicas) {
        eprintln!("renewal: {e:#}");
    }
    let v = look(&c.view);
    let (renewals, max_per_second) = v.renewals_between(t0, t1);
    let r = Renewal {
        expiry: expiry.to_string(),
        secs: (t1 - t0).as_secs_f64(),
        renewals,
        max_per_second,
        lost: v.lost - lost0,
        retried: v.retried - retried0,
        down,
        cpu,
        idle,
        loadgen_cpu,
        rss_peak,
    };
    eprintln!(
        "renewal: {} renewals in {:.0} s (max {} in 1 s), {} sessions lost, {} failed reconnects, \
         leader CPU {:.1} s, loadgen CPU {:.1} s",
        r.renewals, r.secs, r.max_per_second, r.lost, r.retried, r.cpu, r.loadgen_cpu
    );
    Ok(r)
}
