//! End-to-end scenarios for networks (issue 5), on a cluster of one manager and three worker hosts:
//! overlay networks across hosts (plain and encrypted), service discovery by name, VIP load
//! balancing, published ports (ingress routing mesh and host mode) and cleanup. Driven through
//! shoalctl as a user would; traffic runs inside the testbed's namespaces only.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use shoal_tests::capture::Capture;
use shoal_tests::testbed::{Cluster, ClusterOptions, TaskRow, Testbed, DEADLINE};

/// A server answering `task <its hostname>` (the first 12 characters of its task id) over HTTP.
const SERVER: &str =
    "mkdir -p /www && echo \"task $(hostname)\" > /www/index.html && exec httpd -f -p 80 -h /www";

fn cluster(name: &str, workers: usize) -> Result<Cluster> {
    Cluster::start_with(Testbed::new(name)?, ClusterOptions::new(workers))
}

/// `service create --name NAME FLAGS... busybox sh -c SCRIPT`.
fn create(c: &Cluster, name: &str, flags: &[&str], script: &str) -> Result<()> {
    let image = c.busybox_image();
    let mut args = vec!["service", "create", "--name", name];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[&image, "sh", "-c", script]);
    c.ctl_ok(&args)?;
    Ok(())
}

/// Runs `script` with /bin/sh inside a task's container (its network and mount namespaces).
fn exec_in_task(c: &Cluster, task_id: &str, script: &str) -> Result<String> {
    let (_, container) = c.container_of(task_id)?;
    let pid = container
        .pid
        .with_context(|| format!("task {task_id} has no recorded pid"))?;
    let out = c.manager.run_timeout(
        "nsenter",
        ["-t", &pid.to_string(), "-n", "-m", "/bin/sh", "-c", script],
        Duration::from_secs(20),
    )?;
    if !out.status.success() {
        bail!(
            "in task {task_id}: `{script}` failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The running tasks of a service.
fn running(c: &Cluster, service: &str) -> Result<Vec<TaskRow>> {
    Ok(c.service_ps(service)?
        .into_iter()
        .filter(|t| t.desired_running() && t.is_running())
        .collect())
}

/// The IPv4 address of `ifname` inside a task.
fn task_addr(c: &Cluster, task_id: &str, ifname: &str) -> Result<Ipv4Addr> {
    let out = exec_in_task(c, task_id, &format!("ip -4 -o addr show {ifname}"))?;
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .and_then(|ip| ip.parse().ok())
        .with_context(|| format!("no IPv4 address on {ifname} in task {task_id}: {out:?}"))
}

/// Every IPv4 address in busybox nslookup's answer (the server's own address left out).
fn nslookup(c: &Cluster, task_id: &str, name: &str) -> Result<BTreeSet<Ipv4Addr>> {
    let out = exec_in_task(c, task_id, &format!("nslookup {name} 127.0.0.11 || true"))?;
    let answer = out.split("Name:").skip(1).collect::<Vec<_>>().join(" ");
    Ok(answer
        .split(|ch: char| ch.is_whitespace() || ch == ',')
        .filter_map(|w| w.parse::<Ipv4Addr>().ok())
        .collect())
}

/// The shell command for an HTTP GET of `path` from `host` port 80 inside a task. busybox's
/// nc, not its wget: the static busybox's wget crashes in a rootfs without glibc's NSS files.
fn http_get_script(host: &str, path: &str) -> String {
    http_get_script_port(host, 80, path)
}

/// [`http_get_script`] to another port.
fn http_get_script_port(host: &str, port: u16, path: &str) -> String {
    format!("printf 'GET {path} HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n' | nc -w 3 {host} {port}")
}

/// The body of an HTTP/1.0 response, trimmed; fails unless the status is 200.
fn http_body(response: &str) -> Result<String> {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("not an HTTP response: {response:?}"))?;
    ensure!(
        head.lines().next().is_some_and(|l| l.contains(" 200 ")),
        "HTTP status not 200: {head:?}"
    );
    Ok(body.trim().to_string())
}

/// HTTP GET `http://HOST/` from inside a task; the body, trimmed.
fn get_in_task(c: &Cluster, task_id: &str, host: &str) -> Result<String> {
    http_body(&exec_in_task(c, task_id, &http_get_script(host, "/"))?)
}

/// HTTP GET from a host's own namespace (curl); the body, trimmed.
fn get_on_host(host: &shoal_tests::testbed::Host, url: &str) -> Result<String> {
    let out = host.run_timeout(
        "curl",
        ["-sS", "--fail", "-m", "3", url],
        Duration::from_secs(10),
    )?;
    if !out.status.success() {
        bail!(
            "curl {url} on {}: {}",
            host.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// "task <12 chars of id>" for each task.
fn answers_of(tasks: &[TaskRow]) -> BTreeSet<String> {
    tasks
        .iter()
        .map(|t| format!("task {}", &t.id[..t.id.len().min(12)]))
        .collect()
}

/// Fetches `get()` until every expected answer was seen; fails on any other answer.
fn wait_all_answer(
    what: &str,
    expected: &BTreeSet<String>,
    mut get: impl FnMut() -> Result<String>,
) -> Result<()> {
    let mut seen = BTreeSet::new();
    Testbed::wait_for(DEADLINE, what, || {
        let body = get()?;
        if !expected.contains(&body) {
            bail!("unexpected answer {body:?} (expected one of {expected:?})");
        }
        seen.insert(body);
        Ok(seen == *expected)
    })
}

/// Kernel objects Shoal's networking leaves on a host: overlay bridges, VXLAN and WireGuard
/// devices, task veths, and published-port or VIP rules.
fn leftovers(c: &Cluster) -> Result<Vec<String>> {
    let mut left = Vec::new();
    for a in &c.agents {
        let out = a.host.run("ip", ["-o", "link", "show"])?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split(':').nth(1).unwrap_or("").trim();
            let name = name.split('@').next().unwrap_or(name);
            if ["sbr", "svx", "swg", "veth", "vo"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                left.push(format!("{}: link {name}", a.host.name()));
            }
        }
        let out = a.host.run("nft", ["list", "ruleset"])?;
        let rules = String::from_utf8_lossy(&out.stdout);
        if rules.contains("dnat") {
            left.push(format!("{}: nftables DNAT rules:\n{rules}", a.host.name()));
        }
        let netns_dir = a.data_dir.join("network").join("netns");
        if let Ok(entries) = std::fs::read_dir(&netns_dir) {
            for e in entries.flatten() {
                left.push(format!(
                    "{}: task netns {}",
                    a.host.name(),
                    e.file_name().to_string_lossy()
                ));
            }
        }
    }
    Ok(left)
}

/// Prints what a failed connectivity check needs: the client's view of the network and every
/// host's overlay devices and forwarding entries.
fn diagnose(c: &Cluster, client_id: &str) {
    let script = "cat /etc/resolv.conf; ip addr; ip route; ip neigh; \
                  nslookup web 127.0.0.11; nslookup tasks.web 127.0.0.11; \
                  for ip in $(nslookup tasks.web 127.0.0.11 | sed -n 's/^Address: //p'); do \
                  ping -c 1 -W 1 $ip; done; true";
    match exec_in_task(c, client_id, &format!("exec 2>&1; {script}")) {
        Ok(out) => eprintln!("--- client {client_id}:\n{out}"),
        Err(e) => eprintln!("--- client {client_id}: {e:#}"),
    }
    if let Ok((_, ct)) = c.container_of(client_id) {
        if let Some(pid) = ct.pid {
            if let Ok(out) = c.manager.run(
                "nsenter",
                ["-t", &pid.to_string(), "-n", "nft", "list", "ruleset"],
            ) {
                eprintln!(
                    "--- client nft:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    for a in &c.agents {
        for (prog, args) in [
            ("ip", vec!["-d", "link", "show"]),
            ("bridge", vec!["fdb", "show"]),
            ("ip", vec!["neigh", "show"]),
            ("nft", vec!["list", "ruleset"]),
        ] {
            if let Ok(out) = a.host.run(prog, &args) {
                eprintln!(
                    "--- {} {prog} {}:\n{}{}",
                    a.host.name(),
                    args.join(" "),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

fn wait_clean(c: &Cluster) -> Result<()> {
    let mut last = Vec::new();
    let r = Testbed::wait_for(DEADLINE, "no network leftovers on any host", || {
        last = leftovers(c)?;
        Ok(last.is_empty())
    });
    r.with_context(|| format!("left behind: {last:#?}"))
}

/// A client task on w1 reaches, by name and through the VIP, a service whose tasks run only on w2
/// and w3; `tasks.NAME` follows scale up and down; everything goes away with `rm`.
fn name_resolution_across_hosts(encrypted: bool) -> Result<()> {
    let c = cluster(if encrypted { "net-enc" } else { "net-plain" }, 3)?;
    let mut create_net = vec!["network", "create", "-d", "overlay"];
    if encrypted {
        create_net.extend(["--opt", "encrypted"]);
    }
    create_net.push("front");
    c.ctl_ok(&create_net)?;
    let ls = c.ctl_json(["network", "ls"])?;
    ensure!(
        ls.iter()
            .any(|n| n["Name"] == "front" && n["Driver"] == "overlay"),
        "network ls lacks front: {ls:?}"
    );

    create(
        &c,
        "web",
        &[
            "--network",
            "front",
            "--replicas",
            "2",
            "--constraint",
            "node.hostname!=w1",
        ],
        SERVER,
    )?;
    create(
        &c,
        "client",
        &["--network", "front", "--constraint", "node.hostname==w1"],
        "exec sleep 3600",
    )?;
    let web = c.wait_running("web", 2)?;
    let web_nodes: BTreeSet<&str> = web.iter().map(|t| t.node.as_str()).collect();
    ensure!(
        web_nodes == BTreeSet::from(["w2", "w3"]),
        "web must run on w2 and w3 (spread, not w1): {web:?}"
    );
    let client = c.wait_running("client", 1)?;
    let client_id = client[0].id.clone();

    // By name through the VIP, balanced over both hosts' tasks.
    let expected = answers_of(&web);
    wait_all_answer(
        "client reaches both web tasks via http://web/",
        &expected,
        || get_in_task(&c, &client_id, "web"),
    )
    .inspect_err(|_| diagnose(&c, &client_id))?;
    wait_all_answer("web.front resolves too", &expected, || {
        get_in_task(&c, &client_id, "web.front")
    })?;

    // The encrypted network's payload never crosses the underlay in clear (captured on the
    // client host's link to the switch, which all its traffic to w2 and w3 takes).
    if encrypted {
        let marker = "SHOAL-MARKER-7f3a91c2";
        let capture = Capture::start(&c.agents[0].host.netns_path(), "eth0")?;
        for _ in 0..5 {
            // The marker travels in the request (query string) and in the 404 page echoing it.
            let _ = exec_in_task(
                &c,
                &client_id,
                &format!("{} || true", http_get_script("web", &format!("/{marker}"))),
            )?;
        }
        let seen = capture.finish()?;
        ensure!(
            seen.frames > 10,
            "the capture saw only {} frames",
            seen.frames
        );
        ensure!(
            !seen.contains(marker.as_bytes()),
            "the marker crossed the underlay in clear"
        );
        let body = get_in_task(&c, &client_id, "web")?;
        ensure!(expected.contains(&body), "after the capture: {body:?}");
    }

    // tasks.web lists exactly the running tasks' addresses, through scale up and down.
    for replicas in [4usize, 1] {
        c.ctl_ok(["service", "scale", &format!("web={replicas}")])?;
        let tasks = c.wait_running("web", replicas)?;
        let mut want = BTreeSet::new();
        for t in &tasks {
            want.insert(task_addr(&c, &t.id, "eth0")?);
        }
        let mut got = BTreeSet::new();
        Testbed::wait_for(
            DEADLINE,
            &format!("tasks.web lists the {replicas} running tasks"),
            || {
                got = nslookup(&c, &client_id, "tasks.web")?;
                Ok(got == want)
            },
        )
        .with_context(|| format!("tasks.web answered {got:?}, running tasks have {want:?}"))?;
        let vip = nslookup(&c, &client_id, "web")?;
        ensure!(
            vip.len() == 1 && vip.is_disjoint(&want),
            "web must resolve to one VIP, not to task addresses: {vip:?} vs {want:?}"
        );
    }

    // network rm is refused while a service uses it, and names the service.
    let out = c.ctl(["network", "rm", "front"])?;
    ensure!(
        !out.status.success(),
        "network rm of a used network succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        err.contains("web") || err.contains("client"),
        "the error must name the service: {err}"
    );

    // Right after `service rm`, as a user would: the manager waits for the tasks to let go.
    c.ctl_ok(["service", "rm", "web", "client"])?;
    c.ctl_ok(["network", "rm", "front"])?;
    wait_clean(&c)?;
    c.shutdown()
}

#[test]
fn overlay_name_resolution_and_vip_across_hosts() -> Result<()> {
    name_resolution_across_hosts(false)
}

#[test]
fn encrypted_overlay_across_hosts_hides_the_payload() -> Result<()> {
    name_resolution_across_hosts(true)
}

/// The capture itself works: on a plain overlay the marker *is* visible on the underlay.
#[test]
fn plain_overlay_payload_is_visible_on_the_underlay() -> Result<()> {
    let c = cluster("net-clear", 2)?;
    c.ctl_ok(["network", "create", "-d", "overlay", "clear"])?;
    create(
        &c,
        "web",
        &["--network", "clear", "--constraint", "node.hostname==w2"],
        SERVER,
    )?;
    create(
        &c,
        "client",
        &["--network", "clear", "--constraint", "node.hostname==w1"],
        "exec sleep 3600",
    )?;
    c.wait_running("web", 1)?;
    let client = c.wait_running("client", 1)?;
    let client_id = client[0].id.clone();
    Testbed::wait_for(DEADLINE, "client reaches web", || {
        Ok(get_in_task(&c, &client_id, "web")?.starts_with("task "))
    })?;
    let marker = "SHOAL-MARKER-c1ea2";
    let capture = Capture::start(&c.agents[0].host.netns_path(), "eth0")?;
    let _ = exec_in_task(
        &c,
        &client_id,
        &format!("{} || true", http_get_script("web", &format!("/{marker}"))),
    )?;
    let seen = capture.finish()?;
    ensure!(
        seen.contains(marker.as_bytes()),
        "a plain overlay carries the request in clear, so the capture must see the marker ({} frames)",
        seen.frames
    );
    c.ctl_ok(["service", "rm", "web", "client"])?;
    c.ctl_ok(["network", "rm", "clear"])?;
    wait_clean(&c)?;
    c.shutdown()
}

/// Ingress mode: every node answers on the published port and balances over all tasks, including
/// a node running none of them, the host itself and 127.0.0.1; `--publish-add/--publish-rm` on a
/// running service.
#[test]
fn published_port_routing_mesh() -> Result<()> {
    let c = cluster("net-ingress", 3)?;
    create(
        &c,
        "web",
        &[
            "-p",
            "8080:80",
            "--replicas",
            "2",
            "--constraint",
            "node.hostname!=w1",
            "--max-replicas-per-node",
            "1",
        ],
        SERVER,
    )?;
    let web = c.wait_running("web", 2)?;
    let expected = answers_of(&web);
    let w1 = c.agents[0].host.clone();
    ensure!(w1.name() == "w1", "agent 0 runs on {}", w1.name());
    let w1_url = format!("http://{}:8080/", w1.ip());

    // From outside (another host of the network), to the node that runs no task.
    wait_all_answer(
        "the registry host reaches both tasks via w1:8080",
        &expected,
        || get_on_host(&c.registry, &w1_url),
    )?;
    // From w1 itself: its own address and 127.0.0.1.
    wait_all_answer("w1 reaches its own published port", &expected, || {
        get_on_host(&w1, &w1_url)
    })?;
    wait_all_answer("w1 reaches 127.0.0.1:8080", &expected, || {
        get_on_host(&w1, "http://127.0.0.1:8080/")
    })?;
    // From a node running a task, to another node's port.
    let w2 = c.agents[1].host.clone();
    wait_all_answer("w2 reaches w1:8080", &expected, || {
        get_on_host(&w2, &w1_url)
    })?;
    // Hairpin: a task reaches its own service's published port through its own node.
    let inside = &web[0];
    let own_node = c
        .agents
        .iter()
        .find(|a| a.host.name() == inside.node)
        .context("the node of a web task")?
        .host
        .ip()
        .to_string();
    wait_all_answer(
        "a web task reaches its own published port",
        &expected,
        || {
            http_body(&exec_in_task(
                &c,
                &inside.id,
                &http_get_script_port(&own_node, 8080, "/"),
            )?)
        },
    )?;

    // Change the published port on the running service.
    c.ctl_ok([
        "service",
        "update",
        "--publish-rm",
        "8080",
        "--publish-add",
        "9090:80",
        "web",
    ])?;
    let web = c.wait_running("web", 2)?;
    let expected = answers_of(&web);
    let w1_9090 = format!("http://{}:9090/", w1.ip());
    wait_all_answer("9090 answers after --publish-add", &expected, || {
        get_on_host(&c.registry, &w1_9090)
    })?;
    Testbed::wait_for(DEADLINE, "8080 refused after --publish-rm", || {
        Ok(get_on_host(&c.registry, &w1_url).is_err())
    })?;

    // A second service cannot take a port in use.
    let image = c.busybox_image();
    let out = c.ctl([
        "service", "create", "--name", "dup", "-p", "9090:80", &image, "sleep", "3600",
    ])?;
    ensure!(!out.status.success(), "a second service got port 9090");
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("9090"), "the error must name the port: {err}");

    c.ctl_ok(["service", "rm", "web"])?;
    Testbed::wait_for(DEADLINE, "9090 refused after service rm", || {
        Ok(get_on_host(&c.registry, &w1_9090).is_err())
    })?;
    wait_clean(&c)?;
    c.shutdown()
}

/// The routing mesh on a network the operator made: `network rm ingress`, then `network create
/// --ingress --subnet` (as docker's). Publishing is refused while there is no ingress network; the
/// new one gives the tasks and the mesh its addresses and answers on every node.
#[test]
fn a_replaced_ingress_network_carries_the_routing_mesh() -> Result<()> {
    let c = cluster("net-reingress", 2)?;
    c.ctl_ok(["network", "rm", "ingress"])?;
    let image = c.busybox_image();
    let out = c.ctl([
        "service", "create", "--name", "web", "-p", "8080:80", &image, "sleep", "3600",
    ])?;
    ensure!(
        !out.status.success(),
        "a service published a port with no ingress network"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        err.contains("no ingress network") && err.contains("--ingress"),
        "the error must say what is missing and how to make it: {err}"
    );
    c.ctl_ok([
        "network",
        "create",
        "--driver",
        "overlay",
        "--ingress",
        "--subnet",
        "10.20.0.0/16",
        "edge",
    ])?;
    let out = c.ctl(["network", "create", "--ingress", "second"])?;
    ensure!(!out.status.success(), "a second ingress network was made");
    let inspect = c.ctl_ok(["network", "inspect", "edge"])?;
    ensure!(
        inspect.contains("\"Ingress\": true") && inspect.contains("10.20.0.0/16"),
        "edge must be the ingress network on 10.20.0.0/16: {inspect}"
    );

    create(
        &c,
        "web",
        &["-p", "8080:80", "--constraint", "node.hostname!=w1"],
        SERVER,
    )?;
    let web = c.wait_running("web", 1)?;
    let addrs = exec_in_task(&c, &web[0].id, "ip -4 -o addr show")?;
    ensure!(
        addrs.contains("10.20."),
        "the task must have an address of the new ingress subnet: {addrs}"
    );
    let w1 = c.agents[0].host.clone();
    ensure!(w1.name() == "w1", "agent 0 runs on {}", w1.name());
    let url = format!("http://{}:8080/", w1.ip());
    wait_all_answer(
        "the registry host reaches web through w1:8080 on the new ingress",
        &answers_of(&web),
        || get_on_host(&c.registry, &url),
    )?;

    let out = c.ctl(["network", "rm", "edge"])?;
    ensure!(
        !out.status.success(),
        "the ingress network was removed under a published port"
    );
    c.ctl_ok(["service", "rm", "web"])?;
    c.ctl_ok(["network", "rm", "edge"])?;
    wait_clean(&c)?;
    c.shutdown()
}

/// Host mode: only nodes running a task listen; two tasks needing the same host port never share
/// a node (the extra one stays pending with the reason).
#[test]
fn host_mode_ports_are_conflict_checked() -> Result<()> {
    let c = cluster("net-hostport", 2)?;
    create(
        &c,
        "hp",
        &[
            "--publish",
            "published=7070,target=80,mode=host",
            "--replicas",
            "3",
            "--detach",
        ],
        SERVER,
    )?;
    let mut pending = Vec::new();
    Testbed::wait_for(DEADLINE, "2 tasks running, 1 pending on the port", || {
        let tasks = c.service_ps("hp")?;
        let run = tasks
            .iter()
            .filter(|t| t.desired_running() && t.is_running())
            .count();
        pending = tasks
            .iter()
            .filter(|t| t.current_state.to_ascii_lowercase().starts_with("pending"))
            .cloned()
            .collect();
        Ok(run == 2 && pending.len() == 1)
    })?;
    ensure!(
        pending[0].error.contains("port"),
        "the pending task must say why: {:?}",
        pending[0]
    );
    let running = running(&c, "hp")?;
    let nodes: BTreeSet<&str> = running.iter().map(|t| t.node.as_str()).collect();
    ensure!(nodes.len() == 2, "one task per node: {running:?}");
    for a in &c.agents {
        let url = format!("http://{}:7070/", a.host.ip());
        let body = get_on_host(&c.registry, &url)?;
        let local: Vec<&TaskRow> = running.iter().filter(|t| t.node == a.host.name()).collect();
        ensure!(
            local.len() == 1
                && answers_of(&local.iter().map(|t| (*t).clone()).collect::<Vec<_>>())
                    .contains(&body),
            "{url} must answer with the task on that node, got {body:?}"
        );
    }
    c.ctl_ok(["service", "rm", "hp"])?;
    wait_clean(&c)?;
    c.shutdown()
}

/// `--network-add` / `--network-rm` on a running service, `--endpoint-mode dnsrr`, and the
/// node-local drivers (`bridge` networks, `host`, `none`).
#[test]
fn network_update_dnsrr_and_local_drivers() -> Result<()> {
    let c = cluster("net-misc", 2)?;
    c.ctl_ok(["network", "create", "-d", "overlay", "back"])?;
    create(
        &c,
        "db",
        &[
            "--network",
            "back",
            "--endpoint-mode",
            "dnsrr",
            "--replicas",
            "2",
        ],
        SERVER,
    )?;
    create(&c, "client", &[], "exec sleep 3600")?;
    let db = c.wait_running("db", 2)?;

    // Joining `back` replaces the client's task with one on the network.
    c.ctl_ok(["service", "update", "--network-add", "back", "client"])?;
    let client = c.wait_running("client", 1)?;
    let client_id = client[0].id.clone();
    let mut want = BTreeSet::new();
    for t in &db {
        want.insert(task_addr(&c, &t.id, "eth0")?);
    }
    let mut got = BTreeSet::new();
    Testbed::wait_for(DEADLINE, "dnsrr: db resolves to its tasks", || {
        got = nslookup(&c, &client_id, "db")?;
        Ok(got == want)
    })
    .with_context(|| format!("db answered {got:?}, its tasks have {want:?}"))?;
    wait_all_answer(
        "client reaches both db tasks by name",
        &answers_of(&db),
        || get_in_task(&c, &client_id, "db"),
    )?;

    // Leaving it: the new task has only the local bridge.
    c.ctl_ok(["service", "update", "--network-rm", "back", "client"])?;
    Testbed::wait_for(DEADLINE, "client's task replaced", || {
        let now = c.wait_running("client", 1)?;
        Ok(now[0].id != client_id)
    })?;
    let client = c.wait_running("client", 1)?;
    let addrs = exec_in_task(&c, &client[0].id, "ip -4 -o addr show")?;
    ensure!(
        !addrs.contains("10.1.") && addrs.contains("10.88."),
        "after --network-rm the task must only have lo and the local bridge: {addrs}"
    );

    // A node-local bridge network: its own subnet, NAT, no manager addresses.
    c.ctl_ok([
        "network",
        "create",
        "-d",
        "bridge",
        "--subnet",
        "172.30.7.0/24",
        "lan",
    ])?;
    create(&c, "onlan", &["--network", "lan"], "exec sleep 3600")?;
    let onlan = c.wait_running("onlan", 1)?;
    let lan_ip = task_addr(&c, &onlan[0].id, "eth0")?;
    ensure!(
        lan_ip.octets()[..3] == [172, 30, 7],
        "a task on lan must have an address in 172.30.7.0/24, got {lan_ip}"
    );

    // host: the task shares its node's network namespace; none: loopback only.
    create(&c, "onhost", &["--network", "host"], "exec sleep 3600")?;
    create(&c, "onnone", &["--network", "none"], "exec sleep 3600")?;
    let onhost = c.wait_running("onhost", 1)?;
    let (agent, ct) = c.container_of(&onhost[0].id)?;
    let agent_pid = c.agents[agent].proc().context("agent process")?.pid();
    ensure!(
        shoal_tests::testbed::ns_of(ct.pid.context("pid")?, "net")?
            == shoal_tests::testbed::ns_of(agent_pid as i32, "net")?,
        "a task on the host network must share its node's network namespace"
    );
    let onnone = c.wait_running("onnone", 1)?;
    let links = exec_in_task(&c, &onnone[0].id, "ip -o link show")?;
    ensure!(
        links.lines().count() == 1 && links.contains("lo"),
        "a task on none must have only lo: {links}"
    );

    c.ctl_ok(["service", "rm", "db", "client", "onlan", "onhost", "onnone"])?;
    c.ctl_ok(["network", "rm", "back", "lan"])?;
    wait_clean(&c)?;
    c.shutdown()
}

/// `kill -9` of the agents keeps their tasks and their networking: containers keep their pids, and
/// once the agents are back the client resolves and reaches the server again over the encrypted
/// overlay (its DNS server and the WireGuard device live in the agent process).
#[test]
fn agent_restart_keeps_overlay_tasks_reachable_by_name() -> Result<()> {
    let mut c = cluster("net-restart", 2)?;
    c.ctl_ok([
        "network",
        "create",
        "-d",
        "overlay",
        "--opt",
        "encrypted",
        "sealed",
    ])?;
    create(
        &c,
        "web",
        &["--network", "sealed", "--constraint", "node.hostname==w2"],
        SERVER,
    )?;
    create(
        &c,
        "client",
        &["--network", "sealed", "--constraint", "node.hostname==w1"],
        "exec sleep 3600",
    )?;
    let web = c.wait_running("web", 1)?;
    let client = c.wait_running("client", 1)?;
    let client_id = client[0].id.clone();
    let expected = answers_of(&web);
    wait_all_answer("client reaches web", &expected, || {
        get_in_task(&c, &client_id, "web")
    })?;
    let pids_before: Vec<Option<i32>> = [&client_id, &web[0].id]
        .iter()
        .map(|t| c.container_of(t).map(|(_, ct)| ct.pid))
        .collect::<Result<_>>()?;

    c.restart_agent(0)?;
    c.restart_agent(1)?;
    c.wait_nodes_ready(2)?;
    wait_all_answer(
        "client reaches web again after the agents restarted",
        &expected,
        || get_in_task(&c, &client_id, "web"),
    )?;
    let pids_after: Vec<Option<i32>> = [&client_id, &web[0].id]
        .iter()
        .map(|t| c.container_of(t).map(|(_, ct)| ct.pid))
        .collect::<Result<_>>()?;
    ensure!(
        pids_before == pids_after,
        "the containers must be re-adopted, not restarted: {pids_before:?} -> {pids_after:?}"
    );

    c.ctl_ok(["service", "rm", "web", "client"])?;
    c.ctl_ok(["network", "rm", "sealed"])?;
    wait_clean(&c)?;
    c.shutdown()
}
