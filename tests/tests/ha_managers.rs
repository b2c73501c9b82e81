//! End-to-end: several managers as one Raft group, each a real process on its own host namespace.
//! Leader kill -9, leader and follower partitions, heal, all managers killed and restarted, a
//! manager added after log compaction, five managers with two cut off; and through all of it a
//! history of numbered writes whose acknowledged ones must all be present exactly once, in order.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use shoal_tests::ha::{History, Managers};
use shoal_tests::testbed::{runtime_containers, stderr_of, Testbed, DEADLINE};

/// Failover must produce an acknowledged write within this (the goal is 2 s; CI machines are
/// slow, so the test allows more and prints what it measured).
const FAILOVER_LIMIT: Duration = Duration::from_secs(6);

/// The managers other than `i`.
fn others(m: &Managers, i: usize) -> Vec<usize> {
    (0..m.len()).filter(|j| *j != i).collect()
}

/// A write through manager `via` that must be refused for lack of quorum, with a clear message.
fn expect_no_quorum(m: &Managers, via: usize) -> Result<()> {
    let out = m.ctl(
        via,
        [
            "service",
            "create",
            "-d",
            "--name",
            "minority-write",
            "busybox",
        ],
    )?;
    let err = stderr_of(&out);
    ensure!(
        !out.status.success(),
        "a write through the minority manager m{} was acknowledged",
        via + 1
    );
    ensure!(
        err.to_ascii_lowercase().contains("no quorum"),
        "the minority's refusal does not say \"no quorum\": {err}"
    );
    Ok(())
}

#[test]
fn three_managers_failover_partitions_and_history() -> Result<()> {
    let mut m = Managers::start(Testbed::new("ha3")?, 3, &[])?;
    let mut hist = History::default();
    let leader = m.wait_converged(&[0, 1, 2])?;
    let follower = others(&m, leader)[0];

    // Writes through a follower are forwarded to the leader.
    for _ in 0..5 {
        ensure!(
            hist.write(&m, follower)?.0,
            "a write through a follower failed: {:?}",
            hist.writes
        );
    }

    // kill -9 of the leader: a new leader, and a write acknowledged quickly.
    m.kill(leader)?;
    let took = hist.write_until_acked(&m, follower, DEADLINE)?;
    eprintln!("leader kill -9 -> first acknowledged write: {took:?}");
    ensure!(
        took < FAILOVER_LIMIT,
        "failover took {took:?} (limit {FAILOVER_LIMIT:?})"
    );
    let survivors = others(&m, leader);
    let new_leader = m.wait_converged(&survivors)?;
    ensure!(new_leader != leader, "the killed manager still leads");
    for _ in 0..3 {
        hist.write(&m, survivors[1])?;
    }

    // The killed manager comes back from its data dir and catches up.
    m.restart(leader)?;
    let leader = m.wait_converged(&[0, 1, 2])?;

    // Follower partition: the majority keeps working, the follower refuses writes.
    let cut = others(&m, leader)[0];
    let majority = others(&m, cut);
    m.partition(cut)?;
    for _ in 0..3 {
        hist.write(&m, majority[0])?;
    }
    expect_no_quorum(&m, cut)?;
    m.heal(cut)?;
    m.wait_converged(&[0, 1, 2])?;
    hist.check(&m, cut)
        .context("after the follower partition healed")?;

    // Leader partition: the majority elects a new leader; the old one refuses writes.
    let leader = m.wait_converged(&[0, 1, 2])?;
    let majority = others(&m, leader);
    m.partition(leader)?;
    let took = hist.write_until_acked(&m, majority[0], DEADLINE)?;
    eprintln!("leader partitioned -> first acknowledged write on the majority: {took:?}");
    for _ in 0..3 {
        hist.write(&m, majority[1])?;
    }
    expect_no_quorum(&m, leader)?;
    m.heal(leader)?;
    m.wait_converged(&[0, 1, 2])?;

    ensure!(
        hist.acked() >= 15,
        "too few acknowledged writes: {:?}",
        hist.writes
    );
    for i in 0..3 {
        hist.check(&m, i)
            .with_context(|| format!("history on m{}", i + 1))?;
    }
    m.shutdown()
}

