//! A Shoal cluster on a testbed: the binaries, the agents, the manager and the registry.

use super::*;

/// Paths of the Shoal binaries under test.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `shoal-manager`.
    pub manager: PathBuf,
    /// `shoal-agent`.
    pub agent: PathBuf,
    /// `shoalctl`.
    pub ctl: PathBuf,
    /// `shoal-fixture` (pushes test images).
    pub fixture: PathBuf,
}

impl Binaries {
    /// Finds the binaries in `SHOAL_BIN_DIR`, else next to the test executable (target/<profile>).
    pub fn locate() -> Result<Binaries> {
        let dir = match std::env::var_os("SHOAL_BIN_DIR") {
            Some(d) => PathBuf::from(d),
            None => {
                let exe = std::env::current_exe()?;
                // target/debug/deps/<test>-<hash> -> target/debug
                exe.parent()
                    .and_then(Path::parent)
                    .map(Path::to_path_buf)
                    .ok_or_else(|| anyhow!("cannot place {}", exe.display()))?
            }
        };
        let find = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                bail!(
                    "{name} not found in {}: run `cargo build --workspace --bins` first \
                     (or point SHOAL_BIN_DIR at the directory holding the Shoal binaries)",
                    dir.display()
                )
            }
        };
        Ok(Binaries {
            manager: find("shoal-manager")?,
            agent: find("shoal-agent")?,
            ctl: find("shoalctl")?,
            fixture: find("shoal-fixture")?,
        })
    }
}

/// An agent of a `Cluster`: its host, data dir and the command that (re)starts it.
pub struct Agent {
    /// The host it runs on.
    pub host: Host,
    /// Its `--data-dir`.
    pub data_dir: PathBuf,
    args: Vec<OsString>,
    proc: Option<Proc>,
}

impl Agent {
    /// The running agent process, if any.
    pub fn proc(&self) -> Option<&Proc> {
        self.proc.as_ref()
    }

    /// The containers its runtime records.
    pub fn containers(&self) -> Result<Vec<ContainerState>> {
        runtime_containers(&self.data_dir)
    }
}

/// How to start a `Cluster`: `ClusterOptions::new(4).heartbeat_period("1s")`.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Worker hosts `w1`…`wN`; 0 runs one agent beside the manager.
    pub n_workers: usize,
    /// Extra arguments of `shoal-manager init` (e.g. `--heartbeat-period 1s`).
    pub manager_args: Vec<String>,
    /// Extra arguments of `shoal-agent join`, per worker index (0 = `w1`).
    pub agent_args: Vec<Vec<String>>,
    /// The port the manager serves the Docker Engine API on (`--docker-api-addr`, on the
    /// manager host's address); `None` leaves it off.
    pub docker_api_port: Option<u16>,
}

impl ClusterOptions {
    /// A cluster with `n_workers` worker hosts and default settings.
    pub fn new(n_workers: usize) -> Self {
        ClusterOptions {
            n_workers,
            ..Default::default()
        }
    }

    /// The manager's `--heartbeat-period` (e.g. "1s"), to detect dead hosts quickly.
    pub fn heartbeat_period(mut self, period: &str) -> Self {
        self.manager_args
            .extend(["--heartbeat-period".to_string(), period.to_string()]);
        self
    }

    /// Serves the Docker Engine API on the manager host's address at `port`
    /// (`shoal-manager init --docker-api-addr IP:PORT`); see `Cluster::docker_api_addr`.
    pub fn docker_api(mut self, port: u16) -> Self {
        self.docker_api_port = Some(port);
        self
    }

    /// Extra `shoal-agent join` arguments for worker `i` (0 = `w1`), e.g. `--label zone=a`.
    pub fn agent_args(mut self, i: usize, args: &[&str]) -> Self {
        if self.agent_args.len() <= i {
            self.agent_args.resize(i + 1, Vec::new());
        }
        self.agent_args[i].extend(args.iter().map(|a| a.to_string()));
        self
    }
}

