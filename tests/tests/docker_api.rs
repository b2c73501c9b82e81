//! End-to-end scenarios of issue 13: Shoal's manager serves the swarm subset of the Docker Engine
//! API, and the real docker clients drive a three-worker cluster through it.
//!
//! - For each docker CLI found (Debian's 20.10 and a current 28.x; a missing one is SKIPPED with
//!   the reason printed): version and info, nodes, a service with a published port through its
//!   whole life (create and converge, ls, ps, inspect, update, scale, rollback, logs, rm),
//!   networks, secrets and configs, a stack, and objects made by shoalctl and docker seen by the
//!   other. Checked against shoalctl and the hosts (the tasks' containers, the routing mesh).
//! - docker-py (Debian's python3-docker) lists and creates services.
//! - A request-level contract: the sequences the CLIs send (research notes, Appendix A) replayed
//!   over HTTPS with the admin certificate, asserting statuses and key JSON fields; and the API
//!   refuses a client without a certificate, or with a worker's.
//!
//! No dockerd is involved anywhere: the CLIs are clients only.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use shoal_tests::docker_cli::{
    cli_or_skip, docker_py_missing, filters_query, has_label, parse_log_frames, run_docker_py,
    without_key, ApiClient, Docker, DockerEnv,
};
use shoal_tests::stack_support::{exec_in_task, http_get, unique_value, wait_http};
use shoal_tests::testbed::{stdout_of, Cluster, ClusterOptions, Testbed, DEADLINE};

/// The port the manager serves the Docker API on (inside the manager host).
const DOCKER_API_PORT: u16 = 2376;
/// A web server answering `task <its hostname>`, after logging a line for `service logs`.
const SERVER: &str = "echo \"started $(hostname)\"; mkdir -p /www && echo \"task $(hostname)\" > \
                      /www/index.html && exec httpd -f -p 80 -h /www";
/// The routing-mesh port of the `web` service.
const WEB_PORT: u16 = 8080;
/// The routing-mesh port of the stack's web service.
const STACK_WEB_PORT: u16 = 8081;

/// A cluster of a manager and three workers serving the Docker API, and docker-env's files.
fn cluster(name: &str) -> Result<(Cluster, DockerEnv)> {
    let c = Cluster::start_with(
        Testbed::new(name)?,
        ClusterOptions::new(3).docker_api(DOCKER_API_PORT),
    )?;
    let env = DockerEnv::from_shoalctl(&c, &c.manager.dir()?.join("docker-certs"))?;
    Ok((c, env))
}

/// A JSON cell as text, whether printed as a string or a number.
fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The `Name`s of `shoalctl WHAT ls`.
fn ctl_names(c: &Cluster, what: &str) -> Result<BTreeSet<String>> {
    Ok(c.ctl_json([what, "ls"])?
        .iter()
        .map(|r| cell(&r["Name"]))
        .collect())
}

/// The `Name`s of `docker WHAT ls`.
fn docker_names(d: &Docker, what: &str) -> Result<BTreeSet<String>> {
    Ok(d.json_lines(&[what, "ls"])?
        .iter()
        .map(|r| cell(&r["Name"]))
        .collect())
}

/// `shoalctl KIND inspect NAME`: the one object.
fn ctl_inspect(c: &Cluster, kind: &str, name: &str) -> Result<Value> {
    let text = c.ctl_ok([kind, "inspect", name])?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("shoalctl {kind} inspect {name}: {text:?}"))?;
    v.as_array()
        .and_then(|a| a.first())
        .cloned()
        .with_context(|| format!("shoalctl {kind} inspect {name} printed {v}"))
}

/// The id of the manager's own node, from shoalctl (the row with a manager status).
fn manager_node_id(c: &Cluster) -> Result<String> {
    let nodes = c.node_ls()?;
    let managers: Vec<_> = nodes
        .iter()
        .filter(|n| !n.manager_status.is_empty())
        .collect();
    ensure!(managers.len() == 1, "manager rows in node ls: {nodes:?}");
    Ok(managers[0].id.clone())
}

/// Whether ids `a` and `b` name the same object (one may be truncated, as docker prints ids).
fn same_id(a: &str, b: &str) -> bool {
    !a.is_empty() && !b.is_empty() && (a.starts_with(b) || b.starts_with(a))
}

