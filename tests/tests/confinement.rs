//! Confinement checked from inside real containers: what a root process in a default container
//! can and cannot do (devices, mount, user namespaces, capabilities, seccomp, /proc and /sys), and
//! every knob of `service create` that loosens or tightens it, each seen by the container itself.
//!
//! Each scenario runs a shell script as the task's command; the script prints `KEY=VALUE` lines and
//! `DONE`, and the test reads them back through `shoalctl service logs`.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use anyhow::{ensure, Context, Result};
use shoal_tests::testbed::{check_output, Cluster, Testbed, DEADLINE};

fn cluster(name: &str) -> Result<Cluster> {
    Cluster::start(Testbed::new(name)?, 0)
}

/// Runs `script` as a one-replica service with `flags`, waits for its `DONE` line and returns its
/// `KEY=VALUE` lines.
fn probe(
    c: &Cluster,
    name: &str,
    image: &str,
    flags: &[&str],
    script: &str,
) -> Result<BTreeMap<String, String>> {
    let mut args = vec!["service", "create", "--name", name, "--detach"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[image, "sh", "-c"]);
    let script = format!("{script}\necho DONE\nexec sleep 3600");
    args.push(&script);
    c.ctl_ok(&args)?;
    let mut out = String::new();
    Testbed::wait_for(DEADLINE, &format!("{name}: the probe's DONE line"), || {
        // Each line is `TASK@NODE    | LINE`.
        out = c
            .ctl_ok(["service", "logs", name])?
            .lines()
            .map(|l| l.split_once("| ").map_or(l, |(_, line)| line))
            .collect::<Vec<_>>()
            .join("\n");
        if !out.lines().any(|l| l.trim_end() == "DONE") {
            // A task that failed to start says why: no point in waiting the whole deadline.
            let failed: Vec<String> = c
                .service_ps(name)?
                .into_iter()
                .filter(|t| !t.error.is_empty())
                .map(|t| t.error)
                .collect();
            ensure!(failed.is_empty(), "{name}: task failed: {failed:?}");
            return Ok(false);
        }
        Ok(true)
    })?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

fn expect(got: &BTreeMap<String, String>, key: &str, want: &str) -> Result<()> {
    let value = got
        .get(key)
        .with_context(|| format!("no {key} line in {got:?}"))?;
    ensure!(
        value == want,
        "{key}: got {value:?}, want {want:?} (all: {got:?})"
    );
    Ok(())
}

fn expect_prefix(got: &BTreeMap<String, String>, key: &str, want: &str) -> Result<()> {
    let value = got
        .get(key)
        .with_context(|| format!("no {key} line in {got:?}"))?;
    ensure!(
        value.starts_with(want),
        "{key}: got {value:?}, want {want:?}… (all: {got:?})"
    );
    Ok(())
}

/// `KEY=ok` when `cmd` succeeds, else `KEY=denied:<its error>`.
fn attempt(key: &str, cmd: &str) -> String {
    format!("if {cmd} >/dev/null 2>/dev/shm/err; then echo {key}=ok; else echo \"{key}=denied:$(head -n1 /dev/shm/err)\"; fi\n")
}

/// The status lines of the probe's own process.
const STATUS: &str = "for f in CapEff CapBnd Seccomp NoNewPrivs; do echo \"$f=$(grep \"^$f:\" /proc/self/status | cut -f2)\"; done\n";

/// Major and minor numbers of the block device holding the host's root filesystem (or of any
/// block device the host has): the disk a container must not read.
fn host_disk() -> Result<(u64, u64)> {
    let dev = std::fs::metadata("/")?.dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    if major != 0 {
        return Ok((major, minor));
    }
    for entry in std::fs::read_dir("/sys/dev/block")?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((a, b)) = name.split_once(':') {
            return Ok((a.parse()?, b.parse()?));
        }
    }
    anyhow::bail!("this host has no block device to test with")
}

