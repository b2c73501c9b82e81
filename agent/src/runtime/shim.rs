//! The per-container shim: `shoal-agent shim --root R --id ID --cgroup-parent P --ready-fd N`.
//!
//! A fresh exec of the agent binary, single-threaded, no tokio. It daemonizes (the agent only waits
//! for the short-lived first process), becomes the subreaper, places the container's init in its
//! cgroup, reports `ok <pid>` or `err <message>` on the ready fd, then copies the container's
//! stdout/stderr into `container.log` and records `exit.json` when the init exits.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, open, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigHandler, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, pipe2, ForkResult, Pid};

use super::cgroups::{self, Cgroup, CgroupError, CgroupMode, Limits};
use super::devices;
use super::init::{self, InitFds};
use super::logs::{self, LineSplitter, RotatingWriter};
use super::namespaces;
use super::process;
use super::seccomp::CompiledFilter;
use super::state::{read_json, write_json, ContainerDir, ContainerState, ExitState, StateError};
use super::{ContainerConfig, LogConfig};

/// How long the shim keeps reading the pipes after the init exited (other holders of the pipes are
/// killed with the pid namespace, so this is only a safety net).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Errors of the shim before the container runs; reported to `Runtime::start`.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// Bad command line.
    #[error("usage: shim --root DIR --id ID --cgroup-parent P --ready-fd N ({0})")]
    Usage(String),
    /// config.json is missing.
    #[error("no config.json for container {0}")]
    NoConfig(String),
    /// Reading or writing a record failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// Cgroup setup failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// A directory or file of the container could not be created.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A syscall failed.
    #[error("{op}: {source}")]
    Sys {
        /// The operation.
        op: &'static str,
        /// The kernel's error.
        source: Errno,
    },
    /// The seccomp profile could not be read or compiled.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// The container's init failed before exec (message from the init).
    #[error("{0}")]
    Init(String),
}

/// Parsed shim command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimArgs {
    /// The runtime root.
    pub root: PathBuf,
    /// The container id.
    pub id: String,
    /// Cgroup parent, relative to each hierarchy's root.
    pub cgroup_parent: String,
    /// Fd on which readiness is reported.
    pub ready_fd: i32,
    /// The host's cgroup layout as the agent found it (`--cgroup-mode`, see
    /// `CgroupMode::to_arg`); without it the shim reads it from `/proc/self/mountinfo`.
    pub cgroup_mode: Option<CgroupMode>,
}

/// Parses `[argv0] [shim] --root R --id ID --cgroup-parent P --ready-fd N [--cgroup-mode M]`.
pub fn parse_args(args: &[String]) -> Result<ShimArgs, ShimError> {
    let (mut root, mut id, mut parent, mut fd, mut mode) = (None, None, None, None, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let slot = match arg.as_str() {
            "--root" => &mut root,
            "--id" => &mut id,
            "--cgroup-parent" => &mut parent,
            "--ready-fd" => &mut fd,
            "--cgroup-mode" => &mut mode,
            _ => continue,
        };
        *slot = Some(
            it.next()
                .ok_or_else(|| ShimError::Usage(format!("{arg} needs a value")))?
                .clone(),
        );
    }
    let missing = |name: &str| ShimError::Usage(format!("missing {name}"));
    Ok(ShimArgs {
        root: PathBuf::from(root.ok_or_else(|| missing("--root"))?),
        id: id.ok_or_else(|| missing("--id"))?,
        cgroup_parent: parent.ok_or_else(|| missing("--cgroup-parent"))?,
        ready_fd: fd
            .ok_or_else(|| missing("--ready-fd"))?
            .parse()
            .map_err(|_| ShimError::Usage("--ready-fd is not a number".into()))?,
        cgroup_mode: mode
            .map(|m| {
                CgroupMode::from_arg(&m)
                    .ok_or_else(|| ShimError::Usage(format!("bad --cgroup-mode {m:?}")))
            })
            .transpose()?,
    })
}

