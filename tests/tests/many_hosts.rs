//! End-to-end scenarios on a cluster of one manager and several worker hosts: spread, labels,
//! constraints and placement preferences, global services, drain, dead and partitioned hosts,
//! unschedulable tasks and node removal. Driven through shoalctl as a user would, and checked
//! against what the agents' runtimes record.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use shoal_tests::testbed::{
    fatal, pid_alive, stderr_of, Cluster, ClusterOptions, TaskRow, Testbed, DEADLINE,
};

/// Worker hosts of most scenarios.
const WORKERS: usize = 4;
/// How long "and it stays that way" checks watch.
const SETTLE: Duration = Duration::from_secs(4);

/// A cluster of one manager and `opts.n_workers` workers (`w1`…), on its own testbed.
fn cluster(name: &str, opts: ClusterOptions) -> Result<Cluster> {
    Cluster::start_with(Testbed::new(name)?, opts)
}

/// `service create --name NAME FLAGS... busybox sleep 3600`; must exit 0.
fn create(c: &Cluster, name: &str, flags: &[&str]) -> Result<()> {
    let image = c.busybox_image();
    let mut args = vec!["service", "create", "--name", name];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[&image, "sleep", "3600"]);
    c.ctl_ok(&args)?;
    Ok(())
}

fn hostnames(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("w{i}")).collect()
}

/// Tasks wanted and Running, per worker hostname (every worker listed, with 0 if it has none).
fn running_per_node(tasks: &[TaskRow], workers: &[String]) -> BTreeMap<String, usize> {
    let mut per: BTreeMap<String, usize> = workers.iter().map(|w| (w.clone(), 0)).collect();
    for t in tasks
        .iter()
        .filter(|t| t.desired_running() && t.is_running())
    {
        *per.entry(t.node.clone()).or_default() += 1;
    }
    per
}

fn spread(per: &BTreeMap<String, usize>) -> usize {
    let max = per.values().max().copied().unwrap_or(0);
    let min = per.values().min().copied().unwrap_or(0);
    max - min
}

/// Waits until `service` has exactly `n` wanted tasks, all Running, none of them on `not_on`.
fn wait_running_elsewhere(
    c: &Cluster,
    service: &str,
    n: usize,
    not_on: &str,
    timeout: Duration,
) -> Result<Vec<TaskRow>> {
    let mut tasks = Vec::new();
    Testbed::wait_for(
        timeout,
        &format!("{service}: {n} tasks Running, none on {not_on}"),
        || {
            tasks = c.service_ps(service)?;
            let wanted: Vec<&TaskRow> = tasks.iter().filter(|t| t.desired_running()).collect();
            Ok(wanted.len() == n && wanted.iter().all(|t| t.is_running() && t.node != not_on))
        },
    )?;
    Ok(tasks)
}

fn node_status(c: &Cluster, hostname: &str) -> Result<(String, String)> {
    let nodes = c.node_ls()?;
    let n = nodes
        .iter()
        .find(|n| n.hostname == hostname)
        .with_context(|| format!("{hostname} not in node ls: {nodes:?}"))?;
    Ok((n.status.clone(), n.availability.clone()))
}

/// Live containers (their init process exists) recorded by agent `i`'s runtime.
fn live_containers(c: &Cluster, i: usize) -> Result<usize> {
    Ok(c.agents[i]
        .containers()?
        .iter()
        .filter(|ct| ct.pid.is_some_and(pid_alive))
        .count())
}

#[test]
fn replicas_spread_evenly_and_scale_out_evenly() -> Result<()> {
    let c = cluster("spread", ClusterOptions::new(WORKERS))?;
    let workers = hostnames(WORKERS);
    let nodes = c.node_ls()?;
    ensure!(
        nodes.len() == WORKERS + 1,
        "node ls lists the manager and {WORKERS} workers: {nodes:?}"
    );
    let table = c.ctl_ok(["node", "ls"])?;
    ensure!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.contains("CPUS") && h.contains("MEMORY")),
        "node ls has resource columns: {table}"
    );

    create(&c, "web", &["--replicas", "8"])?;
    let per = running_per_node(&c.wait_running("web", 8)?, &workers);
    ensure!(per.values().all(|n| *n == 2), "8 over 4 nodes: {per:?}");

    c.ctl_ok(["service", "scale", "web=12"])?;
    let per = running_per_node(&c.wait_running("web", 12)?, &workers);
    ensure!(per.values().all(|n| *n == 3), "12 over 4 nodes: {per:?}");

    c.ctl_ok(["service", "scale", "web=14"])?;
    let per = running_per_node(&c.wait_running("web", 14)?, &workers);
    ensure!(spread(&per) <= 1, "14 over 4 nodes: {per:?}");
    c.shutdown()
}

