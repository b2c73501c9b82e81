//! The container's root filesystem: overlay of the image layers, /proc, /dev, /sys, then pivot_root.
//!
//! Runs in the container's init, in its fresh mount namespace, before `execve`. All mount syscalls of
//! the runtime live here.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, umask, Mode, SFlag};
use nix::unistd::{chdir, pivot_root};

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
    /// pivot_root or the detach of the old root failed.
    #[error("pivot_root into {root}: {source}")]
    Pivot {
        /// The new root.
        root: PathBuf,
        /// The kernel's error.
        source: Errno,
    },
}

/// Paths hidden behind /dev/null (files) or an empty read-only tmpfs (directories), as runc's default spec.
const MASKED_PATHS: &[&str] = &[
    "proc/acpi",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
];
/// Paths made read-only.
const READONLY_PATHS: &[&str] = &[
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];
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

/// Builds the root filesystem at `merged` and pivots into it; on success `/` is the container's root.
pub fn prepare(
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
    merged: &Path,
) -> Result<(), RootfsError> {
    // Nothing mounted from here on may propagate back to the host.
    do_mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
        "/",
    )?;
    let options = overlay_options(layers, upper, work)?;
    do_mount(
        Some(Path::new("overlay")),
        merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(&options),
        "overlay",
    )?;

    let old_umask = umask(Mode::empty());
    let result = populate(merged);
    umask(old_umask);
    result?;

    pivot(merged)
}

fn populate(root: &Path) -> Result<(), RootfsError> {
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

    let sys = mkdir(root, "sys")?;
    do_mount(
        Some(Path::new("sysfs")),
        &sys,
        Some("sysfs"),
        nosuid_noexec_nodev | MsFlags::MS_RDONLY,
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
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let path = dev.join(link);
        symlink(target, &path).map_err(|source| RootfsError::Create { path, source })?;
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
        do_mount(
            None,
            &path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
            "remount-ro",
        )?;
    }
    Ok(())
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
pub fn unmount_if_mounted(path: &Path) -> Result<(), RootfsError> {
    while is_mounted(path) {
        umount2(path, MntFlags::MNT_DETACH).map_err(|source| RootfsError::Mount {
            what: "umount".to_string(),
            target: path.to_path_buf(),
            source,
        })?;
    }
    Ok(())
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
    fn mountinfo_escapes_decode() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/tail\\04"), "/tail\\04");
    }
}