/// Entry point of `shoal-agent shim`; must run before any other thread exists. Returns the exit code.
pub fn shim_main(args: &[String]) -> i32 {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("shoal shim: {e}");
            return 2;
        }
    };
    // The agent passed this fd to us alone; it is owned from here on.
    let mut ready = match take_ready_fd(args.ready_fd) {
        Ok(fd) => Some(fd),
        Err(e) => {
            eprintln!("shoal shim: ready fd {}: {e}", args.ready_fd);
            return 2;
        }
    };
    // Its own session, away from the agent's terminal and process group (the agent spawns the
    // shim without a pre-exec hook, so the shim does this itself, before anything else runs).
    if let Err(e) = nix::unistd::setsid() {
        report(&ready, &format!("err setsid: {e}"));
        return 1;
    }

    // Daemonize: the agent waits for this first process only; the shim proper is re-parented to
    // init (or the agent's own subreaper) and outlives the agent.
    // SAFETY: the shim is a fresh exec that has started no thread, so fork is sound.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => return 0,
        Ok(ForkResult::Child) => {}
        Err(e) => {
            report(&ready, &format!("err fork shim: {e}"));
            return 1;
        }
    }
    // Detached from the agent: a hangup or an interrupt of the agent's terminal must not end the
    // shim, nor a write to the agent's end of a pipe after the agent died. The container's init
    // resets every disposition before exec.
    for signal in [Signal::SIGHUP, Signal::SIGINT, Signal::SIGPIPE] {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { nix::sys::signal::signal(signal, SigHandler::SigIgn) };
    }
    // Holds no mount of the agent's working directory busy.
    let _ = std::env::set_current_dir("/");
    match run(&args, &mut ready) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shoal shim {}: {e}", args.id);
            report(&ready, &format!("err {e}"));
            1
        }
    }
}

/// Takes ownership of the ready fd, close-on-exec. The agent hands it over as stdout (fd 1):
/// it is then moved to a fd of its own and fd 1 becomes /dev/null, so nothing printed later
/// can be mistaken for the report and closing the report leaves no hole at fd 1.
fn take_ready_fd(raw: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: only borrowed for the fcntl calls; the kernel checks the fd (EBADF).
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
    if raw > 2 {
        fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        // SAFETY: the fd is open (checked above) and passed to this process alone.
        return Ok(unsafe { OwnedFd::from_raw_fd(raw) });
    }
    let moved = fcntl(borrowed, FcntlArg::F_DUPFD_CLOEXEC(3))?;
    let null = open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())?;
    // SAFETY: dup2 onto a standard fd this process owns; the old one (the pipe) is closed by it,
    // and its copy `moved` keeps the pipe open.
    if unsafe { libc::dup2(null.as_raw_fd(), raw) } < 0 {
        return Err(Errno::last());
    }
    // SAFETY: F_DUPFD_CLOEXEC returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

fn report(ready: &Option<OwnedFd>, msg: &str) {
    if let Some(fd) = ready {
        let _ = nix::unistd::write(fd.as_fd(), msg.as_bytes());
    }
}

fn sys(op: &'static str) -> impl FnOnce(Errno) -> ShimError {
    move |source| ShimError::Sys { op, source }
}

/// Starts the container and supervises it; `ready` is taken (closed) once readiness is reported.
fn run(args: &ShimArgs, ready: &mut Option<OwnedFd>) -> Result<i32, ShimError> {
    let dir = ContainerDir::new(&args.root, &args.id);
    let cfg: ContainerConfig =
        read_json(&dir.config())?.ok_or_else(|| ShimError::NoConfig(args.id.clone()))?;

    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(ShimError::Sys {
            op: "prctl(PR_SET_CHILD_SUBREAPER)",
            source: Errno::last(),
        });
    }
    for path in [dir.upper(), dir.work(), dir.merged()] {
        fs::create_dir_all(&path).map_err(|source| ShimError::Io { path, source })?;
    }

    let mode = match &args.cgroup_mode {
        Some(mode) => mode.clone(),
        None => cgroups::detect()?,
    };
    let cgroup = Cgroup::new(mode, &args.cgroup_parent, &args.id)?;
    let confined = cgroup
        .create(&Limits {
            memory_bytes: cfg.memory_bytes,
            nano_cpus: cfg.nano_cpus,
            pids_limit: cfg.pids_limit,
        })
        .and_then(|()| {
            if cfg.no_device_cgroup {
                return Ok(());
            }
            cgroup.set_devices(&devices::rules_for(&cfg.devices, cfg.privileged))
        })
        .map_err(ShimError::from);
    let result = confined.and_then(|()| start_container(&cfg, &dir, &cgroup));
    let (pid, stdout, stderr) = match result {
        Ok(started) => started,
        Err(e) => {
            let _ = cgroup.remove(Duration::from_secs(2));
            return Err(e);
        }
    };

    let pidfd = process::pidfd_open_child(pid.as_raw()).map_err(sys("pidfd_open"))?;
    let own = std::process::id() as i32;
    let state = ContainerState {
        shim_pid: own,
        shim_start_time: process::start_time(own).unwrap_or_default(),
        pid: pid.as_raw(),
        start_time: process::start_time(pid.as_raw()).unwrap_or_default(),
        started_at: shoal_proto::now_ns(),
    };
    write_json(&dir.state(), &state)?;
    report(ready, &format!("ok {}", pid.as_raw()));
    // Closing it tells the agent the report is complete.
    drop(ready.take());

    let code = supervise(&dir, cfg.log, pid, &pidfd, stdout, stderr);
    let exit = ExitState {
        code,
        finished_at: shoal_proto::now_ns(),
        oom_killed: cgroup.oom_killed(),
    };
    write_json(&dir.exit(), &exit)?;
    Ok(0)
}

