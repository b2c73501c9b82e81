//! The manager process an agent runs on its host after `node promote`: `shoal-manager join` as
//! this node (the binary next to the agent's), supervised (restarted when it dies), restarted
//! with `shoal-manager run` when the agent starts again, stopped and wiped after `node demote`.
//!
//! It lives in `DATA_DIR/manager`, its pid in `DATA_DIR/manager.pid`. It runs in a process group
//! of its own and outlives an agent restart, like the containers' shims do: a restarted agent
//! adopts it (by its pid file) instead of starting a second one on the same data dir.
//!
//! One actor owns the state; [`ManagerProc`] is its handle.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_proto::manager_dir;
use shoal_proto::secure_file::JOIN_TOKEN_ENV;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Exit status of `shoal-manager` removed from the Raft group: such a manager is not started again.
const EXIT_REMOVED: i32 = manager_dir::EXIT_REMOVED as i32;

/// Default port of a promoted manager (`--manager-port`).
pub const DEFAULT_MANAGER_PORT: u16 = 4242;

/// How to start this host's manager.
#[derive(Debug, Clone)]
pub struct ManagerSettings {
    /// The agent's data dir: the manager's is `DATA_DIR/manager`.
    pub agent_data_dir: PathBuf,
    /// The agent's `--advertise-addr`, if given (IP or IP:PORT): the manager listens on its IP.
    pub advertise_addr: Option<String>,
    /// The manager's port.
    pub port: u16,
    /// The `shoal-manager` binary; `None` when it is not installed next to the agent.
    pub exe: Option<PathBuf>,
}

impl ManagerSettings {
    /// Settings with the `shoal-manager` binary found next to this executable.
    pub fn next_to_agent(
        agent_data_dir: PathBuf,
        advertise_addr: Option<String>,
        port: u16,
    ) -> ManagerSettings {
        let exe = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("shoal-manager")))
            .filter(|p| p.is_file());
        ManagerSettings {
            agent_data_dir,
            advertise_addr,
            port,
            exe,
        }
    }

    fn dir(&self) -> PathBuf {
        self.agent_data_dir.join("manager")
    }

    fn pid_file(&self) -> PathBuf {
        self.agent_data_dir.join("manager.pid")
    }
}

/// What the actor is asked.
enum Cmd {
    /// Become a manager: join with this token through these managers.
    Start {
        token: String,
        managers: Vec<String>,
    },
    /// Stop the manager and remove its data dir.
    Stop,
}

/// Handle of the actor supervising this host's manager process.
#[derive(Clone)]
pub struct ManagerProc {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl ManagerProc {
    /// Starts the actor; a manager data dir left from before (the agent restarted) is run again.
    pub fn start(settings: ManagerSettings) -> ManagerProc {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(actor(settings, rx));
        ManagerProc { tx }
    }

    /// `node promote`: start a manager joining as this node (ignored while one runs).
    pub fn promote(&self, token: String, managers: Vec<String>) {
        let _ = self.tx.send(Cmd::Start { token, managers });
    }

    /// `node demote`: stop the manager, if any, and remove its data dir.
    pub fn stop(&self) {
        let _ = self.tx.send(Cmd::Stop);
    }
}

/// The IP the manager listens on: the agent's advertised one, else the source address this host
/// uses to reach the first manager (its underlay address).
pub fn listen_ip(advertise: Option<&str>, managers: &[String]) -> Option<IpAddr> {
    if let Some(a) = advertise {
        if let Ok(ip) = a.parse::<IpAddr>() {
            return Some(ip);
        }
        if let Ok(sa) = a.parse::<SocketAddr>() {
            return Some(sa.ip());
        }
    }
    managers.iter().find_map(|m| {
        let remote: SocketAddr = m.parse().ok()?;
        let bind: SocketAddr = if remote.is_ipv4() {
            "0.0.0.0:0".parse().ok()?
        } else {
            "[::]:0".parse().ok()?
        };
        let sock = std::net::UdpSocket::bind(bind).ok()?;
        // connect() on UDP sends nothing: it only picks the route and thus the source address.
        sock.connect(remote).ok()?;
        sock.local_addr().ok().map(|a| a.ip())
    })
}

/// The arguments of `shoal-manager` for a fresh join as this node. The token is not among them
/// (every user of the host can read a command line): [`spawn`] hands it over in the environment.
fn join_args(s: &ManagerSettings, listen: SocketAddr, managers: &[String]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "join".into(),
        "--data-dir".into(),
        s.dir().into(),
        "--listen-addr".into(),
        listen.to_string().into(),
        "--node-cert-dir".into(),
        s.agent_data_dir.join("certs").into(),
    ];
    args.extend(managers.iter().map(OsString::from));
    args
}

