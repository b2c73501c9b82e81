//! End-to-end scenario of issue 12, "real applications": a three-tier stack deployed from a
//! compose file with `shoalctl stack deploy` on three worker hosts, with images built from Debian
//! packages (`shoal_tests::app_image`): nginx (its site from a stack config, a port published on
//! the routing mesh) in front of the python app (2 replicas, counting hits) in front of redis
//! (its password a stack secret, its data in a named volume, a healthcheck, a placement
//! constraint, a stop-first update config). The app starts only once redis is healthy
//! (`depends_on: condition: service_healthy`).
//!
//! Checked, as a user would see it: hits are counted through the mesh from every node; `stack
//! ls/services/ps`; the count survives `service update --force` of the database; the node that
//! runs no task using the secret has no trace of it (no file holding its value, no mount naming
//! it); a redeploy with a changed `${APP_GREETING}` rolls the app only (the other services' tasks
//! are untouched); `stack rm` removes services, networks, secrets and configs, and leaves the
//! volume.
//!
//! Nodes: w1 `tier=db`, w2 `tier=app`, w3 `tier=web` (node labels). w3 runs only nginx, which
//! uses no secret.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use shoal_tests::app_image::{self, ServiceImage};
use shoal_tests::stack_support::{
    ctl_fails, ctl_with_ok, exec_in_task, files_containing, http_get, names_node, task_pid,
    three_tier_compose, unique_value, StackImages, NGINX_SITE, STACK_PORT,
};
use shoal_tests::testbed::{
    fatal, process_start_time, Cluster, ClusterOptions, TaskRow, Testbed, DEADLINE,
};

/// The stack's name.
const STACK: &str = "shop";
/// How long the first deploy may take: three images of tens of MiB are pulled on three hosts.
const FIRST_DEPLOY: Duration = Duration::from_secs(240);
/// How long a rolling update of the stack may take.
const ROLLOUT: Duration = Duration::from_secs(180);

