//! The container's root filesystem: overlay of the image layers, /proc, /dev, /sys, then pivot_root.
//!
//! Runs in the container's init, in its fresh mount namespace, before `execve`. All mount syscalls of
//! the runtime live here.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, umask, Mode, SFlag};
use nix::unistd::{chdir, chown, pivot_root, Gid, Uid};

use super::{DeviceNode, MountKind, MountSpec};

/// Errors preparing the root filesystem.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A mount (or unmount) failed.
    #[error("mount {what} on {target}: {source}")]
    Mount {
        /// What was mounted (`overlay`, `proc`, a bind source...).
        what: String,
        /// Where.
        target: PathBuf,
        /// The kernel's error.
        source: Errno,
    },
    /// A directory, file, device node or symlink could not be created.
    #[error("create {path}: {source}")]
    Create {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A layer path cannot be passed to overlayfs (it holds `,` or `:`, or is relative).
    #[error("layer path {0} cannot be used in overlay options")]
    BadLayerPath(PathBuf),
    /// The image has no layers.
    #[error("no layers")]
    NoLayers,
    /// A sysctl could not be set.
    #[error("sysctl {key}: {source}")]
    Sysctl {
        /// The sysctl, dotted (`net.core.somaxconn`).
        key: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A path given for the container (device, sysctl) leaves its root.
    #[error("{0}: must be an absolute path without '..'")]
    BadPath(PathBuf),
    /// A bind mount's source is not on the node.
    #[error("bind source path does not exist: {0}")]
    MissingSource(PathBuf),
    /// A bind mount's propagation is none of docker's words.
    #[error("invalid propagation mode {0:?}")]
    BadPropagation(String),
    /// Filling a new volume with the image's content at its target failed.
    #[error("copy the image's {target} into the volume: {source}")]
    CopyUp {
        /// The path in the container.
        target: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// pivot_root or the detach of the old root failed.
    #[error("pivot_root into {root}: {source}")]
    Pivot {
        /// The new root.
        root: PathBuf,
        /// The kernel's error.
        source: Errno,
    },
}

/// Paths hidden behind /dev/null (files) or an empty read-only tmpfs (directories), as docker's
/// default spec.
const MASKED_PATHS: &[&str] = &[
    "proc/asound",
    "proc/acpi",
    "proc/interrupts",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];
/// Paths made read-only.
const READONLY_PATHS: &[&str] = &[
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];
/// Where `--init` puts the init binary in the container (docker's path).
pub const INIT_PATH: &str = "/sbin/docker-init";

/// What the root filesystem holds besides the image: the confinement choices of the container.
#[derive(Debug, Clone, Copy, Default)]
pub struct RootfsOptions<'a> {
    /// No masked or read-only paths, a writable /sys.
    pub privileged: bool,
    /// Extra device nodes (all host devices for a privileged container).
    pub devices: &'a [DeviceNode],
    /// Namespaced sysctls, written before /proc/sys is made read-only.
    pub sysctls: Option<&'a BTreeMap<String, String>>,
    /// Host path of the init binary to bind-mount read-only at `INIT_PATH`.
    pub init: Option<&'a Path>,
    /// The container's own mounts (`--mount`, secrets, configs), in order.
    pub mounts: &'a [MountSpec],
}

/// Device nodes created in the container's /dev: name, major, minor.
const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// The overlayfs mount data: `lowerdir` lists the top layer first (layers come lowest first).
pub fn overlay_options(
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
) -> Result<String, RootfsError> {
    if layers.is_empty() {
        return Err(RootfsError::NoLayers);
    }
    let check = |p: &Path| -> Result<String, RootfsError> {
        let s = p.to_string_lossy();
        if !p.is_absolute() || s.contains(',') || s.contains(':') {
            return Err(RootfsError::BadLayerPath(p.to_path_buf()));
        }
        Ok(s.into_owned())
    };
    let lower = layers
        .iter()
        .rev()
        .map(|l| check(l))
        .collect::<Result<Vec<_>, _>>()?
        .join(":");
    Ok(format!(
        "lowerdir={lower},upperdir={},workdir={}",
        check(upper)?,
        check(work)?
    ))
}

/// The overlayfs option that skips syncing the upper layer: no `syncfs` when the mount goes away,
/// `fsync` in the container a no-op (the page cache still holds every write).
const OVERLAY_VOLATILE: &str = "volatile";

/// The mount data of the container's root: `options` with [`OVERLAY_VOLATILE`].
///
/// A task's root is never mounted twice (each start makes a fresh container directory, and a
/// task restarted is a new container) and never outlives its host: after a crash the task is
/// replaced and its directory reaped. Without the option, the last reference to the mount —
/// the container's exit — ran `syncfs` on the whole host filesystem under the upper layer: a
/// `service rm` of 1,000 containers was 1,000 filesystem syncs on the path of every stop
/// (issue 15, what Podman does for `--rm` containers).
pub fn volatile_options(options: &str) -> String {
    format!("{options},{OVERLAY_VOLATILE}")
}

/// Mounts the container's overlay root at `merged`: volatile (see [`volatile_options`]), or as
/// before on a kernel that does not know the option (before 5.10: EINVAL).
fn mount_overlay(merged: &Path, options: &str) -> Result<(), RootfsError> {
    let overlay = |data: &str| {
        do_mount(
            Some(Path::new("overlay")),
            merged,
            Some("overlay"),
            MsFlags::empty(),
            Some(data),
            "overlay",
        )
    };
    match overlay(&volatile_options(options)) {
        Err(RootfsError::Mount {
            source: Errno::EINVAL,
            ..
        }) => overlay(options),
        other => other,
    }
}

/// Builds the root filesystem at `merged` and pivots into it; on success `/` is the container's root.
pub fn prepare(
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
    merged: &Path,
    opts: &RootfsOptions<'_>,
) -> Result<(), RootfsError> {
    // Nothing mounted from here on may propagate back to the host. A bind that asks for slave
    // propagation needs the host's mounts to keep reaching it: the whole tree becomes a slave
    // (as docker sets rslave root propagation then) instead of private.
    do_mount(
        None,
        Path::new("/"),
        None,
        root_propagation(opts.mounts),
        None,
        "/",
    )?;
    let options = overlay_options(layers, upper, work)?;
    mount_overlay(merged, &options)?;

    let old_umask = umask(Mode::empty());
    let result = populate(merged, opts);
    umask(old_umask);
    result?;

    pivot(merged)
}

/// Remounts the container's root read-only (`--read-only`); runs after the pivot, once every
/// file the runtime writes into it is written. /dev, /proc and the other mounts stay as they are.
pub fn make_root_readonly() -> Result<(), RootfsError> {
    remount_ro(Path::new("/"))
}

/// `root` joined with an absolute container path, refusing `..` (the image cannot be trusted, but
/// these paths come from the spec, so a plain component check is enough).
fn inside(root: &Path, path: &Path) -> Result<PathBuf, RootfsError> {
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(RootfsError::BadPath(path.to_path_buf()));
    }
    Ok(root.join(path.strip_prefix("/").unwrap_or(path)))
}

