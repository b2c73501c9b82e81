//! Docker Engine API latency (issue 13, docs/BENCHMARKS.md): `docker service ls` against a Shoal
//! manager versus against dockerd in swarm mode, on this machine, in the same run, with the same
//! docker CLI, the same cluster size (one manager node, no workers) and the same services
//! (`SHOAL_BENCH_SERVICES`, default 20, created through each API with `--replicas 0`, so neither
//! side runs a container). Goal: Shoal no slower.
//!
//! Rows: the CLI's wall time (process start included, as a user sees it) over TLS (Shoal's
//! `--docker-api-addr`, the CLI run inside the manager's testbed host, so `ip netns exec` is in
//! that row too; dockerd is not given TLS here) and over a unix socket (both, from the root
//! namespace), and the request alone (`curl --unix-socket … /v1.41/services?status=true`, curl's
//! own timing).
//!
//! Run (root; needs `docker.io` for dockerd and containerd):
//! `cargo build --release --workspace --bins && cargo bench -p shoal-tests --bench docker_api_latency`
//! Optional: `SHOAL_BENCH_RUNS=30`, `SHOAL_BENCH_SERVICES=20`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shoal_tests::bench_support::{env_or, median};
use shoal_tests::docker_cli::{Docker, DockerCli, DockerEnv};
use shoal_tests::testbed::{Cluster, ClusterOptions, Testbed};

const DOCKERD: &str = "/usr/sbin/dockerd";
const NETNS: &str = "shoal-bench-dockerd";
const API_PORT: u16 = 2376;

/// dockerd in swarm mode in a network namespace of its own (so its bridges and rules touch
/// nothing else); stopped, and its state removed, on drop.
struct Dockerd {
    child: Child,
    dir: PathBuf,
}

