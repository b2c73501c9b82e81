//! Runs a command inside a running container (healthcheck probes), as `runc exec` does: in the
//! container's namespaces and cgroup, with its user, environment, working directory, resource
//! limits, capabilities, no-new-privileges and seccomp filter.
//!
//! Unlike the rest of the runtime this forks from the multi-threaded agent, so everything that
//! allocates, reads files or can fail for a reason worth a message happens before the fork
//! (`Plan::new`); the children only make system calls on memory prepared for them. Two children:
//! the first joins the cgroup and the namespaces (user first, mount last) and enters the root; as
//! joining a pid namespace only moves one's children, it forks the probe, which drops privileges
//! and execs. The first child also enforces the timeout (SIGKILL to the probe) and reports how the
//! probe ended on a pipe, in fixed-size records.

use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{open, openat2, OFlag, OpenHow, ResolveFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

use super::init::{resolve_group, resolve_user, rlimit_resource, DEFAULT_PATH};
use super::process;
use super::seccomp::CompiledFilter;
use super::state::{read_json, ContainerState, ExitState};
use super::{caps, ContainerConfig, Runtime, RuntimeError};

/// How long after the probe's own timeout the agent gives up on the first child (which enforces
/// that timeout itself, so this only guards against a child stuck in the kernel).
const WATCHDOG_SLACK: Duration = Duration::from_secs(10);

/// The namespaces a probe joins, in the order it joins them: the user namespace first (it
/// grants the rights to join the others), the mount namespace last (after it, /proc paths
/// opened before no longer matter, but nothing else could be looked up on the host).
const NAMESPACES: [(&str, CloneFlags); 7] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Errors of running a command in a container.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The container has no running init to join.
    #[error("container {id} is not running")]
    NotRunning {
        /// The container id.
        id: String,
    },
    /// A file of the container or of /proc could not be opened or read.
    #[error("{path}: {source}")]
    Open {
        /// The path.
        path: PathBuf,
        /// The kernel's error.
        source: Errno,
    },
    /// The container's user or a supplementary group is unknown in its passwd/group files.
    #[error("{0}")]
    User(String),
    /// The container's compiled seccomp program is unreadable.
    #[error("seccomp program {path}: {reason}")]
    Seccomp {
        /// The program's file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A ulimit of the container's config names no known resource.
    #[error("unknown ulimit {name:?}")]
    Ulimit {
        /// docker's name of the limit.
        name: String,
    },
    /// An argument, environment entry or the working directory holds a NUL byte.
    #[error("argument, environment entry or working directory contains a NUL byte")]
    Nul,
    /// No command given.
    #[error("no command given")]
    NoCommand,
    /// A system call of the agent failed.
    #[error("{op}: {source}")]
    Sys {
        /// The operation.
        op: &'static str,
        /// The kernel's error.
        source: Errno,
    },
    /// A step inside the container failed before the command ran.
    #[error("{step}: {source}")]
    Setup {
        /// The step.
        step: &'static str,
        /// The kernel's error.
        source: Errno,
    },
    /// The command is not found in the container.
    #[error("exec: {arg0:?}: executable file not found in $PATH")]
    NotFound {
        /// The command as given.
        arg0: String,
    },
    /// The first child ended without saying how the command did.
    #[error("exec helper exited without a report")]
    NoReport,
}

/// How a command run in a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// Its exit code (128 + signal when killed; meaningless when `timed_out`).
    pub exit_code: i32,
    /// Its stdout and stderr, interleaved, at most the limit asked for.
    pub output: Vec<u8>,
    /// Killed at the timeout.
    pub timed_out: bool,
}

/// The steps of the children, by the number they report.
const STEPS: [&str; 12] = [
    "join cgroup",
    "join namespace",
    "enter root",
    "enter working directory",
    "stdio",
    "fork",
    "set ulimit",
    "load seccomp filter",
    "drop capabilities",
    "set credentials",
    "set no-new-privileges",
    "exec",
];
const STEP_CGROUP: i32 = 0;
const STEP_SETNS: i32 = 1;
const STEP_ROOT: i32 = 2;
const STEP_CWD: i32 = 3;
const STEP_STDIO: i32 = 4;
const STEP_FORK: i32 = 5;
const STEP_ULIMIT: i32 = 6;
const STEP_SECCOMP: i32 = 7;
const STEP_CAPS: i32 = 8;
const STEP_CREDS: i32 = 9;
const STEP_NNP: i32 = 10;
const STEP_EXEC: i32 = 11;

