//! Overlay figures (issue 5), in one run on two worker hosts of the namespace testbed:
//! TCP throughput and round trip between the two hosts over (1) the plain underlay veth, (2) a
//! hand-built kernel VXLAN between the same two namespaces, (3) Shoal's overlay container to
//! container, (4) Shoal's encrypted overlay container to container; and (5) the time from a task
//! becoming RUNNING on one host to its name resolving in a container on the other.
//!
//! Run (root): `cargo build --release --workspace --bins && SHOAL_BIN_DIR=target/release cargo bench -p shoal-tests --bench overlay`
//! Options: `SHOAL_BENCH_SECONDS` (throughput run length, default 5), `SHOAL_BENCH_TRIALS`
//! (default 5), `SHOAL_BENCH_NO_ENCRYPTED=1` (leave out path (4), for runs about the plain overlay). Every trial measures each path once, in turn (interleaved), and the overlay's
//! ratio to the hand-built VXLAN is taken per trial; the figure is the median ratio. The tool is `shoal-netperf` (tests/src/bin), run inside each namespace with
//! `nsenter -n`: one TCP stream, 128 KiB writes; round trip = median of 20,000 1-byte echoes.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shoal_tests::testbed::{Cluster, ClusterOptions, Host, Proc, Testbed, DEADLINE};

const PORT: u16 = 5201;

struct Row {
    path: &'static str,
    gbps: Vec<f64>,
    rtt_us: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn netperf(c: &Cluster) -> PathBuf {
    c.bins
        .ctl
        .parent()
        .map(|d| d.join("shoal-netperf"))
        .unwrap_or_else(|| PathBuf::from("shoal-netperf"))
}

/// Arguments that run `shoal-netperf ARGS` in the network namespace of `pid` (or the host's own).
fn in_ns(bin: &Path, pid: Option<i32>, args: &[&str]) -> (String, Vec<String>) {
    let mut v = Vec::new();
    let program = match pid {
        Some(pid) => {
            v.extend(["-t".to_string(), pid.to_string(), "-n".to_string()]);
            v.push(bin.display().to_string());
            "nsenter".to_string()
        }
        None => bin.display().to_string(),
    };
    v.extend(args.iter().map(|a| a.to_string()));
    (program, v)
}

/// Where one end of a measurement runs: a host, inside a task's namespace or the host's own.
struct End<'a> {
    host: &'a Host,
    pid: Option<i32>,
}

/// One measured path: where its server runs (started once) and whom the client reaches.
struct PathUnder<'a> {
    server: End<'a>,
    server_proc: Option<Proc>,
    client: End<'a>,
    target: Ipv4Addr,
    row: Row,
}

impl<'a> PathUnder<'a> {
    fn new(path: &'static str, server: End<'a>, client: End<'a>, target: Ipv4Addr) -> Self {
        PathUnder {
            server,
            server_proc: None,
            client,
            target,
            row: Row {
                path,
                gbps: vec![],
                rtt_us: vec![],
            },
        }
    }

    fn start(&mut self, c: &Cluster) -> Result<()> {
        let bin = netperf(c);
        let listen = format!("0.0.0.0:{PORT}");
        let (prog, args) = in_ns(&bin, self.server.pid, &["server", "--listen", &listen]);
        let log = format!("netperf-{}.log", self.row.path.replace(' ', "-"));
        self.server_proc = Some(self.server.host.spawn(&prog, &args, &log)?);
        Ok(())
    }

