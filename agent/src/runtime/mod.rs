//! Container runtime: runs each container under its own shim (a fresh exec of the agent binary),
//! hand-written on nix — namespaces, cgroups v1/v2, overlayfs rootfs, pivot_root.
//!
//! The agent side (`Runtime`) only spawns shims and reads the records they leave in `root/<id>/`
//! (see `state`), so a restarted agent re-adopts running containers from the directory alone. All
//! forking happens in the single-threaded shim, never in the multi-threaded agent.

pub mod bench;
pub mod caps;
pub mod cgroups;
mod config;
pub mod devices;
pub mod exec;
pub mod init;
pub mod logs;
pub mod namespaces;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod shim;
pub mod state;

use std::fs;
use std::io::ErrorKind;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use tokio::io::unix::AsyncFd;

use cgroups::{Cgroup, CgroupError, CgroupMode};
use rootfs::RootfsError;
use sha2::{Digest, Sha256};
use state::{read_json, write_json, ContainerDir, ContainerState, ExitState, StateError};

pub use config::{
    ContainerConfig, DeviceNode, LogConfig, MountKind, MountSpec, Rlimit, SeccompConfig,
};
pub use shim::shim_main;

/// How long `start` waits for the shim to report that the container runs.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `delete` waits for processes to die and cgroups to empty.
const DELETE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a container is doing, as seen from its records and /proc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerStatus {
    /// The container's init runs with this (host) pid.
    Running {
        /// Host pid of the container's init.
        pid: i32,
    },
    /// The container's init exited with this code (128 + signal if killed).
    Exited {
        /// Exit code.
        code: i32,
    },
    /// Starting, failed to start, or its shim died without recording an exit.
    Unknown,
}

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The configuration cannot be run.
    #[error("invalid container config: {0}")]
    InvalidConfig(String),
    /// No container with this id.
    #[error("no such container: {id}")]
    NotFound {
        /// The id.
        id: String,
    },
    /// A container with this id already exists.
    #[error("container {id} already exists")]
    AlreadyExists {
        /// The id.
        id: String,
    },
    /// A file or directory of the runtime could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A record could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// Cgroup error.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// Mount error.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// The shim could not be spawned.
    #[error("spawn shim: {0}")]
    Spawn(std::io::Error),
    /// The container did not start; `message` is what the shim or the container's init hit.
    #[error("container {id} failed to start: {message}")]
    Start {
        /// The id.
        id: String,
        /// The error as reported by the shim.
        message: String,
    },
    /// This host cannot enforce a protection every container gets, and the agent was not told
    /// to run containers without it.
    #[error("this node cannot confine containers: {missing}; start shoal-agent with --allow-unconfined to run them without that protection")]
    Unconfined {
        /// The missing protections, with reasons.
        missing: String,
    },
    /// The shim did not report in time.
    #[error("container {id}: shim did not report within {0:?}", START_TIMEOUT)]
    StartTimeout {
        /// The id.
        id: String,
    },
    /// The container has no running state yet (never started, or start failed).
    #[error("container {id} is not started")]
    NotStarted {
        /// The id.
        id: String,
    },
    /// The shim is gone without recording the container's exit.
    #[error("shim of container {id} died without recording an exit")]
    ShimDied {
        /// The id.
        id: String,
    },
    /// A syscall failed.
    #[error("{op}: {source}")]
    Sys {
        /// The operation.
        op: &'static str,
        /// The kernel's error.
        source: Errno,
    },
    /// Running a command in a container (a healthcheck probe) failed.
    #[error(transparent)]
    Exec(#[from] exec::ExecError),
}

/// Where `--init` finds its init binary unless the agent is told otherwise (Debian's tini).
pub const DEFAULT_INIT_PATH: &str = "/usr/bin/tini-static";

/// The container runtime of one agent: a root directory of containers and a cgroup parent.
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
    cgroup_parent: String,
    cgroup_mode: CgroupMode,
    shim_exe: PathBuf,
    /// Protections this host cannot enforce (device cgroup, seccomp), each with the reason.
    missing: Vec<String>,
    /// Run containers even without the protections in `missing` (`--allow-unconfined`).
    allow_unconfined: bool,
    init_path: PathBuf,
    node_name: String,
    /// One seccomp compile at a time: concurrent starts of a new profile wait for the first one's
    /// program instead of each compiling (and growing the heap) in its own thread.
    seccomp_compile: std::sync::Arc<std::sync::Mutex<()>>,
}

