//! End-to-end scenarios on a one-host cluster (manager and agent side by side), driven through
//! shoalctl exactly as a user would, and checked against the kernel: processes, namespaces,
//! cgroups, mounts.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shoal_tests::testbed::{
    cgroups_containing, fatal, memory_limit_file, mounts_containing, netns_list, ns_of, pid_alive,
    process_start_time, stderr_of, Cluster, ContainerState, TaskRow, Testbed, DEADLINE,
};

/// A one-host cluster on its own testbed.
fn cluster(name: &str) -> Result<Cluster> {
    Cluster::start(Testbed::new(name)?, 0)
}

/// `service create --name NAME FLAGS... IMAGE COMMAND...` with the busybox image; must exit 0.
fn create(c: &Cluster, name: &str, flags: &[&str], command: &[&str]) -> Result<()> {
    let image = c.busybox_image();
    let mut args = vec!["service", "create", "--name", name];
    args.extend_from_slice(flags);
    args.push(&image);
    args.extend_from_slice(command);
    c.ctl_ok(&args)?;
    Ok(())
}

/// A task's container as the agent's runtime records it, and its pid, which must be alive.
fn container(c: &Cluster, task: &TaskRow) -> Result<(i32, ContainerState)> {
    let (_, ct) = c.container_of(&task.id)?;
    let pid = ct
        .pid
        .with_context(|| format!("task {}: no pid in state.json", task.name))?;
    ensure!(
        pid_alive(pid),
        "task {} is Running but its pid {pid} is gone",
        task.name
    );
    Ok((pid, ct))
}

fn live_containers(c: &Cluster) -> Result<usize> {
    Ok(c.containers()?
        .iter()
        .filter(|(_, ct)| ct.pid.is_some_and(pid_alive))
        .count())
}

fn ids(tasks: &[TaskRow]) -> BTreeSet<String> {
    tasks.iter().map(|t| t.id.clone()).collect()
}

// (b)
#[test]
fn replicated_service_runs_isolated_memory_limited_containers() -> Result<()> {
    let c = cluster("create")?;
    create(
        &c,
        "web",
        &["--replicas", "3", "--limit-memory", "64M"],
        &["sleep", "3600"],
    )?;

    // `service create` without --detach returns once the service converged.
    let services = c.service_ls()?;
    let web = services
        .iter()
        .find(|s| s.name == "web")
        .context("web not in service ls")?;
    ensure!(
        web.replicas == "3/3",
        "service ls says Replicas {:?}",
        web.replicas
    );
    let tasks = c.service_ps("web")?;
    let running: Vec<&TaskRow> = tasks.iter().filter(|t| t.is_running()).collect();
    ensure!(running.len() == 3, "service ps: {tasks:?}");

    let agent_pid = c.agents[0].proc().context("agent not running")?.pid() as i32;
    let mut pids = BTreeSet::new();
    for task in running {
        let (pid, ct) = container(&c, task)?;
        pids.insert(pid);
        for ns in ["pid", "mnt", "net", "uts", "ipc"] {
            ensure!(
                ns_of(pid, ns)? != ns_of(agent_pid, ns)?,
                "task {} shares the agent's {ns} namespace",
                task.name
            );
        }
        let limit_file = memory_limit_file(pid)?;
        ensure!(
            limit_file.to_string_lossy().contains(&ct.task_id),
            "task {} runs in cgroup {}, not one of its own",
            task.name,
            limit_file.display()
        );
        let limit = std::fs::read_to_string(&limit_file)
            .with_context(|| format!("reading {}", limit_file.display()))?;
        ensure!(
            limit.trim() == "67108864",
            "{}: {limit}",
            limit_file.display()
        );
    }
    ensure!(pids.len() == 3, "three tasks share containers: {pids:?}");
    c.shutdown()
}

