//! End-to-end scenarios of issue 12 on a one-host cluster (the agent beside the manager, node
//! `mgr`): secrets and configs (`create` from stdin and from a file, the size limits, files with
//! the owner and mode asked for on a tmpfs, nothing on the node's disk, `rm` refused while a
//! service uses them), mounts (a named volume kept across `service update --force`, a new
//! volume owned as the image's directory, a missing bind source, tmpfs with size and mode),
//! templates in `--hostname` and `--env`, and `volume ls/rm/prune`.
//!
//! The containers are probed with busybox scripts that print `KEY=VALUE` lines to their log,
//! and with commands run inside them (`nsenter`).

use sha2::Digest as _;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use shoal_tests::app_image::{self, ServiceImage, REDIS_UID};
use shoal_tests::stack_support::{
    ctl_fails, ctl_with_ok, exec_in_task, files_containing, files_containing_same_fs, names_node,
    probe_output, unique_value, wait_task_error,
};
use shoal_tests::testbed::{Cluster, Testbed, DEADLINE};

/// The node's hostname on a one-host testbed cluster.
const NODE: &str = "mgr";

fn cluster(name: &str) -> Result<Cluster> {
    Cluster::start(Testbed::new(name)?, 0)
}

/// `service create --detach --name NAME FLAGS... busybox sh -c SCRIPT` (the script ends with
/// `echo DONE` and then sleeps, so the task stays up to be looked at).
fn probe(c: &Cluster, name: &str, flags: &[&str], script: &str) -> Result<()> {
    let image = c.busybox_image();
    let script = format!("{script}\necho DONE\nexec sleep 3600");
    let mut args = vec!["service", "create", "--detach", "--name", name];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[&image, "sh", "-c", &script]);
    c.ctl_ok(&args)?;
    Ok(())
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

/// Removes `services` and waits until the agent runs no container.
fn remove_services(c: &Cluster, services: &[&str]) -> Result<()> {
    for s in services {
        c.ctl_ok(["service", "rm", s])?;
    }
    Testbed::wait_for(DEADLINE, "every container to be gone", || {
        Ok(c.containers()?.is_empty())
    })
}

/// The one wanted, running task of `service` that is not `old`, once there is one.
fn wait_new_task(c: &Cluster, service: &str, old: &str) -> Result<String> {
    let mut id = String::new();
    Testbed::wait_for(
        Duration::from_secs(120),
        &format!("{service}: a new task to run"),
        || {
            let tasks = c.wait_running(service, 1)?;
            id = tasks[0].id.clone();
            Ok(id != old)
        },
    )?;
    Ok(id)
}