/// Creates a device node (and its parent directories) with its owner and mode.
fn make_device(root: &Path, dev: &DeviceNode) -> Result<(), RootfsError> {
    let path = inside(root, &dev.path)?;
    let create = |source: std::io::Error| RootfsError::Create {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(create)?;
    }
    let kind = if dev.kind == 'b' {
        SFlag::S_IFBLK
    } else {
        SFlag::S_IFCHR
    };
    // A node the image (or the defaults) already put there is replaced by the requested one.
    let _ = fs::remove_file(&path);
    mknod(
        &path,
        kind,
        Mode::from_bits_truncate(dev.file_mode & 0o7777),
        makedev(dev.major, dev.minor),
    )
    .map_err(|e| create(e.into()))?;
    chown(
        &path,
        Some(Uid::from_raw(dev.uid)),
        Some(Gid::from_raw(dev.gid)),
    )
    .map_err(|e| create(e.into()))
}

/// Writes namespaced sysctls through the container's own /proc (its network and IPC namespaces).
fn write_sysctls(proc_dir: &Path, sysctls: &BTreeMap<String, String>) -> Result<(), RootfsError> {
    for (key, value) in sysctls {
        let rel = PathBuf::from("/sys").join(key.replace('.', "/"));
        let path = inside(proc_dir, &rel)?;
        fs::write(&path, value).map_err(|source| RootfsError::Sysctl {
            key: key.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Bind-mounts the init binary read-only at `INIT_PATH` (created in the container's upper layer).
fn mount_init(root: &Path, init: &Path) -> Result<(), RootfsError> {
    let target = inside(root, Path::new(INIT_PATH))?;
    let create = |source: std::io::Error| RootfsError::Create {
        path: target.clone(),
        source,
    };
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(create)?;
    }
    if fs::symlink_metadata(&target).is_err() {
        fs::File::create(&target).map_err(create)?;
    }
    do_mount(Some(init), &target, None, MsFlags::MS_BIND, None, "init")?;
    do_mount(
        None,
        &target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID,
        None,
        "remount-ro",
    )
}

fn populate(root: &Path, opts: &RootfsOptions<'_>) -> Result<(), RootfsError> {
    let nosuid_noexec_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;

    let proc_dir = mkdir(root, "proc")?;
    do_mount(
        Some(Path::new("proc")),
        &proc_dir,
        Some("proc"),
        nosuid_noexec_nodev,
        None,
        "proc",
    )?;

    if let Some(sysctls) = opts.sysctls {
        write_sysctls(&proc_dir, sysctls)?;
    }

    let sys = mkdir(root, "sys")?;
    let sys_flags = if opts.privileged {
        nosuid_noexec_nodev
    } else {
        nosuid_noexec_nodev | MsFlags::MS_RDONLY
    };
    do_mount(
        Some(Path::new("sysfs")),
        &sys,
        Some("sysfs"),
        sys_flags,
        None,
        "sysfs",
    )?;

    let dev = mkdir(root, "dev")?;
    do_mount(
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
        "tmpfs",
    )?;
    for (name, major, minor) in DEVICES {
        let path = dev.join(name);
        mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(*major, *minor),
        )
        .map_err(|e| RootfsError::Create {
            path: path.clone(),
            source: e.into(),
        })?;
    }
    // Requested (or, privileged, all host) devices; /dev/ptmx stays the symlink made below.
    for device in opts.devices {
        make_device(root, device)?;
    }
    let pts = mkdir(&dev, "pts")?;
    do_mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
        "devpts",
    )?;
    let shm = mkdir(&dev, "shm")?;
    do_mount(
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        nosuid_noexec_nodev,
        Some("mode=1777,size=65536k"),
        "tmpfs",
    )?;
    let mqueue = mkdir(&dev, "mqueue")?;
    do_mount(
        Some(Path::new("mqueue")),
        &mqueue,
        Some("mqueue"),
        nosuid_noexec_nodev,
        None,
        "mqueue",
    )?;
    if let Some(init) = opts.init {
        mount_init(root, init)?;
    }
    for m in opts.mounts {
        mount_one(root, m)?;
    }
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let path = dev.join(link);
        let _ = fs::remove_file(&path);
        symlink(target, &path).map_err(|source| RootfsError::Create { path, source })?;
    }

    if opts.privileged {
        return Ok(());
    }
    for masked in MASKED_PATHS {
        let path = root.join(masked);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => do_mount(
                Some(Path::new("tmpfs")),
                &path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
                "tmpfs",
            )?,
            Ok(_) => do_mount(
                Some(dev.join("null").as_path()),
                &path,
                None,
                MsFlags::MS_BIND,
                None,
                "/dev/null",
            )?,
            Err(_) => {} // not present on this kernel
        }
    }
    for readonly in READONLY_PATHS {
        let path = root.join(readonly);
        if fs::symlink_metadata(&path).is_err() {
            continue;
        }
        do_mount(
            Some(path.as_path()),
            &path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
            "bind",
        )?;
        remount_ro(&path)?;
    }
    Ok(())
}

