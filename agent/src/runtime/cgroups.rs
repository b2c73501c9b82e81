//! Container cgroups on cgroup v1 (one hierarchy per controller) or v2 (unified), detected at run time.
//!
//! Every file access to `/sys/fs/cgroup` lives here. A container gets `<parent>/<id>` in each v1
//! controller it needs (memory, cpu, cpuacct, pids, devices), or one v2 directory whose ancestors
//! delegate the memory, cpu and pids controllers through `cgroup.subtree_control` (device access
//! on v2 is an eBPF program attached to that directory, not a controller).

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::devices::{self, DeviceError, DeviceRule};

/// The v1 controllers a container is placed in.
const V1_CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "pids", "devices"];
/// The v2 controllers delegated to containers.
const V2_CONTROLLERS: &[&str] = &["memory", "cpu", "pids"];
/// CFS period used for cpu limits, microseconds (Docker's default).
pub const CPU_PERIOD_US: i64 = 100_000;

/// Errors creating, configuring or removing a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No usable cgroup hierarchy was found in `/proc/self/mountinfo`.
    #[error("no cgroup v1 or v2 hierarchy mounted")]
    NotMounted,
    /// A cgroup file or directory operation failed.
    #[error("cgroup {op} {path}: {source}")]
    Io {
        /// What was being done (`create`, `write`, `rmdir`...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Processes were still in the cgroup after killing them.
    #[error("cgroup {path} still busy after kill")]
    Busy {
        /// The cgroup directory.
        path: PathBuf,
    },
    /// The cgroup parent is not a relative path without `..`.
    #[error("invalid cgroup parent {0:?}")]
    InvalidParent(String),
    /// A v1 host without the `devices` controller cannot restrict device access.
    #[error("no cgroup v1 devices controller is mounted: containers' device access cannot be restricted")]
    NoDevicesController,
    /// The device rules were invalid or the kernel refused the v2 device program.
    #[error("cgroup {path} devices: {source}")]
    Devices {
        /// The container's cgroup directory.
        path: PathBuf,
        /// What went wrong.
        source: DeviceError,
    },
}

/// Which cgroup hierarchy the host uses, and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup v1 (also the "hybrid" layout): controller name → mount point.
    V1(Vec<(String, PathBuf)>),
    /// cgroup v2 unified hierarchy mounted at this path.
    V2(PathBuf),
}

impl CgroupMode {
    /// The layout as one command-line argument for `from_arg`: `v2`, TAB, the mount point, or
    /// `v1` followed by TAB-separated controller and mount point pairs. The agent hands it to each
    /// shim so the shim need not read `/proc/self/mountinfo`, which holds a line per container
    /// namespace and rootfs: 1,000 shims each reading it cost O(n²). (Mountinfo escapes a TAB in a
    /// path, so no mount point `parse_mode` found contains one.)
    pub fn to_arg(&self) -> String {
        match self {
            CgroupMode::V2(path) => format!("v2\t{}", path.display()),
            CgroupMode::V1(mounts) => mounts.iter().fold("v1".to_string(), |acc, (c, p)| {
                format!("{acc}\t{c}\t{}", p.display())
            }),
        }
    }

    /// Reads what `to_arg` wrote; `None` for anything else (mount points must be absolute and
    /// controllers ones Shoal manages).
    pub fn from_arg(arg: &str) -> Option<CgroupMode> {
        let mut parts = arg.split('\t');
        let absolute = |p: &str| Path::new(p).is_absolute().then(|| PathBuf::from(p));
        match parts.next()? {
            "v2" => {
                let path = absolute(parts.next()?)?;
                parts.next().is_none().then_some(CgroupMode::V2(path))
            }
            "v1" => {
                let rest: Vec<&str> = parts.collect();
                if rest.is_empty() || !rest.len().is_multiple_of(2) {
                    return None;
                }
                rest.chunks(2)
                    .map(|pair| {
                        V1_CONTROLLERS
                            .contains(&pair[0])
                            .then(|| absolute(pair[1]).map(|p| (pair[0].to_string(), p)))
                            .flatten()
                    })
                    .collect::<Option<Vec<_>>>()
                    .map(CgroupMode::V1)
            }
            _ => None,
        }
    }
}

/// Resource limits; zero or negative means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory limit in bytes (swap included on v1 when `memsw` exists; no swap on v2).
    pub memory_bytes: i64,
    /// CPU limit in billionths of a CPU.
    pub nano_cpus: i64,
    /// Maximum number of processes.
    pub pids_limit: i64,
}