/// Where the join token of the node with data dir `data_dir` is kept: `<data_dir>.join-token`,
/// beside the data dir (a data dir must be empty for a first join).
pub fn token_file_for(data_dir: &Path) -> PathBuf {
    let mut name = data_dir.as_os_str().to_owned();
    name.push(".join-token");
    PathBuf::from(name)
}

/// Writes `token` to `path`, owner-only, as `--token-file` reads it.
pub fn write_token_file(path: &Path, token: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    shoal_proto::secure_file::write_private(path, format!("{token}\n").as_bytes())?;
    Ok(())
}

/// A running Shoal cluster on a testbed: a registry host, a manager host, agents.
pub struct Cluster {
    /// The binaries under test.
    pub bins: Binaries,
    /// The host running docker-registry with the test images.
    pub registry: Host,
    /// The host running `shoal-manager`.
    pub manager: Host,
    /// The manager's `--data-dir`.
    pub manager_dir: PathBuf,
    manager_proc: Option<Proc>,
    manager_args: Vec<String>,
    docker_api_port: Option<u16>,
    /// The agents, in join order.
    pub agents: Vec<Agent>,
    worker_token: String,
    // Last: dropped after everything above, and it kills and removes all of it.
    tb: Testbed,
}

impl Cluster {
    /// Starts a cluster with `n_workers` worker hosts (`w1`…); with 0, one agent runs beside the
    /// manager on the manager host (the usual one-host cluster). Returns once every node is Ready.
    pub fn start(tb: Testbed, n_workers: usize) -> Result<Cluster> {
        Cluster::start_with(tb, ClusterOptions::new(n_workers))
    }

    /// Starts a cluster as `opts` says; returns once every node is Ready.
    pub fn start_with(tb: Testbed, opts: ClusterOptions) -> Result<Cluster> {
        let n_workers = opts.n_workers;
        let bins = Binaries::locate()?;
        let registry = tb.add_host("reg")?;
        start_registry(&registry)?;
        let reg = registry_addr(&registry);
        for (verb, image) in [
            ("push-busybox", "shoal/busybox:latest"),
            ("push-demo", "shoal/demo:latest"),
        ] {
            let out = registry.run(&bins.fixture, [verb, "--registry", &reg, "--image", image])?;
            check_output(&out, &format!("shoal-fixture {verb}"))?;
        }

        let manager = tb.add_host("mgr")?;
        let manager_dir = manager.dir()?.join("manager");
        let mut cluster = Cluster {
            bins,
            registry,
            manager,
            manager_dir,
            manager_proc: None,
            manager_args: opts.manager_args.clone(),
            docker_api_port: opts.docker_api_port,
            agents: Vec::new(),
            worker_token: String::new(),
            tb,
        };
        cluster.start_manager()?;
        cluster.worker_token = cluster.join_token("worker")?;

        let hosts = if n_workers == 0 {
            vec![cluster.manager.clone()]
        } else {
            (1..=n_workers)
                .map(|i| cluster.tb.add_host(&format!("w{i}")))
                .collect::<Result<_>>()?
        };
        let token = cluster.worker_token.clone();
        for (i, host) in hosts.into_iter().enumerate() {
            let extra = opts.agent_args.get(i).cloned().unwrap_or_default();
            cluster.add_agent_with(host, &token, &extra)?;
        }
        cluster.wait_nodes_ready(cluster.agents.len())?;
        Ok(cluster)
    }

    /// The testbed the cluster runs on.
    pub fn testbed(&self) -> &Testbed {
        &self.tb
    }

    /// `IP:5000` of the registry, as agents reach it.
    pub fn registry_addr(&self) -> String {
        registry_addr(&self.registry)
    }

    /// The busybox image (Cmd `sh`) in the test registry.
    pub fn busybox_image(&self) -> String {
        format!("{}/shoal/busybox:latest", self.registry_addr())
    }

    /// The demo web server image in the test registry.
    pub fn demo_image(&self) -> String {
        format!("{}/shoal/demo:latest", self.registry_addr())
    }

    /// `IP:4242` of the manager.
    pub fn manager_addr(&self) -> String {
        format!("{}:{MANAGER_PORT}", self.manager.ip())
    }