impl Dockerd {
    fn start(dir: &Path) -> Result<Dockerd> {
        // A namespace left by an interrupted run (usually there is none: the error is ignored).
        let _ = Command::new("ip")
            .args(["netns", "del", NETNS])
            .stderr(Stdio::null())
            .status();
        run("ip", &["netns", "add", NETNS])?;
        run("ip", &["-n", NETNS, "link", "set", "lo", "up"])?;
        fs::create_dir_all(dir)?;
        let p = |s: &str| dir.join(s).to_string_lossy().into_owned();
        // nsenter, not `ip netns exec`: the latter remounts /sys, hiding the cgroup mounts.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{NETNS}"))
            .arg(DOCKERD)
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--data-root", &p("root"), "--exec-root", &p("exec")])
            .args([
                "--pidfile",
                &p("pid"),
                "-H",
                &format!("unix://{}", p("d.sock")),
            ])
            .stdout(fs::File::create(dir.join("dockerd.log"))?)
            .stderr(Stdio::from(fs::File::create(dir.join("dockerd.err"))?))
            .spawn()
            .context("starting dockerd")?;
        let d = Dockerd {
            child,
            dir: dir.to_path_buf(),
        };
        let sock = d.host();
        Testbed::wait_for(Duration::from_secs(60), "dockerd to answer", || {
            Ok(docker_at("/usr/bin/docker", &sock, &["version"])?
                .status
                .success())
        })?;
        let init = docker_at(
            "/usr/bin/docker",
            &sock,
            &["swarm", "init", "--advertise-addr", "127.0.0.1"],
        )?;
        if !init.status.success() {
            bail!(
                "docker swarm init: {}",
                String::from_utf8_lossy(&init.stderr)
            );
        }
        Ok(d)
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.join("d.sock").display())
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = docker_at(
            "/usr/bin/docker",
            &self.host(),
            &["swarm", "leave", "--force"],
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn run(prog: &str, args: &[&str]) -> Result<()> {
    let st = Command::new(prog).args(args).status()?;
    if !st.success() {
        bail!("{prog} {args:?} failed: {st}");
    }
    Ok(())
}

fn docker_at(cli: &str, host: &str, args: &[&str]) -> Result<std::process::Output> {
    Ok(Command::new(cli)
        .args(args)
        .env("DOCKER_HOST", host)
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env("DOCKER_CLI_HINTS", "false")
        .output()?)
}

/// Wall time of `f`, `runs` times, in milliseconds.
fn time_runs(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    f()?; // warm-up: connections, caches
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(out)
}

/// curl's own time for one request over a unix socket, in milliseconds.
fn curl_ms(sock: &str, path: &str) -> Result<f64> {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code} %{time_total}"])
        .args(["--unix-socket", sock, &format!("http://docker{path}")])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    match text.split_once(' ') {
        Some(("200", secs)) => Ok(secs.trim().parse::<f64>()? * 1000.0),
        _ => bail!(
            "curl {path} on {sock}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn p90(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[(v.len() * 9 / 10).min(v.len() - 1)]
}

fn main() -> Result<()> {
    let runs = env_or("SHOAL_BENCH_RUNS", 30).max(3);
    let n = env_or("SHOAL_BENCH_SERVICES", 20).max(1);
    if !Path::new(DOCKERD).exists() {
        bail!("{DOCKERD} is missing: apt-get install docker.io (the reference needs dockerd)");
    }
    let cli = DockerCli::locate(Path::new("/usr/bin/docker"), "Debian's docker CLI")
        .map_err(anyhow::Error::msg)?;

    let tb = Testbed::new("benchdapi")?;
    let sock = tb.dir().join("shoal-docker.sock");
    let mut opts = ClusterOptions::new(0).docker_api(API_PORT);
    opts.manager_args.extend([
        "--docker-api-socket".into(),
        sock.to_string_lossy().into_owned(),
    ]);
    let c = Cluster::start_with(tb, opts)?;
    let env = DockerEnv::from_shoalctl(&c, &c.testbed().dir().join("docker-env"))?;
    let shoal_tls = Docker::new(cli.clone(), env, c.manager.clone())?;
    let shoal_sock = format!("unix://{}", sock.display());
    let dockerd = Dockerd::start(&c.testbed().dir().join("dockerd"))?;
    let dockerd_sock = dockerd.host();

    for i in 0..n {
        let name = format!("lat{i}");
        let args = [
            "service",
            "create",
            "-d",
            "--replicas",
            "0",
            "--no-resolve-image",
            "--name",
            &name,
            "busybox",
            "sleep",
            "3600",
        ];
        shoal_tls.ok(&args)?;
        let out = docker_at("/usr/bin/docker", &dockerd_sock, &args)?;
        if !out.status.success() {
            bail!("dockerd: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let count = |out: std::process::Output| -> Result<usize> {
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .count()
            .saturating_sub(1))
    };
    let shown = (
        count(shoal_tls.run(&["service", "ls"])?)?,
        count(docker_at(
            "/usr/bin/docker",
            &shoal_sock,
            &["service", "ls"],
        )?)?,
        count(docker_at(
            "/usr/bin/docker",
            &dockerd_sock,
            &["service", "ls"],
        )?)?,
    );
    if shown != (n, n, n) {
        bail!("service ls rows (shoal tls, shoal socket, dockerd) = {shown:?}, want {n} each");
    }

    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "docker CLI {} ; {n} services ; {runs} runs each ; load {}",
        cli.version,
        load.trim()
    );
    println!("{:<44} | {:>9} | {:>9}", "what", "median ms", "p90 ms");
    println!("{:-<44}-+-{:->9}-+-{:->9}", "", "", "");
    let row = |what: &str, v: Vec<f64>| {
        println!("{what:<44} | {:>9.2} | {:>9.2}", median(&v), p90(&v));
        median(&v)
    };
    let s_tls = row(
        "docker service ls, Shoal over TLS",
        time_runs(runs, || shoal_tls.ok(&["service", "ls"]).map(drop))?,
    );
    let s_sock = row(
        "docker service ls, Shoal over unix socket",
        time_runs(runs, || {
            docker_at("/usr/bin/docker", &shoal_sock, &["service", "ls"]).map(drop)
        })?,
    );
    let d_sock = row(
        "docker service ls, dockerd over unix socket",
        time_runs(runs, || {
            docker_at("/usr/bin/docker", &dockerd_sock, &["service", "ls"]).map(drop)
        })?,
    );
    let path = "/v1.41/services?status=true";
    let curl = |s: &str| -> Result<Vec<f64>> {
        curl_ms(s, path)?;
        (0..runs).map(|_| curl_ms(s, path)).collect()
    };
    let s_req = row(
        "GET services?status=true, Shoal (curl)",
        curl(&sock.to_string_lossy())?,
    );
    let d_req = row(
        "GET services?status=true, dockerd (curl)",
        curl(dockerd_sock.trim_start_matches("unix://"))?,
    );
    println!(
        "ratio Shoal/dockerd: CLI over socket {:.2}, request {:.2}; Shoal CLI over TLS {s_tls:.1} ms",
        s_sock / d_sock,
        s_req / d_req
    );
    drop(dockerd);
    c.shutdown()
}