#[test]
fn secrets_and_configs_reach_their_tasks_only() -> Result<()> {
    let c = cluster("secrets")?;
    let files = c.testbed().dir().join("files");
    fs::create_dir_all(&files)?;

    // From stdin and from a file.
    let v1 = unique_value("stdin-secret");
    ctl_with_ok(&c, &[], &["secret", "create", "s1", "-"], v1.as_bytes())?;
    let v2 = unique_value("file-secret");
    let f2 = files.join("s2.txt");
    fs::write(&f2, &v2)?;
    let f2 = f2.to_string_lossy().into_owned();
    c.ctl_ok(["secret", "create", "--label", "env=test", "s2", &f2])?;
    let conf = files.join("app.conf");
    fs::write(&conf, "setting=1\n")?;
    c.ctl_ok(["config", "create", "c1", &conf.to_string_lossy()])?;

    // The limits: secrets < 500 KiB, configs < 1000 KiB; the error names the limit.
    let big = files.join("600k");
    fs::write(&big, vec![b'x'; 600 * 1024])?;
    let big = big.to_string_lossy().into_owned();
    let err = ctl_fails(&c, &["secret", "create", "big", &big])?;
    ensure!(
        err.contains("500"),
        "600 KiB secret refused without naming the limit: {err}"
    );
    c.ctl_ok(["config", "create", "bigconf", &big])?;
    let huge = files.join("1100k");
    fs::write(&huge, vec![b'x'; 1100 * 1024])?;
    let err = ctl_fails(&c, &["config", "create", "huge", &huge.to_string_lossy()])?;
    ensure!(
        err.contains("1000"),
        "1100 KiB config refused without naming the limit: {err}"
    );
    let secrets = names_of(&c, "secret")?;
    ensure!(
        secrets.contains("s1") && secrets.contains("s2") && !secrets.contains("big"),
        "secret ls: {secrets:?}"
    );
    let configs = names_of(&c, "config")?;
    ensure!(
        configs.contains("c1") && configs.contains("bigconf") && !configs.contains("huge"),
        "config ls: {configs:?}"
    );
    let inspect = c.ctl_ok(["secret", "inspect", "s2"])?;
    ensure!(
        !inspect.contains(&v2),
        "secret inspect shows the data: {inspect}"
    );
    let doc: Value = serde_json::from_str(&inspect).context("secret inspect is not JSON")?;
    ensure!(doc[0]["Spec"]["Labels"]["env"] == "test", "{inspect}");

    // The files in the task: owner and mode as asked (defaults 0:0 0444), on a tmpfs.
    probe(
        &c,
        "reader",
        &[
            "--secret",
            "source=s1,target=t,uid=1000,gid=1001,mode=0400",
            "--secret",
            "s2",
            "--config",
            "source=c1,target=/etc/app.conf,mode=0440",
        ],
        "echo T=$(stat -c %u:%g:%a /run/secrets/t)\n\
         echo TV=$(sha256sum < /run/secrets/t | cut -d' ' -f1)\n\
         echo S2=$(stat -c %u:%g:%a /run/secrets/s2)\n\
         echo S2V=$(sha256sum < /run/secrets/s2 | cut -d' ' -f1)\n\
         echo C1=$(stat -c %u:%g:%a /etc/app.conf)\n\
         echo C1V=$(cat /etc/app.conf)\n\
         echo FS=$(grep -E ' /run/secrets(/t)? ' /proc/self/mountinfo | sed 's/.* - //' | cut -d' ' -f1 | head -n1)",
    )?;
    let out = probe_output(&c, "reader")?;
    let get = |k: &str| out.get(k).cloned().unwrap_or_default();
    ensure!(get("T") == "1000:1001:400", "/run/secrets/t: {out:?}");
    // Digests, not the values: the container's log is on the node's disk.
    let digest = |v: &str| hex::encode(sha2::Sha256::digest(v.as_bytes()));
    ensure!(
        get("TV") == digest(&v1),
        "/run/secrets/t holds another value: {out:?}"
    );
    ensure!(get("S2") == "0:0:444", "/run/secrets/s2: {out:?}");
    ensure!(
        get("S2V") == digest(&v2),
        "/run/secrets/s2 holds another value: {out:?}"
    );
    ensure!(get("C1") == "0:0:440", "/etc/app.conf: {out:?}");
    ensure!(
        get("C1V") == "setting=1",
        "/etc/app.conf holds {:?}",
        get("C1V")
    );
    ensure!(
        get("FS") == "tmpfs",
        "the secrets are not on a tmpfs: {out:?}"
    );

    // Never on the node's disk (tmpfs mounts under the data dir are not disk).
    let agent_dir = c.agents[0].data_dir.clone();
    for v in [&v1, &v2] {
        let on_disk = files_containing_same_fs(&agent_dir, v.as_bytes());
        ensure!(
            on_disk.is_empty(),
            "a secret was written to disk: {on_disk:?}"
        );
    }

    // In use: refused, naming the service.
    let err = ctl_fails(&c, &["secret", "rm", "s1"])?;
    ensure!(err.contains("reader"), "secret rm s1 while used: {err}");
    let err = ctl_fails(&c, &["config", "rm", "c1"])?;
    ensure!(err.contains("reader"), "config rm c1 while used: {err}");

    // Once no task uses them, the node forgets them, and they can go.
    remove_services(&c, &["reader"])?;
    Testbed::wait_for(DEADLINE, "the node to forget the secrets", || {
        Ok([&v1, &v2]
            .iter()
            .all(|v| files_containing(&agent_dir, v.as_bytes()).is_empty()))
    })?;
    c.ctl_ok(["secret", "rm", "s1", "s2"])?;
    c.ctl_ok(["config", "rm", "c1"])?;
    let secrets = names_of(&c, "secret")?;
    ensure!(secrets.is_empty(), "secret ls after rm: {secrets:?}");
    c.shutdown()
}