    /// `IP:PORT` of the manager's Docker Engine API, if the cluster was started with
    /// `ClusterOptions::docker_api`.
    pub fn docker_api_addr(&self) -> Option<String> {
        self.docker_api_port
            .map(|port| format!("{}:{port}", self.manager.ip()))
    }

    /// The admin.conf written by `shoal-manager init`.
    pub fn admin_conf(&self) -> PathBuf {
        self.manager_dir.join("admin.conf")
    }

    /// The worker join token the cluster was started with.
    pub fn worker_token(&self) -> &str {
        &self.worker_token
    }

    /// The manager process, if running.
    pub fn manager_proc(&self) -> Option<&Proc> {
        self.manager_proc.as_ref()
    }

    /// Starts (or restarts from its data dir: same command) the manager, and waits for admin.conf
    /// and for the manager to answer shoalctl.
    pub fn start_manager(&mut self) -> Result<()> {
        let listen = self.manager_addr();
        let dir = self.manager_dir.to_string_lossy().into_owned();
        let mut args: Vec<String> = ["init", "--data-dir", &dir, "--listen-addr", &listen]
            .iter()
            .map(|a| a.to_string())
            .collect();
        args.extend(self.manager_args.iter().cloned());
        if let Some(addr) = self.docker_api_addr() {
            args.extend(["--docker-api-addr".to_string(), addr]);
        }
        let proc = self
            .manager
            .spawn(&self.bins.manager, &args, "manager.log")?;
        self.manager_proc = Some(proc.clone());
        let conf = self.admin_conf();
        Testbed::wait_for(DEADLINE, "the manager to write admin.conf", || {
            if let Some(status) = proc.try_wait()? {
                return Err(fatal(format!(
                    "shoal-manager exited with {status}; see manager.log"
                )));
            }
            // The file is written through a rename, but parse it to be sure it is whole.
            Ok(fs::read_to_string(&conf)
                .ok()
                .is_some_and(|t| serde_json::from_str::<serde_json::Value>(&t).is_ok()))
        })?;
        Testbed::wait_for(DEADLINE, "the manager to answer shoalctl", || {
            if let Some(status) = proc.try_wait()? {
                return Err(fatal(format!(
                    "shoal-manager exited with {status}; see manager.log"
                )));
            }
            Ok(self.ctl(["node", "ls"])?.status.success())
        })
    }

    /// SIGKILLs the manager.
    pub fn kill_manager(&mut self) -> Result<()> {
        if let Some(p) = self.manager_proc.take() {
            p.kill()?;
        }
        Ok(())
    }

