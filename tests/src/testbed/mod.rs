//! The multi-host testbed: each host is a network namespace wired to a "switch" namespace holding a
//! bridge, and real Shoal processes run inside the hosts.
//!
//! Everything a testbed creates lives in its own namespaces (the switch, the hosts) and under its own
//! directory, so parallel testbeds never see each other and cleanup never has to guess:
//!
//! ```text
//!  switch netns "<prefix>-sw": br0 ── v1 ── eth0 in "<prefix>-reg" 10.X.0.1/24
//!                                  ├─ v2 ── eth0 in "<prefix>-mgr" 10.X.0.2/24
//!                                  └─ v3 ── eth0 in "<prefix>-w1"  10.X.0.3/24
//! ```
//!
//! Processes are started inside a host's network namespace only (`setns(CLONE_NEWNET)` between fork
//! and exec), never with `ip netns exec`, which would also give them a private mount namespace and hide
//! the overlay mounts an agent makes. They get `PR_SET_PDEATHSIG(SIGKILL)`, so a test process killed by
//! a timeout takes its managers and agents with it; whatever survives that (containers, namespaces,
//! mounts) is reaped by the next testbed created on the machine.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

mod cleanup;
mod cluster;
mod host;
mod inspect;
mod proc;
mod rows;

use cleanup::*;
pub use cluster::*;
pub use host::*;
pub use inspect::*;
pub use proc::*;
pub use rows::*;

/// How long a scenario waits for anything to converge; CI machines are slow.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// How long `Host::run` lets a command run before killing it.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(90);
/// The port the test registry listens on, inside the registry host.
pub const REGISTRY_PORT: u16 = 5000;
/// The port managers listen on (the contract's default).
pub const MANAGER_PORT: u16 = 4242;

const POLL: Duration = Duration::from_millis(100);
const NETNS_DIR: &str = "/run/netns";
const PREFIX_TAG: &str = "sb";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// An error that ends `Testbed::wait_for` at once instead of counting as "not yet" (e.g. the
/// process being waited for has exited).
#[derive(Debug)]
pub struct Fatal(pub String);

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fatal {}