#[test]
fn constraints_preferences_and_unschedulable_tasks() -> Result<()> {
    // Engine labels come from the agents' command lines: w3 and w4 have disks=ssd.
    let opts = ClusterOptions::new(WORKERS)
        .agent_args(2, &["--label", "disk=ssd"])
        .agent_args(3, &["--label", "disk=ssd"]);
    let c = cluster("labels", opts)?;
    let workers = hostnames(WORKERS);

    // Node labels: zone a is w1 alone, zone b the three others.
    c.ctl_ok(["node", "update", "--label-add", "zone=a", "w1"])?;
    for w in ["w2", "w3", "w4"] {
        c.ctl_ok(["node", "update", "--label-add", "zone=b", w])?;
    }
    let inspect = c.ctl_ok(["node", "inspect", "w1"])?;
    let doc: serde_json::Value = serde_json::from_str(&inspect)?;
    ensure!(doc[0]["Spec"]["Labels"]["zone"] == "a", "{inspect}");

    create(
        &c,
        "in-a",
        &["--replicas", "3", "--constraint", "node.labels.zone==a"],
    )?;
    let per = running_per_node(&c.wait_running("in-a", 3)?, &workers);
    ensure!(per["w1"] == 3, "zone a is w1 only: {per:?}");

    create(
        &c,
        "on-ssd",
        &["--replicas", "4", "--constraint", "engine.labels.disk==ssd"],
    )?;
    let per = running_per_node(&c.wait_running("on-ssd", 4)?, &workers);
    ensure!(
        per["w3"] == 2 && per["w4"] == 2,
        "ssd is on w3 and w4: {per:?}"
    );

    create(
        &c,
        "not-b",
        &["--replicas", "2", "--constraint", "node.labels.zone!=b"],
    )?;
    let per = running_per_node(&c.wait_running("not-b", 2)?, &workers);
    ensure!(per["w1"] == 2, "only w1 is not in zone b: {per:?}");

    // Spread over zones first: half the tasks in zone a (one node), half over zone b's three.
    create(
        &c,
        "zoned",
        &[
            "--replicas",
            "6",
            "--placement-pref",
            "spread=node.labels.zone",
        ],
    )?;
    let per = running_per_node(&c.wait_running("zoned", 6)?, &workers);
    ensure!(per["w1"] == 3, "zone a gets half: {per:?}");
    ensure!(
        per["w2"] == 1 && per["w3"] == 1 && per["w4"] == 1,
        "zone b's half is spread over its nodes: {per:?}"
    );
    let inspect = c.ctl_ok(["service", "inspect", "zoned"])?;
    let doc: serde_json::Value = serde_json::from_str(&inspect)?;
    ensure!(
        doc[0]["Spec"]["TaskTemplate"]["Placement"]["Preferences"][0]["Spread"]["SpreadDescriptor"]
            == "node.labels.zone",
        "{inspect}"
    );

    // At most one per node: four run, a fifth has no node.
    create(
        &c,
        "capped",
        &["--replicas", "5", "--max-replicas-per-node", "1", "-d"],
    )?;
    Testbed::wait_for(
        DEADLINE,
        "capped: 4 Running, 1 pending with a reason",
        || {
            let tasks = c.service_ps("capped")?;
            let running = tasks.iter().filter(|t| t.is_running()).count();
            let pending = tasks
                .iter()
                .filter(|t| t.error.contains("no suitable node ("))
                .count();
            Ok(running == 4 && pending == 1)
        },
    )?;

    // Fits nowhere: stays pending and says why, then runs once a node is labelled.
    create(&c, "gpu", &["--constraint", "node.labels.gpu==yes", "-d"])?;
    let mut why = String::new();
    Testbed::wait_for(DEADLINE, "gpu: pending with a reason", || {
        let tasks = c.service_ps("gpu")?;
        why = tasks.first().map(|t| t.error.clone()).unwrap_or_default();
        Ok(tasks.len() == 1
            && tasks[0].current_state.starts_with("Pending")
            && why.contains("no suitable node (")
            && why.contains("constraint not met"))
    })?;
    ensure!(
        why.contains("on 4 nodes"),
        "every worker fails the constraint: {why}"
    );
    c.ctl_ok(["node", "update", "--label-add", "gpu=yes", "w2"])?;
    let per = running_per_node(&c.wait_running("gpu", 1)?, &workers);
    ensure!(per["w2"] == 1, "gpu runs where the label is: {per:?}");

    // Memory no node has.
    create(&c, "huge", &["--reserve-memory", "64T", "-d"])?;
    Testbed::wait_for(DEADLINE, "huge: pending for lack of memory", || {
        let tasks = c.service_ps("huge")?;
        Ok(tasks.len() == 1
            && tasks[0].current_state.starts_with("Pending")
            && tasks[0].error.contains("insufficient memory on 4 nodes"))
    })?;
    c.shutdown()
}