// (c)
#[test]
fn scale_up_and_down_converges() -> Result<()> {
    let c = cluster("scale")?;
    create(&c, "web", &["--replicas", "3"], &["sleep", "3600"])?;
    c.wait_running("web", 3)?;
    for n in [5usize, 1] {
        c.ctl_ok(["service", "scale", &format!("web={n}")])?;
        c.wait_running("web", n)?;
        Testbed::wait_for(DEADLINE, &format!("{n} live containers"), || {
            Ok(live_containers(&c)? == n)
        })?;
    }
    let web = c
        .service_ls()?
        .into_iter()
        .find(|s| s.name == "web")
        .context("web gone")?;
    ensure!(
        web.replicas == "1/1",
        "service ls says Replicas {:?}",
        web.replicas
    );
    c.shutdown()
}

// (d)
#[test]
fn service_logs_are_prefixed_with_task_names() -> Result<()> {
    let c = cluster("logs")?;
    create(
        &c,
        "greet",
        &["--replicas", "2"],
        &["sh", "-c", "echo hello-$HOSTNAME; sleep 3600"],
    )?;
    let tasks = c.wait_running("greet", 2)?;
    let names: BTreeSet<String> = tasks.iter().map(|t| t.name.clone()).collect();
    let mut hello = Vec::new();
    Testbed::wait_for(DEADLINE, "a hello line from each task", || {
        let out = c.ctl_ok(["service", "logs", "greet"])?;
        hello = out
            .lines()
            .filter(|l| l.contains("hello-"))
            .map(str::to_string)
            .collect();
        Ok(hello.len() >= 2)
    })?;
    ensure!(hello.len() == 2, "expected one hello per task: {hello:?}");
    let prefixes: BTreeSet<String> = hello
        .iter()
        .filter_map(|l| names.iter().find(|n| l.starts_with(n.as_str())).cloned())
        .collect();
    ensure!(
        prefixes == names,
        "lines {hello:?} are not prefixed with the tasks {names:?}"
    );

    create(
        &c,
        "count",
        &["--replicas", "1"],
        &["sh", "-c", "echo one; echo two; echo three; sleep 3600"],
    )?;
    Testbed::wait_for(DEADLINE, "count to log three lines", || {
        Ok(c.ctl_ok(["service", "logs", "count"])?.contains("three"))
    })?;
    let tail = c.ctl_ok(["service", "logs", "--tail", "1", "count"])?;
    let lines: Vec<&str> = tail.lines().filter(|l| !l.trim().is_empty()).collect();
    ensure!(
        lines.len() == 1 && lines[0].starts_with("count.1") && lines[0].contains("three"),
        "--tail 1 printed {lines:?}"
    );
    c.shutdown()
}

/// Waits until `service` has `failed` failed tasks and nothing else, then checks that it stays so
/// (no further restart) for a few restart delays.
fn expect_failed_tasks_only(c: &Cluster, service: &str, failed: usize) -> Result<()> {
    let settled = |tasks: &[TaskRow]| {
        tasks.len() == failed && tasks.iter().all(|t| t.is_failed() && !t.error.is_empty())
    };
    let mut tasks = Vec::new();
    Testbed::wait_for(
        DEADLINE,
        &format!("{service}: {failed} failed tasks"),
        || {
            tasks = c.service_ps(service)?;
            if tasks.len() > failed {
                return Err(fatal(format!(
                    "more tasks than the policy allows: {tasks:?}"
                )));
            }
            Ok(settled(&tasks))
        },
    )?;
    Testbed::holds_for(
        Duration::from_secs(6),
        &format!("{service} is not restarted again"),
        || Ok(settled(&c.service_ps(service)?)),
    )
}

// (e)
#[test]
fn on_failure_restarts_stop_after_max_attempts() -> Result<()> {
    let c = cluster("onfail")?;
    create(
        &c,
        "crash",
        &[
            "--restart-condition",
            "on-failure",
            "--restart-max-attempts",
            "2",
            "--restart-delay",
            "1s",
            "--detach",
        ],
        &["sh", "-c", "exit 3"],
    )?;
    // The first run and two restarts.
    expect_failed_tasks_only(&c, "crash", 3)?;
    c.shutdown()
}

