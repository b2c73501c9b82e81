//! Highly available managers on a testbed: N manager processes on N hosts (`m1`…), the first
//! started with `shoal-manager init`, the others with `shoal-manager join`, and the helpers the
//! scenarios need (who leads, kill -9 and restart, partitions, shoalctl on a chosen host, a
//! numbered history of writes).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use shoal_proto::secure_file::JOIN_TOKEN_ENV;

use crate::testbed::{
    check_output, fatal, start_registry, stderr_of, token_file_for, write_token_file, Binaries,
    Host, Proc, Testbed, DEADLINE, MANAGER_PORT, REGISTRY_PORT,
};

/// How long one shoalctl call may take before it counts as not acknowledged.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(15);

/// A row of `shoalctl cluster status --format json`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ManagerRow {
    /// Node id.
    #[serde(rename = "NodeID")]
    pub node_id: String,
    /// IP:PORT.
    #[serde(rename = "Addr")]
    pub addr: String,
    /// Raft id.
    #[serde(rename = "RaftID")]
    pub raft_id: u64,
    /// Whether it reports itself leader.
    #[serde(rename = "Leader")]
    pub leader: bool,
    /// Its term.
    #[serde(rename = "Term")]
    pub term: u64,
    /// Its commit index.
    #[serde(rename = "Commit")]
    pub commit: u64,
    /// Its applied index.
    #[serde(rename = "Applied")]
    pub applied: u64,
    /// Whether it answered.
    #[serde(rename = "Reachable")]
    pub reachable: bool,
}

/// N managers, one per host.
pub struct Managers {
    /// The binaries under test.
    pub bins: Binaries,
    /// Manager hosts, `m1`… in order.
    pub hosts: Vec<Host>,
    dirs: Vec<PathBuf>,
    procs: Vec<Option<Proc>>,
    token: String,
    extra_args: Vec<String>,
    /// The manager new managers join through.
    join_via: usize,
    // Last: dropped after everything above; it kills and removes all of it.
    tb: Testbed,
}