/// Every service as `service inspect` prints it, in name order.
fn services_state(m: &Managers, via: usize) -> Result<String> {
    let ls = m.ctl_ok(via, ["service", "ls", "--format", "json"])?;
    let mut names: Vec<String> = ls
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok(v["Name"].as_str().unwrap_or_default().to_string())
        })
        .collect::<Result<_>>()?;
    names.sort();
    let mut args = vec!["service".to_string(), "inspect".to_string()];
    args.extend(names);
    m.ctl_ok(via, &args)
}

#[test]
fn all_managers_killed_restart_exact_state_and_new_manager_from_snapshot() -> Result<()> {
    // A tiny snapshot interval: the log is compacted many times during the test.
    let mut m = Managers::start(Testbed::new("hadur")?, 3, &["--snapshot-interval", "20"])?;
    let mut hist = History::default();
    for i in 0..30 {
        ensure!(
            hist.write(&m, i % 3)?.0,
            "write {i} failed: {:?}",
            hist.writes
        );
    }
    m.ctl_ok(1, ["service", "create", "-d", "--name", "extra", "busybox"])?;
    m.ctl_ok(2, ["service", "scale", "-d", "extra=4"])?;
    m.wait_converged(&[0, 1, 2])?;
    let before = services_state(&m, 0)?;

    for i in 0..3 {
        m.kill(i)?;
    }
    for i in 0..3 {
        m.restart(i)?;
    }
    m.wait_converged(&[0, 1, 2])?;
    for i in 0..3 {
        let after = services_state(&m, i)?;
        ensure!(
            after == before,
            "m{} after restarting every manager differs:\nbefore: {before}\nafter: {after}",
            i + 1
        );
    }

    // A new manager joins after the log it would need was compacted: it catches up from a
    // snapshot and serves the same state.
    let new = m.add_manager()?;
    m.wait_converged(&[0, 1, 2, new])?;
    ensure!(
        services_state(&m, new)? == before,
        "the new manager's state differs"
    );
    hist.write(&m, new)?;
    hist.check(&m, new)?;
    m.shutdown()
}

#[test]
fn five_managers_with_two_cut_off() -> Result<()> {
    let mut m = Managers::start(Testbed::new("ha5")?, 5, &[])?;
    let mut hist = History::default();
    for i in 0..5 {
        hist.write(&m, i)?;
    }
    // Cut off the leader and one follower: three managers are still a majority of five.
    let leader = m.wait_converged(&[0, 1, 2, 3, 4])?;
    let follower = others(&m, leader)[0];
    let majority: Vec<usize> = (0..5).filter(|i| *i != leader && *i != follower).collect();
    m.partition(leader)?;
    m.partition(follower)?;
    let took = hist.write_until_acked(&m, majority[0], DEADLINE)?;
    eprintln!("5 managers, leader + 1 cut off -> first acknowledged write: {took:?}");
    for &i in &majority {
        ensure!(
            hist.write(&m, i)?.0,
            "majority write through m{} failed",
            i + 1
        );
    }
    expect_no_quorum(&m, leader)?;
    expect_no_quorum(&m, follower)?;
    m.heal(leader)?;
    m.heal(follower)?;
    m.wait_converged(&[0, 1, 2, 3, 4])?;
    for i in 0..5 {
        hist.check(&m, i)
            .with_context(|| format!("history on m{}", i + 1))?;
    }
    // Kill one more after healing: four of five still work.
    m.kill(majority[0])?;
    hist.write_until_acked(&m, majority[1], DEADLINE)?;
    m.shutdown()
}