/// Skips (prints why, `None`) unless the app, redis and nginx images can be built here.
fn images_or_skip(test: &str) -> Result<Option<()>> {
    let prepared = app_image::prepare()
        .and_then(|_| ServiceImage::Redis.prepare())
        .and_then(|_| ServiceImage::Nginx.prepare());
    match prepared {
        Ok(_) => Ok(Some(())),
        Err(e) if app_image::is_unavailable(&e) => {
            eprintln!("skipping {test}: {e:#}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// `service ps NAME --format json` rows as JSON (for the `Health` column).
fn ps_json(c: &Cluster, service: &str) -> Result<Vec<Value>> {
    c.ctl_json(["service", "ps", service])
}

/// Waits up to `timeout` until exactly `n` tasks of `service` are wanted and Running; them.
fn wait_running_for(
    c: &Cluster,
    service: &str,
    n: usize,
    timeout: Duration,
) -> Result<Vec<TaskRow>> {
    let mut tasks = Vec::new();
    Testbed::wait_for(timeout, &format!("{service}: {n} tasks Running"), || {
        tasks = c.service_ps(service)?;
        let wanted: Vec<&TaskRow> = tasks.iter().filter(|t| t.desired_running()).collect();
        Ok(wanted.len() == n && wanted.iter().all(|t| t.is_running()))
    })
    .with_context(|| format!("{service} tasks: {tasks:?}"))?;
    Ok(tasks.into_iter().filter(|t| t.desired_running()).collect())
}

/// The ids of the wanted, running tasks of `service`.
fn running_ids(c: &Cluster, service: &str) -> Result<BTreeSet<String>> {
    Ok(c.service_ps(service)?
        .into_iter()
        .filter(|t| t.desired_running() && t.is_running())
        .map(|t| t.id)
        .collect())
}

/// The ids of the tasks of `service` the orchestrator no longer wants (replaced, failed).
fn stopped_ids(c: &Cluster, service: &str) -> Result<BTreeSet<String>> {
    Ok(c.service_ps(service)?
        .into_iter()
        .filter(|t| !t.desired_running())
        .map(|t| t.id)
        .collect())
}

/// `/hits` through the mesh on `node_ip`: (greeting, count), or `None` while it does not answer.
fn hits(c: &Cluster, node_ip: &str) -> Result<Option<(String, u64)>> {
    let (ok, body) = http_get(&c.manager, &format!("http://{node_ip}:{STACK_PORT}/hits"))?;
    if !ok {
        return Ok(None);
    }
    let (greeting, n) = body
        .split_once(' ')
        .with_context(|| format!("/hits answered {body:?}"))?;
    Ok(Some((
        greeting.to_string(),
        n.trim()
            .parse()
            .with_context(|| format!("/hits answered {body:?}"))?,
    )))
}

/// Waits until `/hits` on `node_ip` answers with `greeting`; the count.
fn wait_hits(c: &Cluster, node_ip: &str, greeting: &str, timeout: Duration) -> Result<u64> {
    let mut got = None;
    let mut last = None;
    Testbed::wait_for(
        timeout,
        &format!("/hits on {node_ip}:{STACK_PORT} to answer {greeting:?}"),
        || {
            let h = hits(c, node_ip)?;
            last = h.clone();
            match h {
                Some((g, n)) if g == greeting => {
                    got = Some(n);
                    Ok(true)
                }
                _ => Ok(false),
            }
        },
    )
    .with_context(|| format!("last answer: {last:?}"))?;
    got.context("no count")
}

/// A JSON cell as text, whether it was printed as a string or a number.
fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The `Name`s of `shoalctl WHAT ls --format json`.
fn names_of(c: &Cluster, what: &str) -> Result<BTreeSet<String>> {
    Ok(c.ctl_json([what, "ls"])?
        .iter()
        .map(|row| cell(&row["Name"]))
        .collect())
}

/// Fails if anything on the machine ties the secret (`value`, `id`, `name`) to `w3`: a file
/// holding its value in w3's directory, a file under /run holding it whose path names a w3 task
/// or w3's directory, a mount of w3's containers naming it, a mount of the machine naming it
/// inside w3's directory.
fn expect_no_trace_on_w3(
    c: &Cluster,
    w3_tasks: &[String],
    value: &str,
    id: &str,
    name: &str,
) -> Result<()> {
    let w3 = &c.agents[2];
    let w3_dir = w3.host.dir()?;
    let on_disk = files_containing(&w3_dir, value.as_bytes());
    ensure!(
        on_disk.is_empty(),
        "w3 runs no task using the secret, yet its directory holds it: {on_disk:?}"
    );
    let w3_dir_text = w3_dir.to_string_lossy().into_owned();
    let names_w3 = |path: &str| {
        path.contains(&w3_dir_text) || w3_tasks.iter().any(|t| path.contains(t.as_str()))
    };
    let in_run: Vec<_> = files_containing(Path::new("/run"), value.as_bytes())
        .into_iter()
        .filter(|p| names_w3(&p.to_string_lossy()))
        .collect();
    ensure!(
        in_run.is_empty(),
        "files under /run of w3's tasks hold the secret: {in_run:?}"
    );
    let needles = [id, name, value];
    for task in w3_tasks {
        let pid = task_pid(c, task)?;
        let info = fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .with_context(|| format!("reading the mounts of w3's task {task}"))?;
        let bad: Vec<&str> = info
            .lines()
            .filter(|l| needles.iter().any(|n| !n.is_empty() && l.contains(n)))
            .collect();
        ensure!(
            bad.is_empty(),
            "w3's task {task} has mounts naming the secret: {bad:?}"
        );
    }
    let host_info = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let bad: Vec<&str> = host_info
        .lines()
        .filter(|l| needles.iter().any(|n| !n.is_empty() && l.contains(n)) && names_w3(l))
        .collect();
    ensure!(
        bad.is_empty(),
        "the machine has mounts of w3 naming the secret: {bad:?}"
    );
    Ok(())
}

#[test]
fn three_tier_stack_from_a_compose_file() -> Result<()> {
    if images_or_skip("three_tier_stack_from_a_compose_file")?.is_none() {
        return Ok(());
    }
    let c = Cluster::start_with(Testbed::new("stack")?, ClusterOptions::new(3))?;
    for (node, tier) in [("w1", "db"), ("w2", "app"), ("w3", "web")] {
        c.ctl_ok([
            "node",
            "update",
            "--label-add",
            &format!("tier={tier}"),
            node,
        ])?;
    }
    let images = StackImages {
        nginx: app_image::push_service_image_to(&c, ServiceImage::Nginx)?,
        app: app_image::push_app_to(&c)?,
        redis: app_image::push_service_image_to(&c, ServiceImage::Redis)?,
    };
    let ips: Vec<String> = c.agents.iter().map(|a| a.host.ip().to_string()).collect();

    // The stack's files, side by side as a user keeps them: paths in the compose file are
    // relative to it.
    let dir = c.testbed().dir().join("stack");
    fs::create_dir_all(&dir)?;
    let secret = unique_value("redis-pw");
    fs::write(dir.join("db_password.txt"), &secret)?;
    fs::write(dir.join("site.conf"), NGINX_SITE)?;
    let compose = dir.join("compose.yml");
    fs::write(
        &compose,
        three_tier_compose(&images, "./db_password.txt", "./site.conf"),
    )?;
    let compose_arg = compose.to_string_lossy().into_owned();
    let deploy = ["stack", "deploy", "-c", compose_arg.as_str(), STACK];

    // Deploy; while it converges, the app must never run before the database is healthy.
    ctl_with_ok(&c, &[], &deploy, b"")?;
    Testbed::wait_for(FIRST_DEPLOY, "the app's 2 tasks to run", || {
        let app = c.service_ps("shop_app")?;
        let app_running = app.iter().any(|t| t.desired_running() && t.is_running());
        // Read after the app: a healthy database now was healthy when the app was seen.
        let db_healthy = ps_json(&c, "shop_db")?
            .iter()
            .any(|row| cell(&row["Health"]).eq_ignore_ascii_case("healthy"));
        if app_running && !db_healthy {
            return Err(fatal(format!(
                "an app task runs before the database is healthy (depends_on \
                 condition: service_healthy): {app:?}"
            )));
        }
        Ok(app
            .iter()
            .filter(|t| t.desired_running() && t.is_running())
            .count()
            == 2)
    })?;
    let db = wait_running_for(&c, "shop_db", 1, DEADLINE)?;
    let app = wait_running_for(&c, "shop_app", 2, DEADLINE)?;
    let web = wait_running_for(&c, "shop_web", 1, FIRST_DEPLOY)?;
    ensure!(
        db[0].node == "w1",
        "db placed on {} (tier=db is w1)",
        db[0].node
    );
    ensure!(
        app.iter().all(|t| t.node == "w2"),
        "app placed on {:?} (tier=app is w2)",
        app.iter().map(|t| &t.node).collect::<Vec<_>>()
    );
    ensure!(
        web[0].node == "w3",
        "web placed on {} (tier=web is w3)",
        web[0].node
    );
    // The database's healthcheck passes 2 s after it starts at the earliest: an app started
    // by the order of depends_on starts after that.
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as u64;
    let db_start = process_start_time(task_pid(&c, &db[0].id)?)?;
    for t in &app {
        let started = process_start_time(task_pid(&c, &t.id)?)?;
        ensure!(
            started >= db_start + tick,
            "app task {} started {} ticks after the database's, before it could be healthy",
            t.id,
            started as i64 - db_start as i64
        );
    }

    // Through the mesh from every node: nginx (its site from the config) -> app -> redis.
    let first = wait_hits(&c, &ips[0], "hello", DEADLINE)?;
    let mut last = first;
    for ip in &ips {
        let (g, n) = hits(&c, ip)?.with_context(|| format!("/hits on {ip} failed"))?;
        ensure!(
            g == "hello" && n == last + 1,
            "/hits on {ip}: {g} {n}, after {last}"
        );
        last = n;
    }

    // The stack as the stack commands show it.
    let stacks = c.ctl_json(["stack", "ls"])?;
    let row = stacks
        .iter()
        .find(|r| cell(&r["Name"]) == STACK)
        .with_context(|| format!("stack ls: {stacks:?}"))?;
    ensure!(cell(&row["Services"]) == "3", "stack ls: {row}");
    let services: BTreeSet<String> = c
        .ctl_json(["stack", "services", STACK])?
        .iter()
        .map(|r| cell(&r["Name"]))
        .collect();
    let want: BTreeSet<String> = ["shop_web", "shop_app", "shop_db"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    ensure!(services == want, "stack services: {services:?}");
    let ps = c.ctl_json(["stack", "ps", STACK])?;
    let running = ps
        .iter()
        .filter(|r| {
            cell(&r["CurrentState"])
                .to_ascii_lowercase()
                .starts_with("running")
        })
        .count();
    ensure!(
        running == 4,
        "stack ps: {running} running tasks, want 4: {ps:?}"
    );
    let inspect: Value = serde_json::from_str(&c.ctl_ok(["service", "inspect", "shop_app"])?)?;
    ensure!(
        inspect[0]["Spec"]["Labels"]["com.docker.stack.namespace"] == STACK,
        "shop_app lacks the stack label: {inspect}"
    );
    let networks = names_of(&c, "network")?;
    ensure!(
        networks.contains("shop_default"),
        "network ls: {networks:?}"
    );

    // The secret: in the database's container, nowhere on w3.
    let in_db = exec_in_task(
        &c,
        &db[0].id,
        "read -r pw < /run/secrets/db_password; echo \"$pw\"",
    )?;
    ensure!(
        in_db.trim() == secret,
        "the db's secret file holds {in_db:?}"
    );
    let secret_row = c
        .ctl_json(["secret", "ls"])?
        .into_iter()
        .find(|r| cell(&r["Name"]) == "shop_db_password")
        .context("secret ls has no shop_db_password")?;
    let secret_id = cell(&secret_row["ID"]);
    let w3_tasks: Vec<String> = c
        .containers()?
        .into_iter()
        .filter(|(i, _)| *i == 2)
        .map(|(_, ct)| ct.task_id)
        .collect();
    ensure!(!w3_tasks.is_empty(), "w3 runs no container");
    expect_no_trace_on_w3(&c, &w3_tasks, &secret, &secret_id, "db_password")?;

    // The data survives a forced update of the database (a new task, the same volume).
    let (_, before) = hits(&c, &ips[1])?.context("/hits failed before the update")?;
    ctl_with_ok(&c, &[], &["service", "update", "--force", "shop_db"], b"")?;
    let mut new_db = Vec::new();
    Testbed::wait_for(ROLLOUT, "a new shop_db task to run", || {
        new_db = running_ids(&c, "shop_db")?.into_iter().collect();
        Ok(new_db.len() == 1 && new_db[0] != db[0].id)
    })?;
    let after = wait_hits(&c, &ips[1], "hello", ROLLOUT)?;
    ensure!(
        after == before + 1,
        "the count restarted after `service update --force shop_db`: {before} then {after}"
    );

    // Redeploy with a changed variable: only the app rolls.
    let web_ids = running_ids(&c, "shop_web")?;
    let db_ids = running_ids(&c, "shop_db")?;
    let web_stopped = stopped_ids(&c, "shop_web")?;
    let db_stopped = stopped_ids(&c, "shop_db")?;
    let app_ids = running_ids(&c, "shop_app")?;
    ctl_with_ok(&c, &[("APP_GREETING", "hola")], &deploy, b"")?;
    Testbed::wait_for(ROLLOUT, "the app to be replaced by 2 new tasks", || {
        let now = running_ids(&c, "shop_app")?;
        Ok(now.len() == 2 && now.is_disjoint(&app_ids))
    })?;
    let hola = wait_hits(&c, &ips[2], "hola", ROLLOUT)?;
    ensure!(hola > after, "the count went from {after} to {hola}");
    // Whatever is left of the rollout must not touch the others: they keep their tasks.
    Testbed::holds_for(
        Duration::from_secs(3),
        "web and db keep their tasks",
        || Ok(running_ids(&c, "shop_web")? == web_ids && running_ids(&c, "shop_db")? == db_ids),
    )?;
    for (service, before) in [("shop_web", &web_stopped), ("shop_db", &db_stopped)] {
        let now = stopped_ids(&c, service)?;
        ensure!(
            &now == before,
            "{service} had tasks replaced by a redeploy that did not change it: \
             stopped before {before:?}, now {now:?}"
        );
    }

    // A changed secret file is refused, naming the secret (its data is immutable), and nothing
    // of the stack is touched; the same file again is fine.
    fs::write(dir.join("db_password.txt"), unique_value("another-pw"))?;
    let refused = ctl_fails(&c, &deploy)?;
    ensure!(
        refused.contains("shop_db_password") && refused.contains("immutable"),
        "a changed secret file was not refused as it should be: {refused}"
    );
    ensure!(
        running_ids(&c, "shop_db")? == db_ids,
        "a refused deploy touched the database"
    );
    fs::write(dir.join("db_password.txt"), &secret)?;
    ctl_with_ok(&c, &[("APP_GREETING", "hola")], &deploy, b"")?;

    // stack rm: everything but the volume goes.
    c.ctl_ok(["stack", "rm", STACK])?;
    Testbed::wait_for(DEADLINE, "the stack's objects to be removed", || {
        let services = names_of(&c, "service")?;
        let networks = names_of(&c, "network")?;
        let secrets = names_of(&c, "secret")?;
        let configs = names_of(&c, "config")?;
        Ok(!services.iter().any(|s| s.starts_with("shop_"))
            && !networks.contains("shop_default")
            && !secrets.contains("shop_db_password")
            && !configs.contains("shop_site")
            && c.containers()?.is_empty())
    })?;
    let volumes = c.ctl_json(["volume", "ls"])?;
    let kept = volumes
        .iter()
        .find(|r| cell(&r["Name"]) == "shop_dbdata")
        .with_context(|| format!("stack rm removed the volume: volume ls {volumes:?}"))?;
    ensure!(
        names_node(&c, &cell(&kept["Node"]), "w1")?,
        "volume ls: the volume is on w1: {kept}"
    );
    c.shutdown()
}
