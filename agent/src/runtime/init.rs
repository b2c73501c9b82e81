//! The container's init between `clone` and `execve`: wait for the shim, build the root filesystem,
//! set hostname, user, working directory and stdio, then exec the command.
//!
//! This code runs in the cloned child of the single-threaded shim. Any failure is written as one
//! message to the report pipe (close-on-exec, so a successful exec shows as end-of-file) and the child
//! exits with 127.

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::signal::{sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

use super::caps;
use super::namespaces;
use super::rootfs::{self, RootfsError, RootfsOptions};
use super::state::ContainerDir;
use super::{ContainerConfig, Rlimit};

/// Search path used when the container's environment has no `PATH` (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors of the container's init; their text is what `Runtime::start` returns to the agent.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The shim went away before releasing the init.
    #[error("shim exited before the container was set up")]
    ShimGone,
    /// Reading the go byte failed.
    #[error("sync with shim: {0}")]
    Sync(Errno),
    /// setns into the given network namespace failed.
    #[error("join network namespace: {0}")]
    Netns(Errno),
    /// Building the root filesystem failed.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// /etc/resolv.conf could not be written.
    #[error("write /etc/resolv.conf: {0}")]
    ResolvConf(std::io::Error),
    /// /etc/hosts could not be written.
    #[error("write /etc/hosts: {0}")]
    Hosts(std::io::Error),
    /// sethostname failed.
    #[error("set hostname {hostname:?}: {source}")]
    Hostname {
        /// The hostname.
        hostname: String,
        /// The kernel's error.
        source: Errno,
    },
    /// The user or group could not be resolved.
    #[error("{0}")]
    User(String),
    /// The working directory could not be created or entered.
    #[error("working directory {path}: {source}")]
    Cwd {
        /// The directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Setting up fds 0-2 failed.
    #[error("stdio: {0}")]
    Stdio(Errno),
    /// Restricting capabilities failed.
    #[error("set capabilities: {0}")]
    Capabilities(Errno),
    /// A resource limit could not be set.
    #[error("ulimit {name}: {source}")]
    Ulimit {
        /// docker's name of the limit.
        name: String,
        /// The kernel's error.
        source: Errno,
    },
    /// PR_SET_NO_NEW_PRIVS failed.
    #[error("set no-new-privileges: {0}")]
    NoNewPrivileges(Errno),
    /// The seccomp filter could not be loaded.
    #[error("load seccomp filter: {0}")]
    Seccomp(Errno),
    /// setgroups/setgid/setuid failed.
    #[error("set credentials: {0}")]
    Credentials(Errno),
    /// The command is not found in the container.
    #[error("exec: {0:?}: executable file not found in $PATH")]
    NotFound(String),
    /// An argument or environment entry holds a NUL byte.
    #[error("argument or environment entry contains a NUL byte")]
    Nul,
    /// No command to run.
    #[error("no command given")]
    NoCommand,
    /// execve failed.
    #[error("exec {path}: {source}")]
    Exec {
        /// The resolved executable.
        path: String,
        /// The kernel's error.
        source: Errno,
    },
}

/// The fds the init uses; all are close-on-exec except where it dups them onto 1 and 2.
pub struct InitFds<'a> {
    /// Read end of the go pipe: one byte arrives when the shim has placed the init in its cgroup.
    pub go_read: &'a OwnedFd,
    /// Write end of the go pipe (the shim's; closed in the child so EOF means the shim died).
    pub go_write: &'a OwnedFd,
    /// Where to report a setup failure.
    pub report: &'a OwnedFd,
    /// Becomes fd 1.
    pub stdout: &'a OwnedFd,
    /// Becomes fd 2.
    pub stderr: &'a OwnedFd,
    /// Network namespace to join, if any.
    pub netns: Option<&'a OwnedFd>,
    /// The seccomp filter, compiled by the shim before the clone (none: unconfined).
    pub seccomp: Option<&'a super::seccomp::CompiledFilter>,
}