/// Resolves an absolute container path under `root` as the container would see it: symlinks in
/// the image are followed but never lead out of `root` (an absolute link restarts at `root`, `..`
/// stops there). Components that do not exist yet are appended as they are.
pub fn resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf, RootfsError> {
    // Linux's own limit on symlinks followed in one lookup.
    const MAX_LINKS: usize = 40;
    if !path.is_absolute() {
        return Err(RootfsError::BadPath(path.to_path_buf()));
    }
    let mut pending: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let candidate = root.join(&resolved).join(&name);
        match fs::read_link(&candidate) {
            Ok(link) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(RootfsError::BadPath(path.to_path_buf()));
                }
                if link.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in link.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            // Not a symlink, or not there (yet).
            Err(_) => resolved.push(&name),
        }
    }
    Ok(root.join(resolved))
}

/// The mount flags of a bind's propagation (docker's default is `rprivate`).
fn propagation_flags(propagation: &str) -> Result<MsFlags, RootfsError> {
    Ok(match propagation {
        "" | "rprivate" => MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        "private" => MsFlags::MS_PRIVATE,
        "rshared" => MsFlags::MS_REC | MsFlags::MS_SHARED,
        "shared" => MsFlags::MS_SHARED,
        "rslave" => MsFlags::MS_REC | MsFlags::MS_SLAVE,
        "slave" => MsFlags::MS_SLAVE,
        other => return Err(RootfsError::BadPropagation(other.to_string())),
    })
}

