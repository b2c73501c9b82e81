//! Looking at what a testbed left on the machine: containers, namespaces, mounts, cgroups,
//! processes, and the output of commands.

use super::*;

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

pub(super) fn unescape_mount_path(s: &str) -> String {
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
pub(super) fn walk_dirs(root: &Path, depth: usize, f: &mut dyn FnMut(&Path)) {
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
pub(super) fn agent_data_dirs(dir: &Path) -> Vec<PathBuf> {
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

pub(super) fn exe_name(pid: i32) -> String {
    fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

pub(super) fn sigkill(pid: i32) {
    if pid > 1 && pid as u32 != std::process::id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
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
