//! End-to-end: `shoal-manager init`, agents joining over the testbed's switch, join-token checks.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};
use shoal_tests::testbed::{stderr_of, Cluster, Host, Testbed, DEADLINE};

/// Files under `dir` that look like key material (certificates, keys, PEM).
fn key_material(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = e.file_name().to_string_lossy().to_ascii_lowercase();
            let text = std::fs::read(&p).unwrap_or_default();
            let pem = String::from_utf8_lossy(&text).contains("-----BEGIN");
            if pem
                || [".pem", ".crt", ".key", ".der"]
                    .iter()
                    .any(|x| name.ends_with(x))
            {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

/// Runs `shoal-agent join` with `token` on a fresh host and expects a refusal: exit code not 0, a
/// clear error naming the token, and no certificate or key written in the agent's data dir.
fn expect_refused(cluster: &Cluster, host: &Host, token: &str) -> Result<()> {
    let data_dir = host.dir()?.join("agent");
    let args = cluster.agent_join_args(host, &data_dir, token);
    let out = host.run_timeout(&cluster.bins.agent, &args, DEADLINE)?;
    let stderr = stderr_of(&out);
    ensure!(
        !out.status.success(),
        "agent joined with a bad token; stderr: {stderr}"
    );
    ensure!(
        stderr.to_ascii_lowercase().contains("token"),
        "the refusal does not say the token is the problem: {stderr}"
    );
    let keys = key_material(&data_dir);
    ensure!(
        keys.is_empty(),
        "a refused agent kept key material: {keys:?}"
    );
    Ok(())
}

/// The same token with one secret character changed: well-formed, but not the cluster's.
fn tampered(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    if let Some(last) = chars.last_mut() {
        *last = if *last == 'a' { 'b' } else { 'a' };
    }
    chars.into_iter().collect()
}

#[test]
fn init_and_join_two_workers() -> Result<()> {
    let cluster = Cluster::start(Testbed::new("join")?, 2)?;
    let nodes = cluster.node_ls()?;
    let ready: BTreeSet<&str> = nodes
        .iter()
        .filter(|n| n.status.eq_ignore_ascii_case("ready"))
        .map(|n| n.hostname.as_str())
        .collect();
    for worker in ["w1", "w2"] {
        ensure!(
            ready.contains(worker),
            "{worker} is not Ready in node ls: {nodes:?}"
        );
    }
    ensure!(
        nodes.iter().all(|n| !n.id.is_empty()),
        "node ls rows lack an ID: {nodes:?}"
    );
    // Workers take tasks; the manager process runs none, so its node is a drained, manager-only
    // node (an agent on the manager's host joins as a worker of its own).
    let workers: Vec<_> = nodes
        .iter()
        .filter(|n| n.manager_status.is_empty())
        .collect();
    ensure!(
        workers.len() == 2
            && workers
                .iter()
                .all(|n| n.availability.eq_ignore_ascii_case("active")),
        "expected two Active workers: {nodes:?}"
    );
    let managers: Vec<_> = nodes
        .iter()
        .filter(|n| n.manager_status == "Leader")
        .collect();
    ensure!(
        managers.len() == 1 && managers[0].availability.eq_ignore_ascii_case("drain"),
        "expected one drained Leader: {nodes:?}"
    );
    cluster.shutdown()
}

#[test]
fn wrong_token_is_refused() -> Result<()> {
    let cluster = Cluster::start(Testbed::new("badtoken")?, 0)?;
    let before = cluster.node_ls()?.len();
    let intruder = cluster.testbed().add_host("bad")?;
    expect_refused(&cluster, &intruder, &tampered(cluster.worker_token()))?;
    ensure!(
        cluster.node_ls()?.len() == before,
        "a refused agent appeared in node ls"
    );
    cluster.shutdown()
}

#[test]
fn rotated_token_refuses_the_old_one() -> Result<()> {
    let mut cluster = Cluster::start(Testbed::new("rotate")?, 0)?;
    let old = cluster.worker_token().to_string();
    cluster.ctl_ok(["cluster", "join-token", "worker", "--rotate"])?;
    let new = cluster.join_token("worker")?;
    ensure!(new != old, "--rotate did not change the worker token");

    let late = cluster.testbed().add_host("late")?;
    expect_refused(&cluster, &late, &old)?;

    let fresh = cluster.testbed().add_host("fresh")?;
    cluster.add_agent(fresh, &new)?;
    cluster.wait_nodes_ready(2)?;
    // The node that joined before the rotation keeps its place.
    Testbed::holds_for(Duration::from_secs(3), "all nodes stay Ready", || {
        let nodes = cluster.node_ls()?;
        Ok(nodes.iter().any(|n| n.hostname == "fresh")
            && nodes.iter().all(|n| n.status.eq_ignore_ascii_case("ready")))
    })?;
    cluster.shutdown()
}

#[test]
fn a_client_without_certificate_is_refused() -> Result<()> {
    let cluster = Cluster::start(Testbed::new("nocert")?, 0)?;
    // The same admin.conf minus the client certificate and key: TLS still verifies the manager,
    // but the manager must refuse every call.
    let mut conf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cluster.admin_conf())?)?;
    conf["cert"] = serde_json::Value::String(String::new());
    conf["key"] = serde_json::Value::String(String::new());
    let anon = cluster.testbed().dir().join("anonymous.conf");
    std::fs::write(&anon, serde_json::to_string(&conf)?)?;
    let anon = anon.to_string_lossy().into_owned();
    for args in [vec!["node", "ls"], vec!["cluster", "join-token", "worker"]] {
        let mut all = vec!["--config", anon.as_str()];
        all.extend(args.iter().copied());
        let out = cluster.manager.run(&cluster.bins.ctl, &all)?;
        let stderr = stderr_of(&out);
        ensure!(
            out.status.code() == Some(1),
            "shoalctl {args:?} without a certificate was not refused: {out:?}"
        );
        ensure!(
            stderr.contains("no client certificate"),
            "the refusal does not say why: {stderr}"
        );
    }
    cluster.shutdown()
}