    /// One throughput run and one round-trip run.
    fn trial(&mut self, c: &Cluster, seconds: f64) -> Result<()> {
        let bin = netperf(c);
        let (client_host, client_pid) = (self.client.host, self.client.pid);
        let connect = format!("{}:{PORT}", self.target);
        let secs = seconds.to_string();
        let (prog, args) = in_ns(
            &bin,
            client_pid,
            &["throughput", "--connect", &connect, "--seconds", &secs],
        );
        let out = client_host.run_timeout(&prog, &args, Duration::from_secs_f64(seconds + 30.0))?;
        if !out.status.success() {
            bail!(
                "{}: throughput: {}",
                self.row.path,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.row
            .gbps
            .push(String::from_utf8_lossy(&out.stdout).trim().parse()?);
        let (prog, args) = in_ns(&bin, client_pid, &["latency", "--connect", &connect]);
        let out = client_host.run_timeout(&prog, &args, Duration::from_secs(60))?;
        if !out.status.success() {
            bail!(
                "{}: latency: {}",
                self.row.path,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.row
            .rtt_us
            .push(String::from_utf8_lossy(&out.stdout).trim().parse()?);
        Ok(())
    }

    fn stop(&mut self) -> Result<()> {
        if let Some(p) = self.server_proc.take() {
            p.kill()?;
        }
        Ok(())
    }

    fn print(&self) {
        let row = &self.row;
        println!(
            "{:<28} {:>8.2} Gbit/s {:>8.1} µs   (runs: {:?})",
            row.path,
            median(&row.gbps),
            median(&row.rtt_us),
            row.gbps
                .iter()
                .map(|g| format!("{g:.2}"))
                .collect::<Vec<_>>()
        );
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn pid_of_task(c: &Cluster, service: &str) -> Result<(String, i32)> {
    let tasks = c.wait_running(service, 1)?;
    let (_, ct) = c.container_of(&tasks[0].id)?;
    Ok((tasks[0].id.clone(), ct.pid.context("no pid")?))
}

fn eth0_of(pid: i32) -> Result<Ipv4Addr> {
    let out = std::process::Command::new("nsenter")
        .args([
            "-t",
            &pid.to_string(),
            "-n",
            "ip",
            "-4",
            "-o",
            "addr",
            "show",
            "eth0",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|c| c.split('/').next())
        .and_then(|ip| ip.parse().ok())
        .with_context(|| format!("no eth0 address in pid {pid}: {text}"))
}

fn ip(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("ip").args(args).output()?;
    if !out.status.success() {
        bail!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn main() -> Result<()> {
    let trials: usize = env_or("SHOAL_BENCH_TRIALS", 5);
    let with_encrypted = std::env::var_os("SHOAL_BENCH_NO_ENCRYPTED").is_none();
    let seconds: f64 = env_or("SHOAL_BENCH_SECONDS", 5.0);
    let host = |host, pid| End { host, pid };
    let c = Cluster::start_with(Testbed::new("benchovl")?, ClusterOptions::new(2))?;
    let (w1, w2) = (c.agents[0].host.clone(), c.agents[1].host.clone());
    println!("load average before: {}", load_average());

    // (2) A hand-built kernel VXLAN between the same two namespaces (MTU 1450, as Shoal's), up
    // for the whole run so that its trials interleave with the overlay's.
    for (h, other, addr) in [
        (&w1, &w2, "192.168.231.1/24"),
        (&w2, &w1, "192.168.231.2/24"),
    ] {
        let remote = other.ip().to_string();
        ip(&[
            "-n",
            h.netns(),
            "link",
            "add",
            "hbvx0",
            "type",
            "vxlan",
            "id",
            "999",
            "remote",
            &remote,
            "dstport",
            "4799",
            "dev",
            "eth0",
        ])?;
        ip(&["-n", h.netns(), "link", "set", "hbvx0", "mtu", "1450", "up"])?;
        ip(&["-n", h.netns(), "addr", "add", addr, "dev", "hbvx0"])?;
    }

    // Experiment switch: bridged packets skip the IP netfilter hooks (br_netfilter) on both
    // hosts, to see what conntrack on the overlay bridges costs.
    if std::env::var_os("SHOAL_BENCH_NO_BR_NETFILTER").is_some() {
        for h in [&w1, &w2] {
            ip(&[
                "netns",
                "exec",
                h.netns(),
                "sysctl",
                "-qw",
                "net.bridge.bridge-nf-call-iptables=0",
            ])?;
        }
    }

    // (3) and (4): Shoal's overlay, plain and encrypted, container to container.
    let image = c.busybox_image();
    let mut overlay_ends = Vec::new();
    let overlays: &[(&str, bool)] = if with_encrypted {
        &[("plain", false), ("sealed", true)]
    } else {
        &[("plain", false)]
    };
    for &(net, encrypted) in overlays {
        let mut args = vec!["network", "create", "-d", "overlay"];
        if encrypted {
            args.extend(["--opt", "encrypted"]);
        }
        args.push(net);
        c.ctl_ok(&args)?;
        for (svc, host) in [("srv", "w2"), ("cli", "w1")] {
            let name = format!("{svc}-{net}");
            let constraint = format!("node.hostname=={host}");
            c.ctl_ok([
                "service",
                "create",
                "--name",
                &name,
                "--network",
                net,
                "--constraint",
                &constraint,
                &image,
                "sleep",
                "3600",
            ])?;
        }
        let (_, srv_pid) = pid_of_task(&c, &format!("srv-{net}"))?;
        let (_, cli_pid) = pid_of_task(&c, &format!("cli-{net}"))?;
        overlay_ends.push((srv_pid, cli_pid, eth0_of(srv_pid)?));
    }
    let Some(&(plain_srv, plain_cli, plain_ip)) = overlay_ends.first() else {
        bail!("the plain overlay was made");
    };

    // (1) the underlay, host namespace to host namespace over the testbed's veths and bridge;
    // then (2), (3), (4). Every trial measures each path once, in turn, so a slow moment of the
    // shared machine falls on all of them alike; the ratio is taken per trial.
    let mut paths = vec![
        PathUnder::new("underlay veth", host(&w2, None), host(&w1, None), w2.ip()),
        PathUnder::new(
            "hand-built kernel VXLAN",
            host(&w2, None),
            host(&w1, None),
            Ipv4Addr::new(192, 168, 231, 2),
        ),
        PathUnder::new(
            "Shoal overlay",
            host(&w2, Some(plain_srv)),
            host(&w1, Some(plain_cli)),
            plain_ip,
        ),
    ];
    if let Some(&(sealed_srv, sealed_cli, sealed_ip)) = overlay_ends.get(1) {
        paths.push(PathUnder::new(
            "Shoal encrypted overlay",
            host(&w2, Some(sealed_srv)),
            host(&w1, Some(sealed_cli)),
            sealed_ip,
        ));
    }
    for p in paths.iter_mut() {
        p.start(&c)?;
    }
    let mut ratios = Vec::new();
    for trial in 0..trials {
        for p in paths.iter_mut() {
            p.trial(&c, seconds)?;
        }
        let ratio = paths[2].row.gbps[trial] / paths[1].row.gbps[trial];
        println!(
            "trial {}: overlay {:.2} / VXLAN {:.2} Gbit/s = {:.1}%, encrypted {:.2} Gbit/s (load {})",
            trial + 1,
            paths[2].row.gbps[trial],
            paths[1].row.gbps[trial],
            ratio * 100.0,
            paths.get(3).map_or(f64::NAN, |p| p.row.gbps[trial]),
            load_average()
        );
        ratios.push(ratio);
    }
    for p in paths.iter_mut() {
        p.stop()?;
        p.print();
    }
    for h in [&w1, &w2] {
        ip(&["-n", h.netns(), "link", "del", "hbvx0"])?;
    }
    let rows: Vec<&Row> = paths.iter().map(|p| &p.row).collect();

    // (5) RUNNING on w2 -> `tasks.probe` resolves in the plain client's container on w1.
    let (_, cli_pid) = pid_of_task(&c, "cli-plain")?;
    let mut resolve = Vec::new();
    for trial in 0..5u32 {
        let name = format!("probe{trial}");
        c.ctl_ok([
            "service",
            "create",
            "--detach",
            "--name",
            &name,
            "--network",
            "plain",
            "--constraint",
            "node.hostname==w2",
            &image,
            "sleep",
            "3600",
        ])?;
        let deadline = Instant::now() + DEADLINE;
        let mut running_at = None;
        let mut resolved_at = None;
        while Instant::now() < deadline && (running_at.is_none() || resolved_at.is_none()) {
            if running_at.is_none()
                && c.service_ps(&name)?
                    .iter()
                    .any(|t| t.desired_running() && t.is_running())
            {
                running_at = Some(Instant::now());
            }
            if resolved_at.is_none() {
                let out = std::process::Command::new("nsenter")
                    .args(["-t", &cli_pid.to_string(), "-n", "-m", "/bin/sh", "-c"])
                    .arg(format!("nslookup tasks.{name} 127.0.0.11"))
                    .output()?;
                let text = String::from_utf8_lossy(&out.stdout);
                let answers: BTreeSet<&str> = text
                    .split("Name:")
                    .skip(1)
                    .flat_map(|s| s.split_whitespace())
                    .filter(|w| w.parse::<Ipv4Addr>().is_ok())
                    .collect();
                if !answers.is_empty() {
                    resolved_at = Some(Instant::now());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (Some(r), Some(d)) = (running_at, resolved_at) else {
            bail!("probe {name}: running {running_at:?}, resolved {resolved_at:?}");
        };
        // `service ps` polls through shoalctl (~tens of ms each); a name may resolve before the
        // RUNNING row is seen, which counts as 0.
        let lag = d.saturating_duration_since(r);
        println!("resolve trial {}: {lag:?}", trial + 1);
        resolve.push(lag.as_secs_f64() * 1000.0);
    }

    println!();
    println!("| path | TCP throughput (Gbit/s, median of {trials}) | round trip (µs, median) |");
    println!("|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.2} | {:.1} |",
            r.path,
            median(&r.gbps),
            median(&r.rtt_us)
        );
    }
    println!(
        "\nShoal overlay / hand-built VXLAN: median {:.1}% over {trials} interleaved trials (min {:.1}%, max {:.1}%); encrypted: {:.2} Gbit/s; overlay adds {:.1} µs round trip over the underlay; load average after: {}",
        median(&ratios) * 100.0,
        ratios.iter().cloned().fold(f64::INFINITY, f64::min) * 100.0,
        ratios.iter().cloned().fold(0.0, f64::max) * 100.0,
        rows.get(3).map_or(f64::NAN, |r| median(&r.gbps)),
        median(&rows[2].rtt_us) - median(&rows[0].rtt_us),
        load_average()
    );
    println!(
        "RUNNING on w2 -> name resolves on w1: median {:.0} ms, max {:.0} ms",
        median(&resolve),
        resolve.iter().cloned().fold(0.0, f64::max)
    );
    c.shutdown()
}