#[test]
fn agents_follow_the_leader_and_keep_their_containers() -> Result<()> {
    let mut m = Managers::start(Testbed::new("haag")?, 3, &[])?;
    let (registry, image) = m.start_registry()?;
    let leader = m.wait_converged(&[0, 1, 2])?;
    // The agent joins through a follower; its join response lists every manager.
    let via = others(&m, leader)[0];
    let (_host, agent_dir) = m.add_agent("w1", &registry, via)?;
    let ready = |m: &Managers, from: usize| -> Result<bool> {
        let out = m.ctl_ok(from, ["node", "ls", "--format", "json"])?;
        Ok(out
            .lines()
            .any(|l| l.contains("\"w1\"") && l.contains("\"Ready\"")))
    };
    Testbed::wait_for(DEADLINE, "the agent to be Ready", || ready(&m, via))?;
    m.ctl_ok(
        via,
        [
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            &image,
            "sh",
            "-c",
            "echo hello-from-web; sleep 3600",
        ],
    )?;
    // Log streams come from the agent's session with the leader: a follower forwards the call.
    Testbed::wait_for(DEADLINE, "service logs through a follower", || {
        let out = m.ctl_ok(via, ["service", "logs", "web"])?;
        Ok(out.matches("hello-from-web").count() == 2)
    })?;
    let pids = |dir: &std::path::Path| -> Result<Vec<i32>> {
        let mut p: Vec<i32> = runtime_containers(dir)?
            .into_iter()
            .filter_map(|c| c.pid)
            .collect();
        p.sort_unstable();
        Ok(p)
    };
    let before = pids(&agent_dir)?;
    ensure!(before.len() == 2, "expected 2 containers, found {before:?}");

    m.kill(leader)?;
    let survivors = others(&m, leader);
    let new_leader = m.wait_converged(&survivors)?;
    // The agent's session moves to the new leader, the node stays Ready, and neither container
    // is restarted, for longer than the node-down timeout (1.5 heartbeat periods = 7.5 s).
    Testbed::holds_for(
        Duration::from_secs(10),
        "the containers keep running unchanged",
        || {
            let now = pids(&agent_dir)?;
            let ok = ready(&m, new_leader)?;
            if now != before || !ok {
                eprintln!("containers {now:?} (before {before:?}), w1 ready: {ok}");
                eprintln!("{}", m.ctl_ok(new_leader, ["node", "ls"])?);
            }
            Ok(now == before && ok)
        },
    )?;
    let ps = m.ctl_ok(new_leader, ["service", "ps", "web", "--format", "json"])?;
    let running = ps.lines().filter(|l| l.contains("Running")).count();
    ensure!(running == 2, "after failover, service ps shows: {ps}");
    ensure!(
        ps.lines().count() == 2,
        "failover created replacement tasks: {ps}"
    );
    m.shutdown()
}

#[test]
fn quorum_lost_for_good_then_force_new_cluster() -> Result<()> {
    let mut m = Managers::start(Testbed::new("hafnc")?, 3, &[])?;
    let mut hist = History::default();
    for i in 0..6 {
        ensure!(hist.write(&m, i % 3)?.0, "write {i} failed");
    }
    // Two managers are lost for good: the survivor (a joined one) refuses writes.
    let survivor = 1;
    m.kill(0)?;
    m.kill(2)?;
    expect_no_quorum(&m, survivor)?;
    // Disaster recovery on the survivor's data dir: it becomes a one-manager cluster with the
    // whole state.
    m.force_new_cluster(survivor)?;
    Testbed::wait_for(DEADLINE, "the survivor to lead alone", || {
        let rows = m.status(survivor)?;
        Ok(rows.len() == 1 && rows[0].leader)
    })?;
    hist.write_until_acked(&m, survivor, DEADLINE)?;
    hist.check(&m, survivor)?;
    // The cluster grows again: a new manager joins through the survivor.
    m.set_join_via(survivor);
    let new = m.add_manager()?;
    m.wait_converged(&[survivor, new])?;
    hist.write(&m, new)?;
    hist.check(&m, new)?;
    m.shutdown()
}

