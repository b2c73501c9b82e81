//! Named network namespaces (as `ip netns add` makes them) and running code inside one.
//!
//! Switching namespaces changes the calling *thread*, so everything here happens on a fresh
//! `std::thread` that exits afterwards: a tokio worker never ends up in a foreign namespace.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};

/// Where named network namespaces live (shared with iproute2, so `ip netns exec` sees ours).
pub const NETNS_DIR: &str = "/run/netns";

/// Errors of creating, entering and removing network namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace directory could not be created.
    #[error("creating {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The namespace directory could not be made a shared mount point.
    #[error("making {path} a shared mount: {source}")]
    ShareDir {
        /// The directory.
        path: PathBuf,
        /// The mount error.
        source: Errno,
    },
    /// The mount point file of a namespace could not be created.
    #[error("creating netns file {path}: {source}")]
    CreateFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// unshare(CLONE_NEWNET) failed.
    #[error("creating a network namespace for {path}: {source}")]
    Unshare {
        /// The namespace file it was for.
        path: PathBuf,
        /// The error.
        source: Errno,
    },
    /// The new namespace could not be bind-mounted onto its file.
    #[error("bind-mounting the network namespace onto {path}: {source}")]
    Mount {
        /// The namespace file.
        path: PathBuf,
        /// The error.
        source: Errno,
    },
    /// A namespace file could not be opened.
    #[error("opening netns {path}: {source}")]
    Open {
        /// The namespace file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// setns(CLONE_NEWNET) failed.
    #[error("entering netns {path}: {source}")]
    Enter {
        /// The namespace file.
        path: PathBuf,
        /// The error.
        source: Errno,
    },
    /// The namespace could not be unmounted or its file removed.
    #[error("removing netns {path}: {source}")]
    Remove {
        /// The namespace file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// IPv6 could not be turned off for the interfaces of a new task namespace.
    #[error("turning IPv6 off in netns {path}: {source}")]
    Ipv6Off {
        /// The namespace file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The helper thread could not be started.
    #[error("starting a thread for {what}: {source}")]
    Spawn {
        /// What the thread was for.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The helper thread panicked before answering.
    #[error("the thread for {what} died before answering")]
    ThreadLost {
        /// What the thread was for.
        what: &'static str,
    },
}

/// The path of the named namespace `name`.
pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Runs `f` on a new thread, inside the network namespace at `netns` (or the caller's process
/// namespace when `None`), and returns its result without blocking the async caller.
pub async fn on_thread<T, F>(
    netns: Option<PathBuf>,
    what: &'static str,
    f: F,
) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("netns-{what}"))
        .spawn(move || {
            let result = match netns {
                Some(path) => enter(&path).map(|()| f()),
                None => Ok(f()),
            };
            // The receiver is gone only when the caller stopped waiting; nothing to report to.
            let _ = tx.send(result);
        })
        .map_err(|source| NetnsError::Spawn { what, source })?;
    rx.await.map_err(|_| NetnsError::ThreadLost { what })?
}

/// Moves the calling thread into the network namespace at `path`. Only for dedicated threads.
pub(crate) fn enter(path: &Path) -> Result<(), NetnsError> {
    let file = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
        path: path.to_path_buf(),
        source,
    })
}

/// Whether `path` is a mounted network namespace (and not a stale empty file).
pub fn is_netns(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Creates the named namespace file `path` holding a fresh, empty network namespace.
/// An existing mounted namespace there is kept as it is.
pub async fn create(path: &Path) -> Result<(), NetnsError> {
    create_with(path, Ipv6::Default).await
}

/// Creates a task's namespace at `path`, as `create`, where interfaces made later get no IPv6
/// (`net.ipv6.conf.default.disable_ipv6`; `lo` keeps `::1`). Task networks are IPv4 only, as
/// Docker's are unless IPv6 is asked for, and Docker turns IPv6 off on such interfaces too. Without
/// it every task end made a link-local address and sent duplicate-address probes, router
/// solicitations and MLD reports that the bridge floods to every other port: with n tasks on a
/// bridge, n² packets for the kernel (about a quarter of the machine's CPU while 1,000 started).
pub async fn create_for_task(path: &Path) -> Result<(), NetnsError> {
    create_with(path, Ipv6::OffForNewInterfaces).await
}

/// Whether a new namespace's later interfaces keep the kernel's IPv6 default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ipv6 {
    Default,
    OffForNewInterfaces,
}

async fn create_with(path: &Path, ipv6: Ipv6) -> Result<(), NetnsError> {
    if is_netns(path) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new(NETNS_DIR)).to_path_buf();
    prepare_dir(&dir)?;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| NetnsError::CreateFile {
            path: path.to_path_buf(),
            source,
        })?;
    let target = path.to_path_buf();
    let result = on_thread(None, "netns-create", move || {
        unshare_and_mount(&target, ipv6)
    })
    .await
    .and_then(|r| r);
    if result.is_err() {
        // Leave no empty file behind that would look like a namespace to a later reader.
        let _ = fs::remove_file(path);
    }
    result
}

/// On a dedicated thread: gives the thread a new network namespace and pins it at `target`.
fn unshare_and_mount(target: &Path, ipv6: Ipv6) -> Result<(), NetnsError> {
    unshare(CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Unshare {
        path: target.to_path_buf(),
        source,
    })?;
    if ipv6 == Ipv6::OffForNewInterfaces {
        // /proc/sys/net is the calling thread's namespace: the new one. A kernel without IPv6
        // has no such file, and nothing to turn off.
        match fs::write(IPV6_DEFAULT_OFF, "1") {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(NetnsError::Ipv6Off {
                    path: target.to_path_buf(),
                    source: e,
                })
            }
            _ => {}
        }
    }
    // thread-self, not self: only this thread moved to the new namespace.
    mount(
        Some("/proc/thread-self/ns/net"),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|source| NetnsError::Mount {
        path: target.to_path_buf(),
        source,
    })
}

/// The sysctl that decides whether interfaces made later in a namespace get IPv6.
const IPV6_DEFAULT_OFF: &str = "/proc/sys/net/ipv6/conf/default/disable_ipv6";

/// Serialises `prepare_dir` so two attaches never stack two bind mounts on the directory.
static PREPARE_DIR: Mutex<()> = Mutex::new(());

/// Makes `dir` exist and be a shared mount point, as iproute2 does, so namespace mounts made here
/// propagate into mount namespaces created later (a container's) instead of pinning a copy there.
fn prepare_dir(dir: &Path) -> Result<(), NetnsError> {
    let _guard = PREPARE_DIR.lock().unwrap_or_else(|p| p.into_inner());
    fs::create_dir_all(dir).map_err(|source| NetnsError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let share = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match share() {
        Ok(()) => Ok(()),
        // Not a mount point yet: bind it onto itself, then share it.
        Err(Errno::EINVAL) => mount(
            Some(dir),
            dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .and_then(|()| share()),
        Err(e) => Err(e),
    }
    .map_err(|source| NetnsError::ShareDir {
        path: dir.to_path_buf(),
        source,
    })
}

/// Unmounts and deletes the namespace file `path`; a missing or unmounted file is fine.
/// The namespace itself dies once no process and no other mount holds it.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => {
            return Err(NetnsError::Remove {
                path: path.to_path_buf(),
                source: e.into(),
            })
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}