/// Record kinds on the report pipe: `[kind, a (i32), b (i32)]`, 9 bytes, one `write` each.
const REPORT_EXITED: u8 = 1;
const REPORT_TIMED_OUT: u8 = 2;
const REPORT_FAILED: u8 = 3;
const REPORT_NOT_FOUND: u8 = 4;
const RECORD_LEN: usize = 9;

/// Everything the children need, prepared before the fork so they never allocate.
struct Plan {
    cgroup_procs: Vec<OwnedFd>,
    namespaces: Vec<(OwnedFd, CloneFlags)>,
    root: OwnedFd,
    cwd: CString,
    dev_null: OwnedFd,
    rlimits: Vec<(nix::sys::resource::Resource, u64, u64)>,
    seccomp: Option<CompiledFilter>,
    no_new_privileges: bool,
    keep_caps: Vec<u32>,
    root_caps: Vec<u32>,
    last_cap: u32,
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
    candidates: Vec<CString>,
    // The CStrings the pointer arrays point into; kept alive with them.
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
    timeout: Duration,
}

fn open_err(path: &Path) -> impl FnOnce(Errno) -> ExecError + '_ {
    move |source| ExecError::Open {
        path: path.to_path_buf(),
        source,
    }
}

/// The NUL-terminated pointer array of `items` (which must outlive it).
fn pointers(items: &[CString]) -> Vec<*const libc::c_char> {
    items
        .iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn cstrings(items: &[String]) -> Result<Vec<CString>, ExecError> {
    items
        .iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| ExecError::Nul))
        .collect()
}

/// The paths `execve` tries for `arg0`, as a PATH search would (`arg0` itself when it has a `/`).
pub fn exec_candidates(arg0: &str, path_var: &str) -> Vec<String> {
    if arg0.contains('/') {
        return vec![arg0.to_string()];
    }
    path_var
        .split(':')
        .map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            format!("{}/{arg0}", dir.trim_end_matches('/'))
        })
        .collect()
}

/// A file of the container read with its root as `/` (its symlinks cannot lead out); empty if missing.
fn read_in_root(root: &OwnedFd, path: &str) -> Result<String, ExecError> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    match openat2(root.as_fd(), path, how) {
        Ok(fd) => {
            let mut text = String::new();
            fs::File::from(fd)
                .read_to_string(&mut text)
                .map_err(|e| ExecError::Open {
                    path: PathBuf::from(path),
                    source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                })?;
            Ok(text)
        }
        Err(Errno::ENOENT) => Ok(String::new()),
        Err(source) => Err(ExecError::Open {
            path: PathBuf::from(path),
            source,
        }),
    }
}

/// Whether `/proc/<pid>/ns/<name>` is another namespace than this process's.
fn differs(pid: i32, name: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let theirs = fs::metadata(format!("/proc/{pid}/ns/{name}"));
    let ours = fs::metadata(format!("/proc/self/ns/{name}"));
    match (theirs, ours) {
        (Ok(t), Ok(o)) => (t.dev(), t.ino()) != (o.dev(), o.ino()),
        // A kernel without this namespace type: nothing to join.
        _ => false,
    }
}