/// Finds the host's cgroup layout from `/proc/self/mountinfo`.
pub fn detect() -> Result<CgroupMode, CgroupError> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").map_err(|source| CgroupError::Io {
            op: "read",
            path: PathBuf::from("/proc/self/mountinfo"),
            source,
        })?;
    parse_mode(&mountinfo).ok_or(CgroupError::NotMounted)
}

/// Decides the layout from the text of a mountinfo file: v2 only when cgroup2 is mounted at
/// `/sys/fs/cgroup` itself (a cgroup2 at `/sys/fs/cgroup/unified` is the hybrid layout, used as v1).
pub fn parse_mode(mountinfo: &str) -> Option<CgroupMode> {
    let mut v1 = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split_whitespace().nth(4) else {
            continue;
        };
        let mut right = right.split_whitespace();
        let fstype = right.next().unwrap_or_default();
        let super_opts = right.nth(1).unwrap_or_default();
        match fstype {
            "cgroup2" if mount_point == "/sys/fs/cgroup" => {
                return Some(CgroupMode::V2(PathBuf::from(mount_point)));
            }
            "cgroup" => {
                for opt in super_opts.split(',') {
                    if V1_CONTROLLERS.contains(&opt) && !v1.iter().any(|(c, _)| c == opt) {
                        v1.push((opt.to_string(), PathBuf::from(mount_point)));
                    }
                }
            }
            _ => {}
        }
    }
    (!v1.is_empty()).then_some(CgroupMode::V1(v1))
}

/// CFS quota in microseconds per `CPU_PERIOD_US` for a limit in nano-CPUs (at least 1 ms, the kernel's minimum).
pub fn cpu_quota_us(nano_cpus: i64) -> i64 {
    (nano_cpus * CPU_PERIOD_US / 1_000_000_000).max(1000)
}

/// One container's cgroup (a directory per v1 controller hierarchy, or one v2 directory).
#[derive(Debug, Clone)]
pub struct Cgroup {
    mode: CgroupMode,
    /// Parent directories (per hierarchy) that hold the container's directory.
    parent: String,
    id: String,
}

