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

// ---------------------------------------------------------------------------------------------
// Hosts and processes
// ---------------------------------------------------------------------------------------------

/// One host of a testbed: a network namespace with `eth0` on the switch.
#[derive(Clone)]
pub struct Host {
    name: String,
    netns: String,
    ip: Ipv4Addr,
    switch_ns: String,
    switch_port: String,
    dir: PathBuf,
    procs: Arc<Mutex<Vec<Proc>>>,
}

impl Host {
    /// The host's short name (as given to `add_host`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network namespace's name (`<prefix>-<name>`, a file in /run/netns).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The host's address on the switch.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The path of the host's network namespace (`/run/netns/<prefix>-<name>`).
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
    }

    /// A directory for this host's data (`<testbed>/<name>`), created on first use.
    pub fn dir(&self) -> Result<PathBuf> {
        let d = self.dir.join(&self.name);
        fs::create_dir_all(&d)?;
        Ok(d)
    }

    /// Starts `program` inside this host's network namespace, stdout and stderr appended to
    /// `<testbed>/logs/<log_file>`.
    pub fn spawn<I, S>(&self, program: impl AsRef<OsStr>, args: I, log_file: &str) -> Result<Proc>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.spawn_env(program, args, &[], log_file)
    }

    /// Like `spawn`, with extra environment variables (not written to the log: they may be
    /// secrets, such as `SHOAL_JOIN_TOKEN`).
    pub fn spawn_env<I, S>(
        &self,
        program: impl AsRef<OsStr>,
        args: I,
        env: &[(&str, &str)],
        log_file: &str,
    ) -> Result<Proc>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = program.as_ref();
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let log_path = self.dir.join("logs").join(log_file);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        writeln!(
            log,
            "=== [{}] {} {}",
            self.name,
            program.to_string_lossy(),
            join_args(&args)
        )?;
        let (mut cmd, _ns) = self.command(program)?;
        cmd.args(&args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().with_context(|| {
            format!(
                "starting {} in host {}",
                program.to_string_lossy(),
                self.name
            )
        })?;
        let proc = Proc::new(child, &self.name, program, args);
        lock(&self.procs).push(proc.clone());
        Ok(proc)
    }

    /// Runs `program` inside this host's network namespace and waits for it (at most `RUN_TIMEOUT`).
    pub fn run<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_timeout(program, args, RUN_TIMEOUT)
    }

    /// Like `run`, with an explicit timeout; on timeout the command is killed and this fails.
    pub fn run_timeout<I, S>(
        &self,
        program: impl AsRef<OsStr>,
        args: I,
        timeout: Duration,
    ) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = program.as_ref();
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let what = format!(
            "[{}] {} {}",
            self.name,
            program.to_string_lossy(),
            join_args(&args)
        );
        let (mut cmd, _ns) = self.command(program)?;
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        let stdout = read_all(child.stdout.take());
        let stderr = read_all(child.stderr.take());
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if start.elapsed() >= timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{what}: still running after {timeout:?}, killed");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Ok(Output {
            status,
            stdout: join_reader(stdout),
            stderr: join_reader(stderr),
        })
    }

    /// Like `run_timeout`, with `input` written to the program's stdin (then closed): for
    /// secrets that must never be on a command line, such as `cluster unlock`'s key.
    pub fn run_input<I, S>(
        &self,
        program: impl AsRef<OsStr>,
        args: I,
        input: &[u8],
        timeout: Duration,
    ) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = program.as_ref();
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let what = format!(
            "[{}] {} {} (with input)",
            self.name,
            program.to_string_lossy(),
            join_args(&args)
        );
        let (mut cmd, _ns) = self.command(program)?;
        cmd.args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        let stdout = read_all(child.stdout.take());
        let stderr = read_all(child.stderr.take());
        if let Some(mut stdin) = child.stdin.take() {
            // A program that exits without reading gives EPIPE: its output says why.
            let _ = stdin.write_all(input);
        }
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if start.elapsed() >= timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{what}: still running after {timeout:?}, killed");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Ok(Output {
            status,
            stdout: join_reader(stdout),
            stderr: join_reader(stderr),
        })
    }

    /// Kills (SIGKILL) every process `spawn` started on this host and reaps it.
    pub fn kill_all(&self) -> Result<()> {
        let procs: Vec<Proc> = lock(&self.procs)
            .iter()
            .filter(|p| p.inner.host == self.name)
            .cloned()
            .collect();
        for p in procs {
            p.kill()?;
        }
        Ok(())
    }

    /// Cuts the host off the switch (its switch-side veth goes down).
    pub fn partition(&self) -> Result<()> {
        ip(&[
            "-n",
            &self.switch_ns,
            "link",
            "set",
            &self.switch_port,
            "down",
        ])
    }

    /// Plugs the host back into the switch.
    pub fn heal(&self) -> Result<()> {
        ip(&[
            "-n",
            &self.switch_ns,
            "link",
            "set",
            &self.switch_port,
            "up",
        ])
    }

    /// A command that will run in this host's network namespace (and only that namespace); the
    /// returned file is the namespace handle and must live until the command is spawned.
    fn command(&self, program: &OsStr) -> Result<(Command, File)> {
        let ns_path = Path::new(NETNS_DIR).join(&self.netns);
        let ns = File::open(&ns_path).with_context(|| format!("opening {}", ns_path.display()))?;
        let fd = ns.as_raw_fd();
        let parent = nix::unistd::getpid().as_raw();
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.dir);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        // SAFETY: the closure runs in the forked child before exec. It only makes async-signal-safe
        // system calls (prctl, getppid, setns) and builds io::Errors from raw errno values, which does
        // not allocate. `fd` is valid there because the parent keeps `ns` open until spawn returns
        // (the caller holds the returned File), and it is O_CLOEXEC so the program does not inherit it.
        unsafe {
            cmd.pre_exec(move || {
                // Die with the test thread that started us: a test killed by a timeout must not
                // leave managers and agents running.
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok((cmd, ns))
    }
}

fn join_args(args: &[OsString]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn read_all<R: Read + Send + 'static>(r: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    r.map(|mut r| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    })
}

fn join_reader(h: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    h.and_then(|h| h.join().ok()).unwrap_or_default()
}

/// A process started by `Host::spawn`; clones share it.
#[derive(Clone)]
pub struct Proc {
    inner: Arc<ProcInner>,
}

struct ProcInner {
    pid: u32,
    host: String,
    program: OsString,
    args: Vec<OsString>,
    child: Mutex<Child>,
    exit: Mutex<Option<ExitStatus>>,
}

impl Proc {
    fn new(child: Child, host: &str, program: &OsStr, args: Vec<OsString>) -> Proc {
        Proc {
            inner: Arc::new(ProcInner {
                pid: child.id(),
                host: host.to_string(),
                program: program.to_owned(),
                args,
                child: Mutex::new(child),
                exit: Mutex::new(None),
            }),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// The program and arguments it was started with (to start it again the same way).
    pub fn command(&self) -> (&OsStr, &[OsString]) {
        (&self.inner.program, &self.inner.args)
    }

    /// Its exit status if it has exited (and reaps it), `None` while it runs.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        let mut exit = lock(&self.inner.exit);
        if exit.is_none() {
            *exit = lock(&self.inner.child).try_wait()?;
        }
        Ok(*exit)
    }

    /// Whether it is still running.
    pub fn is_running(&self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Waits for it to exit on its own, at most `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<ExitStatus> {
        let mut status = None;
        Testbed::wait_for(timeout, "process exit", || {
            status = self.try_wait()?;
            Ok(status.is_some())
        })?;
        status.ok_or_else(|| anyhow!("process {} did not exit", self.pid()))
    }

    /// SIGKILLs it (only it: not its process group, so an agent's shims survive) and reaps it.
    pub fn kill(&self) -> Result<()> {
        let mut exit = lock(&self.inner.exit);
        if exit.is_some() {
            return Ok(());
        }
        let mut child = lock(&self.inner.child);
        if let Some(status) = child.try_wait()? {
            *exit = Some(status);
            return Ok(());
        }
        child
            .kill()
            .with_context(|| format!("killing pid {}", self.inner.pid))?;
        *exit = Some(child.wait()?);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Cleanup
// ---------------------------------------------------------------------------------------------

/// A container as an agent's runtime records it in `DATA/runtime/<task id>/state.json`.
#[derive(Debug, Clone)]
pub struct ContainerState {
    /// The directory name: the task (= container) id.
    pub task_id: String,
    /// The container's init process, if recorded.
    pub pid: Option<i32>,
    /// The shim supervising it, if recorded.
    pub shim_pid: Option<i32>,
    /// The container's runtime directory.
    pub dir: PathBuf,
}

/// The containers recorded under an agent data dir (`DATA/runtime/*/state.json`).
pub fn runtime_containers(agent_data_dir: &Path) -> Result<Vec<ContainerState>> {
    let runtime = agent_data_dir.join("runtime");
    let mut out = Vec::new();
    let entries = match fs::read_dir(&runtime) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", runtime.display())),
    };
    for entry in entries {
        let entry = entry?;
        let state_path = entry.path().join("state.json");
        let Ok(text) = fs::read_to_string(&state_path) else {
            continue;
        };
        // A state file caught mid-write is not an error: the next poll sees it whole.
        let Ok(state) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let field = |k: &str| state.get(k).and_then(|v| v.as_i64()).map(|v| v as i32);
        out.push(ContainerState {
            task_id: entry.file_name().to_string_lossy().into_owned(),
            pid: field("pid").filter(|p| *p > 0),
            shim_pid: field("shim_pid").filter(|p| *p > 0),
            dir: entry.path(),
        });
    }
    Ok(out)
}

/// Whether `pid` names a live process (a zombie counts as dead).
pub fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name, which may itself hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The namespace identity (`net:[4026531840]`) of `pid`'s namespace `kind` (pid, mnt, net, uts, ipc…).
pub fn ns_of(pid: i32, kind: &str) -> Result<String> {
    let link = fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .with_context(|| format!("reading /proc/{pid}/ns/{kind}"))?;
    Ok(link.to_string_lossy().into_owned())
}

/// Mount points (from /proc/self/mountinfo) whose path contains `needle`.
pub fn mounts_containing(needle: &str) -> Result<Vec<String>> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.contains(needle))
        .collect())
}

fn unescape_mount_path(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Cgroup directories (any hierarchy, v1 or v2) whose name contains `needle`.
pub fn cgroups_containing(needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    walk_dirs(Path::new("/sys/fs/cgroup"), 8, &mut |p| {
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().contains(needle))
        {
            found.push(p.to_path_buf());
        }
    });
    found
}

/// Calls `f` on every directory under `root` (not following symlinks), at most `depth` levels down.
fn walk_dirs(root: &Path, depth: usize, f: &mut dyn FnMut(&Path)) {
    if depth == 0 {
        return;
    }
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let p = entry.path();
            f(&p);
            walk_dirs(&p, depth - 1, f);
        }
    }
}

/// Agent data dirs under a testbed dir: any directory holding a `runtime` directory, 3 levels deep.
fn agent_data_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    walk_dirs(dir, 3, &mut |p| {
        if p.file_name() == Some(OsStr::new("runtime")) {
            if let Some(parent) = p.parent() {
                found.push(parent.to_path_buf());
            }
        }
    });
    found
}

fn exe_name(pid: i32) -> String {
    fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

fn sigkill(pid: i32) {
    if pid > 1 && pid as u32 != std::process::id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
}

/// Removes everything a testbed (live or stale) made. Returns what could not be removed.
fn cleanup(prefix: &str, dir: &Path, procs: &[Proc]) -> Vec<String> {
    let mut problems = Vec::new();
    // 1. Our own children first (agents, managers, registry), so nothing restarts containers.
    for p in procs {
        if let Err(e) = p.kill() {
            problems.push(format!("{e:#}"));
        }
    }
    // 2. Shims and containers recorded by the agents' runtimes. A recorded pid may be stale and
    //    reused, so only kill what still looks like ours: a shim runs the agent binary; a container
    //    init runs in a pid namespace of its own.
    let self_pidns = ns_of(std::process::id() as i32, "pid").unwrap_or_default();
    let mut task_ids = BTreeSet::new();
    let mut node_ids = BTreeSet::new();
    let mut killed = Vec::new();
    for data_dir in agent_data_dirs(dir) {
        // The agent's cgroup parent is shoal/<node id>: removed below with the task cgroups.
        if let Ok(text) = fs::read_to_string(data_dir.join("agent.json")) {
            if let Some(id) = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["node_id"].as_str().map(str::to_string))
            {
                node_ids.insert(id);
            }
        }
        for c in runtime_containers(&data_dir).unwrap_or_default() {
            if let Some(shim) = c.shim_pid.filter(|p| {
                let exe = exe_name(*p);
                exe.starts_with("shoal-agent") || exe.starts_with("shoal-shim")
            }) {
                sigkill(shim);
                killed.push(shim);
            }
            if let Some(pid) = c.pid {
                let own_pidns = ns_of(pid, "pid").is_ok_and(|ns| ns != self_pidns);
                let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                if own_pidns || cgroup.contains(&c.task_id) {
                    sigkill(pid);
                    killed.push(pid);
                }
            }
            task_ids.insert(c.task_id);
        }
    }
    // 3. Anything still running in the testbed's namespaces or in a container netns of its tasks.
    let ours = |name: &str| {
        name.starts_with(&format!("{prefix}-"))
            || task_ids.iter().any(|t| name.contains(t.as_str()))
    };
    let namespaces: Vec<String> = netns_list()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| ours(n))
        .collect();
    for ns in &namespaces {
        if let Ok(pids) = ip_output(&["netns", "pids", ns]) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                sigkill(pid);
                killed.push(pid);
            }
        }
    }
    let _ = Testbed::wait_for(Duration::from_secs(10), "killed processes to go", || {
        Ok(killed.iter().all(|p| !pid_alive(*p)))
    });
    for pid in killed.iter().filter(|p| pid_alive(**p)) {
        problems.push(format!("process {pid} survived SIGKILL"));
    }
    // 4. Mounts under the testbed dir (overlay rootfs, tmpfs secrets…), deepest first; repeat for
    //    stacked mounts.
    let dir_str = dir.to_string_lossy().into_owned();
    for _ in 0..5 {
        let mut mounts: Vec<String> = mounts_containing(&dir_str)
            .unwrap_or_default()
            .into_iter()
            .filter(|m| Path::new(m).starts_with(dir))
            .collect();
        if mounts.is_empty() {
            break;
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(Path::new(&m), nix::mount::MntFlags::MNT_DETACH);
        }
    }
    // 5. Cgroups of the tasks (empty now that their processes are gone), deepest first.
    let mut cgroups = Vec::new();
    if !task_ids.is_empty() || !node_ids.is_empty() {
        walk_dirs(Path::new("/sys/fs/cgroup"), 8, &mut |p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            let parent_is_shoal = p
                .parent()
                .and_then(|d| d.file_name())
                .is_some_and(|d| d == "shoal");
            if task_ids.iter().any(|t| name.contains(t.as_str()))
                || (parent_is_shoal && node_ids.iter().any(|n| name == n.as_str()))
            {
                cgroups.push(p.to_path_buf());
            }
        });
    }
    cgroups.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for cg in cgroups {
        // A child cgroup removed first may already have taken this one with it in v1 hybrids.
        if let Err(e) = fs::remove_dir(&cg) {
            if e.kind() != io::ErrorKind::NotFound {
                problems.push(format!("cgroup {}: {e}", cg.display()));
            }
        }
    }
    // The agents' common parent (`shoal`) once nothing else uses it: rmdir fails on a
    // non-empty one (another testbed, a real agent), which is what should happen then.
    if !node_ids.is_empty() {
        if let Ok(controllers) = fs::read_dir("/sys/fs/cgroup") {
            for c in controllers.flatten() {
                let _ = fs::remove_dir(c.path().join("shoal"));
            }
        }
        let _ = fs::remove_dir("/sys/fs/cgroup/shoal");
    }
    // 6. Namespaces: deleting a netns destroys its veths and bridges (and the switch's br0).
    for ns in &namespaces {
        if let Err(e) = ip(&["netns", "del", ns]) {
            problems.push(format!("{e:#}"));
        }
    }
    // 7. The directory.
    if dir.exists() {
        let leftover_mounts = mounts_containing(&dir_str).unwrap_or_default();
        if !leftover_mounts.is_empty() {
            problems.push(format!(
                "mounts still under {}: {leftover_mounts:?}",
                dir.display()
            ));
        } else if let Err(e) = fs::remove_dir_all(dir) {
            problems.push(format!("removing {}: {e}", dir.display()));
        }
    }
    problems
}

/// Cleans up testbeds whose test process died without running `Drop` (e.g. killed by a timeout).
fn reap_stale() {
    let owner_alive = |prefix: &str| -> bool {
        // `sb<pid>x<n>`: anything not in that shape is not ours and counts as alive (left alone).
        let Some(rest) = prefix.strip_prefix(PREFIX_TAG) else {
            return true;
        };
        let Some((pid, n)) = rest.split_once('x') else {
            return true;
        };
        match (pid.parse::<i32>(), n.parse::<u32>()) {
            (Ok(pid), Ok(_)) => Path::new(&format!("/proc/{pid}")).exists(),
            _ => true,
        }
    };
    let mut stale = BTreeSet::new();
    if let Ok(entries) = fs::read_dir(testbed_root()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !owner_alive(&name) {
                stale.insert(name);
            }
        }
    }
    for ns in netns_list().unwrap_or_default() {
        if let Some((prefix, _)) = ns.split_once('-') {
            if !owner_alive(prefix) {
                stale.insert(prefix.to_string());
            }
        }
    }
    for prefix in stale {
        let problems = cleanup(&prefix, &testbed_root().join(&prefix), &[]);
        if !problems.is_empty() {
            eprintln!("reaping stale testbed {prefix}: {}", problems.join("; "));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shoal binaries and clusters
// ---------------------------------------------------------------------------------------------

/// Paths of the Shoal binaries under test.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `shoal-manager`.
    pub manager: PathBuf,
    /// `shoal-agent`.
    pub agent: PathBuf,
    /// `shoalctl`.
    pub ctl: PathBuf,
    /// `shoal-fixture` (pushes test images).
    pub fixture: PathBuf,
}

impl Binaries {
    /// Finds the binaries in `SHOAL_BIN_DIR`, else next to the test executable (target/<profile>).
    pub fn locate() -> Result<Binaries> {
        let dir = match std::env::var_os("SHOAL_BIN_DIR") {
            Some(d) => PathBuf::from(d),
            None => {
                let exe = std::env::current_exe()?;
                // target/debug/deps/<test>-<hash> -> target/debug
                exe.parent()
                    .and_then(Path::parent)
                    .map(Path::to_path_buf)
                    .ok_or_else(|| anyhow!("cannot place {}", exe.display()))?
            }
        };
        let find = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                bail!(
                    "{name} not found in {}: run `cargo build --workspace --bins` first \
                     (or point SHOAL_BIN_DIR at the directory holding the Shoal binaries)",
                    dir.display()
                )
            }
        };
        Ok(Binaries {
            manager: find("shoal-manager")?,
            agent: find("shoal-agent")?,
            ctl: find("shoalctl")?,
            fixture: find("shoal-fixture")?,
        })
    }
}

/// A row of `shoalctl service ps --format json`.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskRow {
    /// Task id (possibly truncated, as docker prints it).
    #[serde(rename = "ID")]
    pub id: String,
    /// `service.slot`.
    #[serde(rename = "Name")]
    pub name: String,
    /// Image reference.
    #[serde(rename = "Image", default)]
    pub image: String,
    /// Node hostname (or id).
    #[serde(rename = "Node", default)]
    pub node: String,
    /// "Running", "Shutdown"…
    #[serde(rename = "DesiredState")]
    pub desired_state: String,
    /// "Running 3 seconds ago", "Failed 1 second ago"…
    #[serde(rename = "CurrentState")]
    pub current_state: String,
    /// Why the task failed, if it did.
    #[serde(rename = "Error", default)]
    pub error: String,
}

impl TaskRow {
    /// Whether the task is currently running.
    pub fn is_running(&self) -> bool {
        state_is(&self.current_state, "running")
    }

    /// Whether the task ended in failure.
    pub fn is_failed(&self) -> bool {
        state_is(&self.current_state, "failed")
    }

    /// Whether the orchestrator still wants the task to run.
    pub fn desired_running(&self) -> bool {
        state_is(&self.desired_state, "running")
    }
}

fn state_is(text: &str, state: &str) -> bool {
    text.trim().to_ascii_lowercase().starts_with(state)
}

/// A row of `shoalctl service ls --format json`.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceRow {
    /// Service id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    #[serde(rename = "Name")]
    pub name: String,
    /// "replicated" or "global".
    #[serde(rename = "Mode", default)]
    pub mode: String,
    /// "running/desired", e.g. "3/3".
    #[serde(rename = "Replicas")]
    pub replicas: String,
    /// Image reference.
    #[serde(rename = "Image", default)]
    pub image: String,
}

/// A row of `shoalctl node ls --format json`.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeRow {
    /// Node id.
    #[serde(rename = "ID")]
    pub id: String,
    /// The hostname the agent registered.
    #[serde(rename = "Hostname")]
    pub hostname: String,
    /// "Ready", "Down"…
    #[serde(rename = "Status")]
    pub status: String,
    /// "Active", "Drain"…
    #[serde(rename = "Availability", default)]
    pub availability: String,
    /// "Leader", "Reachable" or empty for workers.
    #[serde(rename = "ManagerStatus", default)]
    pub manager_status: String,
}

/// An agent of a `Cluster`: its host, data dir and the command that (re)starts it.
pub struct Agent {
    /// The host it runs on.
    pub host: Host,
    /// Its `--data-dir`.
    pub data_dir: PathBuf,
    args: Vec<OsString>,
    proc: Option<Proc>,
}

impl Agent {
    /// The running agent process, if any.
    pub fn proc(&self) -> Option<&Proc> {
        self.proc.as_ref()
    }

    /// The containers its runtime records.
    pub fn containers(&self) -> Result<Vec<ContainerState>> {
        runtime_containers(&self.data_dir)
    }
}

/// How to start a `Cluster`: `ClusterOptions::new(4).heartbeat_period("1s")`.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Worker hosts `w1`…`wN`; 0 runs one agent beside the manager.
    pub n_workers: usize,
    /// Extra arguments of `shoal-manager init` (e.g. `--heartbeat-period 1s`).
    pub manager_args: Vec<String>,
    /// Extra arguments of `shoal-agent join`, per worker index (0 = `w1`).
    pub agent_args: Vec<Vec<String>>,
}

impl ClusterOptions {
    /// A cluster with `n_workers` worker hosts and default settings.
    pub fn new(n_workers: usize) -> Self {
        ClusterOptions {
            n_workers,
            ..Default::default()
        }
    }

    /// The manager's `--heartbeat-period` (e.g. "1s"), to detect dead hosts quickly.
    pub fn heartbeat_period(mut self, period: &str) -> Self {
        self.manager_args
            .extend(["--heartbeat-period".to_string(), period.to_string()]);
        self
    }

    /// Extra `shoal-agent join` arguments for worker `i` (0 = `w1`), e.g. `--label zone=a`.
    pub fn agent_args(mut self, i: usize, args: &[&str]) -> Self {
        if self.agent_args.len() <= i {
            self.agent_args.resize(i + 1, Vec::new());
        }
        self.agent_args[i].extend(args.iter().map(|a| a.to_string()));
        self
    }
}

/// Where the join token of the node with data dir `data_dir` is kept: `<data_dir>.join-token`,
/// beside the data dir (a data dir must be empty for a first join).
pub fn token_file_for(data_dir: &Path) -> PathBuf {
    let mut name = data_dir.as_os_str().to_owned();
    name.push(".join-token");
    PathBuf::from(name)
}

/// Writes `token` to `path`, owner-only, as `--token-file` reads it.
pub fn write_token_file(path: &Path, token: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    shoal_proto::secure_file::write_private(path, format!("{token}\n").as_bytes())?;
    Ok(())
}

/// A running Shoal cluster on a testbed: a registry host, a manager host, agents.
pub struct Cluster {
    /// The binaries under test.
    pub bins: Binaries,
    /// The host running docker-registry with the test images.
    pub registry: Host,
    /// The host running `shoal-manager`.
    pub manager: Host,
    /// The manager's `--data-dir`.
    pub manager_dir: PathBuf,
    manager_proc: Option<Proc>,
    manager_args: Vec<String>,
    /// The agents, in join order.
    pub agents: Vec<Agent>,
    worker_token: String,
    // Last: dropped after everything above, and it kills and removes all of it.
    tb: Testbed,
}

impl Cluster {
    /// Starts a cluster with `n_workers` worker hosts (`w1`…); with 0, one agent runs beside the
    /// manager on the manager host (the usual one-host cluster). Returns once every node is Ready.
    pub fn start(tb: Testbed, n_workers: usize) -> Result<Cluster> {
        Cluster::start_with(tb, ClusterOptions::new(n_workers))
    }

    /// Starts a cluster as `opts` says; returns once every node is Ready.
    pub fn start_with(tb: Testbed, opts: ClusterOptions) -> Result<Cluster> {
        let n_workers = opts.n_workers;
        let bins = Binaries::locate()?;
        let registry = tb.add_host("reg")?;
        start_registry(&registry)?;
        let reg = registry_addr(&registry);
        for (verb, image) in [
            ("push-busybox", "shoal/busybox:latest"),
            ("push-demo", "shoal/demo:latest"),
        ] {
            let out = registry.run(&bins.fixture, [verb, "--registry", &reg, "--image", image])?;
            check_output(&out, &format!("shoal-fixture {verb}"))?;
        }

        let manager = tb.add_host("mgr")?;
        let manager_dir = manager.dir()?.join("manager");
        let mut cluster = Cluster {
            bins,
            registry,
            manager,
            manager_dir,
            manager_proc: None,
            manager_args: opts.manager_args.clone(),
            agents: Vec::new(),
            worker_token: String::new(),
            tb,
        };
        cluster.start_manager()?;
        cluster.worker_token = cluster.join_token("worker")?;

        let hosts = if n_workers == 0 {
            vec![cluster.manager.clone()]
        } else {
            (1..=n_workers)
                .map(|i| cluster.tb.add_host(&format!("w{i}")))
                .collect::<Result<_>>()?
        };
        let token = cluster.worker_token.clone();
        for (i, host) in hosts.into_iter().enumerate() {
            let extra = opts.agent_args.get(i).cloned().unwrap_or_default();
            cluster.add_agent_with(host, &token, &extra)?;
        }
        cluster.wait_nodes_ready(cluster.agents.len())?;
        Ok(cluster)
    }

    /// The testbed the cluster runs on.
    pub fn testbed(&self) -> &Testbed {
        &self.tb
    }

    /// `IP:5000` of the registry, as agents reach it.
    pub fn registry_addr(&self) -> String {
        registry_addr(&self.registry)
    }

    /// The busybox image (Cmd `sh`) in the test registry.
    pub fn busybox_image(&self) -> String {
        format!("{}/shoal/busybox:latest", self.registry_addr())
    }

    /// The demo web server image in the test registry.
    pub fn demo_image(&self) -> String {
        format!("{}/shoal/demo:latest", self.registry_addr())
    }

    /// `IP:4242` of the manager.
    pub fn manager_addr(&self) -> String {
        format!("{}:{MANAGER_PORT}", self.manager.ip())
    }

    /// The admin.conf written by `shoal-manager init`.
    pub fn admin_conf(&self) -> PathBuf {
        self.manager_dir.join("admin.conf")
    }

    /// The worker join token the cluster was started with.
    pub fn worker_token(&self) -> &str {
        &self.worker_token
    }

    /// The manager process, if running.
    pub fn manager_proc(&self) -> Option<&Proc> {
        self.manager_proc.as_ref()
    }

    /// Starts (or restarts from its data dir: same command) the manager, and waits for admin.conf
    /// and for the manager to answer shoalctl.
    pub fn start_manager(&mut self) -> Result<()> {
        let listen = self.manager_addr();
        let dir = self.manager_dir.to_string_lossy().into_owned();
        let mut args: Vec<String> = ["init", "--data-dir", &dir, "--listen-addr", &listen]
            .iter()
            .map(|a| a.to_string())
            .collect();
        args.extend(self.manager_args.iter().cloned());
        let proc = self
            .manager
            .spawn(&self.bins.manager, &args, "manager.log")?;
        self.manager_proc = Some(proc.clone());
        let conf = self.admin_conf();
        Testbed::wait_for(DEADLINE, "the manager to write admin.conf", || {
            if let Some(status) = proc.try_wait()? {
                return Err(fatal(format!(
                    "shoal-manager exited with {status}; see manager.log"
                )));
            }
            // The file is written through a rename, but parse it to be sure it is whole.
            Ok(fs::read_to_string(&conf)
                .ok()
                .is_some_and(|t| serde_json::from_str::<serde_json::Value>(&t).is_ok()))
        })?;
        Testbed::wait_for(DEADLINE, "the manager to answer shoalctl", || {
            if let Some(status) = proc.try_wait()? {
                return Err(fatal(format!(
                    "shoal-manager exited with {status}; see manager.log"
                )));
            }
            Ok(self.ctl(["node", "ls"])?.status.success())
        })
    }

    /// SIGKILLs the manager.
    pub fn kill_manager(&mut self) -> Result<()> {
        if let Some(p) = self.manager_proc.take() {
            p.kill()?;
        }
        Ok(())
    }

    /// `cluster join-token ROLE -q`.
    pub fn join_token(&self, role: &str) -> Result<String> {
        let token = self.ctl_ok(["cluster", "join-token", role, "-q"])?;
        let token = token.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            bail!("`cluster join-token {role} -q` printed {token:?}, not a single token");
        }
        Ok(token.to_string())
    }

    /// The arguments of `shoal-agent join` for an agent on `host` with `data_dir` and `token`. The
    /// token goes through a file beside the data dir (`--token-file`), never on the command
    /// line, as an operator should do it.
    pub fn agent_join_args(&self, host: &Host, data_dir: &Path, token: &str) -> Vec<OsString> {
        let ip = host.ip().to_string();
        let token_file = token_file_for(data_dir);
        // Only a broken test directory fails this, and then nothing else could work either.
        write_token_file(&token_file, token)
            .unwrap_or_else(|e| panic!("writing {}: {e:#}", token_file.display()));
        [
            "join",
            "--data-dir",
            &data_dir.to_string_lossy(),
            "--token-file",
            &token_file.to_string_lossy(),
            "--hostname",
            host.name(),
            "--insecure-registry",
            &self.registry_addr(),
            "--advertise-addr",
            &ip,
            &self.manager_addr(),
        ]
        .iter()
        .map(OsString::from)
        .collect()
    }

    /// Starts an agent on `host` that joins with `token`; returns its index in `agents`. Does not
    /// wait for it to be Ready (see `wait_nodes_ready`).
    pub fn add_agent(&mut self, host: Host, token: &str) -> Result<usize> {
        self.add_agent_with(host, token, &[])
    }

    /// Like `add_agent`, with extra `shoal-agent join` arguments (e.g. `--label zone=a`).
    pub fn add_agent_with(&mut self, host: Host, token: &str, extra: &[String]) -> Result<usize> {
        let data_dir = host.dir()?.join("agent");
        let mut args = self.agent_join_args(&host, &data_dir, token);
        // Before the positional manager address, which comes last.
        let at = args.len() - 1;
        args.splice(at..at, extra.iter().map(OsString::from));
        let mut agent = Agent {
            host,
            data_dir,
            args,
            proc: None,
        };
        agent.proc = Some(self.spawn_agent(&agent)?);
        self.agents.push(agent);
        Ok(self.agents.len() - 1)
    }

    fn spawn_agent(&self, agent: &Agent) -> Result<Proc> {
        let log = format!("agent-{}.log", agent.host.name());
        agent.host.spawn(&self.bins.agent, &agent.args, &log)
    }

    /// SIGKILLs agent `i` (its shims and containers are left alone).
    pub fn kill_agent(&mut self, i: usize) -> Result<()> {
        let agent = self
            .agents
            .get_mut(i)
            .ok_or_else(|| anyhow!("no agent {i}"))?;
        if let Some(p) = agent.proc.take() {
            p.kill()?;
        }
        Ok(())
    }

    /// Kills host `i` of the agents the hard way: SIGKILL to its agent, then to every shim and
    /// container its runtime records, as if the machine lost power. Returns the killed pids.
    pub fn kill_agent_host(&mut self, i: usize) -> Result<Vec<i32>> {
        self.kill_agent(i)?;
        let mut killed = Vec::new();
        for ct in self.agents[i].containers()? {
            for pid in [ct.shim_pid, ct.pid].into_iter().flatten() {
                // A pid that is already gone fails with ESRCH, which is fine.
                let pid_t = nix::unistd::Pid::from_raw(pid);
                if nix::sys::signal::kill(pid_t, nix::sys::signal::SIGKILL).is_ok() {
                    killed.push(pid);
                }
            }
        }
        Ok(killed)
    }

    /// Starts agent `i` again with exactly the command it was first started with.
    pub fn restart_agent(&mut self, i: usize) -> Result<()> {
        self.kill_agent(i)?;
        let proc = self.spawn_agent(&self.agents[i])?;
        self.agents[i].proc = Some(proc);
        Ok(())
    }

    /// Waits until `node ls` lists at least `n` worker nodes and every node is Ready.
    pub fn wait_nodes_ready(&self, n: usize) -> Result<()> {
        Testbed::wait_for(DEADLINE, &format!("{n} nodes Ready"), || {
            for agent in &self.agents {
                if let Some(status) = agent
                    .proc
                    .as_ref()
                    .map(|p| p.try_wait())
                    .transpose()?
                    .flatten()
                {
                    let name = agent.host.name();
                    return Err(fatal(format!(
                        "agent on {name} exited with {status}; see agent-{name}.log"
                    )));
                }
            }
            let nodes = self.node_ls()?;
            // Workers only: the manager's own node is listed too but runs no agent.
            let workers = nodes.iter().filter(|n| n.manager_status.is_empty()).count();
            Ok(workers >= n && nodes.iter().all(|n| n.status.eq_ignore_ascii_case("ready")))
        })
    }

    /// Runs shoalctl with the cluster's admin.conf inside the manager host.
    pub fn ctl<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<OsString> = vec!["--config".into(), self.admin_conf().into_os_string()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self.manager.run(&self.bins.ctl, all)
    }

    /// Runs shoalctl, fails unless it exits 0, returns its stdout.
    pub fn ctl_ok<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.ctl(&args)?;
        check_output(&out, &format!("shoalctl {}", join_args(&args)))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs shoalctl with `--format json` appended; one JSON object per output line.
    pub fn ctl_json<I, S>(&self, args: I) -> Result<Vec<serde_json::Value>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        args.extend(["--format".into(), "json".into()]);
        let stdout = self.ctl_ok(&args)?;
        stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("not a JSON line: {l:?}")))
            .collect()
    }

    fn ctl_rows<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> Result<Vec<T>> {
        self.ctl_json(args)?
            .into_iter()
            .map(|v| {
                serde_json::from_value(v.clone()).with_context(|| format!("unexpected row {v}"))
            })
            .collect()
    }

    /// `node ls`.
    pub fn node_ls(&self) -> Result<Vec<NodeRow>> {
        self.ctl_rows(&["node", "ls"])
    }

    /// `service ls`.
    pub fn service_ls(&self) -> Result<Vec<ServiceRow>> {
        self.ctl_rows(&["service", "ls"])
    }

    /// `service ps NAME` (all tasks, history included).
    pub fn service_ps(&self, service: &str) -> Result<Vec<TaskRow>> {
        self.ctl_rows(&["service", "ps", service])
    }

    /// Waits until exactly `n` tasks of `service` are wanted and Running.
    pub fn wait_running(&self, service: &str, n: usize) -> Result<Vec<TaskRow>> {
        let mut tasks = Vec::new();
        Testbed::wait_for(DEADLINE, &format!("{service}: {n} tasks Running"), || {
            tasks = self.service_ps(service)?;
            let wanted: Vec<&TaskRow> = tasks.iter().filter(|t| t.desired_running()).collect();
            Ok(wanted.len() == n && wanted.iter().all(|t| t.is_running()))
        })?;
        Ok(tasks.into_iter().filter(|t| t.desired_running()).collect())
    }

    /// All containers recorded by all agents.
    pub fn containers(&self) -> Result<Vec<(usize, ContainerState)>> {
        let mut all = Vec::new();
        for (i, a) in self.agents.iter().enumerate() {
            all.extend(a.containers()?.into_iter().map(|c| (i, c)));
        }
        Ok(all)
    }

    /// The container of a task, by (possibly truncated) task id, with the index of its agent.
    pub fn container_of(&self, task_id: &str) -> Result<(usize, ContainerState)> {
        let mut found: Vec<_> = self
            .containers()?
            .into_iter()
            .filter(|(_, c)| c.task_id.starts_with(task_id))
            .collect();
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => bail!("no agent runtime records a container for task {task_id}"),
            _ => bail!("task id {task_id} is ambiguous"),
        }
    }

    /// Stops and removes everything, failing if anything was left behind.
    pub fn shutdown(self) -> Result<()> {
        self.tb.shutdown()
    }
}

fn registry_addr(registry: &Host) -> String {
    format!("{}:{REGISTRY_PORT}", registry.ip())
}

/// Starts docker-registry (Debian's `docker-registry`, distribution 2.x) inside `host`, on its IP,
/// with its own config and storage under the host's dir; returns once /v2/ answers.
pub fn start_registry(host: &Host) -> Result<Proc> {
    let bin = which("docker-registry")
        .context("the testbed needs Debian's docker-registry (apt-get install docker-registry)")?;
    let dir = host.dir()?.join("registry");
    fs::create_dir_all(dir.join("data"))?;
    let config = dir.join("config.yml");
    let addr = registry_addr(host);
    fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.join("data").display()
        ),
    )?;
    let proc = host.spawn(
        bin,
        [OsStr::new("serve"), config.as_os_str()],
        "registry.log",
    )?;
    let url = format!("http://{addr}/v2/");
    Testbed::wait_for(DEADLINE, "docker-registry to answer", || {
        if let Some(status) = proc.try_wait()? {
            return Err(fatal(format!(
                "docker-registry exited with {status}; see registry.log"
            )));
        }
        let out = host.run_timeout(
            "curl",
            ["-sf", "-o", "/dev/null", "--max-time", "2", &url],
            Duration::from_secs(5),
        )?;
        Ok(out.status.success())
    })?;
    Ok(proc)
}

/// Fails with the command's stderr unless it exited 0.
pub fn check_output(out: &Output, what: &str) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "{what}: {}\nstderr: {}\nstdout: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    )
}

/// The stderr of a command as text.
pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The stdout of a command as text.
pub fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The path of the memory-limit file of `pid`'s cgroup (v1 `memory.limit_in_bytes`, or v2
/// `memory.max`), decided at run time from /proc/PID/cgroup and where the hierarchies are mounted.
pub fn memory_limit_file(pid: i32) -> Result<PathBuf> {
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("reading /proc/{pid}/cgroup"))?;
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    // mountinfo: "... MOUNTPOINT OPTS ... - FSTYPE SOURCE SUPEROPTS"
    let mount_of = |fstype: &str, opt: Option<&str>| -> Option<PathBuf> {
        info.lines().find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mut post = post.split(' ');
            if post.next()? != fstype {
                return None;
            }
            let superopts = post.nth(1).unwrap_or("");
            if let Some(opt) = opt {
                if !superopts.split(',').any(|o| o == opt) {
                    return None;
                }
            }
            pre.split(' ')
                .nth(4)
                .map(|m| PathBuf::from(unescape_mount_path(m)))
        })
    };
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            let root = mount_of("cgroup", Some("memory"))
                .ok_or_else(|| anyhow!("memory cgroup v1 hierarchy not mounted"))?;
            return Ok(root
                .join(path.trim_start_matches('/'))
                .join("memory.limit_in_bytes"));
        }
    }
    let v2 = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| anyhow!("pid {pid}: no memory cgroup in /proc/{pid}/cgroup"))?;
    let root = mount_of("cgroup2", None).ok_or_else(|| anyhow!("cgroup2 not mounted"))?;
    Ok(root.join(v2.trim_start_matches('/')).join("memory.max"))
}

/// The start time of `pid` (clock ticks after boot): tells a process from a later one reusing its pid.
pub fn process_start_time(pid: i32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, rest) = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow!("bad /proc/{pid}/stat"))?;
    // Field 22 (starttime); `rest` starts at field 3.
    rest.split_whitespace()
        .nth(19)
        .ok_or_else(|| anyhow!("bad /proc/{pid}/stat"))?
        .parse()
        .context("parsing starttime")
}

/// The inode of a named network namespace file (compare with `ns_of(pid, "net")`).
pub fn netns_inode(name: &str) -> Result<u64> {
    Ok(fs::metadata(Path::new(NETNS_DIR).join(name))?.ino())
}