#[test]
fn a_default_container_cannot_reach_the_host() -> Result<()> {
    let c = cluster("confine")?;
    let (major, minor) = host_disk()?;
    // An image that ships a node of the host's disk.
    let image = format!("{}/shoal/shipped:latest", c.registry_addr());
    let out = c.registry.run(
        &c.bins.fixture,
        [
            "push-shipped-device",
            "--registry",
            &c.registry_addr(),
            "--image",
            "shoal/shipped:latest",
            "--device",
            &format!("{major}:{minor}"),
        ],
    )?;
    check_output(&out, "shoal-fixture push-shipped-device")?;

    let mut script = String::from(STATUS);
    script.push_str(&format!(
        "mknod /tmp/disk b {major} {minor} && echo MKNOD=ok\n"
    ));
    script.push_str(&attempt("READ_MKNOD_DISK", "head -c 512 /tmp/disk"));
    script.push_str(&attempt("READ_SHIPPED_DISK", "head -c 512 /shipped/disk"));
    script.push_str(&attempt(
        "MOUNT",
        "sh -c 'mkdir -p /tmp/m && mount -t tmpfs none /tmp/m'",
    ));
    script.push_str(&attempt("UNSHARE_USER", "unshare -U true"));
    script.push_str(&attempt("UNSHARE_MOUNT", "unshare -m true"));
    script.push_str(&attempt("WRITE_SYS", "touch /sys/kernel/shoal"));
    script.push_str(&attempt(
        "WRITE_PROC_SYS",
        "sh -c 'echo 1 > /proc/sys/vm/swappiness'",
    ));
    script.push_str(&attempt("DEV_NULL", "sh -c 'echo x > /dev/null'"));
    script.push_str(&attempt("DEV_URANDOM", "head -c 16 /dev/urandom"));
    // Masked as runc does (kcore and sched_debug do not exist on every kernel; these do).
    script.push_str("echo TIMER_LIST_SIZE=$( (wc -c < /proc/timer_list) 2>&1 )\n");
    script.push_str("echo KEYS_SIZE=$( (wc -c < /proc/keys) 2>&1 )\n");
    script.push_str("echo DEV=$(ls /dev | tr '\\n' ' ')\n");
    script.push_str("echo MQUEUE=$(grep -c ' /dev/mqueue ' /proc/self/mountinfo)\n");
    let got = probe(&c, "probe", &image, &[], &script)?;

    expect(&got, "CapEff", "00000000a80425fb")?;
    expect(&got, "CapBnd", "00000000a80425fb")?;
    expect(&got, "Seccomp", "2")?;
    expect(&got, "NoNewPrivs", "0")?;
    // Docker lets root in a container make nodes (CAP_MKNOD), never open them.
    expect(&got, "MKNOD", "ok")?;
    expect_prefix(&got, "READ_MKNOD_DISK", "denied:")?;
    expect_prefix(&got, "READ_SHIPPED_DISK", "denied:")?;
    ensure!(
        got["READ_SHIPPED_DISK"].contains("not permitted"),
        "the shipped node is refused by the device cgroup (EPERM): {got:?}"
    );
    expect_prefix(&got, "MOUNT", "denied:")?;
    expect_prefix(&got, "UNSHARE_USER", "denied:")?;
    expect_prefix(&got, "UNSHARE_MOUNT", "denied:")?;
    expect_prefix(&got, "WRITE_SYS", "denied:")?;
    expect_prefix(&got, "WRITE_PROC_SYS", "denied:")?;
    expect(&got, "DEV_NULL", "ok")?;
    expect(&got, "DEV_URANDOM", "ok")?;
    expect(&got, "TIMER_LIST_SIZE", "0")?;
    expect(&got, "KEYS_SIZE", "0")?;
    expect(&got, "MQUEUE", "1")?;
    let devs: Vec<&str> = got["DEV"].split_whitespace().collect();
    for name in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "mqueue",
    ] {
        ensure!(devs.contains(&name), "/dev lacks {name}: {devs:?}");
    }
    for name in &devs {
        ensure!(
            [
                "null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "mqueue",
                "fd", "stdin", "stdout", "stderr"
            ]
            .contains(name),
            "/dev has {name}, which docker's default does not give: {devs:?}"
        );
    }
    c.shutdown()
}