// (e)
#[test]
fn restart_condition_none_fails_once() -> Result<()> {
    let c = cluster("norestart")?;
    create(
        &c,
        "crash",
        &[
            "--restart-condition",
            "none",
            "--restart-delay",
            "1s",
            "--detach",
        ],
        &["sh", "-c", "exit 3"],
    )?;
    expect_failed_tasks_only(&c, "crash", 1)?;
    c.shutdown()
}

// (f)
#[test]
fn service_rm_leaves_nothing_behind() -> Result<()> {
    let c = cluster("rm")?;
    create(
        &c,
        "web",
        &["--replicas", "2", "--limit-memory", "64M"],
        &["sleep", "3600"],
    )?;
    struct Left {
        task_id: String,
        pid: i32,
        cgroup: PathBuf,
        dir: PathBuf,
    }
    let mut left = Vec::new();
    for task in c.wait_running("web", 2)? {
        let (pid, ct) = container(&c, &task)?;
        let limit = memory_limit_file(pid)?;
        let cgroup = limit
            .parent()
            .context("cgroup file without a dir")?
            .to_path_buf();
        left.push(Left {
            task_id: ct.task_id,
            pid,
            cgroup,
            dir: ct.dir,
        });
    }

    c.ctl_ok(["service", "rm", "web"])?;
    ensure!(
        !c.service_ls()?.iter().any(|s| s.name == "web"),
        "web still in service ls after rm"
    );
    Testbed::wait_for(DEADLINE, "every trace of web's tasks to go", || {
        for l in &left {
            let traces = [
                (pid_alive(l.pid), "container process"),
                (l.cgroup.exists(), "cgroup dir"),
                (
                    !cgroups_containing(&l.task_id).is_empty(),
                    "cgroup named after the task",
                ),
                (!mounts_containing(&l.task_id)?.is_empty(), "mount"),
                (l.dir.exists(), "runtime/rootfs dir"),
                (
                    netns_list()?.iter().any(|n| n.contains(&l.task_id)),
                    "network namespace",
                ),
            ];
            if let Some((_, what)) = traces.iter().find(|(present, _)| *present) {
                bail!("task {}: {what} still there", l.task_id);
            }
        }
        Ok(true)
    })?;
    c.shutdown()
}

// (g)
#[test]
fn agent_restart_readopts_running_containers() -> Result<()> {
    let mut c = cluster("readopt")?;
    create(&c, "web", &["--replicas", "2"], &["sleep", "3600"])?;
    let before = c.wait_running("web", 2)?;
    let history_len = c.service_ps("web")?.len();
    let mut pids = Vec::new();
    for task in &before {
        let pid = container(&c, task)?.0;
        pids.push((pid, process_start_time(pid)?));
    }
    let same_containers = || -> Result<bool> {
        for (pid, start) in &pids {
            if !pid_alive(*pid) || process_start_time(*pid)? != *start {
                bail!("container pid {pid} is gone or was replaced");
            }
        }
        Ok(true)
    };

    c.kill_agent(0)?;
    same_containers().context("after kill -9 of the agent")?;
    c.restart_agent(0)?;
    c.wait_nodes_ready(1)?;
    // Long enough for the restarted agent to register and report, and for the manager to react.
    Testbed::holds_for(
        Duration::from_secs(10),
        "the same containers and tasks keep running",
        || {
            same_containers()?;
            let tasks = c.service_ps("web")?;
            let running: Vec<TaskRow> = tasks
                .iter()
                .filter(|t| t.desired_running())
                .cloned()
                .collect();
            Ok(tasks.len() == history_len
                && ids(&running) == ids(&before)
                && running.iter().all(|t| t.is_running()))
        },
    )?;
    c.shutdown()
}