#[test]
fn global_service_reaches_a_node_that_joins_later() -> Result<()> {
    let mut c = cluster("global", ClusterOptions::new(WORKERS))?;
    create(&c, "mon", &["--mode", "global"])?;
    let per = running_per_node(&c.wait_running("mon", WORKERS)?, &hostnames(WORKERS));
    ensure!(per.values().all(|n| *n == 1), "one per worker: {per:?}");

    let w5 = c.testbed().add_host("w5")?;
    let token = c.worker_token().to_string();
    c.add_agent(w5, &token)?;
    c.wait_nodes_ready(WORKERS + 1)?;
    let per = running_per_node(
        &c.wait_running("mon", WORKERS + 1)?,
        &hostnames(WORKERS + 1),
    );
    ensure!(
        per.values().all(|n| *n == 1),
        "one per worker, w5 too: {per:?}"
    );
    c.shutdown()
}

#[test]
fn drain_moves_tasks_pause_keeps_them_and_active_takes_new_ones() -> Result<()> {
    let c = cluster("drain", ClusterOptions::new(WORKERS))?;
    let workers = hostnames(WORKERS);
    create(&c, "web", &["--replicas", "8", "--stop-grace-period", "2s"])?;
    c.wait_running("web", 8)?;

    let out = c.ctl_ok(["node", "update", "--availability", "drain", "w1"])?;
    ensure!(!out.trim().is_empty(), "node update prints the node id");
    // w1's tasks stop only once their replacements run: never fewer than 8 Running meanwhile.
    let mut tasks = Vec::new();
    Testbed::wait_for(DEADLINE, "web: 8 Running, none on w1", || {
        tasks = c.service_ps("web")?;
        let running = tasks.iter().filter(|t| t.is_running()).count();
        if running < 8 {
            return Err(fatal(format!(
                "only {running} tasks Running during the drain: {tasks:?}"
            )));
        }
        let wanted: Vec<&TaskRow> = tasks.iter().filter(|t| t.desired_running()).collect();
        Ok(wanted.len() == 8 && wanted.iter().all(|t| t.is_running() && t.node != "w1"))
    })?;
    ensure!(node_status(&c, "w1")?.1 == "Drain");
    // The old tasks are shut down, not left running, and their containers are gone.
    Testbed::wait_for(
        DEADLINE,
        "w1's tasks Shutdown and its containers gone",
        || {
            let tasks = c.service_ps("web")?;
            let on_w1: Vec<&TaskRow> = tasks.iter().filter(|t| t.node == "w1").collect();
            Ok(on_w1.len() == 2
                && on_w1
                    .iter()
                    .all(|t| t.current_state.starts_with("Shutdown") && !t.desired_running())
                && live_containers(&c, 0)? == 0)
        },
    )?;
    let per = running_per_node(&tasks, &workers);
    ensure!(per["w1"] == 0 && spread(&per) <= 3, "{per:?}");

    // Pause: w2 keeps its tasks but gets none of the new ones.
    c.ctl_ok(["node", "update", "--availability", "active", "w1"])?;
    c.ctl_ok(["node", "update", "--availability", "pause", "w2"])?;
    let before = running_per_node(&c.service_ps("web")?, &workers)["w2"];
    c.ctl_ok(["service", "scale", "web=12"])?;
    let per = running_per_node(&c.wait_running("web", 12)?, &workers);
    ensure!(per["w2"] == before, "paused w2 got new tasks: {per:?}");
    ensure!(per["w1"] >= 3, "reactivated w1 takes new tasks: {per:?}");
    ensure!(node_status(&c, "w2")?.1 == "Pause");
    c.shutdown()
}