#[test]
fn every_knob_is_seen_from_inside() -> Result<()> {
    let c = cluster("knobs")?;
    let image = c.busybox_image();

    // Tightened: no capabilities but one, no new privileges, nobody with an extra group, limits,
    // a namespaced sysctl, a read-only root, a host device, hostname and workdir.
    let mut script = String::from(STATUS);
    script.push_str("echo UID=$(id -u)\necho GROUPS=$(id -G)\n");
    script.push_str("echo NOFILE=$(ulimit -n)\necho NOFILE_HARD=$(ulimit -Hn)\n");
    script.push_str("echo SOMAXCONN=$(cat /proc/sys/net/core/somaxconn)\n");
    script.push_str(&attempt("WRITE_ROOT", "touch /shoal-ro"));
    script.push_str(&attempt("WRITE_SHM", "touch /dev/shm/ok"));
    script.push_str("echo HOSTNAME=$(hostname)\necho PWD=$(pwd)\n");
    let tight = probe(
        &c,
        "tight",
        &image,
        &[
            "--cap-drop",
            "ALL",
            "--cap-add",
            "NET_BIND_SERVICE",
            "--security-opt",
            "no-new-privileges",
            "--user",
            "65534:65534",
            "--group-add",
            "4242",
            "--ulimit",
            "nofile=512:1024",
            "--sysctl",
            "net.core.somaxconn=1234",
            "--read-only",
            "--hostname",
            "knob-host",
            "--workdir",
            "/work",
        ],
        &script,
    )?;
    // A non-root user keeps no effective capability; the bounding set is what was asked.
    expect(&tight, "CapEff", "0000000000000000")?;
    expect(&tight, "CapBnd", "0000000000000400")?;
    expect(&tight, "NoNewPrivs", "1")?;
    expect(&tight, "Seccomp", "2")?;
    expect(&tight, "UID", "65534")?;
    let groups: Vec<&str> = tight["GROUPS"].split_whitespace().collect();
    ensure!(
        groups.contains(&"65534") && groups.contains(&"4242"),
        "groups: {groups:?}"
    );
    expect(&tight, "NOFILE", "512")?;
    expect(&tight, "NOFILE_HARD", "1024")?;
    expect(&tight, "SOMAXCONN", "1234")?;
    expect_prefix(&tight, "WRITE_ROOT", "denied:")?;
    expect(&tight, "WRITE_SHM", "ok")?;
    expect(&tight, "HOSTNAME", "knob-host")?;
    expect(&tight, "PWD", "/work")?;

    // Loosened: privileged gets every capability, no filter, and may mount.
    let mut script = String::from(STATUS);
    script.push_str(&attempt(
        "MOUNT",
        "sh -c 'mkdir -p /tmp/m && mount -t tmpfs none /tmp/m'",
    ));
    // Every capability the agent has (its bounding set, which this test process shares).
    let all = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| v.trim().to_string())
        .context("no CapBnd in /proc/self/status")?;
    let privileged = probe(&c, "loose", &image, &["--privileged"], &script)?;
    expect(&privileged, "CapEff", &all)?;
    expect(&privileged, "Seccomp", "0")?;
    expect(&privileged, "MOUNT", "ok")?;

    // An added capability is effective for root; unconfined seccomp leaves no filter; a host
    // device is there and opens (/dev/net/tun: not in docker's default list).
    let mut script = String::from(STATUS);
    script.push_str(&attempt("UNSHARE_MOUNT", "unshare -m true"));
    script.push_str(&attempt("OPEN_TUN", "sh -c 'exec 3<>/dev/net/tun'"));
    let admin = probe(
        &c,
        "admin",
        &image,
        &[
            "--cap-add",
            "SYS_ADMIN",
            "--security-opt",
            "seccomp=unconfined",
            "--device",
            "/dev/net/tun",
        ],
        &script,
    )?;
    expect(&admin, "CapEff", "00000000a82425fb")?;
    expect(&admin, "Seccomp", "0")?;
    expect(&admin, "UNSHARE_MOUNT", "ok")?;
    expect(&admin, "OPEN_TUN", "ok")?;

    // A custom profile (docker's format) read by shoalctl: mkdir refused, the rest allowed.
    let profile = c.testbed().dir().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    )?;
    let mut script = String::from(STATUS);
    script.push_str(&attempt("MKDIR", "mkdir /tmp/shoal-dir"));
    script.push_str(&attempt("TOUCH", "touch /tmp/shoal-file"));
    let custom = probe(
        &c,
        "custom",
        &image,
        &["--security-opt", &format!("seccomp={}", profile.display())],
        &script,
    )?;
    expect(&custom, "Seccomp", "2")?;
    expect_prefix(&custom, "MKDIR", "denied:")?;
    expect(&custom, "TOUCH", "ok")?;

    // --init: PID 1 is the init, the command its child; --entrypoint replaces the image's.
    let script =
        "echo PID1=$(cat /proc/1/comm)\necho SELF_PARENT=$(grep PPid /proc/$$/status | cut -f2)\n";
    let init = probe(&c, "init", &image, &["--init"], script)?;
    expect(&init, "PID1", "docker-init")?;
    expect(&init, "SELF_PARENT", "1")?;
    c.shutdown()
}