/// The seccomp program `Runtime::start` compiled (or found in its cache) for this container;
/// `None` when the container runs without a filter (privileged, unconfined, or opted out).
fn seccomp_filter(cfg: &ContainerConfig) -> Result<Option<CompiledFilter>, ShimError> {
    let Some(path) = &cfg.seccomp_program else {
        return Ok(None);
    };
    let bytes = fs::read(path).map_err(|source| ShimError::Io {
        path: path.clone(),
        source,
    })?;
    CompiledFilter::from_bytes(&bytes)
        .map(Some)
        .map_err(|e| ShimError::Seccomp(format!("{}: {e}", path.display())))
}

/// Clones the init, places it in the cgroup, releases it and waits for its exec.
fn start_container(
    cfg: &ContainerConfig,
    dir: &ContainerDir,
    cgroup: &Cgroup,
) -> Result<(Pid, OwnedFd, OwnedFd), ShimError> {
    let netns = match &cfg.netns {
        Some(path) => Some(
            open(
                path.as_path(),
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| ShimError::Io {
                path: path.clone(),
                source: e.into(),
            })?,
        ),
        None => None,
    };
    let filter = seccomp_filter(cfg)?;
    let cloexec = OFlag::O_CLOEXEC;
    let (out_r, out_w) = pipe2(cloexec).map_err(sys("pipe"))?;
    let (err_r, err_w) = pipe2(cloexec).map_err(sys("pipe"))?;
    let (go_r, go_w) = pipe2(cloexec).map_err(sys("pipe"))?;
    let (report_r, report_w) = pipe2(cloexec).map_err(sys("pipe"))?;

    let fds = InitFds {
        go_read: &go_r,
        go_write: &go_w,
        report: &report_w,
        stdout: &out_w,
        stderr: &err_w,
        netns: netns.as_ref(),
        seccomp: filter.as_ref(),
    };
    let pid = namespaces::clone_init(
        || init::run(cfg, dir, &fds),
        namespaces::clone_flags(cfg.netns.is_some()),
    )
    .map_err(sys("clone"))?;
    drop((go_r, report_w, out_w, err_w, netns));

    let kill_and_reap = || {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(pid, None);
    };
    if let Err(e) = cgroup.add_process(pid.as_raw()) {
        kill_and_reap();
        return Err(e.into());
    }
    if let Err(e) = nix::unistd::write(&go_w, b"1") {
        kill_and_reap();
        return Err(ShimError::Sys {
            op: "release init",
            source: e,
        });
    }
    drop(go_w);

    // The report pipe is close-on-exec: EOF without a message means the exec succeeded.
    let mut message = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(&report_r, &mut buf) {
            Ok(0) => break,
            Ok(n) => message.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR) => continue,
            Err(e) => {
                kill_and_reap();
                return Err(ShimError::Sys {
                    op: "read init report",
                    source: e,
                });
            }
        }
    }
    if !message.is_empty() {
        kill_and_reap();
        return Err(ShimError::Init(
            String::from_utf8_lossy(&message).into_owned(),
        ));
    }
    Ok((pid, out_r, err_r))
}

/// One of the container's output pipes.
struct Stream {
    fd: Option<OwnedFd>,
    name: &'static str,
    lines: LineSplitter,
}