impl Plan {
    fn new(
        runtime: &Runtime,
        id: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<Plan, RuntimeError> {
        let dir = runtime.dir(id)?;
        let not_running = || ExecError::NotRunning { id: id.to_string() };
        if read_json::<ExitState>(&dir.exit())?.is_some() {
            return Err(not_running().into());
        }
        let state = read_json::<ContainerState>(&dir.state())?.ok_or_else(not_running)?;
        let cfg = read_json::<ContainerConfig>(&dir.config())?.ok_or_else(not_running)?;
        let pid = state.pid;
        let mut namespaces = Vec::new();
        for (name, flag) in NAMESPACES {
            if !differs(pid, name) {
                continue;
            }
            let path = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
            let fd = open(&path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(open_err(&path))?;
            namespaces.push((fd, flag));
        }
        let root_path = PathBuf::from(format!("/proc/{pid}/root"));
        let root = open(
            &root_path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(open_err(&root_path))?;
        // The pid may have been reused between reading the state and opening its files.
        if !process::is_alive(pid, state.start_time) {
            return Err(not_running().into());
        }

        let passwd = read_in_root(&root, "/etc/passwd")?;
        let group = read_in_root(&root, "/etc/group")?;
        let mut creds = resolve_user(&cfg.user, &passwd, &group).map_err(ExecError::User)?;
        for extra in &cfg.groups {
            let gid = resolve_group(extra, &group).map_err(ExecError::User)?;
            if !creds.groups.contains(&gid) {
                creds.groups.push(gid);
            }
        }

        let mut cgroup_procs = Vec::new();
        for path in runtime.cgroup(id)?.paths() {
            let path = path.join("cgroup.procs");
            let fd = open(&path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(open_err(&path))?;
            cgroup_procs.push(fd);
        }

        let seccomp = match &cfg.seccomp_program {
            Some(path) if !cfg.privileged => {
                let seccomp_err = |reason: String| ExecError::Seccomp {
                    path: path.clone(),
                    reason,
                };
                let bytes = fs::read(path).map_err(|e| seccomp_err(e.to_string()))?;
                let filter =
                    CompiledFilter::from_bytes(&bytes).map_err(|e| seccomp_err(e.to_string()))?;
                Some(filter)
            }
            _ => None,
        };
        let mut rlimits = Vec::new();
        for u in &cfg.ulimits {
            let resource = rlimit_resource(&u.name).ok_or_else(|| ExecError::Ulimit {
                name: u.name.clone(),
            })?;
            rlimits.push((resource, u.soft, u.hard));
        }
        let last_cap = caps::last_cap();
        let keep_caps = cfg
            .capabilities
            .clone()
            .unwrap_or_else(|| caps::DEFAULT_CAPS.to_vec());
        // As the container's init: those the agent itself has (its bounding set).
        let root_caps = keep_caps
            .iter()
            .copied()
            .filter(|c| *c <= last_cap && caps::in_bounding_set(*c))
            .collect();

        let arg0 = args.first().ok_or(ExecError::NoCommand)?;
        let path_var = cfg
            .env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        let candidates = cstrings(&exec_candidates(arg0, path_var))?;
        let argv = cstrings(args)?;
        let envp = cstrings(&cfg.env)?;
        let cwd = if cfg.cwd.is_empty() { "/" } else { &cfg.cwd };
        let dev_null = open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(open_err(Path::new("/dev/null")))?;
        Ok(Plan {
            cgroup_procs,
            namespaces,
            root,
            cwd: CString::new(cwd.as_bytes()).map_err(|_| ExecError::Nul)?,
            dev_null,
            rlimits,
            seccomp,
            no_new_privileges: cfg.no_new_privileges,
            keep_caps,
            root_caps,
            last_cap,
            uid: creds.uid,
            gid: creds.gid,
            groups: creds.groups,
            candidates,
            argv_ptrs: pointers(&argv),
            envp_ptrs: pointers(&envp),
            _argv: argv,
            _envp: envp,
            timeout,
        })
    }
}

/// Writes one report record; a failed write only loses the detail of the report.
fn report(fd: RawFd, kind: u8, a: i32, b: i32) {
    let mut rec = [0u8; RECORD_LEN];
    rec[0] = kind;
    rec[1..5].copy_from_slice(&a.to_ne_bytes());
    rec[5..9].copy_from_slice(&b.to_ne_bytes());
    // SAFETY: `rec` is valid for RECORD_LEN bytes; write(2) is async-signal-safe.
    unsafe { libc::write(fd, rec.as_ptr().cast(), RECORD_LEN) };
}

/// Reports a failed step and leaves without running anything of the agent's.
fn fail(report_fd: RawFd, step: i32) -> ! {
    report(report_fd, REPORT_FAILED, step, Errno::last_raw());
    // SAFETY: _exit ends the process at once, without atexit handlers or destructors, which
    // must not run in a child forked from the multi-threaded agent.
    unsafe { libc::_exit(126) }
}

fn monotonic_ms() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; it is async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}

/// The first child: cgroup, namespaces, root, stdio, then the probe as its child, watched until
/// it exits or the timeout kills it. Only system calls from here on.
fn middle(plan: &Plan, out_w: RawFd, report_w: RawFd) -> ! {
    // SAFETY (whole function): every call is a plain system call (or glibc's fork, which the
    // child of a fork may make) on fds and memory prepared by `Plan::new`, which this copy of the
    // agent's memory holds unchanged; nothing allocates or takes a lock.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        // Dies with the agent (the forking thread waits for this process, so it outlives it).
        // This process stays in the agent's pid namespace and cgroup: only the probe, forked
        // below inside the container's pid namespace, joins the container's cgroup, so the
        // container's end kills every probe process and leaves its cgroups empty.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        for (fd, flag) in &plan.namespaces {
            if libc::setns(fd.as_raw_fd(), flag.bits()) < 0 {
                fail(report_w, STEP_SETNS);
            }
        }
        if libc::fchdir(plan.root.as_raw_fd()) < 0 || libc::chroot(c".".as_ptr()) < 0 {
            fail(report_w, STEP_ROOT);
        }
        if libc::chdir(plan.cwd.as_ptr()) < 0 {
            fail(report_w, STEP_CWD);
        }
        if libc::dup2(plan.dev_null.as_raw_fd(), 0) < 0
            || libc::dup2(out_w, 1) < 0
            || libc::dup2(out_w, 2) < 0
        {
            fail(report_w, STEP_STDIO);
        }
        let child = libc::fork();
        if child < 0 {
            fail(report_w, STEP_FORK);
        }
        if child == 0 {
            probe(plan, report_w);
        }
        let pidfd = libc::syscall(libc::SYS_pidfd_open, child, 0) as RawFd;
        let deadline = monotonic_ms() + plan.timeout.as_millis().min(i32::MAX as u128) as i64;
        let mut timed_out = false;
        if pidfd >= 0 {
            loop {
                let left = deadline - monotonic_ms();
                if left <= 0 {
                    timed_out = true;
                    break;
                }
                let mut pfd = libc::pollfd {
                    fd: pidfd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                let n = libc::poll(&mut pfd, 1, left.min(i32::MAX as i64) as i32);
                if n > 0 {
                    break;
                }
                if n == 0 {
                    timed_out = true;
                    break;
                }
                if Errno::last() != Errno::EINTR {
                    break; // cannot watch it: wait without a timeout (the agent's watchdog still holds)
                }
            }
        }
        if timed_out {
            libc::kill(child, libc::SIGKILL);
        }
        let mut status = 0;
        while libc::waitpid(child, &mut status, 0) < 0 && Errno::last() == Errno::EINTR {}
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status)
        } else {
            -1
        };
        let kind = if timed_out {
            REPORT_TIMED_OUT
        } else {
            REPORT_EXITED
        };
        report(report_w, kind, code, 0);
        libc::_exit(0)
    }
}