impl Cgroup {
    /// The cgroup of container `id` under `parent` (relative to each hierarchy's root); nothing is created.
    pub fn new(mode: CgroupMode, parent: &str, id: &str) -> Result<Self, CgroupError> {
        let parent = parent.trim_matches('/');
        if Path::new(parent)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(CgroupError::InvalidParent(parent.to_string()));
        }
        Ok(Self {
            mode,
            parent: parent.to_string(),
            id: id.to_string(),
        })
    }

    /// Whether this is a v2 cgroup.
    pub fn is_v2(&self) -> bool {
        matches!(self.mode, CgroupMode::V2(_))
    }

    /// The container's cgroup directories, one per distinct hierarchy (v1 `cpu` and `cpuacct` may share one).
    pub fn paths(&self) -> Vec<PathBuf> {
        match &self.mode {
            CgroupMode::V2(root) => vec![root.join(&self.parent).join(&self.id)],
            CgroupMode::V1(mounts) => {
                let mut paths: Vec<PathBuf> = Vec::new();
                for (_, mount) in mounts {
                    let path = mount.join(&self.parent).join(&self.id);
                    if !paths.contains(&path) {
                        paths.push(path);
                    }
                }
                paths
            }
        }
    }

    fn controller_path(&self, controller: &str) -> Option<PathBuf> {
        match &self.mode {
            CgroupMode::V2(root) => Some(root.join(&self.parent).join(&self.id)),
            CgroupMode::V1(mounts) => mounts
                .iter()
                .find(|(c, _)| c == controller)
                .map(|(_, m)| m.join(&self.parent).join(&self.id)),
        }
    }

    /// Creates the directories and writes the limits.
    pub fn create(&self, limits: &Limits) -> Result<(), CgroupError> {
        if let CgroupMode::V2(root) = &self.mode {
            enable_v2_controllers(root, &self.parent)?;
        }
        for path in self.paths() {
            match fs::create_dir_all(&path) {
                Ok(()) => {}
                Err(source) => {
                    return Err(CgroupError::Io {
                        op: "create",
                        path,
                        source,
                    })
                }
            }
        }
        self.set_limits(limits)
    }

    fn set_limits(&self, limits: &Limits) -> Result<(), CgroupError> {
        let v2 = self.is_v2();
        if limits.memory_bytes > 0 {
            if let Some(dir) = self.controller_path("memory") {
                let bytes = limits.memory_bytes.to_string();
                if v2 {
                    write(&dir.join("memory.max"), &bytes)?;
                    write_if_exists(&dir.join("memory.swap.max"), "0")?;
                } else {
                    write(&dir.join("memory.limit_in_bytes"), &bytes)?;
                    write_if_exists(&dir.join("memory.memsw.limit_in_bytes"), &bytes)?;
                }
            }
        }
        if limits.nano_cpus > 0 {
            if let Some(dir) = self.controller_path("cpu") {
                let quota = cpu_quota_us(limits.nano_cpus);
                if v2 {
                    write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                } else {
                    write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
        }
        if limits.pids_limit > 0 {
            if let Some(dir) = self.controller_path("pids") {
                write(&dir.join("pids.max"), &limits.pids_limit.to_string())?;
            }
        }
        Ok(())
    }

    /// Restricts the devices the cgroup's processes may create, read and write to `rules`
    /// (`devices::rules_for`). Call it once, after `create` and before the container's process runs.
    ///
    /// v1: `a` in `devices.deny` drops the list the new directory inherited from its parent, then
    /// one line per allow rule. v2: an eBPF device program attached to the directory.
    pub fn set_devices(&self, rules: &[DeviceRule]) -> Result<(), CgroupError> {
        let dir = self
            .controller_path("devices")
            .ok_or(CgroupError::NoDevicesController)?;
        let devices_error = |source| CgroupError::Devices {
            path: dir.clone(),
            source,
        };
        if self.is_v2() {
            return devices::attach_program(&dir, rules).map_err(devices_error);
        }
        for (file, line) in devices::v1_writes(rules).map_err(devices_error)? {
            write(&dir.join(file), &line)?;
        }
        Ok(())
    }

    /// Moves process `pid` into every hierarchy of this cgroup.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        for path in self.paths() {
            write(&path.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The pids currently in the cgroup (union over hierarchies); empty if it does not exist.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for path in self.paths() {
            let Ok(text) = fs::read_to_string(path.join("cgroup.procs")) else {
                continue;
            };
            for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// Whether the OOM killer has killed a process in this cgroup.
    pub fn oom_killed(&self) -> bool {
        let Some(dir) = self.controller_path("memory") else {
            return false;
        };
        let file = if self.is_v2() {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
            .is_some_and(|n| n > 0)
    }

    /// SIGKILLs every process in the cgroup and waits (bounded) until it is empty.
    pub fn kill_all(&self, timeout: Duration) -> Result<(), CgroupError> {
        let deadline = Instant::now() + timeout;
        let mut used_kill_file = false;
        if self.is_v2() {
            if let Some(dir) = self.paths().into_iter().next() {
                let kill = dir.join("cgroup.kill");
                used_kill_file = kill.exists() && write(&kill, "1").is_ok();
            }
        }
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return Ok(());
            }
            if !used_kill_file {
                for pid in pids {
                    // A pid read from cgroup.procs cannot be recycled into another cgroup while it is
                    // still listed here; ESRCH just means it already died.
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if Instant::now() >= deadline {
                return Err(CgroupError::Busy {
                    path: self.paths().into_iter().next().unwrap_or_default(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Removes the cgroup directories (retrying while the last processes finish exiting).
    pub fn remove(&self, timeout: Duration) -> Result<(), CgroupError> {
        let deadline = Instant::now() + timeout;
        for path in self.paths() {
            loop {
                match fs::remove_dir(&path) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(source) => {
                        return Err(CgroupError::Io {
                            op: "rmdir",
                            path,
                            source,
                        })
                    }
                }
            }
        }
        Ok(())
    }
}

/// Delegates the v2 controllers from the root down to `parent`, creating the parent directories.
fn enable_v2_controllers(root: &Path, parent: &str) -> Result<(), CgroupError> {
    let mut dir = root.to_path_buf();
    let mut components = Path::new(parent).components().peekable();
    loop {
        let available = fs::read_to_string(dir.join("cgroup.controllers")).map_err(|source| {
            CgroupError::Io {
                op: "read",
                path: dir.join("cgroup.controllers"),
                source,
            }
        })?;
        let enabled = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
        let wanted: Vec<String> = V2_CONTROLLERS
            .iter()
            .filter(|c| available.split_whitespace().any(|a| a == **c))
            .filter(|c| !enabled.split_whitespace().any(|a| a == **c))
            .map(|c| format!("+{c}"))
            .collect();
        if !wanted.is_empty() {
            write(&dir.join("cgroup.subtree_control"), &wanted.join(" "))?;
        }
        let Some(next) = components.next() else {
            return Ok(());
        };
        dir.push(next);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(CgroupError::Io {
                    op: "create",
                    path: dir,
                    source,
                })
            }
        }
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Io {
        op: "write",
        path: path.to_path_buf(),
        source,
    })
}

fn write_if_exists(path: &Path, value: &str) -> Result<(), CgroupError> {
    if path.exists() {
        write(path, value)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:23 / /sys rw,nosuid - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
34 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
37 30 0:33 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices
";

    #[test]
    fn hybrid_host_is_v1_with_shared_cpu_hierarchy() {
        let mode = parse_mode(HYBRID).unwrap();
        let CgroupMode::V1(mounts) = &mode else {
            panic!("expected v1, got {mode:?}");
        };
        assert_eq!(mounts.len(), 5);
        let cg = Cgroup::new(mode.clone(), "shoal", "c1").unwrap();
        assert_eq!(
            cg.paths(),
            vec![
                PathBuf::from("/sys/fs/cgroup/memory/shoal/c1"),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/shoal/c1"),
                PathBuf::from("/sys/fs/cgroup/pids/shoal/c1"),
                PathBuf::from("/sys/fs/cgroup/devices/shoal/c1"),
            ]
        );
    }

    #[test]
    fn unified_host_is_v2() {
        let text = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
        let mode = parse_mode(text).unwrap();
        assert_eq!(mode, CgroupMode::V2(PathBuf::from("/sys/fs/cgroup")));
        let cg = Cgroup::new(mode, "/a/b/", "c1").unwrap();
        assert_eq!(cg.paths(), vec![PathBuf::from("/sys/fs/cgroup/a/b/c1")]);
        assert!(parse_mode("1 0 0:1 / / rw - ext4 /dev/sda rw\n").is_none());
    }

    #[test]
    fn the_layout_survives_the_shim_s_command_line() {
        for mode in [
            parse_mode(HYBRID).unwrap(),
            CgroupMode::V2(PathBuf::from("/sys/fs/cgroup")),
        ] {
            assert_eq!(CgroupMode::from_arg(&mode.to_arg()), Some(mode));
        }
        for bad in [
            "",
            "v2",
            "v2\trelative",
            "v2\t/a\t/b",
            "v1",
            "v1\tmemory",
            "v1\tnet_cls\t/sys/fs/cgroup/net_cls",
            "v1\tmemory\tmemory",
            "v3\t/sys/fs/cgroup",
        ] {
            assert_eq!(CgroupMode::from_arg(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parent_must_be_plain_relative() {
        let mode = CgroupMode::V2(PathBuf::from("/sys/fs/cgroup"));
        assert!(Cgroup::new(mode.clone(), "../x", "c").is_err());
        assert!(Cgroup::new(mode, "shoal/tasks", "c").is_ok());
    }

    /// The first mount of `fstype` (with `option` among its super options, when given).
    fn mount_of(fstype: &str, option: Option<&str>) -> Option<PathBuf> {
        let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
        text.lines().find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount = left.split_whitespace().nth(4)?;
            let mut right = right.split_whitespace();
            if right.next()? != fstype {
                return None;
            }
            let opts = right.nth(1).unwrap_or_default();
            if option.is_some_and(|o| !opts.split(',').any(|x| x == o)) {
                return None;
            }
            Some(PathBuf::from(mount))
        })
    }

    /// The numbers of a block device of this host (a disk or loop device), 7:0 if none is listed.
    fn host_block_device() -> (u64, u64) {
        fs::read_dir("/sys/dev/block")
            .ok()
            .and_then(|entries| {
                entries.filter_map(|e| e.ok()).find_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let (major, minor) = name.split_once(':')?;
                    Some((major.parse().ok()?, minor.parse().ok()?))
                })
            })
            .unwrap_or((7, 0))
    }

    /// Runs a shell in `cg` that opens /dev/null, makes a block node for a host disk and opens
    /// it; returns what it printed. Also checks the node opens (or fails otherwise than EPERM)
    /// from outside the cgroup, so the EPERM inside comes from the cgroup.
    fn probe_from_inside(cg: &Cgroup) -> String {
        use std::io::Write;
        use std::process::{Command, Stdio};
        // The node must live on a filesystem without `nodev`, or every open fails with EACCES.
        let mut dir = tempfile::tempdir().unwrap();
        let nodev = nix::sys::statvfs::statvfs(dir.path())
            .unwrap()
            .flags()
            .contains(nix::sys::statvfs::FsFlags::ST_NODEV);
        if nodev {
            dir = tempfile::tempdir_in("/dev").unwrap();
        }
        let (major, minor) = host_block_device();
        let script = format!(
            "exec 2>&1; read go; \
             if (exec 3</dev/null); then echo null:ok; fi; \
             if mknod \"$1/disk\" b {major} {minor}; then echo mknod:ok; fi; \
             if (exec 3<\"$1/disk\"); then echo disk:opened; fi"
        );
        let mut child = Command::new("sh")
            .args(["-c", &script, "sh"])
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let moved = cg.add_process(child.id() as i32);
        if moved.is_err() {
            let _ = child.kill();
        }
        // Only now may the shell go on: it is in the cgroup.
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(b"go\n");
        drop(stdin);
        let output = child.wait_with_output().unwrap();
        moved.unwrap();
        let report = String::from_utf8_lossy(&output.stdout).to_string();
        match fs::File::open(dir.path().join("disk")) {
            Ok(_) => {}
            Err(e) => assert_ne!(
                e.raw_os_error(),
                Some(libc::EPERM),
                "outside the cgroup: {e}"
            ),
        }
        report
    }

    fn assert_default_policy_enforced(report: &str) {
        eprintln!("probe report: {report}");
        assert!(report.contains("null:ok"), "{report}");
        assert!(report.contains("mknod:ok"), "{report}");
        assert!(!report.contains("disk:opened"), "{report}");
        assert!(report.contains("Operation not permitted"), "{report}");
    }

    #[test]
    fn v1_devices_controller_enforces_default_rules() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: creating cgroups needs root");
            return;
        }
        let Some(mount) = mount_of("cgroup", Some("devices")) else {
            eprintln!("skipped: no cgroup v1 devices controller is mounted on this host");
            return;
        };
        let mode = CgroupMode::V1(vec![("devices".to_string(), mount)]);
        let id = format!("shoal-devtest-{}-v1", std::process::id());
        let cg = Cgroup::new(mode, "", &id).unwrap();
        cg.create(&Limits::default()).unwrap();
        let rules = devices::default_rules();
        let result = cg.set_devices(&rules).map(|()| {
            let list = fs::read_to_string(cg.paths()[0].join("devices.list")).unwrap();
            (list, probe_from_inside(&cg))
        });
        cg.remove(Duration::from_secs(5)).unwrap();
        let (list, report) = result.unwrap();
        let want: Vec<String> = rules[1..].iter().map(|r| r.to_string()).collect();
        assert_eq!(list.lines().collect::<Vec<_>>(), want);
        assert_default_policy_enforced(&report);
    }

    #[test]
    fn v2_device_program_enforces_default_rules() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: creating cgroups and loading eBPF programs needs root");
            return;
        }
        let Some(mount) = mount_of("cgroup2", None) else {
            eprintln!("skipped: no cgroup2 hierarchy is mounted on this host");
            return;
        };
        let id = format!("shoal-devtest-{}-v2", std::process::id());
        let cg = Cgroup::new(CgroupMode::V2(mount), "", &id).unwrap();
        cg.create(&Limits::default()).unwrap();
        let result = cg
            .set_devices(&devices::default_rules())
            .map(|()| probe_from_inside(&cg));
        cg.remove(Duration::from_secs(5)).unwrap();
        assert_default_policy_enforced(&result.unwrap());
    }

    #[test]
    fn set_devices_needs_the_v1_controller() {
        let mode = CgroupMode::V1(vec![("memory".to_string(), PathBuf::from("/nonexistent"))]);
        let cg = Cgroup::new(mode, "shoal", "c1").unwrap();
        let err = cg.set_devices(&devices::default_rules()).unwrap_err();
        assert!(matches!(err, CgroupError::NoDevicesController), "{err}");
    }

    #[test]
    fn cpu_quota_from_nano_cpus() {
        assert_eq!(cpu_quota_us(500_000_000), 50_000);
        assert_eq!(cpu_quota_us(2_000_000_000), 200_000);
        assert_eq!(cpu_quota_us(1), 1000);
    }
}