#[test]
fn a_killed_host_is_marked_down_and_its_tasks_move() -> Result<()> {
    let mut c = cluster(
        "killhost",
        ClusterOptions::new(WORKERS).heartbeat_period("1s"),
    )?;
    create(&c, "web", &["--replicas", "8"])?;
    c.wait_running("web", 8)?;

    let killed = c.kill_agent_host(0)?;
    ensure!(killed.len() >= 2, "w1's containers were killed: {killed:?}");
    // Heartbeat 1 s: down after 1.5 s, then rescheduled; well within 15 s.
    wait_running_elsewhere(&c, "web", 8, "w1", Duration::from_secs(15))?;
    ensure!(node_status(&c, "w1")?.0 == "Down");

    // The host comes back: it is Ready again, its old tasks end, and exactly 8 run.
    c.restart_agent(0)?;
    c.wait_nodes_ready(WORKERS)?;
    Testbed::wait_for(DEADLINE, "w1's stale tasks no longer Running", || {
        let tasks = c.service_ps("web")?;
        Ok(tasks
            .iter()
            .filter(|t| t.node == "w1")
            .all(|t| !t.is_running()))
    })?;
    Testbed::holds_for(SETTLE, "exactly 8 tasks Running", || {
        let tasks = c.service_ps("web")?;
        let running = tasks.iter().filter(|t| t.is_running()).count();
        Ok(running == 8 && tasks.iter().filter(|t| t.desired_running()).count() == 8)
    })?;
    c.shutdown()
}

#[test]
fn a_partitioned_host_loses_its_tasks_and_after_heal_the_count_is_exact() -> Result<()> {
    let c = cluster(
        "partition",
        ClusterOptions::new(WORKERS).heartbeat_period("1s"),
    )?;
    create(&c, "web", &["--replicas", "8", "--stop-grace-period", "1s"])?;
    c.wait_running("web", 8)?;
    let w1 = c.agents[0].host.clone();
    let stale: Vec<String> = c
        .service_ps("web")?
        .into_iter()
        .filter(|t| t.node == "w1" && t.is_running())
        .map(|t| t.id)
        .collect();
    ensure!(stale.len() == 2, "w1 ran 2 tasks: {stale:?}");

    w1.partition()?;
    wait_running_elsewhere(&c, "web", 8, "w1", Duration::from_secs(15))?;
    ensure!(node_status(&c, "w1")?.0 == "Down");
    // Cut off, the agent keeps its containers: nobody told it otherwise.
    ensure!(
        live_containers(&c, 0)? == 2,
        "w1's containers run on during the partition"
    );

    w1.heal()?;
    c.wait_nodes_ready(WORKERS)?;
    Testbed::wait_for(
        DEADLINE,
        "w1's stale tasks Shutdown, containers gone",
        || {
            let tasks = c.service_ps("web")?;
            let shut = tasks
                .iter()
                .filter(|t| stale.contains(&t.id))
                .all(|t| t.current_state.starts_with("Shutdown"));
            Ok(shut && live_containers(&c, 0)? == 0)
        },
    )?;
    Testbed::holds_for(SETTLE, "exactly 8 tasks Running, 8 containers", || {
        let tasks = c.service_ps("web")?;
        let running = tasks.iter().filter(|t| t.is_running()).count();
        let live: usize = (0..WORKERS)
            .map(|i| live_containers(&c, i))
            .sum::<Result<usize>>()?;
        Ok(running == 8 && live == 8)
    })?;
    c.shutdown()
}

#[test]
fn node_rm_refuses_an_up_node_unless_forced_and_the_node_is_locked_out() -> Result<()> {
    let mut c = cluster("noderm", ClusterOptions::new(2))?;
    create(&c, "web", &["--replicas", "4"])?;
    c.wait_running("web", 4)?;

    let out = c.ctl(["node", "rm", "w1"])?;
    ensure!(!out.status.success(), "node rm of an up node must fail");
    let err = stderr_of(&out);
    ensure!(
        err.starts_with("Error: w1: ") && err.contains("is up") && err.lines().count() == 1,
        "{err}"
    );
    ensure!(node_status(&c, "w1")?.0 == "Ready");

    c.ctl_ok(["node", "rm", "--force", "w1"])?;
    ensure!(
        c.node_ls()?.iter().all(|n| n.hostname != "w1"),
        "w1 still listed"
    );
    wait_running_elsewhere(&c, "web", 4, "w1", DEADLINE)?;
    // Its agent is refused, stops its containers and exits.
    let agent = c.agents[0].proc().context("w1's agent")?.clone();
    agent.wait_timeout(DEADLINE)?;
    Testbed::wait_for(DEADLINE, "w1's containers removed", || {
        Ok(live_containers(&c, 0)? == 0)
    })?;
    // Started again with its old certificate, it is refused again and joins nothing.
    c.restart_agent(0)?;
    let again = c.agents[0].proc().context("w1's agent")?.clone();
    let status = again.wait_timeout(DEADLINE)?;
    ensure!(!status.success(), "a removed node's agent must be refused");
    ensure!(c.node_ls()?.iter().all(|n| n.hostname != "w1"));
    c.shutdown()
}