/// Replaces the container's /etc/resolv.conf. Runs after the pivot, so a symlink in the image
/// (to a systemd-resolved stub, say) cannot lead outside the container: it is removed, not followed.
fn write_resolv_conf(conf: &str) -> std::io::Result<()> {
    std::fs::create_dir_all("/etc")?;
    match std::fs::remove_file("/etc/resolv.conf") {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::write("/etc/resolv.conf", conf)
}

/// What a container's /etc/hosts starts from when its image has none (docker's first lines).
const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// The /etc/hosts text: the image's (or [`DEFAULT_HOSTS`]), then the extra lines.
pub fn hosts_file(image_hosts: Option<&str>, extra: &[String]) -> String {
    let mut out = image_hosts.unwrap_or(DEFAULT_HOSTS).to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for line in extra {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Appends `extra` to the container's /etc/hosts. Runs after the pivot; a symlink in the image is
/// replaced by a file, never followed.
fn write_hosts(extra: &[String]) -> std::io::Result<()> {
    std::fs::create_dir_all("/etc")?;
    let image = match std::fs::symlink_metadata("/etc/hosts") {
        Ok(m) if m.file_type().is_file() => Some(std::fs::read_to_string("/etc/hosts")?),
        Ok(_) => {
            std::fs::remove_file("/etc/hosts")?;
            None
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    std::fs::write("/etc/hosts", hosts_file(image.as_deref(), extra))
}

/// Entry point of the cloned child: returns only on failure, with the exit status.
pub fn run(cfg: &ContainerConfig, dir: &ContainerDir, fds: &InitFds<'_>) -> isize {
    let Err(err) = setup_and_exec(cfg, dir, fds);
    let msg = err.to_string();
    let _ = nix::unistd::write(fds.report.as_fd(), msg.as_bytes());
    127
}

fn setup_and_exec(
    cfg: &ContainerConfig,
    dir: &ContainerDir,
    fds: &InitFds<'_>,
) -> Result<Infallible, InitError> {
    reset_signals();
    // SAFETY: this is the child's own copy of the shim's fd table; the descriptor is not used again here,
    // and the OwnedFd in the copied memory is never dropped (the child leaves by exec or exit).
    unsafe { libc::close(fds.go_write.as_raw_fd()) };
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(fds.go_read, &mut byte) {
            Ok(0) => return Err(InitError::ShimGone),
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(InitError::Sync(e)),
        }
    }

    // Read while the host's /proc is still visible.
    let last_cap = caps::last_cap();
    if let Some(netns) = fds.netns {
        namespaces::join_netns(netns.as_fd()).map_err(InitError::Netns)?;
    }
    let opts = RootfsOptions {
        privileged: cfg.privileged,
        devices: &cfg.devices,
        sysctls: Some(&cfg.sysctls),
        init: cfg.init.as_deref(),
        mounts: &cfg.mounts,
    };
    rootfs::prepare(&cfg.layers, &dir.upper(), &dir.work(), &dir.merged(), &opts)?;
    if let Some(conf) = &cfg.resolv_conf {
        write_resolv_conf(conf).map_err(InitError::ResolvConf)?;
    }
    if !cfg.extra_hosts.is_empty() {
        write_hosts(&cfg.extra_hosts).map_err(InitError::Hosts)?;
    }

    let hostname = hostname_for(cfg);
    nix::unistd::sethostname(&hostname)
        .map_err(|source| InitError::Hostname { hostname, source })?;

    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let mut creds = resolve_user(&cfg.user, &passwd, &group).map_err(InitError::User)?;
    for extra in &cfg.groups {
        let gid = resolve_group(extra, &group).map_err(InitError::User)?;
        if !creds.groups.contains(&gid) {
            creds.groups.push(gid);
        }
    }

    let cwd = if cfg.cwd.is_empty() {
        "/"
    } else {
        cfg.cwd.as_str()
    };
    let cwd_err = |source| InitError::Cwd {
        path: cwd.to_string(),
        source,
    };
    std::fs::create_dir_all(cwd).map_err(cwd_err)?;
    std::env::set_current_dir(cwd).map_err(cwd_err)?;
    // Everything the runtime writes into the root is written: from here on it may be read-only.
    if cfg.read_only {
        rootfs::make_root_readonly()?;
    }

    let null = open("/dev/null", OFlag::O_RDWR, Mode::empty()).map_err(InitError::Stdio)?;
    nix::unistd::dup2_stdin(&null).map_err(InitError::Stdio)?;
    nix::unistd::dup2_stdout(fds.stdout).map_err(InitError::Stdio)?;
    nix::unistd::dup2_stderr(fds.stderr).map_err(InitError::Stdio)?;

    // Raising a hard limit needs CAP_SYS_RESOURCE: set them while the init still has it.
    for limit in &cfg.ulimits {
        set_rlimit(limit)?;
    }
    // Without no-new-privileges, loading a filter needs CAP_SYS_ADMIN, so it goes in before the
    // capabilities are dropped (the profile allows the capset/setuid calls that follow, as with
    // runc). With it, the filter is the last thing before execve.
    if !cfg.no_new_privileges {
        if let Some(filter) = fds.seccomp {
            filter.load().map_err(InitError::Seccomp)?;
        }
    }
    // As runc: the bounding set first, then the user (with CAP_SETUID/SETGID still in effect,
    // whatever the container keeps), then the process's sets. Changing to a non-root user clears
    // them, so such a user keeps no effective capability, as with docker.
    let keep = cfg.capabilities.as_deref().unwrap_or(caps::DEFAULT_CAPS);
    caps::drop_bounding(keep, last_cap).map_err(InitError::Capabilities)?;
    let gids: Vec<Gid> = creds.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&gids).map_err(InitError::Credentials)?;
    nix::unistd::setgid(Gid::from_raw(creds.gid)).map_err(InitError::Credentials)?;
    nix::unistd::setuid(Uid::from_raw(creds.uid)).map_err(InitError::Credentials)?;
    if creds.uid == 0 {
        // A privileged container asks for every capability Shoal knows; it gets those this
        // process has (its bounding set: the kernel's, less what the agent was started without),
        // as docker gives it those the daemon has. capset would refuse the whole set otherwise.
        let known: Vec<u32> = keep
            .iter()
            .copied()
            .filter(|c| *c <= last_cap && caps::in_bounding_set(*c))
            .collect();
        caps::set_process_caps(&known).map_err(InitError::Capabilities)?;
    }
    if cfg.no_new_privileges {
        // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1) takes integers only.
        let res = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        Errno::result(res).map_err(InitError::NoNewPrivileges)?;
        if let Some(filter) = fds.seccomp {
            filter.load().map_err(InitError::Seccomp)?;
        }
    }

    // With --init, the init binary runs as PID 1 and starts the command as its child.
    let args: Vec<String> = match &cfg.init {
        Some(_) => [rootfs::INIT_PATH.to_string(), "--".to_string()]
            .into_iter()
            .chain(cfg.args.iter().cloned())
            .collect(),
        None => cfg.args.clone(),
    };
    let arg0 = args.first().ok_or(InitError::NoCommand)?;
    let path_var = cfg
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let exe = resolve_executable(arg0, path_var, is_executable)
        .ok_or_else(|| InitError::NotFound(arg0.clone()))?;
    let exe_c = CString::new(exe.as_os_str().as_bytes()).map_err(|_| InitError::Nul)?;
    let argv = to_cstrings(&args)?;
    let envp = to_cstrings(&cfg.env)?;
    let source = match nix::unistd::execve(&exe_c, &argv, &envp) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    Err(InitError::Exec {
        path: exe.display().to_string(),
        source,
    })
}

/// Sets one resource limit (-1, stored as `u64::MAX`, is unlimited).
fn set_rlimit(limit: &Rlimit) -> Result<(), InitError> {
    let err = |source| InitError::Ulimit {
        name: limit.name.clone(),
        source,
    };
    let resource = rlimit_resource(&limit.name).ok_or(err(Errno::EINVAL))?;
    nix::sys::resource::setrlimit(resource, limit.soft, limit.hard).map_err(err)
}

/// The kernel resource of docker's ulimit name.
pub fn rlimit_resource(name: &str) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    Some(match name {
        "as" => R::RLIMIT_AS,
        "core" => R::RLIMIT_CORE,
        "cpu" => R::RLIMIT_CPU,
        "data" => R::RLIMIT_DATA,
        "fsize" => R::RLIMIT_FSIZE,
        "locks" => R::RLIMIT_LOCKS,
        "memlock" => R::RLIMIT_MEMLOCK,
        "msgqueue" => R::RLIMIT_MSGQUEUE,
        "nice" => R::RLIMIT_NICE,
        "nofile" => R::RLIMIT_NOFILE,
        "nproc" => R::RLIMIT_NPROC,
        "rss" => R::RLIMIT_RSS,
        "rtprio" => R::RLIMIT_RTPRIO,
        "rttime" => R::RLIMIT_RTTIME,
        "sigpending" => R::RLIMIT_SIGPENDING,
        "stack" => R::RLIMIT_STACK,
        _ => return None,
    })
}

/// The container's hostname: the configured one, or the first 12 characters of its id.
pub fn hostname_for(cfg: &ContainerConfig) -> String {
    if cfg.hostname.is_empty() {
        cfg.id.chars().take(12).collect()
    } else {
        cfg.hostname.clone()
    }
}

/// Default dispositions and an empty signal mask for the program about to be exec'd (ignored
/// signals and the mask survive execve, and the shim's parent may have set either).
fn reset_signals() {
    for signal in Signal::iterator() {
        if signal == Signal::SIGKILL || signal == Signal::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL registers no handler code, so no async-signal-safety concern.
        let _ = unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) };
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

fn to_cstrings(items: &[String]) -> Result<Vec<CString>, InitError> {
    items
        .iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| InitError::Nul))
        .collect()
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Resolves a command name like `execvp`: a name with a `/` is used as is, otherwise the first
/// executable match along `path_var`.
pub fn resolve_executable(
    arg0: &str,
    path_var: &str,
    is_exec: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    if arg0.is_empty() {
        return None;
    }
    if arg0.contains('/') {
        return Some(PathBuf::from(arg0));
    }
    path_var
        .split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(arg0))
        .find(|candidate| is_exec(candidate))
}

