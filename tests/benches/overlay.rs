//! Overlay figures (issue 5), in one run on two worker hosts of the namespace testbed:
//! TCP throughput and round trip between the two hosts over (1) the plain underlay veth, (2) a
//! hand-built kernel VXLAN between the same two namespaces, (3) Shoal's overlay container to
//! container, (4) Shoal's encrypted overlay container to container; and (5) the time from a task
//! becoming RUNNING on one host to its name resolving in a container on the other.
//!
//! Run (root): `cargo build --release --workspace --bins && SHOAL_BIN_DIR=target/release cargo bench -p shoal-tests --bench overlay`
//! Options: `SHOAL_BENCH_SECONDS` (throughput run length, default 5), `SHOAL_BENCH_TRIALS`
//! (default 3). The tool is `shoal-netperf` (tests/src/bin), run inside each namespace with
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

/// How long and how often to measure.
#[derive(Clone, Copy)]
struct Settings {
    trials: usize,
    seconds: f64,
}

fn measure(
    c: &Cluster,
    server: End<'_>,
    client: End<'_>,
    target: Ipv4Addr,
    row: &mut Row,
    set: Settings,
) -> Result<()> {
    let Settings { trials, seconds } = set;
    let (server_host, server_pid) = (server.host, server.pid);
    let (client_host, client_pid) = (client.host, client.pid);
    let bin = netperf(c);
    let listen = format!("0.0.0.0:{PORT}");
    let (prog, args) = in_ns(&bin, server_pid, &["server", "--listen", &listen]);
    let server: Proc = server_host.spawn(&prog, &args, &format!("netperf-{}.log", row.path))?;
    let connect = format!("{target}:{PORT}");
    let secs = seconds.to_string();
    for _ in 0..trials {
        let (prog, args) = in_ns(
            &bin,
            client_pid,
            &["throughput", "--connect", &connect, "--seconds", &secs],
        );
        let out = client_host.run_timeout(&prog, &args, Duration::from_secs_f64(seconds + 30.0))?;
        if !out.status.success() {
            bail!(
                "{}: throughput: {}",
                row.path,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        row.gbps
            .push(String::from_utf8_lossy(&out.stdout).trim().parse()?);
        let (prog, args) = in_ns(&bin, client_pid, &["latency", "--connect", &connect]);
        let out = client_host.run_timeout(&prog, &args, Duration::from_secs(60))?;
        if !out.status.success() {
            bail!(
                "{}: latency: {}",
                row.path,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        row.rtt_us
            .push(String::from_utf8_lossy(&out.stdout).trim().parse()?);
    }
    server.kill()?;
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
    Ok(())
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
    let trials: usize = env_or("SHOAL_BENCH_TRIALS", 3);
    let seconds: f64 = env_or("SHOAL_BENCH_SECONDS", 5.0);
    let set = Settings { trials, seconds };
    let host = |host, pid| End { host, pid };
    let c = Cluster::start_with(Testbed::new("benchovl")?, ClusterOptions::new(2))?;
    let (w1, w2) = (c.agents[0].host.clone(), c.agents[1].host.clone());
    let mut rows = Vec::new();

    // (1) The underlay: host namespace to host namespace over the testbed's veths and bridge.
    let mut row = Row {
        path: "underlay veth",
        gbps: vec![],
        rtt_us: vec![],
    };
    measure(&c, host(&w2, None), host(&w1, None), w2.ip(), &mut row, set)?;
    rows.push(row);

    // (2) A hand-built kernel VXLAN between the same two namespaces (MTU 1450, as Shoal's).
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
    let mut row = Row {
        path: "hand-built kernel VXLAN",
        gbps: vec![],
        rtt_us: vec![],
    };
    let r = measure(
        &c,
        host(&w2, None),
        host(&w1, None),
        Ipv4Addr::new(192, 168, 231, 2),
        &mut row,
        set,
    );
    for h in [&w1, &w2] {
        ip(&["-n", h.netns(), "link", "del", "hbvx0"])?;
    }
    r?;
    rows.push(row);

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
            ])
            .or_else(|_| -> Result<()> {
                let out = std::process::Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        h.netns(),
                        "sysctl",
                        "-w",
                        "net.bridge.bridge-nf-call-iptables=0",
                    ])
                    .output()?;
                bail!("sysctl: {}", String::from_utf8_lossy(&out.stderr))
            })?;
        }
    }

    // (3) and (4): Shoal's overlay, plain and encrypted, container to container.
    let image = c.busybox_image();
    for (net, encrypted, label) in [
        ("plain", false, "Shoal overlay"),
        ("sealed", true, "Shoal encrypted overlay"),
    ] {
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
        let target = eth0_of(srv_pid)?;
        let mut row = Row {
            path: label,
            gbps: vec![],
            rtt_us: vec![],
        };
        measure(
            &c,
            host(&w2, Some(srv_pid)),
            host(&w1, Some(cli_pid)),
            target,
            &mut row,
            set,
        )?;
        rows.push(row);
    }

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
    let vx = median(&rows[1].gbps);
    let ov = median(&rows[2].gbps);
    println!(
        "\nShoal overlay / hand-built VXLAN: {:.0}%; encrypted: {:.2} Gbit/s; overlay adds {:.1} µs round trip over the underlay",
        ov / vx * 100.0,
        median(&rows[3].gbps),
        median(&rows[2].rtt_us) - median(&rows[0].rtt_us)
    );
    println!(
        "RUNNING on w2 -> name resolves on w1: median {:.0} ms, max {:.0} ms",
        median(&resolve),
        resolve.iter().cloned().fold(0.0, f64::max)
    );
    c.shutdown()
}