impl Runtime {
    /// Opens (creating if needed) the runtime root; `cgroup_parent` is relative to each cgroup hierarchy.
    pub fn new(root: &Path, cgroup_parent: &str) -> Result<Runtime, RuntimeError> {
        fs::create_dir_all(root).map_err(|source| RuntimeError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        let root = fs::canonicalize(root).map_err(|source| RuntimeError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        // Directories of containers deleted before a restart that were not emptied yet.
        if root.join(TRASH).exists() {
            empty_trash_soon(root.join(TRASH));
        }
        let cgroup_mode = cgroups::detect()?;
        // Validates the parent once, here, rather than at the first start.
        Cgroup::new(cgroup_mode.clone(), cgroup_parent, "x")?;
        let missing = [
            devices::check_device_control(&cgroup_mode),
            seccomp::supported().map_err(|e| e.to_string()),
        ]
        .into_iter()
        .filter_map(Result::err)
        .collect();
        Ok(Runtime {
            root,
            cgroup_parent: cgroup_parent.trim_matches('/').to_string(),
            cgroup_mode,
            shim_exe: PathBuf::from("/proc/self/exe"),
            missing,
            allow_unconfined: false,
            init_path: PathBuf::from(DEFAULT_INIT_PATH),
            node_name: String::new(),
            seccomp_compile: Default::default(),
        })
    }

    /// Runs containers even where this host cannot enforce a protection (device cgroup,
    /// seccomp); the protection is then left out instead of the container refused.
    pub fn with_allow_unconfined(mut self, allow: bool) -> Runtime {
        self.allow_unconfined = allow;
        self
    }

    /// Uses another init binary for `--init` (a static one: it runs inside the container).
    pub fn with_init_path(mut self, path: &Path) -> Runtime {
        self.init_path = path.to_path_buf();
        self
    }

    /// Names this node in task errors.
    pub fn with_node_name(mut self, name: &str) -> Runtime {
        self.node_name = name.to_string();
        self
    }

    /// The init binary of `--init`.
    pub fn init_path(&self) -> &Path {
        &self.init_path
    }

    /// This node's name, for task errors.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The protections this host cannot enforce, each with the reason (empty: fully confined).
    pub fn missing_protections(&self) -> &[String] {
        &self.missing
    }

    /// Uses another executable as the shim (it must run `shim_main` for `<exe> shim ...`).
    pub fn with_shim_exe(mut self, exe: &Path) -> Runtime {
        self.shim_exe = exe.to_path_buf();
        self
    }

    /// The runtime's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cgroup of container `id`.
    pub fn cgroup(&self, id: &str) -> Result<Cgroup, RuntimeError> {
        Ok(Cgroup::new(
            self.cgroup_mode.clone(),
            &self.cgroup_parent,
            id,
        )?)
    }

    fn dir(&self, id: &str) -> Result<ContainerDir, RuntimeError> {
        validate_id(id)?;
        Ok(ContainerDir::new(&self.root, id))
    }

    /// Creates and starts a container; returns the host pid of its init once it has exec'd.
    pub fn start(&self, cfg: &ContainerConfig) -> Result<i32, RuntimeError> {
        let dir = self.dir(&cfg.id)?;
        if cfg.args.is_empty() {
            return Err(RuntimeError::InvalidConfig("no command".into()));
        }
        if cfg.layers.is_empty() {
            return Err(RuntimeError::InvalidConfig("no layers".into()));
        }
        if !self.missing.is_empty() && !self.allow_unconfined {
            return Err(RuntimeError::Unconfined {
                missing: self.missing.join("; "),
            });
        }
        let mut cfg = cfg.clone();
        if self.allow_unconfined {
            // What the host cannot enforce is left out, as the operator chose.
            if self.missing.iter().any(|m| m.contains("seccomp")) {
                cfg.seccomp = SeccompConfig::Unconfined;
            }
            cfg.no_device_cgroup = self.missing.iter().any(|m| m.contains("device"));
        }
        cfg.seccomp_program = self.seccomp_program(&cfg)?;
        let cfg = &cfg;
        match fs::create_dir(&dir.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(RuntimeError::AlreadyExists { id: cfg.id.clone() })
            }
            Err(source) => {
                return Err(RuntimeError::Io {
                    path: dir.dir.clone(),
                    source,
                })
            }
        }
        let result = write_json(&dir.config(), cfg)
            .map_err(RuntimeError::from)
            .and_then(|()| self.spawn_shim(&dir, &cfg.id));
        if result.is_err() {
            // Nothing of a failed start is kept. The shim normally cleaned up itself; after a timeout
            // or a late failure, a process may still sit in the cgroup.
            if let Ok(cgroup) = self.cgroup(&cfg.id) {
                let _ = cgroup.kill_all(DELETE_TIMEOUT);
                let _ = cgroup.remove(DELETE_TIMEOUT);
            }
            let _ = fs::remove_dir_all(&dir.dir);
        }
        result
    }

    /// The compiled seccomp program of a container, from the cache in `<root>/.seccomp/` (one file
    /// per profile and capability set, written atomically) or compiled now; `None` without a filter.
    fn seccomp_program(&self, cfg: &ContainerConfig) -> Result<Option<PathBuf>, RuntimeError> {
        let json = match &cfg.seccomp {
            _ if cfg.privileged => return Ok(None),
            SeccompConfig::Unconfined => return Ok(None),
            SeccompConfig::Default => seccomp::DEFAULT_PROFILE_JSON,
            SeccompConfig::Custom(json) => json.as_str(),
        };
        let mut caps = cfg
            .capabilities
            .as_deref()
            .unwrap_or(caps::DEFAULT_CAPS)
            .to_vec();
        caps.sort_unstable();
        caps.dedup();
        let caps = caps.as_slice();
        let mut hasher = Sha256::new();
        hasher.update(json.as_bytes());
        for cap in caps {
            hasher.update(cap.to_le_bytes());
        }
        let dir = self.root.join(".seccomp");
        let path = dir.join(format!("{}.bpf", hex::encode(hasher.finalize())));
        if path.is_file() {
            return Ok(Some(path));
        }
        // Poisoning only means another compile panicked; the cache file is written atomically.
        let _one_at_a_time = self
            .seccomp_compile
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if path.is_file() {
            return Ok(Some(path));
        }
        let invalid = |e: String| RuntimeError::InvalidConfig(format!("seccomp profile: {e}"));
        let filter = match &cfg.seccomp {
            SeccompConfig::Custom(json) => {
                let profile = shoal_proto::seccomp::parse_profile(json.as_bytes())
                    .map_err(|e| invalid(e.to_string()))?;
                seccomp::compile(&profile, caps)
            }
            _ => seccomp::compile(seccomp::default_profile(), caps),
        }
        .map_err(|e| invalid(e.to_string()))?;
        // libseccomp's work space (a few MiB for Docker's profile) is free again but would stay
        // in the agent's heap: hand it back to the kernel. Once per profile and capability set.
        // SAFETY: malloc_trim only releases memory the allocator holds free; no pointer is touched.
        unsafe { libc::malloc_trim(0) };
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RuntimeError::Io { path, source }
        };
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        // Unique per writer: concurrent starts of the same profile must not share a half-written file.
        let tmp = dir.join(format!(".{:016x}.tmp", rand::random::<u64>()));
        fs::write(&tmp, filter.to_bytes()).map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(Some(path))
    }