impl Managers {
    /// Starts `n` managers (extra flags such as `--snapshot-interval 20` go to every one) and
    /// returns once every one reports itself reachable with the same leader.
    pub fn start(tb: Testbed, n: usize, extra_args: &[&str]) -> Result<Managers> {
        let bins = Binaries::locate()?;
        let mut m = Managers {
            bins,
            hosts: Vec::new(),
            dirs: Vec::new(),
            procs: Vec::new(),
            token: String::new(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            join_via: 0,
            tb,
        };
        for _ in 0..n {
            m.add_manager()?;
        }
        m.wait_converged(&(0..n).collect::<Vec<_>>())?;
        Ok(m)
    }

    /// The testbed.
    pub fn testbed(&self) -> &Testbed {
        &self.tb
    }

    /// Number of managers (running or not).
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// True when there are no managers.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// `IP:4242` of manager `i`.
    pub fn addr(&self, i: usize) -> String {
        format!("{}:{MANAGER_PORT}", self.hosts[i].ip())
    }

    /// The admin.conf in manager `i`'s data dir.
    pub fn admin_conf(&self, i: usize) -> PathBuf {
        self.dirs[i].join("admin.conf")
    }

    fn args(&self, i: usize) -> Vec<OsString> {
        let dir = self.dirs[i].to_string_lossy().into_owned();
        let listen = self.addr(i);
        let mut args: Vec<String> = if i == 0 {
            vec!["init".into()]
        } else {
            // The token comes through the environment (`spawn`), never the command line.
            vec!["join".into()]
        };
        args.extend(["--data-dir".into(), dir, "--listen-addr".into(), listen]);
        args.extend(self.extra_args.iter().cloned());
        if i > 0 {
            args.push(self.addr(self.join_via));
        }
        args.into_iter().map(OsString::from).collect()
    }

    /// Adds a host `m<N>` and starts a manager on it (the first inits the cluster, the next ones
    /// join through manager 0); returns its index once it answers shoalctl.
    pub fn add_manager(&mut self) -> Result<usize> {
        let i = self.hosts.len();
        let host = self.tb.add_host(&format!("m{}", i + 1))?;
        self.dirs.push(host.dir()?.join("manager"));
        self.hosts.push(host);
        self.procs.push(None);
        if i == 1 && self.token.is_empty() {
            let out = self.ctl_ok(0, ["cluster", "join-token", "manager", "-q"])?;
            self.token = out.trim().to_string();
        }
        self.spawn(i)?;
        let conf = self.admin_conf(i);
        let proc = self.procs[i]
            .clone()
            .ok_or_else(|| anyhow!("not started"))?;
        Testbed::wait_for(DEADLINE, &format!("manager m{} to be up", i + 1), || {
            if let Some(status) = proc.try_wait()? {
                return Err(fatal(format!(
                    "shoal-manager m{} exited with {status}; see manager-m{}.log",
                    i + 1,
                    i + 1
                )));
            }
            if !conf.exists() {
                return Ok(false);
            }
            Ok(self.ctl(i, ["node", "ls"])?.status.success())
        })?;
        Ok(i)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let log = format!("manager-{}.log", self.hosts[i].name());
        // Joining managers get their token in the environment (the agents of `add_agent` use
        // a file), so the suite runs both ways that keep it off the command line.
        let env: Vec<(&str, &str)> = if i == 0 {
            Vec::new()
        } else {
            vec![(JOIN_TOKEN_ENV, self.token.as_str())]
        };
        let proc = self.hosts[i].spawn_env(&self.bins.manager, self.args(i), &env, &log)?;
        self.procs[i] = Some(proc);
        Ok(())
    }

    /// SIGKILLs manager `i`.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        if let Some(p) = self.procs[i].take() {
            p.kill()?;
        }
        Ok(())
    }

    /// Starts manager `i` again with the command it was first started with (its data dir holds
    /// the rest).
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.kill(i)?;
        self.spawn(i)
    }

    /// Makes new managers join through manager `i`.
    pub fn set_join_via(&mut self, i: usize) {
        self.join_via = i;
    }

    /// Disaster recovery: restarts manager `i` with `shoal-manager init --force-new-cluster` on
    /// its data dir.
    pub fn force_new_cluster(&mut self, i: usize) -> Result<()> {
        self.kill(i)?;
        let args = [
            "init".to_string(),
            "--force-new-cluster".into(),
            "--data-dir".into(),
            self.dirs[i].to_string_lossy().into_owned(),
            "--listen-addr".into(),
            self.addr(i),
        ];
        let log = format!("manager-{}.log", self.hosts[i].name());
        self.procs[i] = Some(self.hosts[i].spawn(&self.bins.manager, args, &log)?);
        Ok(())
    }

    /// Waits (at most `timeout`) for manager `i`'s process to exit on its own; its status.
    pub fn wait_exit(&self, i: usize, timeout: Duration) -> Result<std::process::ExitStatus> {
        self.procs[i]
            .as_ref()
            .ok_or_else(|| anyhow!("manager m{} was not started", i + 1))?
            .wait_timeout(timeout)
    }

    /// Whether manager `i`'s process runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.procs[i].as_ref().is_some_and(|p| p.is_running())
    }

    /// shoalctl on host `i` with manager `i`'s admin.conf (which lists every manager, `i` first).
    pub fn ctl<I, S>(&self, i: usize, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<OsString> = vec!["--config".into(), self.admin_conf(i).into_os_string()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self.hosts[i].run_timeout(&self.bins.ctl, all, CTL_TIMEOUT)
    }

    /// shoalctl on host `i`; fails unless it exits 0; returns stdout.
    pub fn ctl_ok<I, S>(&self, i: usize, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.ctl(i, &args)?;
        check_output(&out, &format!("shoalctl on m{} {:?}", i + 1, args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `cluster status` as seen from manager `i`.
    pub fn status(&self, i: usize) -> Result<Vec<ManagerRow>> {
        self.ctl_ok(i, ["cluster", "status", "--format", "json"])?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("bad status row {l:?}")))
            .collect()
    }

    /// The index of the manager whose address is `addr`.
    pub fn index_of(&self, addr: &str) -> Option<usize> {
        (0..self.len()).find(|i| self.addr(*i) == addr)
    }

    /// Waits until, seen from `among[0]`, exactly one of `among` leads and all of `among` are
    /// reachable with the same term and applied index; returns the leader's index.
    pub fn wait_converged(&self, among: &[usize]) -> Result<usize> {
        let mut leader = None;
        let first = *among.first().ok_or_else(|| anyhow!("no manager given"))?;
        Testbed::wait_for(DEADLINE, "the managers to agree on a leader", || {
            let rows = self.status(first)?;
            let ours: Vec<&ManagerRow> = rows
                .iter()
                .filter(|r| self.index_of(&r.addr).is_some_and(|i| among.contains(&i)))
                .collect();
            if ours.len() != among.len() || !ours.iter().all(|r| r.reachable) {
                return Ok(false);
            }
            let leaders: Vec<&&ManagerRow> = ours.iter().filter(|r| r.leader).collect();
            let same = ours.windows(2).all(|w| {
                w[0].term == w[1].term && w[0].applied == w[1].applied && w[0].commit == w[1].commit
            });
            if leaders.len() == 1 && same {
                leader = self.index_of(&leaders[0].addr);
                return Ok(leader.is_some());
            }
            Ok(false)
        })?;
        leader.ok_or_else(|| anyhow!("no leader"))
    }

    /// The leader as `among[0]` sees it, if any.
    pub fn leader(&self, from: usize) -> Result<Option<usize>> {
        Ok(self
            .status(from)?
            .iter()
            .find(|r| r.leader && r.reachable)
            .and_then(|r| self.index_of(&r.addr)))
    }

    /// Partitions manager `i`'s host off the switch.
    pub fn partition(&self, i: usize) -> Result<()> {
        self.hosts[i].partition()
    }

    /// Heals manager `i`'s host.
    pub fn heal(&self, i: usize) -> Result<()> {
        self.hosts[i].heal()
    }

    /// Starts a registry host (`reg`) with the test images; returns its `IP:PORT` and the
    /// busybox image reference in it.
    pub fn start_registry(&mut self) -> Result<(String, String)> {
        let host = self.tb.add_host("reg")?;
        start_registry(&host)?;
        let reg = format!("{}:{REGISTRY_PORT}", host.ip());
        let out = host.run(
            &self.bins.fixture,
            [
                "push-busybox",
                "--registry",
                &reg,
                "--image",
                "shoal/busybox:latest",
            ],
        )?;
        check_output(&out, "shoal-fixture push-busybox")?;
        Ok((reg.clone(), format!("{reg}/shoal/busybox:latest")))
    }

    /// Starts an agent on a new host `name` that joins through manager `via` (its join response
    /// lists every manager); returns the host and the agent's data dir.
    pub fn add_agent(&mut self, name: &str, registry: &str, via: usize) -> Result<(Host, PathBuf)> {
        let token = self.ctl_ok(0, ["cluster", "join-token", "worker", "-q"])?;
        let host = self.tb.add_host(name)?;
        let data_dir = host.dir()?.join("agent");
        let ip = host.ip().to_string();
        let dir = data_dir.to_string_lossy().into_owned();
        let manager = self.addr(via);
        let token_file = token_file_for(&data_dir);
        write_token_file(&token_file, token.trim())?;
        let token_file = token_file.to_string_lossy().into_owned();
        let args = [
            "join",
            "--data-dir",
            &dir,
            "--token-file",
            &token_file,
            "--hostname",
            name,
            "--insecure-registry",
            registry,
            "--advertise-addr",
            &ip,
            &manager,
        ];
        host.spawn(&self.bins.agent, args, &format!("agent-{name}.log"))?;
        Ok((host, data_dir))
    }

    /// Stops and removes everything, failing if anything was left behind.
    pub fn shutdown(self) -> Result<()> {
        self.tb.shutdown()
    }
}

/// The outcome of one numbered write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// shoalctl exited 0: the write is acknowledged.
    Acked,
    /// shoalctl failed (it may or may not have been applied), with its stderr.
    Failed(String),
}