#[test]
fn volumes_binds_and_tmpfs_mounts() -> Result<()> {
    let c = cluster("volumes")?;
    let image = c.busybox_image();

    // A named volume outlives its task: the second task sees the first one's line.
    c.ctl_ok([
        "service",
        "create",
        "--detach",
        "--name",
        "keeper",
        "--mount",
        "type=volume,source=vdata,target=/data",
        &image,
        "sh",
        "-c",
        "echo run >> /data/runs; exec sleep 3600",
    ])?;
    let first = c.wait_running("keeper", 1)?[0].id.clone();
    let runs = exec_in_task(&c, &first, "wc -l < /data/runs")?;
    ensure!(runs.trim() == "1", "first task: {runs:?} runs");
    ctl_with_ok(&c, &[], &["service", "update", "--force", "keeper"], b"")?;
    let second = wait_new_task(&c, "keeper", &first)?;
    let runs = exec_in_task(&c, &second, "wc -l < /data/runs")?;
    ensure!(
        runs.trim() == "2",
        "the volume was not kept across `service update --force`: {runs:?} runs"
    );

    // volume ls: where it lives; rm refused while in use.
    let rows = c.ctl_json(["volume", "ls"])?;
    let row = rows
        .iter()
        .find(|r| cell(&r["Name"]) == "vdata")
        .with_context(|| format!("volume ls: {rows:?}"))?;
    ensure!(
        names_node(&c, &cell(&row["Node"]), NODE)?,
        "volume ls NODE: {row}"
    );
    ensure!(cell(&row["Driver"]) == "local", "volume ls DRIVER: {row}");
    let err = ctl_fails(&c, &["volume", "rm", "vdata"])?;
    ensure!(
        err.to_ascii_lowercase().contains("in use"),
        "volume rm of a volume in use: {err}"
    );

    // A bind source that does not exist is the task's error, naming it.
    let missing = "/nonexistent/shoal-bind-source";
    c.ctl_ok([
        "service",
        "create",
        "--detach",
        "--name",
        "binder",
        "--mount",
        &format!("type=bind,source={missing},target=/x"),
        &image,
        "sleep",
        "3600",
    ])?;
    wait_task_error(&c, "binder", missing)?;

    // tmpfs with a size and a mode.
    probe(
        &c,
        "scratch",
        &[
            "--mount",
            "type=tmpfs,target=/scratch,tmpfs-size=1m,tmpfs-mode=1770",
        ],
        "echo M=$(grep ' /scratch ' /proc/self/mountinfo | sed 's/.* - //')\n\
         echo MODE=$(stat -c %a /scratch)",
    )?;
    let out = probe_output(&c, "scratch")?;
    let m = out.get("M").cloned().unwrap_or_default();
    ensure!(
        m.starts_with("tmpfs") && m.contains("size=1024k"),
        "/scratch: {m:?}"
    );
    ensure!(
        out.get("MODE").map(String::as_str) == Some("1770"),
        "{out:?}"
    );

    // A new volume takes the owner of the image's directory at its target (redis' /data).
    let owned = match ServiceImage::Redis.prepare() {
        Ok(_) => {
            let redis = app_image::push_service_image_to(&c, ServiceImage::Redis)?;
            c.ctl_ok([
                "service",
                "create",
                "--detach",
                "--name",
                "owned",
                "--mount",
                "type=volume,source=rdata,target=/data",
                &redis,
            ])?;
            c.wait_running("owned", 1)?;
            let doc: Value = serde_json::from_str(&c.ctl_ok(["volume", "inspect", "rdata"])?)?;
            let mountpoint = cell(&doc[0]["Mountpoint"]);
            let meta = fs::metadata(Path::new(&mountpoint))
                .with_context(|| format!("volume rdata's Mountpoint {mountpoint:?}"))?;
            ensure!(
                meta.uid() == REDIS_UID && meta.gid() == REDIS_UID,
                "volume rdata is owned by {}:{}, the image's /data by {REDIS_UID}",
                meta.uid(),
                meta.gid()
            );
            true
        }
        Err(e) if app_image::is_unavailable(&e) => {
            eprintln!("skipping the volume owner check: {e:#}");
            false
        }
        Err(e) => return Err(e),
    };

    // Unused volumes go with rm and prune; the services never took them along.
    let mut services = vec!["keeper", "binder", "scratch"];
    if owned {
        services.push("owned");
    }
    remove_services(&c, &services)?;
    let volumes = names_of(&c, "volume")?;
    ensure!(
        volumes.contains("vdata"),
        "service rm removed a volume: {volumes:?}"
    );
    c.ctl_ok(["volume", "rm", "vdata"])?;
    let volumes = names_of(&c, "volume")?;
    ensure!(!volumes.contains("vdata"), "volume rm left it: {volumes:?}");
    if owned {
        ensure!(volumes.contains("rdata"), "volume ls: {volumes:?}");
        c.ctl_ok(["volume", "prune", "--all", "--force"])?;
        let volumes = names_of(&c, "volume")?;
        ensure!(
            !volumes.contains("rdata"),
            "volume prune left it: {volumes:?}"
        );
    }
    c.shutdown()
}

#[test]
fn templates_in_hostname_and_env() -> Result<()> {
    let c = cluster("templates")?;
    probe(
        &c,
        "tmpl",
        &[
            "--replicas",
            "2",
            "--hostname",
            "{{.Node.Hostname}}-{{.Task.Slot}}",
            "--env",
            "SVC={{.Service.Name}}",
            "--env",
            "TASK={{.Task.Name}}",
        ],
        "echo H$(hostname)=$SVC/$TASK",
    )?;
    c.wait_running("tmpl", 2)?;
    let mut lines = BTreeSet::new();
    Testbed::wait_for(DEADLINE, "both tasks' template lines", || {
        lines = shoal_tests::stack_support::service_log_lines(&c, "tmpl")?
            .into_iter()
            .filter(|l| l.starts_with('H') && l.contains('='))
            .collect();
        Ok(lines.len() >= 2)
    })?;
    for slot in [1, 2] {
        let want = format!("H{NODE}-{slot}=tmpl/tmpl.{slot}.");
        ensure!(
            lines.iter().any(|l| l.starts_with(&want)),
            "no line starting {want:?} in {lines:?}"
        );
    }
    c.shutdown()
}