    /// `cluster join-token ROLE -q`.
    pub fn join_token(&self, role: &str) -> Result<String> {
        let token = self.ctl_ok(["cluster", "join-token", role, "-q"])?;
        let token = token.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            bail!("`cluster join-token {role} -q` printed {token:?}, not a single token");
        }
        Ok(token.to_string())
    }

    /// The arguments of `shoal-agent join` for an agent on `host` with `data_dir` and `token`. The
    /// token goes through a file beside the data dir (`--token-file`), never on the command
    /// line, as an operator should do it.
    pub fn agent_join_args(&self, host: &Host, data_dir: &Path, token: &str) -> Vec<OsString> {
        let ip = host.ip().to_string();
        let token_file = token_file_for(data_dir);
        // Only a broken test directory fails this, and then nothing else could work either.
        write_token_file(&token_file, token)
            .unwrap_or_else(|e| panic!("writing {}: {e:#}", token_file.display()));
        [
            "join",
            "--data-dir",
            &data_dir.to_string_lossy(),
            "--token-file",
            &token_file.to_string_lossy(),
            "--hostname",
            host.name(),
            "--insecure-registry",
            &self.registry_addr(),
            "--advertise-addr",
            &ip,
            &self.manager_addr(),
        ]
        .iter()
        .map(OsString::from)
        .collect()
    }

    /// Starts an agent on `host` that joins with `token`; returns its index in `agents`. Does not
    /// wait for it to be Ready (see `wait_nodes_ready`).
    pub fn add_agent(&mut self, host: Host, token: &str) -> Result<usize> {
        self.add_agent_with(host, token, &[])
    }

    /// Like `add_agent`, with extra `shoal-agent join` arguments (e.g. `--label zone=a`).
    pub fn add_agent_with(&mut self, host: Host, token: &str, extra: &[String]) -> Result<usize> {
        let data_dir = host.dir()?.join("agent");
        let mut args = self.agent_join_args(&host, &data_dir, token);
        // Before the positional manager address, which comes last.
        let at = args.len() - 1;
        args.splice(at..at, extra.iter().map(OsString::from));
        let mut agent = Agent {
            host,
            data_dir,
            args,
            proc: None,
        };
        agent.proc = Some(self.spawn_agent(&agent)?);
        self.agents.push(agent);
        Ok(self.agents.len() - 1)
    }

    fn spawn_agent(&self, agent: &Agent) -> Result<Proc> {
        let log = format!("agent-{}.log", agent.host.name());
        agent.host.spawn(&self.bins.agent, &agent.args, &log)
    }

    /// SIGKILLs agent `i` (its shims and containers are left alone).
    pub fn kill_agent(&mut self, i: usize) -> Result<()> {
        let agent = self
            .agents
            .get_mut(i)
            .ok_or_else(|| anyhow!("no agent {i}"))?;
        if let Some(p) = agent.proc.take() {
            p.kill()?;
        }
        Ok(())
    }

    /// Kills host `i` of the agents the hard way: SIGKILL to its agent, then to every shim and
    /// container its runtime records, as if the machine lost power. Returns the killed pids.
    pub fn kill_agent_host(&mut self, i: usize) -> Result<Vec<i32>> {
        self.kill_agent(i)?;
        let mut killed = Vec::new();
        for ct in self.agents[i].containers()? {
            for pid in [ct.shim_pid, ct.pid].into_iter().flatten() {
                // A pid that is already gone fails with ESRCH, which is fine.
                let pid_t = nix::unistd::Pid::from_raw(pid);
                if nix::sys::signal::kill(pid_t, nix::sys::signal::SIGKILL).is_ok() {
                    killed.push(pid);
                }
            }
        }
        Ok(killed)
    }

    /// Starts agent `i` again with exactly the command it was first started with.
    pub fn restart_agent(&mut self, i: usize) -> Result<()> {
        self.kill_agent(i)?;
        let proc = self.spawn_agent(&self.agents[i])?;
        self.agents[i].proc = Some(proc);
        Ok(())
    }

    /// Waits until `node ls` lists at least `n` worker nodes and every node is Ready.
    pub fn wait_nodes_ready(&self, n: usize) -> Result<()> {
        Testbed::wait_for(DEADLINE, &format!("{n} nodes Ready"), || {
            for agent in &self.agents {
                if let Some(status) = agent
                    .proc
                    .as_ref()
                    .map(|p| p.try_wait())
                    .transpose()?
                    .flatten()
                {
                    let name = agent.host.name();
                    return Err(fatal(format!(
                        "agent on {name} exited with {status}; see agent-{name}.log"
                    )));
                }
            }
            let nodes = self.node_ls()?;
            // Workers only: the manager's own node is listed too but runs no agent.
            let workers = nodes.iter().filter(|n| n.manager_status.is_empty()).count();
            Ok(workers >= n && nodes.iter().all(|n| n.status.eq_ignore_ascii_case("ready")))
        })
    }

    /// Runs shoalctl with the cluster's admin.conf inside the manager host.
    pub fn ctl<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<OsString> = vec!["--config".into(), self.admin_conf().into_os_string()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self.manager.run(&self.bins.ctl, all)
    }

    /// Runs shoalctl, fails unless it exits 0, returns its stdout.
    pub fn ctl_ok<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.ctl(&args)?;
        check_output(&out, &format!("shoalctl {}", join_args(&args)))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs shoalctl with `--format json` appended; one JSON object per output line.
    pub fn ctl_json<I, S>(&self, args: I) -> Result<Vec<serde_json::Value>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        args.extend(["--format".into(), "json".into()]);
        let stdout = self.ctl_ok(&args)?;
        stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("not a JSON line: {l:?}")))
            .collect()
    }

    fn ctl_rows<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> Result<Vec<T>> {
        self.ctl_json(args)?
            .into_iter()
            .map(|v| {
                serde_json::from_value(v.clone()).with_context(|| format!("unexpected row {v}"))
            })
            .collect()
    }

    /// `node ls`.
    pub fn node_ls(&self) -> Result<Vec<NodeRow>> {
        self.ctl_rows(&["node", "ls"])
    }

    /// `service ls`.
    pub fn service_ls(&self) -> Result<Vec<ServiceRow>> {
        self.ctl_rows(&["service", "ls"])
    }

    /// `service ps NAME` (all tasks, history included).
    pub fn service_ps(&self, service: &str) -> Result<Vec<TaskRow>> {
        self.ctl_rows(&["service", "ps", service])
    }

    /// Waits until exactly `n` tasks of `service` are wanted and Running.
    pub fn wait_running(&self, service: &str, n: usize) -> Result<Vec<TaskRow>> {
        let mut tasks = Vec::new();
        Testbed::wait_for(DEADLINE, &format!("{service}: {n} tasks Running"), || {
            tasks = self.service_ps(service)?;
            let wanted: Vec<&TaskRow> = tasks.iter().filter(|t| t.desired_running()).collect();
            Ok(wanted.len() == n && wanted.iter().all(|t| t.is_running()))
        })?;
        Ok(tasks.into_iter().filter(|t| t.desired_running()).collect())
    }

    /// All containers recorded by all agents.
    pub fn containers(&self) -> Result<Vec<(usize, ContainerState)>> {
        let mut all = Vec::new();
        for (i, a) in self.agents.iter().enumerate() {
            all.extend(a.containers()?.into_iter().map(|c| (i, c)));
        }
        Ok(all)
    }

    /// The container of a task, by (possibly truncated) task id, with the index of its agent.
    pub fn container_of(&self, task_id: &str) -> Result<(usize, ContainerState)> {
        let mut found: Vec<_> = self
            .containers()?
            .into_iter()
            .filter(|(_, c)| c.task_id.starts_with(task_id))
            .collect();
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => bail!("no agent runtime records a container for task {task_id}"),
            _ => bail!("task id {task_id} is ambiguous"),
        }
    }

    /// Stops and removes everything, failing if anything was left behind.
    pub fn shutdown(self) -> Result<()> {
        self.tb.shutdown()
    }
}