fn run_args(s: &ManagerSettings) -> Vec<OsString> {
    vec!["run".into(), "--data-dir".into(), s.dir().into()]
}

/// A manager process this agent watches: its own child, or one adopted from before a restart.
enum Watched {
    Child(tokio::process::Child),
    Adopted(i32),
}

impl Watched {
    fn pid(&self) -> Option<i32> {
        match self {
            Watched::Child(c) => c.id().map(|p| p as i32),
            Watched::Adopted(p) => Some(*p),
        }
    }

    /// Waits for it to exit; the exit code when it is known.
    async fn wait(&mut self) -> Option<i32> {
        match self {
            Watched::Child(c) => c.wait().await.ok().and_then(|s| s.code()),
            Watched::Adopted(pid) => {
                while alive(*pid) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                None
            }
        }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    async fn terminate(&mut self) {
        let Some(pid) = self.pid() else { return };
        signal(pid, nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(10), self.wait())
            .await
            .is_err()
        {
            warn!(pid, "manager did not stop within 10 s: killing it");
            signal(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(5), self.wait()).await;
        }
    }
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    if pid > 1 {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// Whether `pid` runs and is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses, which may itself hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The pid recorded in the pid file if that process still runs `shoal-manager` on our data dir.
fn running_from_pid_file(s: &ManagerSettings) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(s.pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let dir = s.dir();
    let ours = cmdline
        .split(|b| *b == 0)
        .any(|arg| Path::new(std::ffi::OsStr::from_bytes(arg)) == dir);
    (ours && alive(pid)).then_some(pid)
}

use std::os::unix::ffi::OsStrExt as _;

/// Removes the manager data dir and pid file.
fn wipe(s: &ManagerSettings) {
    let dir = s.dir();
    if dir.exists() {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => info!(dir = %dir.display(), "manager data dir removed"),
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "could not remove the manager data dir")
            }
        }
    }
    let _ = std::fs::remove_file(s.pid_file());
}

