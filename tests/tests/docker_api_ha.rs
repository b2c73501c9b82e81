//! The Docker Engine API on every manager of a three-manager cluster (separate processes on
//! separate testbed hosts): a docker CLI talking to a follower creates, scales and reads the logs
//! of a service (the writes and the log stream go to the leader), and keeps working through that
//! follower after the leader is killed with SIGKILL.

use std::fs;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use shoal_tests::docker_cli::{cli_or_skip, Docker, DockerEnv};
use shoal_tests::ha::Managers;
use shoal_tests::testbed::{Testbed, DEADLINE};

const PORT: u16 = 2376;

/// The docker environment for manager `i`'s own admin.conf and Docker API address.
fn env_for(m: &Managers, i: usize, dir: &Path) -> Result<DockerEnv> {
    let conf: Value = serde_json::from_str(&fs::read_to_string(m.admin_conf(i))?)
        .context("reading admin.conf")?;
    fs::create_dir_all(dir)?;
    for (file, key) in [
        ("ca.pem", "ca_cert"),
        ("cert.pem", "cert"),
        ("key.pem", "key"),
    ] {
        let pem = conf[key]
            .as_str()
            .with_context(|| format!("admin.conf has no {key}"))?;
        fs::write(dir.join(file), pem)?;
    }
    let ip = m
        .addr(i)
        .rsplit_once(':')
        .map(|(ip, _)| ip.to_string())
        .context("manager address")?;
    Ok(DockerEnv {
        docker_host: format!("tcp://{ip}:{PORT}"),
        tls_verify: "1".into(),
        cert_path: dir.to_path_buf(),
    })
}

fn replicas_running(d: &Docker, service: &str) -> Result<usize> {
    let rows = d.json_lines(&[
        "service",
        "ps",
        service,
        "--filter",
        "desired-state=running",
    ])?;
    Ok(rows
        .iter()
        .filter(|r| {
            r["CurrentState"]
                .as_str()
                .is_some_and(|s| s.starts_with("Running"))
        })
        .count())
}