pub(super) fn registry_addr(registry: &Host) -> String {
    format!("{}:{REGISTRY_PORT}", registry.ip())
}

/// Starts docker-registry (Debian's `docker-registry`, distribution 2.x) inside `host`, on its IP,
/// with its own config and storage under the host's dir; returns once /v2/ answers.
pub fn start_registry(host: &Host) -> Result<Proc> {
    let bin = which("docker-registry")
        .context("the testbed needs Debian's docker-registry (apt-get install docker-registry)")?;
    let dir = host.dir()?.join("registry");
    fs::create_dir_all(dir.join("data"))?;
    let config = dir.join("config.yml");
    let addr = registry_addr(host);
    fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.join("data").display()
        ),
    )?;
    let proc = host.spawn(
        bin,
        [OsStr::new("serve"), config.as_os_str()],
        "registry.log",
    )?;
    let url = format!("http://{addr}/v2/");
    Testbed::wait_for(DEADLINE, "docker-registry to answer", || {
        if let Some(status) = proc.try_wait()? {
            return Err(fatal(format!(
                "docker-registry exited with {status}; see registry.log"
            )));
        }
        let out = host.run_timeout(
            "curl",
            ["-sf", "-o", "/dev/null", "--max-time", "2", &url],
            Duration::from_secs(5),
        )?;
        Ok(out.status.success())
    })?;
    Ok(proc)
}