/// Writes `text` to `name` in the manager host's directory; its path.
fn host_file(c: &Cluster, name: &str, text: &str) -> Result<PathBuf> {
    let p = c.manager.dir()?.join(name);
    fs::write(&p, text)?;
    Ok(p)
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Every agent host answers `GET http://<own ip>:port/` (the routing mesh) with `accept`ed text.
fn mesh_answers_everywhere(c: &Cluster, port: u16, accept: impl Fn(&str) -> bool) -> Result<()> {
    for a in &c.agents {
        let url = format!("http://{}:{port}/", a.host.ip());
        wait_http(&a.host, &url, &accept)
            .with_context(|| format!("the routing mesh on {}", a.host.name()))?;
    }
    let url = format!("http://{}:{port}/", c.agents[0].host.ip());
    wait_http(&c.registry, &url, &accept).context("the routing mesh from a non-node host")?;
    Ok(())
}

/// Waits until no agent records a container of any of `task_ids`.
fn wait_containers_gone(c: &Cluster, task_ids: &BTreeSet<String>) -> Result<()> {
    Testbed::wait_for(DEADLINE, "the removed service's containers to go", || {
        Ok(!c
            .containers()?
            .iter()
            .any(|(_, ct)| task_ids.iter().any(|t| same_id(&ct.task_id, t))))
    })
}

// ---------------------------------------------------------------------------------------------
// The docker CLIs
// ---------------------------------------------------------------------------------------------

#[test]
fn docker_cli_20_10_drives_the_cluster() -> Result<()> {
    cli_scenario("/usr/bin/docker", "docker_cli_20_10_drives_the_cluster")
}

#[test]
fn docker_cli_current_drives_the_cluster() -> Result<()> {
    cli_scenario(
        "/usr/local/bin/docker",
        "docker_cli_current_drives_the_cluster",
    )
}

fn cli_scenario(cli_path: &str, test: &str) -> Result<()> {
    let Some(cli) = cli_or_skip(cli_path, test) else {
        return Ok(());
    };
    eprintln!("{test}: {} {} at {cli_path}", cli.what, cli.version);
    let (c, env) = cluster(&format!("dapi-cli{}", cli.major()))?;
    let d = Docker::new(cli, env, c.manager.clone())?;
    version_and_info(&c, &d).context("version and info")?;
    nodes(&c, &d).context("nodes")?;
    service_life(&c, &d).context("a service's life")?;
    networks(&c, &d).context("networks")?;
    secrets_and_configs(&c, &d).context("secrets and configs")?;
    stack(&c, &d).context("stack")?;
    both_ways(&c, &d).context("shoalctl and docker see each other's objects")?;
    node_rm(&c, &d).context("node rm")?;
    c.shutdown()
}

/// `docker node rm` refuses a node that is up, `-f` removes it: gone for shoalctl too.
fn node_rm(c: &Cluster, d: &Docker) -> Result<()> {
    let hostnames = |rows: Vec<Value>| -> BTreeSet<String> {
        rows.iter().map(|r| cell(&r["Hostname"])).collect()
    };
    let refused = d.fails(&["node", "rm", "w3"])?;
    ensure!(
        refused.to_lowercase().contains("down") || refused.contains("--force"),
        "docker node rm of an up node printed {refused:?}"
    );
    ensure!(
        hostnames(c.ctl_json(["node", "ls"])?).contains("w3"),
        "w3 gone after a refused rm"
    );
    d.ok(&["node", "rm", "-f", "w3"])?;
    let ctl = hostnames(c.ctl_json(["node", "ls"])?);
    ensure!(!ctl.contains("w3"), "w3 still listed by shoalctl: {ctl:?}");
    let docker = hostnames(d.json_lines(&["node", "ls"])?);
    ensure!(
        !docker.contains("w3"),
        "w3 still listed by docker node ls: {docker:?}"
    );
    Ok(())
}

fn version_and_info(c: &Cluster, d: &Docker) -> Result<()> {
    let v = d.json(&["version"])?;
    ensure!(
        !cell(&v["Server"]["ApiVersion"]).is_empty(),
        "docker version: no Server.ApiVersion in {v}"
    );
    ensure!(
        cell(&v["Client"]["Version"]) == d.cli.version
            || d.cli.version.starts_with(&cell(&v["Client"]["Version"])),
        "docker version: client {} (expected {})",
        v["Client"]["Version"],
        d.cli.version
    );

    let info = d.json(&["info"])?;
    let swarm = &info["Swarm"];
    let manager_id = manager_node_id(c)?;
    let node_count = c.node_ls()?.len();
    ensure!(
        same_id(&cell(&swarm["NodeID"]), &manager_id),
        "info Swarm.NodeID {} is not the manager's node {manager_id}",
        swarm["NodeID"]
    );
    ensure!(
        swarm["LocalNodeState"] == "active",
        "Swarm.LocalNodeState {}",
        swarm["LocalNodeState"]
    );
    ensure!(
        swarm["ControlAvailable"] == true,
        "Swarm.ControlAvailable {}",
        swarm["ControlAvailable"]
    );
    ensure!(
        swarm["Nodes"].as_u64() == Some(node_count as u64),
        "Swarm.Nodes {} but shoalctl lists {node_count} nodes",
        swarm["Nodes"]
    );
    // The text a user reads.
    let text = d.ok(&["info"])?;
    ensure!(
        text.contains("Is Manager: true"),
        "docker info has no `Is Manager: true`:\n{text}"
    );
    ensure!(
        text.contains(&format!("Nodes: {node_count}")),
        "docker info has no `Nodes: {node_count}`:\n{text}"
    );
    ensure!(
        text.contains(&format!("NodeID: {}", cell(&swarm["NodeID"]))),
        "docker info has no NodeID line:\n{text}"
    );
    Ok(())
}

fn nodes(c: &Cluster, d: &Docker) -> Result<()> {
    let ctl = c.node_ls()?;
    let rows = d.json_lines(&["node", "ls"])?;
    ensure!(
        rows.len() == ctl.len(),
        "docker node ls: {} rows, shoalctl: {}",
        rows.len(),
        ctl.len()
    );
    for n in &ctl {
        let row = rows
            .iter()
            .find(|r| same_id(&cell(&r["ID"]), &n.id))
            .with_context(|| format!("docker node ls has no row for {n:?}: {rows:?}"))?;
        ensure!(
            cell(&row["Hostname"]) == n.hostname,
            "node {}: hostname {} vs {}",
            n.id,
            row["Hostname"],
            n.hostname
        );
        ensure!(
            cell(&row["Status"]).eq_ignore_ascii_case(&n.status),
            "node {}: status {} vs {}",
            n.id,
            row["Status"],
            n.status
        );
    }
    let me = d.inspect("node", "self")?;
    ensure!(
        same_id(&cell(&me["ID"]), &manager_node_id(c)?),
        "node inspect self is {}",
        me["ID"]
    );
    ensure!(
        me["Spec"]["Role"] == "manager",
        "node inspect self: Spec.Role {}",
        me["Spec"]["Role"]
    );

    // Labels and availability, seen by shoalctl.
    d.ok(&["node", "update", "--label-add", "dapi=yes", "w1"])?;
    let w1 = ctl_inspect(c, "node", "w1")?;
    ensure!(
        has_label(&w1, "dapi", "yes"),
        "shoalctl node inspect w1 has no label dapi=yes: {w1}"
    );
    for (flag, shown) in [("drain", "drain"), ("active", "active")] {
        d.ok(&["node", "update", "--availability", flag, "w1"])?;
        let row = c
            .node_ls()?
            .into_iter()
            .find(|n| n.hostname == "w1")
            .context("w1 in shoalctl node ls")?;
        ensure!(
            row.availability.eq_ignore_ascii_case(shown),
            "after --availability {flag}, shoalctl shows {}",
            row.availability
        );
        let mine = d.inspect("node", "w1")?;
        ensure!(
            mine["Spec"]["Availability"] == shown,
            "docker node inspect w1: Spec.Availability {}",
            mine["Spec"]["Availability"]
        );
    }
    d.ok(&["node", "ps", "w1"])?;
    Ok(())
}

fn service_life(c: &Cluster, d: &Docker) -> Result<()> {
    let image = c.busybox_image();
    let publish = format!("{WEB_PORT}:80");
    // Without -d: the CLI polls until the service converges, and must then exit 0.
    d.ok(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "2",
        "--publish",
        &publish,
        &image,
        "sh",
        "-c",
        SERVER,
    ])?;
    let tasks = c.wait_running("web", 2)?;
    let hostnames: BTreeSet<String> = c.agents.iter().map(|a| a.host.name().to_string()).collect();
    for t in &tasks {
        let (_, ct) = c.container_of(&t.id)?;
        ensure!(
            ct.pid.is_some_and(shoal_tests::testbed::pid_alive),
            "task {} has no live container: {ct:?}",
            t.id
        );
    }
    mesh_answers_everywhere(c, WEB_PORT, |body| body.starts_with("task "))?;

    let ls = d.json_lines(&["service", "ls"])?;
    let row = ls
        .iter()
        .find(|r| r["Name"] == "web")
        .with_context(|| format!("docker service ls: {ls:?}"))?;
    ensure!(
        row["Replicas"] == "2/2",
        "service ls Replicas {}",
        row["Replicas"]
    );
    ensure!(
        row["Mode"] == "replicated",
        "service ls Mode {}",
        row["Mode"]
    );
    ensure!(
        cell(&row["Ports"]).contains(&format!("*:{WEB_PORT}->80/tcp")),
        "service ls Ports {}",
        row["Ports"]
    );

    let ps = d.json_lines(&["service", "ps", "web"])?;
    let running: Vec<&Value> = ps
        .iter()
        .filter(|r| cell(&r["DesiredState"]).eq_ignore_ascii_case("running"))
        .collect();
    ensure!(running.len() == 2, "docker service ps web: {ps:?}");
    let names: BTreeSet<String> = running.iter().map(|r| cell(&r["Name"])).collect();
    ensure!(
        names == BTreeSet::from(["web.1".to_string(), "web.2".to_string()]),
        "task names {names:?}"
    );
    for r in &running {
        ensure!(
            hostnames.contains(&cell(&r["Node"])),
            "task on node {} (not an agent host)",
            r["Node"]
        );
        ensure!(
            cell(&r["CurrentState"]).starts_with("Running"),
            "task state {}",
            r["CurrentState"]
        );
    }
    let node_of_first = cell(&running[0]["Node"]);
    let node_ps = d.json_lines(&["node", "ps", &node_of_first])?;
    ensure!(
        node_ps.iter().any(|r| cell(&r["Name"]).starts_with("web.")),
        "docker node ps {node_of_first}: {node_ps:?}"
    );

    // Inspect: the fields as the CLI sent them.
    let svc = d.inspect("service", "web")?;
    let spec = &svc["Spec"];
    ensure!(spec["Name"] == "web", "Spec.Name {}", spec["Name"]);
    ensure!(
        spec["Mode"]["Replicated"]["Replicas"] == 2,
        "Spec.Mode {}",
        spec["Mode"]
    );
    let cs = &spec["TaskTemplate"]["ContainerSpec"];
    ensure!(
        cell(&cs["Image"]).starts_with(&image),
        "ContainerSpec.Image {} (sent {image})",
        cs["Image"]
    );
    ensure!(
        cs["Args"] == json!(["sh", "-c", SERVER]),
        "ContainerSpec.Args {}",
        cs["Args"]
    );
    let ports = &spec["EndpointSpec"]["Ports"];
    ensure!(
        ports
            == &json!([{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": WEB_PORT,
                         "PublishMode": "ingress"}]),
        "EndpointSpec.Ports {ports}"
    );
    let ctl_id = c
        .service_ls()?
        .into_iter()
        .find(|s| s.name == "web")
        .context("web in shoalctl service ls")?
        .id;
    ensure!(
        same_id(&cell(&svc["ID"]), &ctl_id),
        "ids: docker {} shoalctl {ctl_id}",
        svc["ID"]
    );

    // Update the environment: shoalctl sees it, and nothing else of the spec changed.
    let before = ctl_inspect(c, "service", "web")?;
    d.ok(&["service", "update", "--env-add", "A=1", "web"])?;
    let after = ctl_inspect(c, "service", "web")?;
    let env = &after["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"];
    ensure!(
        env.as_array().is_some_and(|e| e.iter().any(|x| x == "A=1")),
        "shoalctl sees Env {env} after --env-add A=1"
    );
    ensure!(
        without_key(&before["Spec"], "Env") == without_key(&after["Spec"], "Env"),
        "service update --env-add changed more than the env:\nbefore {}\nafter  {}",
        before["Spec"],
        after["Spec"]
    );
    c.wait_running("web", 2)?;

    d.ok(&["service", "scale", "web=3"])?;
    c.wait_running("web", 3)?;
    d.ok(&["service", "rollback", "web"])?;
    c.wait_running("web", 2)?;
    let rolled = ctl_inspect(c, "service", "web")?;
    ensure!(
        rolled["Spec"]["Mode"]["Replicated"]["Replicas"] == 2,
        "after rollback: Spec.Mode {}",
        rolled["Spec"]["Mode"]
    );

    // Logs: `web.N.TASKID@host | line`.
    let mut last = String::new();
    Testbed::wait_for(
        DEADLINE,
        "docker service logs web to show both tasks",
        || {
            last = d.ok(&["service", "logs", "web"])?;
            let mut slots = BTreeSet::new();
            for line in last.lines().filter(|l| l.contains("started ")) {
                let (prefix, _msg) = line
                    .split_once(" | ")
                    .with_context(|| format!("a log line without ` | `: {line:?}"))?;
                let (task, host) = prefix
                    .trim()
                    .split_once('@')
                    .with_context(|| format!("no TASK@NODE prefix: {line:?}"))?;
                let mut parts = task.splitn(3, '.');
                ensure!(
                    parts.next() == Some("web"),
                    "log prefix {prefix:?} does not name web"
                );
                let slot = parts.next().unwrap_or_default().to_string();
                ensure!(
                    parts.next().is_some_and(|id| !id.is_empty()),
                    "log prefix {prefix:?} has no task id"
                );
                ensure!(
                    hostnames.contains(host),
                    "log prefix {prefix:?}: {host} is not an agent host"
                );
                slots.insert(slot);
            }
            Ok(slots.len() >= 2)
        },
    )
    .with_context(|| format!("last logs:\n{last}"))?;

    let all_ids: BTreeSet<String> = c.service_ps("web")?.into_iter().map(|t| t.id).collect();
    d.ok(&["service", "rm", "web"])?;
    ensure!(
        !c.service_ls()?.iter().any(|s| s.name == "web"),
        "shoalctl still lists web after docker service rm"
    );
    wait_containers_gone(c, &all_ids)?;
    let url = format!("http://{}:{WEB_PORT}/", c.agents[0].host.ip());
    Testbed::wait_for(DEADLINE, "the mesh port to close after service rm", || {
        Ok(!http_get(&c.registry, &url)?.0)
    })?;
    Ok(())
}

