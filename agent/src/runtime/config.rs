//! What a container runs with: the configuration the agent writes for its shim.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What to run: everything the shim needs, written to `root/<id>/config.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// Container id (a directory name: ASCII letters, digits, `-`, `_`, `.`).
    pub id: String,
    /// Unpacked image layers, lowest first.
    pub layers: Vec<PathBuf>,
    /// Command and arguments; `args[0]` is looked up along the `PATH` of `env`.
    pub args: Vec<String>,
    /// Environment, `K=V`.
    pub env: Vec<String>,
    /// Working directory inside the container (created if missing); empty means `/`.
    pub cwd: String,
    /// `user[:group]`, names or numbers; empty means root.
    pub user: String,
    /// Hostname; empty means the first 12 characters of the id.
    pub hostname: String,
    /// Memory limit in bytes; 0 = none.
    pub memory_bytes: i64,
    /// CPU limit in billionths of a CPU; 0 = none.
    pub nano_cpus: i64,
    /// Process limit; 0 = none.
    pub pids_limit: i64,
    /// Join this network namespace instead of creating a new one.
    pub netns: Option<PathBuf>,
    /// Content for the container's /etc/resolv.conf; `None` leaves the image's.
    #[serde(default)]
    pub resolv_conf: Option<String>,
    /// Lines appended to the container's /etc/hosts ("IP NAME [ALIAS...]", `--host`); none
    /// leaves the image's file as it is.
    #[serde(default)]
    pub extra_hosts: Vec<String>,
    /// All capabilities, every host device, no seccomp filter, writable /sys and unmasked /proc.
    #[serde(default)]
    pub privileged: bool,
    /// The capability numbers the process keeps; `None` is docker's default set (`caps::DEFAULT_CAPS`).
    #[serde(default)]
    pub capabilities: Option<Vec<u32>>,
    /// The seccomp filter loaded just before `execve` (ignored when privileged).
    #[serde(default)]
    pub seccomp: SeccompConfig,
    /// Sets PR_SET_NO_NEW_PRIVS before `execve`.
    #[serde(default)]
    pub no_new_privileges: bool,
    /// Host devices created in the container's /dev and allowed by its device cgroup, besides
    /// docker's defaults.
    #[serde(default)]
    pub devices: Vec<DeviceNode>,
    /// Mounts the root filesystem read-only.
    #[serde(default)]
    pub read_only: bool,
    /// Supplementary groups (names resolved in the image's /etc/group, or numbers).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Resource limits set with setrlimit before `execve`.
    #[serde(default)]
    pub ulimits: Vec<Rlimit>,
    /// Namespaced sysctls written under the container's /proc/sys (`net.core.somaxconn` = "1024").
    #[serde(default)]
    pub sysctls: std::collections::BTreeMap<String, String>,
    /// Host path of a static init (tini) bind-mounted into the container and run as PID 1.
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// Log rotation of `container.log`.
    #[serde(default)]
    pub log: LogConfig,
    /// Leaves the device cgroup out (only where the host has none and the operator allowed it).
    #[serde(default)]
    pub no_device_cgroup: bool,
    /// The compiled seccomp program (`seccomp::CompiledFilter::to_bytes`), set by `Runtime::start`
    /// so the shim does not spend the ~15 ms libseccomp takes; `None`: no filter.
    #[serde(default)]
    pub seccomp_program: Option<PathBuf>,
    /// The signal `stop` sends first (0: SIGTERM).
    #[serde(default)]
    pub stop_signal: i32,
    /// Bind mounts, volumes, tmpfs mounts, secrets and configs, mounted in this order after the
    /// root filesystem is built and before the pivot.
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
}

/// One mount in the container, resolved by the agent to what the kernel is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Absolute path in the container.
    pub target: PathBuf,
    /// What is mounted there.
    pub kind: MountKind,
    /// Mounted read-only.
    pub read_only: bool,
}

/// What a [`MountSpec`] mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A recursive bind of a host path (a directory or a file).
    Bind {
        /// The host path; it must exist.
        source: PathBuf,
        /// `rprivate` (empty), `private`, `rshared`, `shared`, `rslave` or `slave`.
        propagation: String,
        /// Fills an empty source directory with what the image has at the target first
        /// (a volume's first use, as docker does).
        copy_up: bool,
    },
    /// A fresh tmpfs, nosuid and nodev.
    Tmpfs {
        /// Size limit in bytes; 0: the kernel's default.
        size_bytes: i64,
        /// Permission bits of its root; 0: 01777.
        mode: u32,
    },
    /// A filesystem mounted as `mount -t FSTYPE -o DATA DEVICE` (the local volume driver's
    /// `type`, `device` and `o` options).
    Filesystem {
        /// `type`, e.g. `tmpfs`, `nfs`, `ext4`.
        fstype: String,
        /// `device`.
        device: String,
        /// `o`, passed to the kernel as mount data.
        data: String,
    },
}

/// Which seccomp filter a container's process runs under.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompConfig {
    /// Docker's default profile.
    #[default]
    Default,
    /// No filter.
    Unconfined,
    /// A profile in docker's JSON format.
    Custom(String),
}

/// One device node in the container: created in its /dev and allowed by its device cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNode {
    /// Absolute path inside the container (`/dev/fuse`).
    pub path: PathBuf,
    /// `'c'` (character) or `'b'` (block).
    pub kind: char,
    /// Device major number.
    pub major: u64,
    /// Device minor number.
    pub minor: u64,
    /// Permission bits of the node (`0o666`).
    pub file_mode: u32,
    /// Owner of the node.
    pub uid: u32,
    /// Group of the node.
    pub gid: u32,
    /// Cgroup access: any of `r`, `w`, `m`.
    pub permissions: String,
}

/// One resource limit (`RLIMIT_<NAME>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// docker's name: `nofile`, `nproc`, `core`, ...
    pub name: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Rotation of the container's log file, as docker's json-file driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    /// Rotate once the file reaches this size, bytes (0 = never).
    pub max_size_bytes: u64,
    /// Files kept, the live one included (at least 1).
    pub max_files: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_size_bytes: shoal_proto::spec::DEFAULT_LOG_MAX_SIZE,
            max_files: shoal_proto::spec::DEFAULT_LOG_MAX_FILE,
        }
    }
}