#[test]
fn demote_refuses_to_lose_quorum_then_demotes() -> Result<()> {
    let mut m = Managers::start(Testbed::new("hadem")?, 3, &[])?;
    let mut hist = History::default();
    let leader = m.wait_converged(&[0, 1, 2])?;
    let (f1, f2) = {
        let o = others(&m, leader);
        (o[0], o[1])
    };
    hist.write(&m, f1)?;
    let hostname_of = |m: &Managers, i: usize| -> Result<String> {
        // Every test host has the machine's hostname: demote by node id.
        let rows = m.status(leader)?;
        rows.iter()
            .find(|r| m.index_of(&r.addr) == Some(i))
            .map(|r| r.node_id.clone())
            .ok_or_else(|| anyhow::anyhow!("m{} not in cluster status", i + 1))
    };
    let f1_id = hostname_of(&m, f1)?;
    // With f2 down, demoting f1 would leave the leader alone among two voters: refused.
    m.kill(f2)?;
    Testbed::wait_for(DEADLINE, "the leader to see m-f2 unreachable", || {
        let out = m.ctl_ok(leader, ["node", "ls", "--format", "json"])?;
        Ok(out.contains("Unreachable"))
    })?;
    let out = m.ctl(leader, ["node", "demote", &f1_id])?;
    let err = stderr_of(&out);
    ensure!(
        !out.status.success(),
        "a demotion that loses quorum was accepted"
    );
    ensure!(
        err.contains("quorum"),
        "the refusal does not give the reason: {err}"
    );
    eprintln!("refused as expected: {}", err.trim());
    // With f2 back, the demotion goes through (sent to a follower: forwarded to the leader).
    m.restart(f2)?;
    m.wait_converged(&[0, 1, 2])?;
    m.ctl_ok(f2, ["node", "demote", &f1_id])?;
    let rows = m.status(leader)?;
    ensure!(
        rows.len() == 2,
        "cluster status after the demotion: {rows:?}"
    );
    let nodes = m.ctl_ok(leader, ["node", "ls", "--format", "json"])?;
    let demoted = nodes
        .lines()
        .find(|l| l.contains(&f1_id))
        .ok_or_else(|| anyhow::anyhow!("demoted node gone from node ls: {nodes}"))?;
    ensure!(
        demoted.contains("\"ManagerStatus\":\"\""),
        "the demoted manager still shows a manager status: {demoted}"
    );
    // The demoted manager process sees it left the Raft group and exits (status 3: removed).
    let status = m.wait_exit(f1, DEADLINE)?;
    ensure!(
        status.code() == Some(3),
        "the demoted manager exited with {status}, not 3 (removed)"
    );
    hist.write_until_acked(&m, f2, DEADLINE)?;
    hist.check(&m, f2)?;
    m.shutdown()
}

#[test]
fn demoting_the_leader_hands_leadership_over_first() -> Result<()> {
    let m = Managers::start(Testbed::new("hademl")?, 3, &[])?;
    let mut hist = History::default();
    let leader = m.wait_converged(&[0, 1, 2])?;
    let keep = others(&m, leader)[0];
    hist.write(&m, keep)?;
    let rows = m.status(leader)?;
    let leader_id = rows
        .iter()
        .find(|r| m.index_of(&r.addr) == Some(leader))
        .map(|r| r.node_id.clone())
        .ok_or_else(|| anyhow::anyhow!("m{} not in cluster status: {rows:?}", leader + 1))?;
    // Asked of the leader itself: it hands leadership to another manager, which demotes it.
    m.ctl_ok(leader, ["node", "demote", &leader_id])?;
    let rows = m.status(keep)?;
    ensure!(
        rows.len() == 2 && rows.iter().all(|r| r.node_id != leader_id),
        "cluster status after demoting the leader: {rows:?}"
    );
    ensure!(
        rows.iter().any(|r| r.leader),
        "a new leader leads: {rows:?}"
    );
    let status = m.wait_exit(leader, DEADLINE)?;
    ensure!(
        status.code() == Some(3),
        "the demoted leader exited with {status}, not 3 (removed)"
    );
    hist.write_until_acked(&m, keep, DEADLINE)?;
    hist.check(&m, keep)?;
    m.shutdown()
}

#[test]
fn node_rm_of_a_manager_leaves_the_raft_group_first() -> Result<()> {
    let m = Managers::start(Testbed::new("harm")?, 3, &[])?;
    let mut hist = History::default();
    let leader = m.wait_converged(&[0, 1, 2])?;
    let gone = others(&m, leader)[0];
    let keep = others(&m, leader)[1];
    hist.write(&m, keep)?;
    let rows = m.status(leader)?;
    let gone_id = rows
        .iter()
        .find(|r| m.index_of(&r.addr) == Some(gone))
        .map(|r| r.node_id.clone())
        .ok_or_else(|| anyhow::anyhow!("m{} not in cluster status: {rows:?}", gone + 1))?;
    // Sent to the manager that stays: the manager leaves Raft, then its node record goes.
    m.ctl_ok(keep, ["node", "rm", &gone_id])?;
    Testbed::wait_for(DEADLINE, "two managers left", || {
        Ok(m.status(leader)?.len() == 2)
    })?;
    let nodes = m.ctl_ok(leader, ["node", "ls", "--format", "json"])?;
    ensure!(
        !nodes.contains(&gone_id),
        "the removed manager is still listed: {nodes}"
    );
    // Two voters left, both up: writes go on.
    hist.write_until_acked(&m, keep, DEADLINE)?;
    hist.check(&m, leader)?;
    m.shutdown()
}
