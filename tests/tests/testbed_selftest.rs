//! The testbed itself, with no Shoal binary: hosts reach each other through the switch, a partition
//! cuts a host off and a heal restores it, processes run in the host's network namespace only, and
//! shutdown leaves no process, namespace, mount or directory behind.

use std::time::Duration;

use anyhow::{ensure, Result};
use shoal_tests::testbed::{
    fatal, mounts_containing, netns_inode, netns_list, ns_of, pid_alive, Host, Testbed,
};

/// One ping from `from` to `to`, answered within a second.
fn ping(from: &Host, to: &Host) -> Result<bool> {
    let out = from.run_timeout(
        "busybox",
        ["ping", "-c", "1", "-W", "1", &to.ip().to_string()],
        Duration::from_secs(5),
    )?;
    Ok(out.status.success())
}

#[test]
fn hosts_ping_partition_heal_and_cleanup() -> Result<()> {
    let tb = Testbed::new("selftest")?;
    let a = tb.add_host("a")?;
    let b = tb.add_host("b")?;
    ensure!(a.ip() != b.ip(), "hosts share an address");

    Testbed::wait_for(Duration::from_secs(10), "a to ping b", || ping(&a, &b))?;
    ensure!(ping(&b, &a)?, "b cannot ping a");

    b.partition()?;
    ensure!(!ping(&a, &b)?, "a still reaches b through a partition");
    b.heal()?;
    Testbed::wait_for(Duration::from_secs(10), "a to reach b after heal", || {
        ping(&a, &b)
    })?;

    // A spawned process lives in the host's netns but still shares our mount namespace.
    let sleeper = a.spawn("busybox", ["sleep", "600"], "sleeper.log")?;
    let pid = sleeper.pid() as i32;
    let me = std::process::id() as i32;
    ensure!(
        ns_of(pid, "net")? == format!("net:[{}]", netns_inode(a.netns())?),
        "not in a's netns"
    );
    ensure!(
        ns_of(pid, "mnt")? == ns_of(me, "mnt")?,
        "spawn switched the mount namespace"
    );
    ensure!(
        ns_of(pid, "net")? != ns_of(me, "net")?,
        "spawn stayed in the root netns"
    );

    // A mount under the testbed dir (as an agent's overlays would be) must be removed too.
    let mnt = tb.dir().join("a-mount");
    std::fs::create_dir_all(&mnt)?;
    nix::mount::mount(
        Some("tmpfs"),
        &mnt,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )?;

    let prefix = tb.prefix().to_string();
    let dir = tb.dir().to_path_buf();
    tb.shutdown()?;

    ensure!(!pid_alive(pid), "spawned process survived shutdown");
    let left: Vec<String> = netns_list()?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    ensure!(left.is_empty(), "namespaces left: {left:?}");
    ensure!(
        mounts_containing(&dir.to_string_lossy())?.is_empty(),
        "mounts left"
    );
    ensure!(!dir.exists(), "testbed dir left: {}", dir.display());
    Ok(())
}

#[test]
fn kill_all_and_drop_clean_up() -> Result<()> {
    let tb = Testbed::new("selftest-drop")?;
    let a = tb.add_host("a")?;
    let p1 = a.spawn("busybox", ["sleep", "600"], "s1.log")?;
    let p2 = a.spawn("busybox", ["sleep", "600"], "s2.log")?;
    ensure!(p1.is_running() && p2.is_running(), "sleepers did not start");
    a.kill_all()?;
    ensure!(
        !p1.is_running() && !p2.is_running(),
        "kill_all left a process"
    );

    // Drop (not shutdown) cleans up as well, including processes still running.
    let p3 = a.spawn("busybox", ["sleep", "600"], "s3.log")?;
    let pid = p3.pid() as i32;
    let prefix = tb.prefix().to_string();
    let dir = tb.dir().to_path_buf();
    drop(tb);
    ensure!(!pid_alive(pid), "process survived drop");
    ensure!(
        !netns_list()?.iter().any(|n| n.starts_with(&prefix)),
        "namespaces survived drop"
    );
    ensure!(!dir.exists(), "dir survived drop");
    Ok(())
}

#[test]
fn run_times_out_and_reports() -> Result<()> {
    let tb = Testbed::new("selftest-run")?;
    let a = tb.add_host("a")?;
    let out = a.run("busybox", ["sh", "-c", "echo out; echo err >&2; exit 3"])?;
    ensure!(
        out.status.code() == Some(3),
        "exit code {:?}",
        out.status.code()
    );
    ensure!(
        out.stdout == b"out\n" && out.stderr == b"err\n",
        "output mixed up"
    );
    let err = match a.run_timeout("busybox", ["sleep", "30"], Duration::from_millis(300)) {
        Ok(_) => anyhow::bail!("a 30 s sleep finished within 300 ms"),
        Err(e) => e,
    };
    ensure!(
        format!("{err:#}").contains("killed"),
        "unexpected error: {err:#}"
    );
    let waited = Testbed::wait_for(Duration::from_millis(300), "never", || Ok(false));
    ensure!(waited.is_err(), "wait_for did not time out");
    let start = std::time::Instant::now();
    let aborted = Testbed::wait_for(Duration::from_secs(30), "never", || Err(fatal("gone")));
    ensure!(
        aborted.is_err() && start.elapsed() < Duration::from_secs(5),
        "Fatal did not stop wait_for"
    );
    tb.shutdown()
}