/// A history checker: numbered writes (`service create -d --name hist-NNNNN`), each sent once
/// through a chosen manager, recording which were acknowledged.
#[derive(Debug, Default)]
pub struct History {
    /// Write number -> outcome, in write order.
    pub writes: BTreeMap<u32, Outcome>,
    next: u32,
}

/// The service name of write `n`.
pub fn hist_name(n: u32) -> String {
    format!("hist-{n:05}")
}

impl History {
    /// Sends the next write through manager `via`; returns whether it was acknowledged and how
    /// long it took.
    pub fn write(&mut self, m: &Managers, via: usize) -> Result<(bool, Duration)> {
        let n = self.next;
        self.next += 1;
        let start = Instant::now();
        let out = m.ctl(
            via,
            [
                "service",
                "create",
                "-d",
                "--name",
                &hist_name(n),
                "busybox",
            ],
        )?;
        let took = start.elapsed();
        let outcome = if out.status.success() {
            Outcome::Acked
        } else {
            Outcome::Failed(stderr_of(&out).trim().to_string())
        };
        let acked = outcome == Outcome::Acked;
        self.writes.insert(n, outcome);
        Ok((acked, took))
    }

    /// Writes through `via` until one is acknowledged; returns how long that took in all.
    pub fn write_until_acked(
        &mut self,
        m: &Managers,
        via: usize,
        deadline: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if self.write(m, via)?.0 {
                return Ok(start.elapsed());
            }
            if start.elapsed() > deadline {
                bail!(
                    "no write acknowledged within {deadline:?}; last: {:?}",
                    self.writes.values().last()
                );
            }
        }
    }

    /// Number of acknowledged writes.
    pub fn acked(&self) -> usize {
        self.writes
            .values()
            .filter(|o| **o == Outcome::Acked)
            .count()
    }

    /// Checks the history against manager `via`'s store: every acknowledged write is present
    /// exactly once, acknowledged writes were applied in the order they were acknowledged (Raft
    /// index of creation increasing), and nothing that was never written is present.
    pub fn check(&self, m: &Managers, via: usize) -> Result<()> {
        let rows: Vec<serde_json::Value> = m
            .ctl_ok(via, ["service", "ls", "--format", "json"])?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<std::result::Result<_, _>>()?;
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for r in &rows {
            let name = r["Name"].as_str().unwrap_or_default().to_string();
            if name.starts_with("hist-") {
                *count.entry(name).or_default() += 1;
            }
        }
        for (name, c) in &count {
            if *c != 1 {
                bail!("{name} is present {c} times");
            }
            let n: u32 = name
                .trim_start_matches("hist-")
                .parse()
                .with_context(|| format!("bad history name {name}"))?;
            if !self.writes.contains_key(&n) {
                bail!("{name} is present but was never written");
            }
        }
        let acked: Vec<String> = self
            .writes
            .iter()
            .filter(|(_, o)| **o == Outcome::Acked)
            .map(|(n, _)| hist_name(*n))
            .collect();
        let missing: Vec<&String> = acked.iter().filter(|n| !count.contains_key(*n)).collect();
        if !missing.is_empty() {
            bail!("acknowledged writes lost on m{}: {missing:?}", via + 1);
        }
        // Order: nothing updates these services after creation, so their version is the Raft
        // index they were created at, which must grow with the write number.
        let mut versions: Vec<(String, u64)> = Vec::new();
        for chunk in acked.chunks(50) {
            let mut args = vec!["service".to_string(), "inspect".to_string()];
            args.extend(chunk.iter().cloned());
            let text = m.ctl_ok(via, &args)?;
            let docs: Vec<serde_json::Value> = serde_json::from_str(&text)?;
            for d in docs {
                let name = d["Spec"]["Name"].as_str().unwrap_or_default().to_string();
                let index = d["Version"]["Index"]
                    .as_u64()
                    .ok_or_else(|| anyhow!("{name}: no Version.Index in inspect output"))?;
                versions.push((name, index));
            }
        }
        if versions.len() != acked.len() {
            bail!(
                "inspect returned {} of {} services",
                versions.len(),
                acked.len()
            );
        }
        for w in versions.windows(2) {
            if w[0].1 >= w[1].1 {
                bail!(
                    "acknowledged writes out of order: {} at index {} but {} at index {}",
                    w[0].0,
                    w[0].1,
                    w[1].0,
                    w[1].1
                );
            }
        }
        Ok(())
    }
}

/// Reads a file, for comparing states.
pub fn read(path: &std::path::Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}