/// `service logs` options through the API: `--tail`, `-t`, `--since`, `-f`.
fn log_options(d: &Docker) -> Result<()> {
    let ticks = |text: &str| text.lines().filter(|l| l.contains("tick ")).count();
    // The last line of each of the two tasks.
    let tail = d.ok(&["service", "logs", "--tail", "1", "hav"])?;
    ensure!(
        tail.lines().count() == 2,
        "--tail 1 of 2 tasks printed {tail:?}"
    );
    // Timestamps first, in RFC 3339 with nanoseconds.
    let stamped = d.ok(&["service", "logs", "-t", "--tail", "1", "hav"])?;
    for line in stamped.lines() {
        let ts = line.split_whitespace().next().unwrap_or_default();
        ensure!(
            ts.len() >= 20 && ts.starts_with("20") && ts.contains('T') && ts.ends_with('Z'),
            "-t line without a timestamp first: {line:?}"
        );
    }
    let future = d.ok(&["service", "logs", "--since", "2099-01-01T00:00:00Z", "hav"])?;
    ensure!(
        ticks(&future) == 0,
        "--since in the future printed {future:?}"
    );
    let past = d.ok(&["service", "logs", "--since", "2000-01-01T00:00:00Z", "hav"])?;
    ensure!(ticks(&past) >= 2, "--since long ago printed {past:?}");
    // One task's logs: the CLI asks /services/ID (404), then /tasks/ID/logs.
    let task = d.ok(&[
        "service",
        "ps",
        "-q",
        "--filter",
        "desired-state=running",
        "hav",
    ])?;
    let task = task
        .lines()
        .next()
        .context("a running task of hav")?
        .trim()
        .to_string();
    let one = d.ok(&["service", "logs", "--tail", "2", &task])?;
    // The CLI prints ids truncated to 12 characters in its prefixes.
    let short = &task[..task.len().min(12)];
    ensure!(
        one.lines().count() == 2 && one.lines().all(|l| l.contains(short)),
        "logs of task {task} printed {one:?}"
    );
    // -f keeps the stream open: lines written after the call started still arrive, and the CLI
    // is still running when `timeout` stops it.
    let out = d.run_for(4, &["service", "logs", "-f", "--tail", "1", "hav"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.code() == Some(124),
        "docker service logs -f ended by itself ({}): {text}",
        out.status
    );
    ensure!(
        ticks(&text) >= 6,
        "-f for 4 s of two tasks ticking every 0.5 s printed {text:?}"
    );
    Ok(())
}

#[test]
fn every_manager_serves_the_api_and_a_follower_survives_the_leaders_death() -> Result<()> {
    let Some(cli) = cli_or_skip(
        "/usr/bin/docker",
        "every_manager_serves_the_api_and_a_follower_survives_the_leaders_death",
    ) else {
        return Ok(());
    };
    let addr = format!("0.0.0.0:{PORT}");
    let mut m = Managers::start(
        Testbed::new("dapiha")?,
        3,
        &["--docker-api-addr", addr.as_str()],
    )?;
    let (registry, image) = m.start_registry()?;
    let leader = m.wait_converged(&[0, 1, 2])?;
    let follower = (0..3).find(|&i| i != leader).context("a follower")?;
    m.add_agent("w1", &registry, follower)?;
    let dir = m.testbed().dir().join("docker-certs");
    let d = Docker::new(cli, env_for(&m, follower, &dir)?, m.hosts[follower].clone())?;
    Testbed::wait_for(DEADLINE, "w1 Ready as docker node ls shows it", || {
        let rows = d.json_lines(&["node", "ls"])?;
        Ok(rows
            .iter()
            .any(|r| r["Hostname"].as_str() == Some("w1") && r["Status"].as_str() == Some("Ready")))
    })?;

    // Without -d the CLI polls until converged: the create went through the follower to the leader.
    d.ok(&[
        "service",
        "create",
        "--name",
        "hav",
        "--replicas",
        "2",
        "--no-resolve-image",
        &image,
        "sh",
        "-c",
        "echo hello-from-hav; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.5; done",
    ])?;
    ensure!(replicas_running(&d, "hav")? == 2, "2 replicas after create");
    let seen = m.ctl_ok(leader, ["service", "inspect", "hav"])?;
    ensure!(
        seen.contains("hello-from-hav"),
        "the leader sees the service: {seen}"
    );
    // Log streams come from the agent's session with the leader.
    Testbed::wait_for(DEADLINE, "docker service logs through a follower", || {
        let out = d.ok(&["service", "logs", "hav"])?;
        Ok(out.matches("hello-from-hav").count() == 2)
    })?;

    log_options(&d)?;
    // `--host` lines reach the container's /etc/hosts (after the image's own lines).
    d.ok(&[
        "service",
        "create",
        "--name",
        "hh",
        "--host",
        "db.example:10.1.2.3",
        "--no-resolve-image",
        &image,
        "sh",
        "-c",
        "cat /etc/hosts; sleep 3600",
    ])?;
    Testbed::wait_for(DEADLINE, "the container to print its /etc/hosts", || {
        Ok(d.ok(&["service", "logs", "hh"])?
            .contains("10.1.2.3 db.example"))
    })?;
    let inspected = d.inspect("service", "hh")?;
    ensure!(
        inspected["Spec"]["TaskTemplate"]["ContainerSpec"]["Hosts"]
            == serde_json::json!(["10.1.2.3 db.example"]),
        "docker service inspect hh: {inspected}"
    );

    m.kill(leader)?;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    m.wait_converged(&survivors)?;
    let ls = d.json_lines(&["service", "ls"])?;
    ensure!(
        ls.iter().any(|r| r["Name"].as_str() == Some("hav")),
        "docker service ls after failover: {ls:?}"
    );
    d.ok(&["service", "scale", "hav=3"])?;
    ensure!(replicas_running(&d, "hav")? == 3, "3 replicas after scale");
    m.shutdown()
}