/// The probe process, in the container's pid namespace: limits, confinement and credentials in
/// the order the container's init sets them, then exec.
fn probe(plan: &Plan, report_w: RawFd) -> ! {
    // SAFETY (whole function): as in `middle`: system calls on prepared memory only.
    unsafe {
        for fd in &plan.cgroup_procs {
            // "0" is the writing process itself, in v1 and v2 alike.
            if libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) < 0 {
                fail(report_w, STEP_CGROUP);
            }
        }
        // Dispositions the agent ignores (SIGPIPE) would survive the exec; none of its handlers
        // or its signal mask belongs in the container.
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        for (resource, soft, hard) in &plan.rlimits {
            if nix::sys::resource::setrlimit(*resource, *soft, *hard).is_err() {
                fail(report_w, STEP_ULIMIT);
            }
        }
        // The init's order: without no-new-privileges the filter goes in while CAP_SYS_ADMIN
        // is still held; then the bounding set, the user, the process's capabilities.
        if !plan.no_new_privileges {
            if let Some(filter) = &plan.seccomp {
                if filter.load().is_err() {
                    fail(report_w, STEP_SECCOMP);
                }
            }
        }
        if caps::drop_bounding(&plan.keep_caps, plan.last_cap).is_err() {
            fail(report_w, STEP_CAPS);
        }
        if libc::setgroups(plan.groups.len(), plan.groups.as_ptr()) < 0
            || libc::setgid(plan.gid) < 0
            || libc::setuid(plan.uid) < 0
        {
            fail(report_w, STEP_CREDS);
        }
        if plan.uid == 0 && caps::set_process_caps(&plan.root_caps).is_err() {
            fail(report_w, STEP_CAPS);
        }
        // Set after the credentials change, which clears it: the probe dies with the first child.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if plan.no_new_privileges {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                fail(report_w, STEP_NNP);
            }
            if let Some(filter) = &plan.seccomp {
                if filter.load().is_err() {
                    fail(report_w, STEP_SECCOMP);
                }
            }
        }
        // No descriptor of the agent's may reach the container's command (most are close-on-exec
        // already; this covers any that a library opened without). Best effort: a profile may
        // refuse close_range, and the report pipe is close-on-exec anyway.
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        for path in &plan.candidates {
            libc::execve(
                path.as_ptr(),
                plan.argv_ptrs.as_ptr(),
                plan.envp_ptrs.as_ptr(),
            );
            let e = Errno::last();
            if !matches!(e, Errno::ENOENT | Errno::ENOTDIR | Errno::EACCES) {
                fail(report_w, STEP_EXEC);
            }
        }
        report(report_w, REPORT_NOT_FOUND, 0, 0);
        libc::_exit(127)
    }
}