// (h)
#[test]
fn manager_crash_keeps_acknowledged_writes() -> Result<()> {
    let mut c = cluster("mgrcrash")?;
    create(
        &c,
        "durable",
        &["--replicas", "2", "--detach"],
        &["sleep", "3600"],
    )?;
    // The create was acknowledged: kill the manager before it can do anything else.
    c.kill_manager()?;
    c.start_manager()?;
    ensure!(
        c.service_ls()?.iter().any(|s| s.name == "durable"),
        "an acknowledged service create was lost in a manager crash"
    );
    c.wait_running("durable", 2)?;
    Testbed::wait_for(DEADLINE, "service ls to show 2/2", || {
        Ok(c.service_ls()?
            .iter()
            .any(|s| s.name == "durable" && s.replicas == "2/2"))
    })?;
    c.shutdown()
}

// (i)
#[test]
fn bad_input_is_refused_with_one_line_naming_the_field() -> Result<()> {
    let c = cluster("badinput")?;
    create(
        &c,
        "web",
        &["--replicas", "1", "--detach"],
        &["sleep", "3600"],
    )?;
    let listing = || -> Result<BTreeSet<(String, String)>> {
        Ok(c.service_ls()?
            .into_iter()
            .map(|s| (s.id, s.name))
            .collect())
    };
    let before = listing()?;
    let image = c.busybox_image();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "service",
                "create",
                "--name",
                "neg",
                "--replicas",
                "-1",
                &image,
            ],
            "replicas",
        ),
        (
            vec![
                "service",
                "create",
                "--name",
                "mem",
                "--limit-memory",
                "lots",
                &image,
            ],
            "memory",
        ),
        (
            vec![
                "service",
                "create",
                "--name",
                "cond",
                "--restart-condition",
                "sometimes",
                &image,
            ],
            "condition",
        ),
        (
            vec![
                "service", "create", "--name", "web", &image, "sleep", "3600",
            ],
            "web",
        ),
        (vec!["service", "rm", "nosuch"], "nosuch"),
    ];
    let mut failures = Vec::new();
    for (args, needle) in &cases {
        let out = c.ctl(args)?;
        let stderr = stderr_of(&out);
        let lines: Vec<&str> = stderr.trim().lines().collect();
        if out.status.code() != Some(1)
            || lines.len() != 1
            || !lines[0].to_ascii_lowercase().contains(needle)
        {
            failures.push(format!(
                "`shoalctl {}`: exit {:?}, stderr {stderr:?} (want exit 1 and one line naming {needle:?})",
                args.join(" "),
                out.status.code()
            ));
        }
    }
    let after = listing()?;
    if after != before {
        failures.push(format!("service ls changed: {before:?} -> {after:?}"));
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    c.shutdown()
}

// (j)
#[test]
fn killed_container_is_replaced() -> Result<()> {
    let c = cluster("replace")?;
    create(
        &c,
        "phoenix",
        &[
            "--replicas",
            "1",
            "--restart-condition",
            "any",
            "--restart-delay",
            "1s",
        ],
        &["sleep", "3600"],
    )?;
    let old = c.wait_running("phoenix", 1)?.remove(0);
    let old_pid = container(&c, &old)?.0;
    kill(Pid::from_raw(old_pid), Signal::SIGKILL)?;

    Testbed::wait_for(DEADLINE, "a new phoenix task Running", || {
        let tasks = c.service_ps("phoenix")?;
        let replaced = tasks.iter().any(|t| t.id == old.id && !t.is_running());
        let new = tasks
            .iter()
            .filter(|t| t.id != old.id && t.desired_running() && t.is_running())
            .count();
        Ok(replaced && new == 1)
    })?;
    let new = c.wait_running("phoenix", 1)?.remove(0);
    let new_pid = container(&c, &new)?.0;
    ensure!(
        new_pid != old_pid,
        "the new task reuses the killed container"
    );
    c.shutdown()
}