    /// Spawns the shim with `posix_spawn` (std picks it when there is no `pre_exec` closure):
    /// the child borrows the agent's address space until its exec instead of copying the page
    /// tables of a large multi-threaded process, as a fork would. The ready pipe is the shim's
    /// stdout; the shim moves it away from fd 1 and makes itself a session leader (see
    /// `shim_main`), which the agent used to do between fork and exec.
    fn spawn_shim(&self, dir: &ContainerDir, id: &str) -> Result<i32, RuntimeError> {
        let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
            .map_err(|source| RuntimeError::Sys { op: "pipe", source })?;
        let shim_log = fs::File::create(dir.shim_log()).map_err(|source| RuntimeError::Io {
            path: dir.shim_log(),
            source,
        })?;
        let mut cmd = Command::new(&self.shim_exe);
        cmd.arg("shim")
            .arg("--root")
            .arg(&self.root)
            .arg("--id")
            .arg(id)
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .args(["--ready-fd", "1"])
            .arg("--cgroup-mode")
            .arg(self.cgroup_mode.to_arg())
            .stdin(Stdio::null())
            .stdout(Stdio::from(ready_w))
            .stderr(shim_log);
        let spawned = cmd.spawn();
        // The command holds the pipe's write end: only the shim may keep it open, or its
        // report would never end.
        drop(cmd);
        let mut child = spawned.map_err(RuntimeError::Spawn)?;
        // The first shim process forks the real shim and exits at once.
        child.wait().map_err(RuntimeError::Spawn)?;

        let report = read_report(&ready_r, START_TIMEOUT).map_err(|e| match e {
            None => RuntimeError::StartTimeout { id: id.to_string() },
            Some(source) => RuntimeError::Sys {
                op: "read shim report",
                source,
            },
        })?;
        let report = String::from_utf8_lossy(&report);
        if let Some(pid) = report
            .strip_prefix("ok ")
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            return Ok(pid);
        }
        let message = match report.strip_prefix("err ") {
            Some(msg) => msg.to_string(),
            None => {
                let log = fs::read_to_string(dir.shim_log()).unwrap_or_default();
                format!("shim exited without reporting: {}", log.trim())
            }
        };
        Err(RuntimeError::Start {
            id: id.to_string(),
            message,
        })
    }

    /// Every container under the root with its status (for re-adoption after an agent restart).
    pub fn list(&self) -> Result<Vec<(String, ContainerStatus)>, RuntimeError> {
        let entries = fs::read_dir(&self.root).map_err(|source| RuntimeError::Io {
            path: self.root.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Some(id) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if validate_id(&id).is_err() || !entry.path().join("config.json").exists() {
                continue;
            }
            match self.status(&id) {
                Ok(status) => out.push((id, status)),
                Err(RuntimeError::NotFound { .. }) => {} // deleted meanwhile
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The status of one container.
    pub fn status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let dir = self.dir(id)?;
        if !dir.dir.exists() {
            return Err(RuntimeError::NotFound { id: id.to_string() });
        }
        if let Some(exit) = read_json::<ExitState>(&dir.exit())? {
            return Ok(ContainerStatus::Exited { code: exit.code });
        }
        let Some(state) = read_json::<ContainerState>(&dir.state())? else {
            return Ok(ContainerStatus::Unknown);
        };
        if process::is_alive(state.pid, state.start_time) {
            return Ok(ContainerStatus::Running { pid: state.pid });
        }
        // It may have exited between the two reads.
        Ok(match read_json::<ExitState>(&dir.exit())? {
            Some(exit) => ContainerStatus::Exited { code: exit.code },
            None => ContainerStatus::Unknown,
        })
    }

    /// The full exit record of a container that has exited (exit code, time, OOM kill).
    pub fn exit_state(&self, id: &str) -> Result<Option<ExitState>, RuntimeError> {
        Ok(read_json(&self.dir(id)?.exit())?)
    }

    /// Waits until the container has exited and returns its exit code. Works for containers started by
    /// an earlier agent process: it watches the shim through a pidfd, not as a child.
    pub async fn wait(&self, id: &str) -> Result<i32, RuntimeError> {
        let dir = self.dir(id)?;
        if let Some(exit) = read_json::<ExitState>(&dir.exit())? {
            return Ok(exit.code);
        }
        let Some(state) = read_json::<ContainerState>(&dir.state())? else {
            return Err(if dir.dir.exists() {
                RuntimeError::NotStarted { id: id.to_string() }
            } else {
                RuntimeError::NotFound { id: id.to_string() }
            });
        };
        let pidfd =
            process::pidfd_open(state.shim_pid, state.shim_start_time).map_err(|source| {
                RuntimeError::Sys {
                    op: "pidfd_open",
                    source,
                }
            })?;
        if let Some(pidfd) = pidfd {
            wait_pidfd(pidfd).await?;
        }
        // The shim writes exit.json just before it exits.
        match read_json::<ExitState>(&dir.exit())? {
            Some(exit) => Ok(exit.code),
            None => Err(RuntimeError::ShimDied { id: id.to_string() }),
        }
    }

    /// Stops a running container: SIGTERM, then SIGKILL after `grace`; returns once it has exited.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let dir = self.dir(id)?;
        let Some(state) = read_json::<ContainerState>(&dir.state())? else {
            return Err(RuntimeError::NotStarted { id: id.to_string() });
        };
        let sys = |op| move |source| RuntimeError::Sys { op, source };
        let Some(pidfd) =
            process::pidfd_open(state.pid, state.start_time).map_err(sys("pidfd_open"))?
        else {
            return Ok(()); // already gone
        };
        // A number, not nix's Signal: real-time signals (SIGRTMIN+3 for systemd) are valid too.
        let wanted = read_json::<ContainerConfig>(&dir.config())?
            .map(|c| c.stop_signal)
            .filter(|s| *s > 0)
            .unwrap_or(Signal::SIGTERM as i32);
        // The init of a pid namespace never gets a signal it does not handle: if it has no
        // handler for the stop signal, the kernel drops it and the grace period could only end
        // in SIGKILL. Kill it at once instead of waiting for nothing.
        let signal = if process::catches_signal(state.pid, wanted) {
            wanted
        } else {
            tracing::debug!(container.id = %id, signal = wanted, "init does not handle the stop signal: killing at once");
            Signal::SIGKILL as i32
        };
        process::pidfd_signal(&pidfd, signal).map_err(sys("pidfd_send_signal"))?;
        let pidfd = async_pidfd(pidfd).map_err(|source| RuntimeError::Io {
            path: dir.dir.clone(),
            source,
        })?;
        if tokio::time::timeout(grace, pidfd.readable()).await.is_err() {
            process::pidfd_signal(pidfd.get_ref(), Signal::SIGKILL as i32)
                .map_err(sys("pidfd_send_signal"))?;
        }
        drop(pidfd);
        // Until the shim has recorded the exit, the container is not stopped for the caller.
        self.wait(id).await.map(drop)
    }

    /// Removes a container: kills whatever is left in its cgroup, waits for its shim, unmounts its
    /// rootfs if visible here, removes its cgroups and its directory. Deleting a missing id is a no-op.
    pub fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.dir(id)?;
        if !dir.dir.exists() {
            return Ok(());
        }
        let state = read_json::<ContainerState>(&dir.state()).ok().flatten();
        if let Some(state) = &state {
            if let Ok(Some(pidfd)) = process::pidfd_open(state.pid, state.start_time) {
                let _ = process::pidfd_signal(&pidfd, Signal::SIGKILL as i32);
            }
        }
        let began = Instant::now();
        let cgroup = self.cgroup(id)?;
        cgroup.kill_all(DELETE_TIMEOUT)?;
        let killed = Instant::now();
        if let Some(state) = &state {
            if let Ok(Some(shim)) = process::pidfd_open(state.shim_pid, state.shim_start_time) {
                // The shim records the exit and leaves within milliseconds of its container's death.
                if !process::pidfd_wait(&shim, DELETE_TIMEOUT).unwrap_or(false) {
                    let _ = process::pidfd_signal(&shim, Signal::SIGKILL as i32);
                    let _ = process::pidfd_wait(&shim, Duration::from_secs(1));
                }
            }
        }
        let reaped = Instant::now();
        rootfs::unmount_if_mounted(&dir.merged())?;
        let unmounted = Instant::now();
        cgroup.remove(DELETE_TIMEOUT)?;
        let rmdired = Instant::now();
        self.discard(&dir.dir, id)?;
        // Where a removal waits, per container (issue 15's density profile).
        tracing::debug!(
            container.id = %id,
            kill_ms = ms(killed - began),
            shim_ms = ms(reaped - killed),
            umount_ms = ms(unmounted - reaped),
            rmdir_ms = ms(rmdired - unmounted),
            dir_ms = ms(rmdired.elapsed()),
            "container deleted"
        );
        Ok(())
    }

    /// Takes a deleted container's directory (its processes dead, its rootfs unmounted) out of
    /// the root at once by moving it into the trash, which a background thread empties: deleting
    /// the files of a large container waits on the disk, and a `service rm` of 1,000 waited on
    /// it. Where the move fails, the directory is deleted here.
    fn discard(&self, dir: &Path, id: &str) -> Result<(), RuntimeError> {
        let trash = self.root.join(TRASH);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let moved = fs::create_dir_all(&trash)
            .and_then(|()| fs::rename(dir, trash.join(format!("{id}-{stamp}"))));
        match moved {
            Ok(()) => {
                empty_trash_soon(trash);
                Ok(())
            }
            Err(e) => {
                tracing::debug!(container.id = %id, error = %e, "moving into the trash; deleting in place");
                fs::remove_dir_all(dir).map_err(|source| RuntimeError::Io {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }

    /// The directory removed containers wait in to be deleted (emptied in the background, and
    /// when the runtime is opened again after a restart).
    pub fn trash(&self) -> PathBuf {
        self.root.join(TRASH)
    }

    /// The container's log file (JSON lines, see `logs`).
    pub fn log_path(&self, id: &str) -> PathBuf {
        ContainerDir::new(&self.root, id).log()
    }
}

/// The trash's name under the root: one no container id can take (ids never start with `.`).
const TRASH: &str = ".trash";

/// Trash directories being emptied, and whether more was put in since the emptier last looked.
static EMPTYING: std::sync::Mutex<Vec<(PathBuf, bool)>> = std::sync::Mutex::new(Vec::new());

/// Makes sure a thread empties `trash` (one per trash directory, running until it finds the
/// trash empty and nothing was added meanwhile).
fn empty_trash_soon(trash: PathBuf) {
    {
        let mut emptying = EMPTYING.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = emptying.iter_mut().find(|(t, _)| *t == trash) {
            entry.1 = true; // the running emptier looks again
            return;
        }
        emptying.push((trash.clone(), true));
    }
    let dir = trash.clone();
    let spawned = std::thread::Builder::new()
        .name("runtime-trash".to_string())
        .spawn(move || empty_trash(&dir));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "starting the trash emptier; the next deletion tries again");
        let mut emptying = EMPTYING.lock().unwrap_or_else(|p| p.into_inner());
        emptying.retain(|(t, _)| *t != trash);
    }
}

/// The emptier's loop (see [`empty_trash_soon`]).
fn empty_trash(trash: &Path) {
    loop {
        {
            let mut emptying = EMPTYING.lock().unwrap_or_else(|p| p.into_inner());
            let Some(i) = emptying.iter().position(|(t, _)| t == trash) else {
                return;
            };
            if !emptying[i].1 {
                emptying.swap_remove(i);
                return;
            }
            emptying[i].1 = false;
        }
        let Ok(entries) = fs::read_dir(trash) else {
            continue; // no trash (yet): looks again only if something was added
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if let Err(e) = fs::remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), error = %e, "emptying the trash");
            }
        }
    }
}

/// A duration in milliseconds, for the timing logs.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Container ids are directory names: non-empty, at most 128 of `[A-Za-z0-9_.-]`, not starting with `.`.
pub fn validate_id(id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidConfig(format!(
            "invalid container id {id:?}"
        )))
    }
}

/// Reads the shim's report until EOF; `Err(None)` on timeout.
fn read_report(fd: &OwnedFd, timeout: Duration) -> Result<Vec<u8>, Option<Errno>> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(None);
        }
        let millis = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => return Err(None),
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Some(e)),
        }
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(Some(e)),
        }
    }
}

/// Registers a pidfd with tokio's reactor (readable once the process has exited).
fn async_pidfd(pidfd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the OwnedFd is a valid pidfd that AsyncFd owns from here on; nothing else closes or
    // replaces it while it is registered.
    unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)
}

/// Waits (async) until the process behind `pidfd` exits.
async fn wait_pidfd(pidfd: OwnedFd) -> Result<(), RuntimeError> {
    let fd = async_pidfd(pidfd).map_err(|source| RuntimeError::Io {
        path: PathBuf::from("pidfd"),
        source,
    })?;
    let _guard = fd.readable().await.map_err(|source| RuntimeError::Io {
        path: PathBuf::from("pidfd"),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests;