/// Starts `shoal-manager ARGS` in a process group of its own and records its pid; `token`, for a
/// join, goes in its environment (`SHOAL_JOIN_TOKEN`), which only its owner can read.
fn spawn(s: &ManagerSettings, args: &[OsString], token: Option<&str>) -> Result<Watched, String> {
    let exe = s.exe.as_ref().ok_or_else(|| {
        "cannot start a manager for `node promote`: shoal-manager is not installed next to shoal-agent"
            .to_string()
    })?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(args)
        .env_remove(JOIN_TOKEN_ENV)
        .stdin(std::process::Stdio::null())
        // Its own group: a signal to the agent's group (a terminal's ^C) does not stop it.
        .process_group(0);
    if let Some(token) = token {
        cmd.env(JOIN_TOKEN_ENV, token);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", exe.display()))?;
    if let Some(pid) = child.id() {
        if let Err(e) =
            shoal_proto::host::write_atomic(&s.pid_file(), pid.to_string().as_bytes(), 0o644)
        {
            warn!(error = %e, "could not record the manager's pid");
        }
    }
    Ok(Watched::Child(child))
}

/// The actor's state.
enum State {
    /// No manager here.
    Idle,
    /// A manager runs (or joins); `restart` is how to start it again if it dies.
    Running { proc: Watched, restart: Restart },
    /// The manager died; it is started again at `at`.
    Backoff {
        at: tokio::time::Instant,
        restart: Restart,
        delay: Duration,
    },
}

/// How a dead manager is started again.
#[derive(Clone)]
enum Restart {
    /// Joining (no manager.json yet): join again from a clean dir.
    Join {
        listen: SocketAddr,
        token: String,
        managers: Vec<String>,
    },
    /// A member: `shoal-manager run` on its data dir.
    Run,
}

fn start(s: &ManagerSettings, restart: &Restart) -> Result<Watched, String> {
    match restart {
        Restart::Run if manager_dir::is_member(&s.dir()) => spawn(s, &run_args(s), None),
        // The join did not finish: start it again from an empty dir.
        Restart::Run => Err("the manager's data dir holds no manager state".into()),
        Restart::Join {
            listen,
            token,
            managers,
        } => {
            if manager_dir::is_member(&s.dir()) {
                return spawn(s, &run_args(s), None);
            }
            wipe(s);
            spawn(s, &join_args(s, *listen, managers), Some(token))
        }
    }
}

/// The state an agent starts in: a manager left running is adopted, a member's data dir is run
/// again, an unfinished join is wiped (the dispatcher asks again if the promotion still stands).
fn initial(s: &ManagerSettings) -> State {
    if let Some(pid) = running_from_pid_file(s) {
        info!(pid, "adopting the manager process left running");
        return State::Running {
            proc: Watched::Adopted(pid),
            restart: Restart::Run,
        };
    }
    if manager_dir::is_member(&s.dir()) {
        info!(dir = %s.dir().display(), "starting this host's manager again");
        return match start(s, &Restart::Run) {
            Ok(proc) => State::Running {
                proc,
                restart: Restart::Run,
            },
            Err(e) => {
                warn!(error = %e, "cannot start this host's manager");
                State::Backoff {
                    at: tokio::time::Instant::now() + Duration::from_secs(5),
                    restart: Restart::Run,
                    delay: Duration::from_secs(5),
                }
            }
        };
    }
    if s.dir().exists() {
        wipe(s);
    }
    State::Idle
}

async fn actor(s: ManagerSettings, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let mut state = initial(&s);
    loop {
        state = match state {
            // Nothing runs: only a command changes that.
            State::Idle => match rx.recv().await {
                None => return,
                Some(Cmd::Stop) => {
                    wipe(&s);
                    State::Idle
                }
                Some(Cmd::Start { token, managers }) => {
                    let Some(ip) = listen_ip(s.advertise_addr.as_deref(), &managers) else {
                        warn!("cannot start a manager for `node promote`: no address of this host reaches the managers");
                        continue;
                    };
                    let restart = Restart::Join {
                        listen: SocketAddr::new(ip, s.port),
                        token,
                        managers,
                    };
                    // A data dir left here is stale: the cluster says this node is no member.
                    wipe(&s);
                    info!(listen = %SocketAddr::new(ip, s.port), "promoted: starting a manager on this host");
                    match start(&s, &restart) {
                        Ok(proc) => State::Running { proc, restart },
                        Err(e) => {
                            warn!(error = %e, "node promote failed");
                            State::Idle
                        }
                    }
                }
            },
            // A manager runs: it may exit, or be stopped.
            State::Running { mut proc, restart } => {
                tokio::select! {
                    code = proc.wait() => {
                        let _ = std::fs::remove_file(s.pid_file());
                        if code == Some(EXIT_REMOVED) {
                            info!("this host's manager left the cluster's managers");
                            State::Idle
                        } else {
                            warn!(?code, "this host's manager exited: starting it again in 1 s");
                            // A member runs again from its data dir; a join that got that far too.
                            let restart = if manager_dir::is_member(&s.dir()) { Restart::Run } else { restart };
                            State::Backoff { at: tokio::time::Instant::now() + Duration::from_secs(1), restart, delay: Duration::from_secs(1) }
                        }
                    }
                    cmd = rx.recv() => match cmd {
                        None => return,
                        Some(Cmd::Start { .. }) => {
                            debug!("promotion asked again: a manager runs already");
                            State::Running { proc, restart }
                        }
                        Some(Cmd::Stop) => {
                            info!("demoted: stopping this host's manager");
                            proc.terminate().await;
                            wipe(&s);
                            State::Idle
                        }
                    },
                }
            }
            // The manager died: start it again after the delay, unless told otherwise.
            State::Backoff { at, restart, delay } => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {
                        let next = (delay * 2).min(Duration::from_secs(30));
                        match start(&s, &restart) {
                            Ok(proc) => State::Running { proc, restart },
                            Err(e) if matches!(restart, Restart::Run) && !manager_dir::is_member(&s.dir()) => {
                                warn!(error = %e, "giving up on this host's manager");
                                wipe(&s);
                                State::Idle
                            }
                            Err(e) => {
                                warn!(error = %e, "cannot start this host's manager");
                                State::Backoff { at: tokio::time::Instant::now() + next, restart, delay: next }
                            }
                        }
                    }
                    cmd = rx.recv() => match cmd {
                        None => return,
                        Some(Cmd::Start { .. }) => State::Backoff { at, restart, delay },
                        Some(Cmd::Stop) => {
                            wipe(&s);
                            State::Idle
                        }
                    },
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings on port 4242 without an advertise address.
    fn settings(agent_data_dir: impl Into<PathBuf>, exe: Option<PathBuf>) -> ManagerSettings {
        ManagerSettings {
            agent_data_dir: agent_data_dir.into(),
            advertise_addr: None,
            port: 4242,
            exe,
        }
    }

    #[test]
    fn listen_ip_prefers_the_advertised_address() {
        let m = vec!["127.0.0.1:4242".to_string()];
        assert_eq!(
            listen_ip(Some("10.1.2.3"), &m),
            Some("10.1.2.3".parse().expect("ip"))
        );
        assert_eq!(
            listen_ip(Some("10.1.2.3:99"), &m),
            Some("10.1.2.3".parse().expect("ip"))
        );
        // Without one: the source address towards the manager (loopback reaches loopback).
        assert_eq!(listen_ip(None, &m), Some("127.0.0.1".parse().expect("ip")));
        assert_eq!(listen_ip(None, &["not an address".to_string()]), None);
    }

    #[test]
    fn join_args_name_the_node_certificate_and_every_manager() {
        let s = settings("/var/lib/shoal/agent", None);
        let args = join_args(
            &s,
            "10.0.0.5:4242".parse().expect("addr"),
            &["10.0.0.1:4242".into(), "10.0.0.2:4242".into()],
        );
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "join",
                "--data-dir",
                "/var/lib/shoal/agent/manager",
                "--listen-addr",
                "10.0.0.5:4242",
                "--node-cert-dir",
                "/var/lib/shoal/agent/certs",
                "10.0.0.1:4242",
                "10.0.0.2:4242"
            ]
        );
        assert_eq!(
            run_args(&s)[2],
            OsString::from("/var/lib/shoal/agent/manager")
        );
    }

    #[test]
    fn a_missing_binary_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = settings(dir.path(), None);
        let err = spawn(&s, &run_args(&s), None).err().expect("refused");
        assert!(err.contains("shoal-manager is not installed"), "{err}");
    }

    #[tokio::test]
    async fn the_join_token_goes_in_the_environment_not_on_the_command_line() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        // A stand-in for shoal-manager that records what it was given.
        let exe = dir.path().join("shoal-manager");
        std::fs::write(
            &exe,
            "#!/bin/sh\nd=$(dirname \"$0\")\nprintf '%s\\n' \"$@\" > \"$d/args\"\nprintf '%s' \"${SHOAL_JOIN_TOKEN-unset}\" > \"$d/env\"\n",
        )
        .expect("write");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let s = settings(dir.path(), Some(exe));
        let token = "SHLTKN-1-secretsecretsecret";
        let args = join_args(
            &s,
            "10.0.0.5:4242".parse().expect("addr"),
            &["10.0.0.1:4242".into()],
        );
        let mut proc = spawn(&s, &args, Some(token)).expect("spawn");
        tokio::time::timeout(Duration::from_secs(10), proc.wait())
            .await
            .expect("the stand-in exits");
        let argv = std::fs::read_to_string(dir.path().join("args")).expect("args");
        assert!(
            !argv.contains("secret"),
            "token on the command line: {argv}"
        );
        assert!(argv.starts_with("join\n"), "{argv}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("env")).expect("env"),
            token
        );
        // A restart (`run`) gets no token at all.
        let mut proc = spawn(&s, &run_args(&s), None).expect("spawn");
        tokio::time::timeout(Duration::from_secs(10), proc.wait())
            .await
            .expect("the stand-in exits");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("env")).expect("env"),
            "unset"
        );
    }

    #[test]
    fn dead_or_foreign_pids_are_not_adopted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = settings(dir.path(), None);
        assert_eq!(running_from_pid_file(&s), None);
        // Our own pid runs, but not on this data dir.
        std::fs::write(s.pid_file(), std::process::id().to_string()).expect("write");
        assert_eq!(running_from_pid_file(&s), None);
        assert!(alive(std::process::id() as i32));
    }
}