/// Reads what is in a non-blocking pipe now, keeping at most `limit` bytes in `out` (the rest is
/// read and dropped so the writer never blocks); returns whether the pipe reached end-of-file.
fn drain(fd: &OwnedFd, out: &mut Vec<u8>, limit: usize) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return true,
            Ok(n) => {
                let room = (limit + 1).saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(Errno::EINTR) => {}
            Err(_) => return false, // EAGAIN: nothing more now
        }
    }
}

fn nonblocking_pipe() -> Result<(OwnedFd, OwnedFd), ExecError> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|source| ExecError::Sys { op: "pipe", source })?;
    nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(|source| {
        ExecError::Sys {
            op: "fcntl",
            source,
        }
    })?;
    Ok((r, w))
}

impl Runtime {
    /// Runs `args` in running container `id` (see the module doc), killing it after `timeout`;
    /// keeps at most `output_limit` bytes of its output (one more when there was more, so the
    /// caller can tell). Blocks: call it on the blocking pool.
    pub fn exec(
        &self,
        id: &str,
        args: &[String],
        timeout: Duration,
        output_limit: usize,
    ) -> Result<ExecOutcome, RuntimeError> {
        let plan = Plan::new(self, id, args, timeout)?;
        let (out_r, out_w) = nonblocking_pipe()?;
        let (report_r, report_w) = nonblocking_pipe()?;
        // SAFETY: the child runs only `middle`, which makes system calls on memory prepared before
        // the fork and leaves with _exit (see there); glibc's fork keeps its allocator usable.
        let child = unsafe { libc::fork() };
        if child < 0 {
            return Err(ExecError::Sys {
                op: "fork",
                source: Errno::last(),
            }
            .into());
        }
        if child == 0 {
            middle(&plan, out_w.as_raw_fd(), report_w.as_raw_fd());
        }
        drop((out_w, report_w));
        let pidfd = process::pidfd_open_child(child).map_err(|source| ExecError::Sys {
            op: "pidfd_open",
            source,
        })?;
        let mut output = Vec::new();
        let mut out_open = true;
        let deadline = Instant::now() + timeout + WATCHDOG_SLACK;
        let mut watchdog_fired = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let _ = process::pidfd_signal(&pidfd, libc::SIGKILL);
                watchdog_fired = true;
                break;
            }
            let millis = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
            let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            if out_open {
                fds.push(PollFd::new(out_r.as_fd(), PollFlags::POLLIN));
            }
            match poll(
                &mut fds,
                PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX),
            ) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(source) => {
                    let _ = process::pidfd_signal(&pidfd, libc::SIGKILL);
                    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
                    return Err(ExecError::Sys { op: "poll", source }.into());
                }
            }
            let exited = fds[0].any().unwrap_or(false);
            if out_open && fds.get(1).and_then(PollFd::any).unwrap_or(false) {
                out_open = !drain(&out_r, &mut output, output_limit);
            }
            if exited {
                break;
            }
        }
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
        drain(&out_r, &mut output, output_limit);
        if watchdog_fired {
            return Ok(ExecOutcome {
                exit_code: -1,
                output,
                timed_out: true,
            });
        }
        let mut records = Vec::new();
        drain(&report_r, &mut records, 64 * RECORD_LEN);
        let mut outcome = None;
        for rec in records.chunks_exact(RECORD_LEN) {
            let a = i32::from_ne_bytes([rec[1], rec[2], rec[3], rec[4]]);
            let b = i32::from_ne_bytes([rec[5], rec[6], rec[7], rec[8]]);
            let step = usize::try_from(a).ok().and_then(|i| STEPS.get(i)).copied();
            match rec[0] {
                // A failure of the probe process comes before the first child's exit record.
                REPORT_FAILED => {
                    return Err(ExecError::Setup {
                        step: step.unwrap_or("exec"),
                        source: Errno::from_raw(b),
                    }
                    .into())
                }
                REPORT_NOT_FOUND => {
                    return Err(ExecError::NotFound {
                        arg0: args.first().cloned().unwrap_or_default(),
                    }
                    .into())
                }
                REPORT_EXITED => outcome.get_or_insert((a, false)),
                REPORT_TIMED_OUT => outcome.get_or_insert((a, true)),
                _ => continue,
            };
        }
        let (exit_code, timed_out) = outcome.ok_or(ExecError::NoReport)?;
        Ok(ExecOutcome {
            exit_code,
            output,
            timed_out,
        })
    }
}

#[cfg(test)]
#[path = "exec_tests.rs"]
mod tests;
