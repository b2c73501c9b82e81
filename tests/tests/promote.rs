//! End-to-end: `node promote` turns worker hosts into managers (their agents start
//! `shoal-manager join` as the same node, their containers untouched), the cluster survives
//! `kill -9` of the original manager, and `node demote` stops and wipes a promoted manager.
//! Also shoalctl failing over from a manager without quorum to one with it.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use anyhow::{anyhow, ensure, Context, Result};
use shoal_tests::ha::Managers;
use shoal_tests::testbed::{check_output, pid_alive, stderr_of, Cluster, Testbed, DEADLINE};

/// `cluster status --format json` rows as (addr, leader, reachable).
fn managers(c: &Cluster) -> Result<Vec<(String, bool, bool)>> {
    c.ctl_json(["cluster", "status"])?
        .into_iter()
        .map(|v| {
            Ok((
                v["Addr"].as_str().unwrap_or_default().to_string(),
                v["Leader"].as_bool().unwrap_or(false),
                v["Reachable"].as_bool().unwrap_or(false),
            ))
        })
        .collect()
}

/// Waits until `cluster status` lists `n` managers, `reachable` of them answering, one leading.
fn wait_managers(c: &Cluster, n: usize, reachable: usize) -> Result<Vec<(String, bool, bool)>> {
    let mut rows = Vec::new();
    Testbed::wait_for(
        DEADLINE,
        &format!("{n} managers, {reachable} reachable"),
        || {
            rows = match managers(c) {
                Ok(r) => r,
                Err(_) => return Ok(false),
            };
            if !(rows.len() == n
                && rows.iter().filter(|r| r.2).count() == reachable
                && rows.iter().any(|r| r.1 && r.2))
            {
                return Ok(false);
            }
            // And the leader hears from them (what `node ls` shows, and what demote checks).
            let nodes = c.node_ls()?;
            let heard = nodes
                .iter()
                .filter(|n| ["Leader", "Reachable"].contains(&n.manager_status.as_str()))
                .count();
            Ok(heard == reachable)
        },
    )?;
    Ok(rows)
}

/// Pids of processes whose command line names `dir` (the promoted manager of an agent).
fn processes_on(dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|b| *b == 0)
                    .any(|a| Path::new(std::ffi::OsStr::from_bytes(a)) == dir)
            })
        })
        .filter(|pid| pid_alive(*pid))
        .collect()
}

/// Container init pids by task id, of agent `i`.
fn pids(c: &Cluster, i: usize) -> Result<BTreeMap<String, i32>> {
    Ok(c.agents[i]
        .containers()?
        .into_iter()
        .filter_map(|ct| ct.pid.map(|p| (ct.task_id, p)))
        .collect())
}

/// A node's `node ls` row, by hostname.
fn row(c: &Cluster, host: &str) -> Result<shoal_tests::testbed::NodeRow> {
    c.node_ls()?
        .into_iter()
        .find(|n| n.hostname == host)
        .ok_or_else(|| anyhow!("node ls lists no {host}"))
}