#[test]
fn bad_knobs_are_refused_naming_the_flag() -> Result<()> {
    let c = cluster("badknobs")?;
    let image = c.busybox_image();
    let cases: &[(&[&str], &str)] = &[
        (&["--cap-add", "FLY"], "--cap-add"),
        (&["--sysctl", "kernel.panic=1"], "kernel.panic"),
        (&["--ulimit", "nofile=2048:1024"], "--ulimit"),
        (
            &["--security-opt", "seccomp=/nonexistent/profile.json"],
            "/nonexistent/profile.json",
        ),
        (&["--device", "/dev/null:/dev/x:q"], "--device"),
        (&["--stop-signal", "SIGNOPE"], "--stop-signal"),
    ];
    for (flags, needle) in cases {
        let mut args = vec!["service", "create", "--name", "bad", "--detach"];
        args.extend_from_slice(flags);
        args.push(&image);
        let out = c.ctl(&args)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "{flags:?} was accepted");
        ensure!(
            stderr.contains(needle),
            "{flags:?}: error does not name {needle}: {stderr}"
        );
        ensure!(
            stderr.trim().lines().count() == 1,
            "{flags:?}: not a one-line error: {stderr}"
        );
    }
    // A device the node does not have is a task error naming the node and the path.
    c.ctl_ok([
        "service",
        "create",
        "--name",
        "nodev",
        "--detach",
        "--device",
        "/dev/shoal-nope",
        &image,
        "sleep",
        "60",
    ])?;
    Testbed::wait_for(DEADLINE, "nodev's task to fail naming the device", || {
        Ok(c.service_ps("nodev")?
            .iter()
            .any(|t| t.error.contains("/dev/shoal-nope")))
    })?;
    c.shutdown()
}

#[test]
fn the_stop_signal_reaches_the_container() -> Result<()> {
    let c = cluster("stopsig")?;
    let image = c.busybox_image();
    let script = "trap 'echo GOT_USR1; exit 0' USR1\necho READY\nwhile true; do sleep 1; done";
    c.ctl_ok([
        "service",
        "create",
        "--name",
        "sig",
        "--stop-signal",
        "SIGUSR1",
        &image,
        "sh",
        "-c",
        script,
    ])?;
    let tasks = c.wait_running("sig", 1)?;
    let (agent, container) = c.container_of(&tasks[0].id)?;
    let log = c.agents[agent]
        .data_dir
        .join("runtime")
        .join(&container.task_id)
        .join("container.log");
    Testbed::wait_for(DEADLINE, "READY in the log", || {
        Ok(std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("READY"))
    })?;
    // Scaling to 0 stops the task; its container and log stay until the task is removed.
    c.ctl_ok(["service", "scale", "sig=0"])?;
    Testbed::wait_for(DEADLINE, "GOT_USR1 in the log", || {
        Ok(std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("GOT_USR1"))
    })?;
    c.shutdown()
}