fn networks(c: &Cluster, d: &Docker) -> Result<()> {
    let id = d.ok(&["network", "create", "-d", "overlay", "n1"])?;
    let id = id.trim().to_string();
    ensure!(!id.is_empty(), "network create printed no id");
    let rows = d.json_lines(&["network", "ls"])?;
    let row = rows
        .iter()
        .find(|r| r["Name"] == "n1")
        .with_context(|| format!("docker network ls: {rows:?}"))?;
    ensure!(row["Driver"] == "overlay", "n1 driver {}", row["Driver"]);
    ensure!(row["Scope"] == "swarm", "n1 scope {}", row["Scope"]);
    ensure!(
        ctl_names(c, "network")?.contains("n1"),
        "shoalctl does not list n1"
    );
    let n1 = d.inspect("network", "n1")?;
    ensure!(
        same_id(&cell(&n1["Id"]), &id),
        "inspect Id {} vs {id}",
        n1["Id"]
    );
    ensure!(
        n1["Driver"] == "overlay" && n1["Scope"] == "swarm",
        "inspect {n1}"
    );

    // The CLI's default driver is bridge, which a cluster cannot give.
    let err = d.fails(&["network", "create", "n2"])?;
    ensure!(
        err.contains("bridge"),
        "`network create n2` (driver bridge) must be refused naming the driver: {err}"
    );
    ensure!(
        !ctl_names(c, "network")?.contains("n2"),
        "a refused n2 exists anyway"
    );

    d.ok(&["network", "rm", "n1"])?;
    ensure!(
        !docker_names(d, "network")?.contains("n1"),
        "docker still lists n1"
    );
    ensure!(
        !ctl_names(c, "network")?.contains("n1"),
        "shoalctl still lists n1"
    );
    Ok(())
}