/// The propagation of the container's whole mount tree while it is built: private, unless a
/// bind wants host mounts to keep propagating into it.
fn root_propagation(mounts: &[MountSpec]) -> MsFlags {
    let slave = mounts.iter().any(|m| {
        matches!(&m.kind, MountKind::Bind { propagation, .. }
            if matches!(propagation.as_str(), "rslave" | "slave" | "rshared" | "shared"))
    });
    if slave {
        MsFlags::MS_REC | MsFlags::MS_SLAVE
    } else {
        MsFlags::MS_REC | MsFlags::MS_PRIVATE
    }
}

/// Splits a mount option string (`o=`) into the flags the kernel takes as flags and the rest,
/// which goes to the filesystem as data.
pub fn split_mount_options(options: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for opt in options.split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// Creates the mount point of `target` (a directory, or an empty file for a file source) unless
/// the image has one.
fn mount_point(target: &Path, file: bool) -> Result<(), RootfsError> {
    let create = |source: std::io::Error| RootfsError::Create {
        path: target.to_path_buf(),
        source,
    };
    if fs::symlink_metadata(target).is_ok() {
        return Ok(());
    }
    if file {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(create)?;
        }
        fs::File::create(target).map(drop).map_err(create)
    } else {
        fs::create_dir_all(target).map_err(create)
    }
}

/// Mounts one of the container's own mounts under `root`.
fn mount_one(root: &Path, m: &MountSpec) -> Result<(), RootfsError> {
    let target = resolve_in_root(root, &m.target)?;
    let ro = if m.read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    match &m.kind {
        MountKind::Bind {
            source,
            propagation,
            copy_up,
        } => {
            let meta =
                fs::metadata(source).map_err(|_| RootfsError::MissingSource(source.clone()))?;
            let propagation = propagation_flags(propagation)?;
            if *copy_up && meta.is_dir() {
                copy_up_into(&target, source).map_err(|e| RootfsError::CopyUp {
                    target: m.target.clone(),
                    source: e,
                })?;
            }
            mount_point(&target, !meta.is_dir())?;
            let what = source.display().to_string();
            do_mount(
                Some(source),
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
                &what,
            )?;
            do_mount(None, &target, None, propagation, None, "propagation")?;
            if m.read_only {
                remount_ro(&target)?;
            }
            Ok(())
        }
        MountKind::Tmpfs { size_bytes, mode } => {
            mount_point(&target, false)?;
            let mode = if *mode == 0 { 0o1777 } else { *mode & 0o7777 };
            let mut data = format!("mode={mode:o}");
            if *size_bytes > 0 {
                data.push_str(&format!(",size={size_bytes}"));
            }
            do_mount(
                Some(Path::new("tmpfs")),
                &target,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | ro,
                Some(&data),
                "tmpfs",
            )
        }
        MountKind::Filesystem {
            fstype,
            device,
            data,
        } => {
            mount_point(&target, false)?;
            let (flags, data) = split_mount_options(data);
            let fstype = (!fstype.is_empty()).then_some(fstype.as_str());
            let data = (!data.is_empty()).then_some(data.as_str());
            do_mount(
                Some(Path::new(device)),
                &target,
                fstype,
                flags | ro,
                data,
                device,
            )?;
            if flags.contains(MsFlags::MS_BIND) && m.read_only {
                remount_ro(&target)?;
            }
            Ok(())
        }
    }
}

/// Docker's copy-up: an empty volume mounted where the image has a directory gets that
/// directory's content, owner and mode.
fn copy_up_into(image_dir: &Path, volume: &Path) -> std::io::Result<()> {
    let Ok(meta) = fs::symlink_metadata(image_dir) else {
        return Ok(());
    };
    if !meta.is_dir() || fs::read_dir(volume)?.next().is_some() {
        return Ok(());
    }
    crate::volumes::copy_dir_contents(image_dir, volume)
}

/// `pivot_root(".", ".")` then a lazy unmount of the old root stacked on top (runc's trick: no
/// put_old directory is needed in the image).
fn pivot(root: &Path) -> Result<(), RootfsError> {
    let err = |source| RootfsError::Pivot {
        root: root.to_path_buf(),
        source,
    };
    chdir(root).map_err(err)?;
    pivot_root(".", ".").map_err(err)?;
    umount2(".", MntFlags::MNT_DETACH).map_err(err)?;
    chdir("/").map_err(err)
}