/// Copies the pipes into the log (rotated as `log_config` says) until the init has exited and the
/// pipes are drained; reaps every child (the shim is the subreaper). Returns the init's exit code.
fn supervise(
    dir: &ContainerDir,
    log_config: LogConfig,
    pid: Pid,
    pidfd: &OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> i32 {
    let log_path = dir.log();
    let mut log = match RotatingWriter::open(&log_path, log_config) {
        Ok(w) => Some(w),
        Err(e) => {
            eprintln!("shoal shim: {e}; container output is dropped");
            None
        }
    };
    let mut streams = [
        Stream {
            fd: Some(stdout),
            name: "stdout",
            lines: LineSplitter::default(),
        },
        Stream {
            fd: Some(stderr),
            name: "stderr",
            lines: LineSplitter::default(),
        },
    ];
    let mut code: Option<i32> = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let open_streams = streams.iter().filter(|s| s.fd.is_some()).count();
        if open_streams == 0 && code.is_some() {
            break;
        }
        let timeout = match drain_deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                PollTimeout::try_from(i32::try_from(left.as_millis()).unwrap_or(i32::MAX))
                    .unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };

        let (ready_streams, init_exited) = {
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(3);
            let mut owners: Vec<usize> = Vec::with_capacity(3);
            for (i, s) in streams.iter().enumerate() {
                if let Some(fd) = &s.fd {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                    owners.push(i);
                }
            }
            if code.is_none() {
                fds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
                owners.push(usize::MAX);
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    eprintln!("shoal shim: poll: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            let mut ready = Vec::new();
            let mut exited = false;
            for (fd, owner) in fds.iter().zip(owners) {
                if fd.revents().is_some_and(|r| !r.is_empty()) {
                    if owner == usize::MAX {
                        exited = true;
                    } else {
                        ready.push(owner);
                    }
                }
            }
            (ready, exited)
        };

        let now = shoal_proto::now_ns();
        let mut batch = Vec::new();
        for i in ready_streams {
            let stream = &mut streams[i];
            let Some(fd) = &stream.fd else { continue };
            let name = stream.name;
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) | Err(Errno::EBADF) | Err(Errno::EIO) => {
                    stream
                        .lines
                        .finish(|l| batch.extend(logs::encode(now, name, l)));
                    stream.fd = None;
                }
                Ok(n) => stream
                    .lines
                    .push(&buf[..n], |l| batch.extend(logs::encode(now, name, l))),
                Err(_) => {}
            }
        }
        if let (Some(log), false) = (log.as_mut(), batch.is_empty()) {
            if let Err(e) = log.write_lines(&batch) {
                eprintln!("shoal shim: write log: {e}");
            }
        }

        // Reaps every exited child. The init may be among them even before its pidfd shows it
        // (its pipes close during its exit, before the exit is signalled): its status is kept here.
        reap_children(pid, &mut code);
        if init_exited && code.is_none() {
            code = Some(reap(pid));
        }
        if code.is_some() && drain_deadline.is_none() {
            drain_deadline = Some(Instant::now() + DRAIN_AFTER_EXIT);
        }
    }
    // Whatever was cut off by the drain deadline still gets its partial line.
    let now = shoal_proto::now_ns();
    let mut batch = Vec::new();
    for stream in &mut streams {
        let name = stream.name;
        stream
            .lines
            .finish(|l| batch.extend(logs::encode(now, name, l)));
    }
    if let (Some(log), false) = (log.as_mut(), batch.is_empty()) {
        let _ = log.write_lines(&batch);
    }
    reap_children(pid, &mut code);
    code.unwrap_or(255)
}

/// Docker's exit code for a wait status: the exit code, or 128 + signal when killed.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

/// Waits for the init (known to have exited) and returns its exit code.
fn reap(pid: Pid) -> i32 {
    loop {
        match waitpid(pid, None) {
            Ok(status) => {
                if let Some(code) = exit_code(status) {
                    return code;
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => {
                eprintln!("shoal shim: waitpid {pid}: {e}");
                return 255;
            }
        }
    }
}

/// Reaps every exited child without blocking (the shim is a subreaper); records the init's code.
fn reap_children(init: Pid, code: &mut Option<i32>) {
    while let Ok(status) = waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
        if status.pid() == Some(init) {
            if let Some(c) = exit_code(status) {
                *code = Some(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_docker() {
        let pid = Pid::from_raw(1);
        assert_eq!(exit_code(WaitStatus::Exited(pid, 3)), Some(3));
        assert_eq!(
            exit_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some(137)
        );
        assert_eq!(exit_code(WaitStatus::StillAlive), None);
    }

    #[test]
    fn args_parse_in_any_order_after_the_mode() {
        let args: Vec<String> = [
            "shoal-agent",
            "shim",
            "--id",
            "c1",
            "--ready-fd",
            "3",
            "--root",
            "/r",
            "--cgroup-parent",
            "shoal",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            parse_args(&args).unwrap(),
            ShimArgs {
                root: "/r".into(),
                id: "c1".into(),
                cgroup_parent: "shoal".into(),
                ready_fd: 3,
                cgroup_mode: None,
            }
        );
        let mode = CgroupMode::V2("/sys/fs/cgroup".into());
        let mut with_mode = args.clone();
        with_mode.extend(["--cgroup-mode".to_string(), mode.to_arg()]);
        assert_eq!(parse_args(&with_mode).unwrap().cgroup_mode, Some(mode));
        with_mode.push("--cgroup-mode".to_string());
        with_mode.push("v2\trelative".to_string());
        assert!(parse_args(&with_mode).is_err());
        assert!(parse_args(&args[..4]).is_err());
        assert!(parse_args(&["shim".to_string(), "--root".to_string()]).is_err());
    }
}