fn secrets_and_configs(c: &Cluster, d: &Docker) -> Result<()> {
    let value = unique_value("dapi-secret");
    let file = host_file(c, "s1.txt", &value)?;
    d.ok(&["secret", "create", "s1", &path_str(&file)])?;
    ensure!(
        docker_names(d, "secret")?.contains("s1"),
        "docker secret ls"
    );
    ensure!(ctl_names(c, "secret")?.contains("s1"), "shoalctl secret ls");
    let s1 = d.inspect("secret", "s1")?;
    ensure!(s1["Spec"]["Name"] == "s1", "secret inspect {s1}");
    ensure!(
        s1["Spec"].get("Data").is_none_or(|v| v.is_null()),
        "secret inspect shows the data: {s1}"
    );
    ensure!(
        !s1.to_string().contains(&value),
        "secret inspect shows the value"
    );

    // A service reads it at /run/secrets/s1.
    let image = c.busybox_image();
    d.ok(&[
        "service", "create", "--name", "reader", "--secret", "s1", &image, "sleep", "3600",
    ])?;
    let tasks = c.wait_running("reader", 1)?;
    let read = exec_in_task(c, &tasks[0].id, "cat /run/secrets/s1")?;
    ensure!(read.trim() == value, "/run/secrets/s1 holds {read:?}");
    let ids: BTreeSet<String> = c.service_ps("reader")?.into_iter().map(|t| t.id).collect();
    d.ok(&["service", "rm", "reader"])?;
    wait_containers_gone(c, &ids)?;
    d.ok(&["secret", "rm", "s1"])?;
    ensure!(!ctl_names(c, "secret")?.contains("s1"), "s1 still exists");

    let site = "<p>dapi config</p>\n";
    let file = host_file(c, "c1.html", site)?;
    d.ok(&["config", "create", "c1", &path_str(&file)])?;
    ensure!(
        docker_names(d, "config")?.contains("c1"),
        "docker config ls"
    );
    let c1 = d.inspect("config", "c1")?;
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD
        .decode(cell(&c1["Spec"]["Data"]))
        .with_context(|| format!("config Spec.Data {}", c1["Spec"]["Data"]))?;
    ensure!(data == site.as_bytes(), "config data {data:?}");
    d.ok(&["config", "rm", "c1"])?;
    ensure!(
        !docker_names(d, "config")?.contains("c1"),
        "c1 still listed"
    );
    Ok(())
}

/// A stack of a web service (a published port, its page from a config) and a backend reading a
/// secret, on one overlay network.
fn stack_compose(image: &str, page: &Path, token: &Path) -> String {
    format!(
        r#"version: "3.8"
services:
  web:
    image: {image}
    command: ["sh", "-c", "mkdir -p /www && cp /site/index.html /www/ && exec httpd -f -p 80 -h /www"]
    ports:
      - "{STACK_WEB_PORT}:80"
    configs:
      - source: page
        target: /site/index.html
    networks: [front]
  backend:
    image: {image}
    command: ["sh", "-c", "test -s /run/secrets/token && exec sleep 3600"]
    secrets: [token]
    networks: [front]
networks:
  front:
    driver: overlay
secrets:
  token:
    file: {token}
configs:
  page:
    file: {page}
"#,
        page = page.display(),
        token = token.display()
    )
}