/// Credentials the container's process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (the primary one included).
    pub groups: Vec<u32>,
}

/// Resolves Docker's `user[:group]` (names or numbers) against the image's passwd and group files.
pub fn resolve_user(spec: &str, passwd: &str, group: &str) -> Result<Credentials, String> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entry = passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        let uid: u32 = f[2].parse().ok()?;
        let gid: u32 = f[3].parse().ok()?;
        let matches = match user_part.parse::<u32>() {
            Ok(n) => n == uid,
            Err(_) => f[0] == user_part,
        };
        matches.then(|| (f[0].to_string(), uid, gid))
    });
    let (name, uid, mut gid) = match (entry, user_part.parse::<u32>()) {
        (Some(e), _) => e,
        (None, Ok(n)) => (String::new(), n, 0),
        (None, Err(_)) => {
            return Err(format!(
                "unable to find user {user_part}: no matching entries in passwd file"
            ))
        }
    };
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = resolve_group(g, group)?;
    }
    let mut groups = vec![gid];
    if !name.is_empty() && group_part.is_none() {
        for line in group.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse::<u32>() {
                    if !groups.contains(&g) {
                        groups.push(g);
                    }
                }
            }
        }
    }
    Ok(Credentials { uid, gid, groups })
}

/// Resolves a `--group-add` entry: a number, or a name in the image's group file.
pub fn resolve_group(spec: &str, group: &str) -> Result<u32, String> {
    if let Ok(n) = spec.parse::<u32>() {
        return Ok(n);
    }
    group
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 3 && f[0] == spec)
                .then(|| f[2].parse::<u32>().ok())
                .flatten()
        })
        .ok_or_else(|| format!("unable to find group {spec}: no matching entries in group file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_hosts_follow_the_images_file() {
        let extra = vec!["10.0.0.5 db alias".to_string()];
        assert_eq!(
            hosts_file(Some("127.0.0.1 localhost"), &extra),
            "127.0.0.1 localhost\n10.0.0.5 db alias\n"
        );
        let fresh = hosts_file(None, &extra);
        assert!(fresh.starts_with("127.0.0.1\tlocalhost\n"), "{fresh}");
        assert!(fresh.ends_with("10.0.0.5 db alias\n"), "{fresh}");
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\nstaff:x:50:www,bob\n";

    #[test]
    fn users_resolve_like_docker() {
        type Want = Result<(u32, u32, Vec<u32>), ()>;
        let cases: &[(&str, Want)] = &[
            ("", Ok((0, 0, vec![0]))),
            ("root", Ok((0, 0, vec![0]))),
            ("www", Ok((33, 33, vec![33, 50]))),
            ("33", Ok((33, 33, vec![33, 50]))),
            ("1000", Ok((1000, 0, vec![0]))),
            ("1000:1001", Ok((1000, 1001, vec![1001]))),
            ("www:staff", Ok((33, 50, vec![50]))),
            ("nobody", Err(())),
            ("www:nogroup", Err(())),
        ];
        for (spec, want) in cases {
            let got = resolve_user(spec, PASSWD, GROUP)
                .map(|c| (c.uid, c.gid, c.groups))
                .map_err(|_| ());
            assert_eq!(&got, want, "user {spec:?}");
        }
    }

    #[test]
    fn added_groups_resolve_by_name_or_number() {
        assert_eq!(resolve_group("staff", GROUP), Ok(50));
        assert_eq!(resolve_group("4242", GROUP), Ok(4242));
        assert!(resolve_group("nogroup", GROUP).is_err());
    }

    #[test]
    fn every_docker_ulimit_has_a_resource() {
        for name in shoal_proto::security::ULIMITS {
            assert!(rlimit_resource(name).is_some(), "{name}");
        }
    }

    #[test]
    fn executables_resolve_along_path() {
        let exists = |p: &Path| p == Path::new("/bin/sh") || p == Path::new("/usr/bin/env");
        assert_eq!(
            resolve_executable("sh", "/usr/bin:/bin", exists),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(
            resolve_executable("env", "/usr/bin:/bin", exists),
            Some(PathBuf::from("/usr/bin/env"))
        );
        assert_eq!(resolve_executable("nope", "/usr/bin:/bin", exists), None);
        assert_eq!(
            resolve_executable("./x", "/bin", exists),
            Some(PathBuf::from("./x"))
        );
        assert_eq!(resolve_executable("", "/bin", exists), None);
    }

    #[test]
    fn hostname_defaults_to_short_id() {
        let mut cfg = ContainerConfig {
            id: "0123456789abcdefghij".into(),
            ..Default::default()
        };
        assert_eq!(hostname_for(&cfg), "0123456789ab");
        cfg.hostname = "web-1".into();
        assert_eq!(hostname_for(&cfg), "web-1");
    }
}