/// Fails a `wait_for` check at once with `msg`.
pub fn fatal(msg: impl Into<String>) -> anyhow::Error {
    Fatal(msg.into()).into()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock must not stop cleanup from running.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Testbed
// ---------------------------------------------------------------------------------------------

/// A set of hosts (network namespaces) on one switch, with everything they run; `Drop` removes it all.
pub struct Testbed {
    prefix: String,
    dir: PathBuf,
    subnet: u8,
    switch_ns: String,
    hosts: Mutex<Vec<Host>>,
    procs: Arc<Mutex<Vec<Proc>>>,
    cleaned: bool,
}

impl Testbed {
    /// Creates an empty testbed: a unique prefix, its directory and the switch namespace with `br0`.
    pub fn new(name_hint: &str) -> Result<Testbed> {
        if !nix::unistd::geteuid().is_root() {
            bail!("the testbed needs root (it creates network namespaces); run the tests as root");
        }
        which("ip").context("the testbed needs iproute2's `ip`")?;
        reap_stale();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let prefix = format!("{PREFIX_TAG}{pid}x{n}");
        // Each testbed's switch is private, so overlapping subnets could not meet; a distinct /24 per
        // testbed still makes logs unambiguous. 10.88/16 is the agents' container bridge: stay clear.
        let subnet = 100 + ((pid.wrapping_mul(7).wrapping_add(n)) % 100) as u8;
        let dir = testbed_root().join(&prefix);
        fs::create_dir_all(dir.join("logs"))
            .with_context(|| format!("creating testbed dir {}", dir.display()))?;
        fs::write(dir.join("NAME"), format!("{name_hint}\n"))?;
        let tb = Testbed {
            switch_ns: format!("{prefix}-sw"),
            prefix,
            dir,
            subnet,
            hosts: Mutex::new(Vec::new()),
            procs: Arc::new(Mutex::new(Vec::new())),
            cleaned: false,
        };
        ip(&["netns", "add", &tb.switch_ns])?;
        ip(&["-n", &tb.switch_ns, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &tb.switch_ns, "link", "set", "br0", "up"])?;
        Ok(tb)
    }

    /// The prefix of every name this testbed creates (`sb<pid>x<n>`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The testbed's directory: logs, data dirs; removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory holding the processes' log files.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// Adds a host: netns `<prefix>-<name>`, `eth0` = 10.X.0.N/24 plugged into the switch, `lo` up.
    pub fn add_host(&self, name: &str) -> Result<Host> {
        let mut hosts = lock(&self.hosts);
        if hosts.iter().any(|h| h.name == name) {
            bail!("testbed {}: host {name} already exists", self.prefix);
        }
        let n = hosts.len() + 1;
        if n > 250 {
            bail!("testbed {}: at most 250 hosts", self.prefix);
        }
        let netns = format!("{}-{name}", self.prefix);
        let port = format!("v{n}");
        let addr = Ipv4Addr::new(10, self.subnet, 0, n as u8);
        ip(&["netns", "add", &netns])?;
        // Created straight inside the switch namespace, peer straight inside the host: no name ever
        // appears in the root namespace, so parallel testbeds cannot collide on interface names.
        ip(&[
            "-n",
            &self.switch_ns,
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &netns,
        ])?;
        ip(&[
            "-n",
            &self.switch_ns,
            "link",
            "set",
            &port,
            "master",
            "br0",
            "up",
        ])?;
        ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
        let host = Host {
            name: name.to_string(),
            netns,
            ip: addr,
            switch_ns: self.switch_ns.clone(),
            switch_port: port,
            dir: self.dir.clone(),
            procs: self.procs.clone(),
        };
        hosts.push(host.clone());
        Ok(host)
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> Result<Host> {
        lock(&self.hosts)
            .iter()
            .find(|h| h.name == name)
            .cloned()
            .ok_or_else(|| anyhow!("testbed {}: no host {name}", self.prefix))
    }

    /// Polls `check` until it returns `Ok(true)`; after `timeout`, fails naming `what` and the last
    /// error `check` returned (errors count as "not yet": the thing may simply not be up), except a
    /// `Fatal` one, which fails at once.
    pub fn wait_for(
        timeout: Duration,
        what: &str,
        mut check: impl FnMut() -> Result<bool>,
    ) -> Result<()> {
        let start = Instant::now();
        let mut last_err = None;
        loop {
            match check() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) if e.downcast_ref::<Fatal>().is_some() => {
                    return Err(e.context(format!("while waiting for {what}")));
                }
                Err(e) => last_err = Some(e),
            }
            if start.elapsed() >= timeout {
                return Err(match last_err {
                    Some(e) => e.context(format!("timed out after {timeout:?} waiting for {what}")),
                    None => anyhow!("timed out after {timeout:?} waiting for {what}"),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Checks that `check` stays `Ok(true)` during the whole of `period` (for "and nothing more
    /// happens" assertions); fails at the first sample that is false or an error.
    pub fn holds_for(
        period: Duration,
        what: &str,
        mut check: impl FnMut() -> Result<bool>,
    ) -> Result<()> {
        let start = Instant::now();
        loop {
            if !check().with_context(|| format!("checking that {what}"))? {
                bail!("{what}: stopped holding after {:?}", start.elapsed());
            }
            if start.elapsed() >= period {
                return Ok(());
            }
            std::thread::sleep(POLL * 2);
        }
    }

    /// Removes everything now and fails if anything was left behind (Drop does the same, reporting
    /// on stderr, after printing the tail of every log).
    pub fn shutdown(mut self) -> Result<()> {
        self.cleaned = true;
        let problems = self.cleanup();
        if problems.is_empty() {
            Ok(())
        } else {
            bail!(
                "testbed {} left things behind: {}",
                self.prefix,
                problems.join("; ")
            )
        }
    }

    fn cleanup(&self) -> Vec<String> {
        let procs = lock(&self.procs).clone();
        cleanup(&self.prefix, &self.dir, &procs)
    }

    /// Prints the last lines of every log, so a failed scenario shows what its processes said.
    fn dump_logs(&self) {
        let Ok(entries) = fs::read_dir(self.log_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(text) = fs::read_to_string(entry.path()) else {
                continue;
            };
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "----- {} (last {} lines) -----",
                entry.path().display(),
                tail.len()
            );
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // Scenarios end with `shutdown()`; getting here means the test failed (an error returned or
        // a panic), so show what the processes said. Test output is only printed for failures.
        self.dump_logs();
        let problems = self.cleanup();
        if !problems.is_empty() {
            eprintln!("testbed {} cleanup: {}", self.prefix, problems.join("; "));
        }
    }
}

fn testbed_root() -> PathBuf {
    std::env::var_os("SHOAL_TESTBED_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("shoal-testbed"))
}

/// Runs `ip ARGS` in the root namespace (only ever with `-n NS` or `netns` subcommands).
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ip_output(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn which(program: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("{program} not found in PATH"))
}

/// The names of all named network namespaces (`ip netns list`).
pub fn netns_list() -> Result<Vec<String>> {
    Ok(ip_output(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect())
}