fn stack(c: &Cluster, d: &Docker) -> Result<()> {
    let marker = unique_value("dapi-stack-page");
    let page = host_file(c, "stack-page.html", &format!("{marker}\n"))?;
    let token = host_file(c, "stack-token.txt", &unique_value("token"))?;
    let compose = host_file(
        c,
        "stack.yml",
        &stack_compose(&c.busybox_image(), &page, &token),
    )?;
    d.ok(&["stack", "deploy", "-c", &path_str(&compose), "demo"])?;
    c.wait_running("demo_web", 1)?;
    c.wait_running("demo_backend", 1)?;
    mesh_answers_everywhere(c, STACK_WEB_PORT, |body| body.contains(&marker))?;

    let stacks = d.json_lines(&["stack", "ls"])?;
    let row = stacks
        .iter()
        .find(|r| r["Name"] == "demo")
        .with_context(|| format!("docker stack ls: {stacks:?}"))?;
    ensure!(
        cell(&row["Services"]) == "2",
        "stack ls Services {}",
        row["Services"]
    );
    let services: BTreeSet<String> = d
        .json_lines(&["stack", "services", "demo"])?
        .iter()
        .map(|r| cell(&r["Name"]))
        .collect();
    ensure!(
        services == BTreeSet::from(["demo_web".to_string(), "demo_backend".to_string()]),
        "stack services demo: {services:?}"
    );
    let ps = d.json_lines(&["stack", "ps", "demo"])?;
    let names: BTreeSet<String> = ps
        .iter()
        .filter(|r| cell(&r["DesiredState"]).eq_ignore_ascii_case("running"))
        .map(|r| cell(&r["Name"]))
        .collect();
    ensure!(
        names == BTreeSet::from(["demo_web.1".to_string(), "demo_backend.1".to_string()]),
        "stack ps demo: {ps:?}"
    );
    // shoalctl sees the stack (from com.docker.stack.namespace) and its objects.
    ensure!(ctl_names(c, "stack")?.contains("demo"), "shoalctl stack ls");
    ensure!(
        ctl_names(c, "network")?.contains("demo_front"),
        "shoalctl network ls"
    );
    ensure!(
        ctl_names(c, "secret")?.contains("demo_token"),
        "shoalctl secret ls"
    );
    ensure!(
        ctl_names(c, "config")?.contains("demo_page"),
        "shoalctl config ls"
    );

    let ids: BTreeSet<String> = ["demo_web", "demo_backend"]
        .iter()
        .map(|s| c.service_ps(s))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .map(|t| t.id)
        .collect();
    d.ok(&["stack", "rm", "demo"])?;
    Testbed::wait_for(DEADLINE, "stack rm to remove every object", || {
        let services = c.service_ls()?;
        Ok(!services.iter().any(|s| s.name.starts_with("demo_"))
            && !ctl_names(c, "network")?.contains("demo_front")
            && !ctl_names(c, "secret")?.contains("demo_token")
            && !ctl_names(c, "config")?.contains("demo_page"))
    })?;
    wait_containers_gone(c, &ids)?;
    ensure!(
        !docker_names(d, "stack")?.contains("demo"),
        "docker stack ls still lists demo"
    );
    Ok(())
}

fn both_ways(c: &Cluster, d: &Docker) -> Result<()> {
    let image = c.busybox_image();
    c.ctl_ok([
        "service", "create", "--name", "fromctl", &image, "sleep", "3600",
    ])?;
    d.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "fromdocker",
        &image,
        "sleep",
        "3600",
    ])?;
    ensure!(
        docker_names(d, "service")?.contains("fromctl"),
        "docker service ls lacks fromctl"
    );
    ensure!(
        c.service_ls()?.iter().any(|s| s.name == "fromdocker"),
        "shoalctl service ls lacks fromdocker"
    );
    c.wait_running("fromdocker", 1)?;
    d.ok(&["service", "rm", "fromctl"])?;
    c.ctl_ok(["service", "rm", "fromdocker"])?;
    ensure!(
        docker_names(d, "service")?.is_empty(),
        "services left: {:?}",
        docker_names(d, "service")?
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// docker-py
// ---------------------------------------------------------------------------------------------

#[test]
fn docker_py_lists_and_creates_services() -> Result<()> {
    if let Some(reason) = docker_py_missing() {
        eprintln!("SKIPPED docker_py_lists_and_creates_services: {reason}");
        return Ok(());
    }
    let (c, env) = cluster("dapi-py")?;
    let image = c.busybox_image();
    c.ctl_ok([
        "service", "create", "--name", "fromctl", &image, "sleep", "3600",
    ])?;
    let script = format!(
        "print(json.dumps(sorted(s.name for s in client.services.list())))\n\
         svc = client.services.create({image:?}, command=['sleep', '3600'], name='py')\n\
         print(svc.id)\n\
         print(json.dumps(sorted(s.name for s in client.services.list())))\n"
    );
    let out = run_docker_py(&c.manager, &env, &script)?;
    let lines: Vec<&str> = out.lines().collect();
    ensure!(lines.len() == 3, "docker-py printed {out:?}");
    let before: Vec<String> = serde_json::from_str(lines[0])?;
    ensure!(before == ["fromctl"], "services.list() before: {before:?}");
    let after: Vec<String> = serde_json::from_str(lines[2])?;
    ensure!(
        after == ["fromctl", "py"],
        "services.list() after: {after:?}"
    );
    let py = c
        .service_ls()?
        .into_iter()
        .find(|s| s.name == "py")
        .context("shoalctl does not list py")?;
    ensure!(
        same_id(&py.id, lines[1].trim()),
        "ids {} vs {}",
        py.id,
        lines[1]
    );
    c.wait_running("py", 1)?;
    let spec = ctl_inspect(&c, "service", "py")?;
    ensure!(
        spec["Spec"]["TaskTemplate"]["ContainerSpec"]["Command"] == json!(["sleep", "3600"]),
        "docker-py's command= is ContainerSpec.Command: {}",
        spec["Spec"]
    );
    c.shutdown()
}

// ---------------------------------------------------------------------------------------------
// The request-level contract
// ---------------------------------------------------------------------------------------------

/// The `service create` body CLI 20.10 sends (research notes, Appendix A), with the test image and
/// arguments that keep the task running and print a line.
fn create_body_20_10(image: &str, name: &str) -> Value {
    json!({
        "Name": name,
        "Labels": {},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": image,
                "Args": ["sh", "-c", "echo hello-from-s1; exec sleep 3600"],
                "Init": false,
                "DNSConfig": {}
            },
            "Resources": {"Limits": {}, "Reservations": {}},
            "Placement": {},
            "ForceUpdate": 0
        },
        "Mode": {"Replicated": {"Replicas": 2}},
        "EndpointSpec": {"Mode": "vip"}
    })
}