fn mkdir(parent: &Path, name: &str) -> Result<PathBuf, RootfsError> {
    let path = parent.join(name);
    fs::create_dir_all(&path).map_err(|source| RootfsError::Create {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Makes an existing bind mount read-only (a bind mount ignores MS_RDONLY until remounted).
fn remount_ro(target: &Path) -> Result<(), RootfsError> {
    do_mount(
        None,
        target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None,
        "remount-ro",
    )
}

fn do_mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
    what: &str,
) -> Result<(), RootfsError> {
    mount(source, target, fstype, flags, data).map_err(|source| RootfsError::Mount {
        what: what.to_string(),
        target: target.to_path_buf(),
        source,
    })
}

/// Whether `path` is a mount point in the calling process's mount namespace.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .any(|mp| unescape_mountinfo(mp) == wanted)
}

/// Lazily unmounts `path` if it is mounted in this mount namespace (the host's, when called by the agent).
///
/// Tries the unmount rather than looking for `path` in /proc/self/mountinfo first: that file
/// grows with every container's namespace and secrets mount, so reading it once per removal
/// made removing n containers cost O(n²). The kernel answers EINVAL for a path that is not a
/// mount point and ENOENT for one that does not exist; each stacked mount is taken off in turn.
pub fn unmount_if_mounted(path: &Path) -> Result<(), RootfsError> {
    loop {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(Errno::EINVAL | Errno::ENOENT) => return Ok(()),
            Err(source) => {
                return Err(RootfsError::Mount {
                    what: "umount".to_string(),
                    target: path.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// Decodes the octal escapes (`\040` for a space...) mountinfo uses in paths.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_lists_top_layer_first() {
        let layers = vec![
            PathBuf::from("/l/base"),
            PathBuf::from("/l/mid"),
            PathBuf::from("/l/top"),
        ];
        let opts = overlay_options(&layers, Path::new("/c/upper"), Path::new("/c/work")).unwrap();
        assert_eq!(
            opts,
            "lowerdir=/l/top:/l/mid:/l/base,upperdir=/c/upper,workdir=/c/work"
        );
        assert_eq!(
            volatile_options(&opts),
            "lowerdir=/l/top:/l/mid:/l/base,upperdir=/c/upper,workdir=/c/work,volatile"
        );
    }

    #[test]
    fn overlay_rejects_unusable_paths() {
        let up = Path::new("/u");
        assert!(matches!(
            overlay_options(&[], up, up),
            Err(RootfsError::NoLayers)
        ));
        for bad in ["/a,b", "/a:b", "rel"] {
            assert!(
                overlay_options(&[PathBuf::from(bad)], up, up).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn container_paths_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("var/lib")).unwrap();
        symlink("/etc", root.join("var/lib/abs")).unwrap();
        symlink("../../..", root.join("var/lib/up")).unwrap();
        symlink("lib", root.join("var/rel")).unwrap();
        let r = |p: &str| resolve_in_root(root, Path::new(p)).unwrap();
        assert_eq!(r("/var/lib/abs/x"), root.join("etc/x"));
        assert_eq!(r("/var/lib/up/../../x"), root.join("x"));
        assert_eq!(r("/var/rel/new/dir"), root.join("var/lib/new/dir"));
        assert_eq!(r("/"), root.to_path_buf());
        assert!(resolve_in_root(root, Path::new("rel")).is_err());
    }

    #[test]
    fn mount_options_split_into_flags_and_data() {
        let (flags, data) = split_mount_options("ro,size=64m,nosuid,uid=1000");
        assert_eq!(flags, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(data, "size=64m,uid=1000");
        assert_eq!(split_mount_options("bind").0, MsFlags::MS_BIND);
        assert!(propagation_flags("bogus").is_err());
        assert_eq!(
            propagation_flags("").unwrap(),
            MsFlags::MS_REC | MsFlags::MS_PRIVATE
        );
    }

    #[test]
    fn mountinfo_escapes_decode() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/tail\\04"), "/tail\\04");
    }

    #[test]
    fn unmount_if_mounted_takes_off_stacked_mounts_and_ignores_plain_paths() {
        let dir = tempfile::tempdir().unwrap();
        // Neither a plain directory nor a missing path is an error.
        unmount_if_mounted(dir.path()).unwrap();
        unmount_if_mounted(&dir.path().join("missing")).unwrap();
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped the mount half: not root");
            return;
        }
        let target = dir.path().join("m");
        fs::create_dir(&target).unwrap();
        for _ in 0..2 {
            mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .unwrap();
        }
        assert!(is_mounted(&target));
        unmount_if_mounted(&target).unwrap();
        assert!(!is_mounted(&target));
    }
}