#[test]
fn promote_two_workers_survive_the_first_manager_and_demote_one() -> Result<()> {
    let mut c = Cluster::start(Testbed::new("promote")?, 2)?;
    let image = c.busybox_image();
    c.ctl_ok([
        "service",
        "create",
        "--name",
        "sleepers",
        "--replicas",
        "4",
        &image,
        "sleep",
        "3600",
    ])?;
    c.wait_running("sleepers", 4)?;
    let before: Vec<BTreeMap<String, i32>> = vec![pids(&c, 0)?, pids(&c, 1)?];
    ensure!(
        before.iter().all(|p| !p.is_empty()),
        "both workers should run sleepers: {before:?}"
    );

    // Promote w1: its agent starts a manager that joins as the same node.
    let w1_manager = c.agents[0].data_dir.join("manager");
    c.ctl_ok(["node", "promote", "w1"])?;
    wait_managers(&c, 2, 2)?;
    let w1 = row(&c, "w1")?;
    ensure!(
        ["Leader", "Reachable"].contains(&w1.manager_status.as_str()),
        "w1 should be a manager now: {w1:?}"
    );
    ensure!(
        w1.availability.eq_ignore_ascii_case("active") && w1.status.eq_ignore_ascii_case("ready"),
        "w1 keeps running tasks as an active, ready node: {w1:?}"
    );
    ensure!(
        c.node_ls()?.len() == 3,
        "the promoted worker is the same node, not a new one: {:?}",
        c.node_ls()?
    );
    ensure!(
        processes_on(&w1_manager).len() == 1,
        "one manager process on w1's data dir"
    );

    // The manager outlives a restart of its agent, which adopts it instead of starting another.
    let manager_pid = processes_on(&w1_manager);
    c.restart_agent(0)?;
    let log = c.testbed().log_dir().join("agent-w1.log");
    Testbed::wait_for(
        DEADLINE,
        "w1's restarted agent to adopt its manager",
        || Ok(std::fs::read_to_string(&log)?.contains("adopting the manager process left running")),
    )?;
    ensure!(
        processes_on(&w1_manager) == manager_pid,
        "w1's manager should be adopted, not restarted: {manager_pid:?} -> {:?}",
        processes_on(&w1_manager)
    );

    // Promote w2: three managers.
    c.ctl_ok(["node", "promote", "w2"])?;
    wait_managers(&c, 3, 3)?;

    // The workers' containers were not touched.
    for (i, pids_before) in before.iter().enumerate() {
        ensure!(
            &pids(&c, i)? == pids_before,
            "agent {i}'s containers changed with the promotion"
        );
        for pid in pids_before.values() {
            ensure!(pid_alive(*pid), "container pid {pid} died");
        }
    }

    // kill -9 of the original manager: the two promoted ones carry on and a write is acknowledged.
    c.kill_manager()?;
    Testbed::wait_for(DEADLINE, "a write after the first manager died", || {
        Ok(
            c.ctl(["node", "update", "--label-add", "after=kill", "w2"])?
                .status
                .success(),
        )
    })?;
    let inspect = c.ctl_ok(["node", "inspect", "w2"])?;
    ensure!(
        inspect.contains("after"),
        "the label write is not visible: {inspect}"
    );
    // The agents moved their sessions to the new leader (they learnt the promoted managers).
    Testbed::wait_for(DEADLINE, "w1 and w2 ready under the new leader", || {
        let nodes = c.node_ls()?;
        Ok(["w1", "w2"].iter().all(|h| {
            nodes
                .iter()
                .any(|n| n.hostname == *h && n.status.eq_ignore_ascii_case("ready"))
        }))
    })?;
    for (i, pids_before) in before.iter().enumerate() {
        ensure!(
            &pids(&c, i)? == pids_before,
            "agent {i}'s containers changed with the failover"
        );
    }

    // The first manager comes back; then demote the promoted manager that does not lead.
    c.start_manager()?;
    let rows = wait_managers(&c, 3, 3)?;
    let leader = rows
        .iter()
        .find(|r| r.1)
        .map(|r| r.0.clone())
        .context("a leader")?;
    let (x, host) = (0..2)
        .map(|i| (i, c.agents[i].host.clone()))
        .find(|(_, h)| leader != format!("{}:4242", h.ip()))
        .context("a promoted manager that does not lead")?;
    let x_dir = c.agents[x].data_dir.join("manager");
    ensure!(x_dir.exists(), "{} has a manager data dir", host.name());
    c.ctl_ok(["node", "demote", host.name()])?;
    Testbed::wait_for(DEADLINE, "the demoted manager process to stop", || {
        Ok(processes_on(&x_dir).is_empty())
    })?;
    Testbed::wait_for(DEADLINE, "the demoted manager's data dir to go", || {
        Ok(!x_dir.exists())
    })?;
    wait_managers(&c, 2, 2)?;
    let demoted = row(&c, host.name())?;
    ensure!(
        demoted.manager_status.is_empty() && demoted.status.eq_ignore_ascii_case("ready"),
        "{} should be a ready worker again: {demoted:?}",
        host.name()
    );
    ensure!(
        pids(&c, x)? == before[x],
        "the demoted node's containers changed"
    );
    // It still serves: a write goes through.
    c.ctl_ok(["node", "update", "--label-add", "after=demote", host.name()])?;
    c.shutdown()
}

#[test]
fn shoalctl_fails_over_from_a_manager_without_quorum() -> Result<()> {
    let m = Managers::start(Testbed::new("failover")?, 3, &[])?;
    let leader = m.wait_converged(&[0, 1, 2])?;
    let cut = (0..3).find(|i| *i != leader).context("a follower")?;
    // The cut-off manager's admin.conf lists itself first.
    let conf = m.admin_conf(cut);
    let client = m.testbed().add_host("client")?;
    let ctl = |args: &[&str]| {
        let mut all = vec!["--config", conf.to_str().unwrap_or_default()];
        all.extend_from_slice(args);
        client.run(&m.bins.ctl, all)
    };
    let out = ctl(&["service", "ls"])?;
    check_output(&out, "service ls before the cut")?;

    // Cut it off from the other managers only: the client still reaches it.
    let ns = m.hosts[cut].netns().to_string();
    for j in (0..3).filter(|j| *j != cut) {
        let ip = format!("{}/32", m.hosts[j].ip());
        let out = std::process::Command::new("ip")
            .args(["-n", &ns, "route", "add", "blackhole", &ip])
            .output()?;
        ensure!(
            out.status.success(),
            "ip route add blackhole: {}",
            stderr_of(&out)
        );
    }
    // It answers, without quorum (a follower cut off cannot pass its read barrier).
    let direct = m.ctl(cut, ["service", "ls"])?;
    ensure!(
        !direct.status.success() && stderr_of(&direct).contains("no quorum"),
        "the cut-off manager should refuse with no quorum: {}",
        stderr_of(&direct)
    );

    // shoalctl, given it first, fails over for a read and for a write (nothing was proposed).
    let out = ctl(&["service", "ls"])?;
    check_output(&out, "service ls with the first manager out of quorum")?;
    let out = ctl(&[
        "service",
        "create",
        "-d",
        "--name",
        "failover-write",
        "busybox",
    ])?;
    check_output(&out, "service create with the first manager out of quorum")?;
    let listed = m.ctl_ok(leader, ["service", "ls", "-q"])?;
    ensure!(
        listed.lines().count() == 1,
        "exactly one service after the failed-over write: {listed:?}"
    );
    m.shutdown()
}