#[test]
fn api_contract_over_https() -> Result<()> {
    let (c, env) = cluster("dapi-contract")?;
    let api = ApiClient::new(&c.manager, &env)?;

    // _ping and version negotiation.
    let ping = api.request("HEAD", "/_ping", None)?;
    ping.expect(200)?;
    let max = ping
        .header("api-version")
        .context("HEAD /_ping has no Api-Version header")?;
    ensure!(
        ping.header("ostype").as_deref() == Some("linux"),
        "HEAD /_ping Ostype {:?}",
        ping.header("ostype")
    );
    let get_ping = api.get("/_ping")?;
    get_ping.expect(200)?;
    ensure!(
        get_ping.text() == "OK",
        "GET /_ping body {:?}",
        get_ping.text()
    );
    let version = api.get("/version")?;
    version.expect(200)?;
    ensure!(
        version.json()?["ApiVersion"] == max.as_str(),
        "/version ApiVersion vs Api-Version {max}"
    );
    let too_new = api.get("/v1.99/info")?;
    ensure!(too_new.status == 400, "/v1.99/info: {}", too_new.status);
    too_new.error_message()?;
    for v in ["v1.24", "v1.41", &format!("v{max}")] {
        api.get(&format!("/{v}/version"))?.expect(200)?;
    }

    // docker node ls; docker node ps.
    let nodes = api.get("/v1.41/nodes")?;
    nodes.expect(200)?;
    let n_nodes = nodes.json()?.as_array().map(Vec::len).unwrap_or(0);
    ensure!(
        n_nodes == c.node_ls()?.len(),
        "GET /nodes: {}",
        nodes.text()
    );
    let info = api.get("/v1.41/info")?;
    info.expect(200)?;
    let node_id = cell(&info.json()?["Swarm"]["NodeID"]);
    ensure!(
        same_id(&node_id, &manager_node_id(&c)?),
        "info NodeID {node_id}"
    );
    api.get(&format!("/v1.41/nodes/{node_id}"))?.expect(200)?;
    let node_tasks = api.get(&format!(
        "/v1.41/tasks?{}",
        filters_query(&[("node", &node_id)])
    ))?;
    node_tasks.expect(200)?;
    ensure!(
        node_tasks.json()?.is_array(),
        "tasks: {}",
        node_tasks.text()
    );

    // service create (20.10's body), then inspect round-trips it.
    let image = c.busybox_image();
    let body = create_body_20_10(&image, "s1");
    let created = api.post("/v1.41/services/create", &body)?;
    created.expect(201)?;
    let id = cell(&created.json()?["ID"]);
    ensure!(!id.is_empty(), "create answered {}", created.text());
    let svc = api.get("/v1.41/services/s1?insertDefaults=false")?;
    svc.expect(200)?;
    let svc = svc.json()?;
    let spec = &svc["Spec"];
    ensure!(cell(&svc["ID"]) == id, "inspect ID {} vs {id}", svc["ID"]);
    ensure!(spec["Name"] == "s1", "Spec.Name {}", spec["Name"]);
    ensure!(spec["Mode"] == body["Mode"], "Spec.Mode {}", spec["Mode"]);
    ensure!(
        spec["TaskTemplate"]["ContainerSpec"]["Image"]
            == body["TaskTemplate"]["ContainerSpec"]["Image"]
            && spec["TaskTemplate"]["ContainerSpec"]["Args"]
                == body["TaskTemplate"]["ContainerSpec"]["Args"],
        "ContainerSpec {}",
        spec["TaskTemplate"]["ContainerSpec"]
    );
    ensure!(
        spec["EndpointSpec"]["Mode"] == "vip",
        "EndpointSpec {}",
        spec["EndpointSpec"]
    );
    let index = svc["Version"]["Index"]
        .as_u64()
        .with_context(|| format!("Version {}", svc["Version"]))?;
    c.wait_running("s1", 2)?;

    // The convergence poll of `service create` without -d.
    api.get(&format!("/v1.41/services/{id}?insertDefaults=false"))?
        .expect(200)?;
    let up_to_date = api.get(&format!(
        "/v1.41/tasks?{}",
        filters_query(&[("_up-to-date", "true"), ("service", &id)])
    ))?;
    up_to_date.expect(200)?;
    let running = up_to_date
        .json()?
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|t| t["Status"]["State"] == "running" && t["DesiredState"] == "running")
                .count()
        })
        .unwrap_or(0);
    ensure!(
        running == 2,
        "up-to-date running tasks: {}",
        up_to_date.text()
    );
    for t in up_to_date.json()?.as_array().into_iter().flatten() {
        ensure!(
            t["Slot"].as_u64().is_some() && !cell(&t["NodeID"]).is_empty(),
            "a task without Slot or NodeID: {t}"
        );
    }
    api.get("/v1.41/nodes")?.expect(200)?;

    // service ls with status.
    let list = api.get("/v1.41/services?status=true")?;
    list.expect(200)?;
    let list = list.json()?;
    let s1 = list
        .as_array()
        .and_then(|a| a.iter().find(|s| s["Spec"]["Name"] == "s1"))
        .with_context(|| format!("services: {list}"))?;
    ensure!(
        s1["ServiceStatus"]["DesiredTasks"] == 2 && s1["ServiceStatus"]["RunningTasks"] == 2,
        "ServiceStatus {}",
        s1["ServiceStatus"]
    );

    // service ps: by id, then by name, then the tasks.
    api.get(&format!(
        "/v1.41/services?{}",
        filters_query(&[("id", "s1")])
    ))?
    .expect(200)?;
    let by_name = api.get(&format!(
        "/v1.41/services?{}",
        filters_query(&[("name", "s1")])
    ))?;
    by_name.expect(200)?;
    ensure!(
        by_name.json()?.as_array().map(Vec::len) == Some(1),
        "name filter: {}",
        by_name.text()
    );
    api.get(&format!(
        "/v1.41/tasks?{}",
        filters_query(&[("service", &id)])
    ))?
    .expect(200)?;

    // Errors as the CLI reads them.
    let bad_filter = api.get(&format!(
        "/v1.41/services?{}",
        filters_query(&[("nosuch", "x")])
    ))?;
    ensure!(
        bad_filter.status == 400,
        "unknown filter: {}",
        bad_filter.status
    );
    let msg = bad_filter.error_message()?;
    ensure!(msg.contains("nosuch"), "unknown filter message {msg:?}");
    let missing = api.get("/v1.41/services/nosuch")?;
    ensure!(missing.status == 404, "services/nosuch: {}", missing.status);
    ensure!(
        missing.error_message()? == "no such service: nosuch",
        "404 body {}",
        missing.text()
    );
    let no_route = api.get("/v1.41/nosuchroute")?;
    ensure!(no_route.status == 404, "unknown route: {}", no_route.status);
    no_route.error_message()?;

    // Update with the current version, then again with the stale one.
    let mut new_spec = spec.clone();
    new_spec["Labels"] = json!({"dapi": "updated"});
    api.post(
        &format!("/v1.41/services/{id}/update?version={index}"),
        &new_spec,
    )?
    .expect(200)?;
    let updated = api.get("/v1.41/services/s1")?.json()?;
    ensure!(
        updated["Spec"]["Labels"]["dapi"] == "updated",
        "labels after update: {}",
        updated["Spec"]["Labels"]
    );
    let stale = api.post(
        &format!("/v1.41/services/{id}/update?version={index}"),
        &new_spec,
    )?;
    ensure!(
        stale.status >= 400,
        "a stale version was accepted: {}",
        stale.status
    );
    stale.error_message()?;

    // Unknown spec fields are refused by name.
    let mut bogus = create_body_20_10(&image, "bogus");
    bogus["Bogus"] = json!(1);
    let refused = api.post("/v1.41/services/create", &bogus)?;
    ensure!(refused.status == 400, "unknown field: {}", refused.status);
    let msg = refused.error_message()?;
    ensure!(msg.contains("Bogus"), "unknown field message {msg:?}");
    let mut nested = create_body_20_10(&image, "bogus");
    nested["TaskTemplate"]["ContainerSpec"]["Frobnicate"] = json!(true);
    let refused = api.post("/v1.41/services/create", &nested)?;
    ensure!(
        refused.status == 400,
        "unknown nested field: {}",
        refused.status
    );
    let msg = refused.error_message()?;
    ensure!(
        msg.contains("Frobnicate"),
        "unknown nested field message {msg:?}"
    );
    ensure!(
        !c.service_ls()?.iter().any(|s| s.name == "bogus"),
        "a refused service exists"
    );

    // service logs: one docker frame per line, with the swarm ids in the details.
    let mut last = Vec::new();
    Testbed::wait_for(DEADLINE, "service logs to carry both tasks' lines", || {
        let logs = api.get("/v1.41/services/s1/logs?details=1&stderr=1&stdout=1&tail=all")?;
        logs.expect(200)?;
        let frames = parse_log_frames(&logs.body)?;
        let hello: Vec<&String> = frames
            .iter()
            .map(|(_, l)| l)
            .filter(|l| l.contains("hello-from-s1"))
            .collect();
        for l in &hello {
            for key in [
                "com.docker.swarm.node.id=",
                "com.docker.swarm.service.id=",
                "com.docker.swarm.task.id=",
            ] {
                ensure!(l.contains(key), "a log line without {key}: {l:?}");
            }
            ensure!(
                l.matches('\n').count() <= 1,
                "several lines in one frame: {l:?}"
            );
        }
        let n = hello.len();
        last = frames;
        Ok(n >= 2)
    })
    .with_context(|| format!("last frames: {last:?}"))?;

    // The stack deploy sequence.
    let ns_filter = filters_query(&[("label", "com.docker.stack.namespace=demo")]);
    api.get(&format!("/v1.41/networks?{ns_filter}"))?
        .expect(200)?;
    let net = api.post(
        "/v1.41/networks/create",
        &json!({"CheckDuplicate": false, "Driver": "overlay", "Scope": "", "EnableIPv6": false,
                "IPAM": null, "Internal": false, "Attachable": false, "Ingress": false,
                "ConfigOnly": false, "ConfigFrom": null, "Options": null,
                "Labels": {"com.docker.stack.namespace": "demo"}, "Name": "demo_front"}),
    )?;
    net.expect(201)?;
    ensure!(
        !cell(&net.json()?["Id"]).is_empty(),
        "network create: {}",
        net.text()
    );
    let missing_secret = api.get("/v1.41/secrets/demo_s1")?;
    ensure!(
        missing_secret.status == 404,
        "secrets/demo_s1: {}",
        missing_secret.status
    );
    missing_secret.error_message()?;
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD.encode(b"secret-bytes");
    let secret = api.post(
        "/v1.41/secrets/create",
        &json!({"Name": "demo_s1", "Labels": {"com.docker.stack.namespace": "demo"},
                "Data": data}),
    )?;
    secret.expect(201)?;
    let secret_id = cell(&secret.json()?["ID"]);
    let inspected = api.get("/v1.41/secrets/demo_s1")?;
    inspected.expect(200)?;
    ensure!(
        inspected.json()?["Spec"]
            .get("Data")
            .is_none_or(Value::is_null),
        "secret inspect returns the data: {}",
        inspected.text()
    );
    ensure!(
        api.get("/v1.41/configs/demo_c1")?.status == 404,
        "configs/demo_c1 exists"
    );
    api.post(
        "/v1.41/configs/create",
        &json!({"Name": "demo_c1", "Labels": {"com.docker.stack.namespace": "demo"},
                "Data": data}),
    )?
    .expect(201)?;
    let config = api.get("/v1.41/configs/demo_c1")?;
    config.expect(200)?;
    ensure!(
        config.json()?["Spec"]["Data"] == data.as_str(),
        "config inspect Data: {}",
        config.text()
    );
    let by_name = api.get(&format!(
        "/v1.41/secrets?{}",
        filters_query(&[("name", "demo_s1")])
    ))?;
    by_name.expect(200)?;
    ensure!(
        by_name.json()?.as_array().map(Vec::len) == Some(1),
        "{}",
        by_name.text()
    );
    let stack_svc = json!({
        "Name": "demo_web",
        "Labels": {"com.docker.stack.namespace": "demo", "com.docker.stack.image": image},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": image,
                "Args": ["sleep", "3600"],
                "Labels": {"com.docker.stack.namespace": "demo"},
                "Secrets": [{"File": {"Name": "s1", "UID": "0", "GID": "0", "Mode": 292},
                             "SecretID": secret_id, "SecretName": "demo_s1"}]
            },
            "Networks": [{"Target": "demo_front", "Aliases": ["web"]}]
        },
        "Mode": {"Replicated": {"Replicas": 1}}
    });
    api.post("/v1.41/services/create", &stack_svc)?
        .expect(201)?;
    c.wait_running("demo_web", 1)?;
    let stacks = api.get(&format!(
        "/v1.41/services?{}",
        filters_query(&[("label", "com.docker.stack.namespace")])
    ))?;
    stacks.expect(200)?;
    ensure!(
        stacks.json()?.as_array().map(Vec::len) == Some(1),
        "stack ls filter: {}",
        stacks.text()
    );
    let stack_tasks = api.get(&format!("/v1.41/tasks?{ns_filter}"))?;
    stack_tasks.expect(200)?;
    ensure!(
        !stack_tasks.json()?.as_array().is_none_or(Vec::is_empty),
        "the task label filter matches the service's labels: {}",
        stack_tasks.text()
    );

    // stack rm: services, secrets, configs, networks.
    for kind in ["services", "secrets", "configs", "networks"] {
        let list = api.get(&format!("/v1.41/{kind}?{ns_filter}"))?;
        list.expect(200)?;
        for obj in list.json()?.as_array().into_iter().flatten() {
            let oid = cell(
                obj.get("ID")
                    .or_else(|| obj.get("Id"))
                    .unwrap_or(&Value::Null),
            );
            let del = api.delete(&format!("/v1.41/{kind}/{oid}"))?;
            ensure!(
                del.status == 200 || del.status == 204,
                "DELETE {kind}/{oid}: {} {}",
                del.status,
                del.text()
            );
            if kind == "services" {
                // A secret in use cannot go: wait for the service's tasks to end.
                Testbed::wait_for(DEADLINE, "the stack's tasks to end", || {
                    Ok(api
                        .get(&format!("/v1.41/tasks?{ns_filter}"))?
                        .json()?
                        .as_array()
                        .is_none_or(|a| {
                            a.iter().all(|t| {
                                [
                                    "complete", "shutdown", "failed", "rejected", "remove",
                                    "orphaned",
                                ]
                                .contains(&cell(&t["Status"]["State"]).as_str())
                            })
                        }))
                })?;
            }
        }
    }
    ensure!(
        !ctl_names(&c, "network")?.contains("demo_front"),
        "demo_front left after the stack rm sequence"
    );

    // The remaining service goes with a 200 and no body; a second DELETE is a 404.
    let del = api.delete(&format!("/v1.41/services/{id}"))?;
    ensure!(del.status == 200, "DELETE service: {}", del.status);
    ensure!(
        api.delete(&format!("/v1.41/services/{id}"))?.status == 404,
        "second DELETE"
    );

    // Without a client certificate, or with a worker's: refused. With the admin's: the control.
    let url = format!("https://{}/_ping", env.addr());
    let ca = path_str(&env.ca());
    let with_admin = c.manager.run(
        "curl",
        [
            "-sS",
            "--fail",
            "-m",
            "10",
            "--cacert",
            &ca,
            "--cert",
            &path_str(&env.cert()),
            "--key",
            &path_str(&env.key()),
            &url,
        ],
    )?;
    ensure!(
        with_admin.status.success() && stdout_of(&with_admin) == "OK",
        "curl with the admin certificate: {with_admin:?}"
    );
    let anonymous = c
        .manager
        .run("curl", ["-sS", "--fail", "-m", "10", "--cacert", &ca, &url])?;
    ensure!(
        !anonymous.status.success(),
        "curl without a client certificate got {:?}",
        stdout_of(&anonymous)
    );
    if let Some((cert, key)) = worker_identity(&c)? {
        let worker = c.manager.run(
            "curl",
            [
                "-sS",
                "--fail",
                "-m",
                "10",
                "--cacert",
                &ca,
                "--cert",
                &path_str(&cert),
                "--key",
                &path_str(&key),
                &url,
            ],
        )?;
        ensure!(
            !worker.status.success(),
            "curl with a worker's node certificate got {:?}",
            stdout_of(&worker)
        );
    } else {
        eprintln!("no worker node certificate found in w1's data dir: that check is skipped");
    }
    c.shutdown()
}

/// The node certificate and key of the first agent (`node.pem`, `node-key.pem` somewhere under
/// its data dir).
fn worker_identity(c: &Cluster) -> Result<Option<(PathBuf, PathBuf)>> {
    fn find(dir: &Path, name: &str) -> Option<PathBuf> {
        for entry in fs::read_dir(dir).ok()?.flatten() {
            let p = entry.path();
            if p.file_name().is_some_and(|n| n == name) {
                return Some(p);
            }
            if p.is_dir() && !p.is_symlink() {
                if let Some(found) = find(&p, name) {
                    return Some(found);
                }
            }
        }
        None
    }
    let dir = &c.agents[0].data_dir;
    match find(dir, "node.pem") {
        Some(cert) => {
            let key = cert.with_file_name("node-key.pem");
            Ok(key.is_file().then_some((cert, key)))
        }
        None => Ok(None),
    }
}
