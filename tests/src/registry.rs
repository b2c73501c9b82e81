//! A throwaway OCI registry (Debian's `docker-registry`) for tests and demos.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where Debian's `docker-registry` package installs the registry.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// busybox-static, used to probe a registry that lives in another network namespace.
const BUSYBOX: &str = "/bin/busybox";

/// True when the registry binary is installed (tests skip themselves otherwise).
pub fn available() -> bool {
    Path::new(REGISTRY_BIN).is_file()
}

/// How to start a registry; `Registry::start()` uses the defaults (a free loopback port).
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Listen address `IP:PORT`; `None` picks a free port on 127.0.0.1.
    pub addr: Option<String>,
    /// Storage directory, kept on drop; `None` uses one inside the registry's temp dir.
    pub data_dir: Option<PathBuf>,
    /// Words run before the registry command, e.g. `["ip", "netns", "exec", "host1"]`; the
    /// readiness probe runs through the same prefix.
    pub command_prefix: Vec<String>,
    /// How long to wait for `GET /v2/` to answer.
    pub timeout: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            addr: None,
            data_dir: None,
            command_prefix: Vec::new(),
            timeout: Duration::from_secs(20),
        }
    }
}

/// A running registry; dropping it kills the process and removes its temp dir.
pub struct Registry {
    child: Child,
    addr: String,
    data_dir: PathBuf,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry on a free port of 127.0.0.1 and waits until it answers.
    pub fn start() -> Result<Registry> {
        // The free port is found by binding and releasing it: another process may grab it in
        // between, so try a few times.
        let mut last = None;
        for _ in 0..3 {
            match Registry::start_with(RegistryOptions::default()) {
                Ok(r) => return Ok(r),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("registry did not start")))
    }

    /// Starts a registry as `opts` says (e.g. inside a network namespace) and waits until it answers.
    pub fn start_with(opts: RegistryOptions) -> Result<Registry> {
        if !available() {
            bail!("{REGISTRY_BIN} is missing (apt-get install docker-registry)");
        }
        let addr = match opts.addr {
            Some(a) => a,
            None => free_loopback_port()?.to_string(),
        };
        let dir = tempfile::Builder::new()
            .prefix("shoal-registry-")
            .tempdir()
            .context("create registry temp dir")?;
        let data_dir = opts.data_dir.unwrap_or_else(|| dir.path().join("data"));
        fs::create_dir_all(&data_dir).with_context(|| format!("create {}", data_dir.display()))?;
        let config = dir.path().join("config.yml");
        fs::write(&config, config_yaml(&addr, &data_dir)).context("write registry config")?;
        let log_path = dir.path().join("registry.log");
        let log = fs::File::create(&log_path).context("create registry log")?;
        let log_err = log.try_clone().context("dup registry log")?;

        let mut cmd = command(&opts.command_prefix, REGISTRY_BIN);
        cmd.arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {REGISTRY_BIN}"))?;
        let mut registry = Registry {
            child,
            addr,
            data_dir,
            dir,
        };
        registry.wait_ready(&opts.command_prefix, opts.timeout)?;
        Ok(registry)
    }

    /// `IP:PORT` the registry listens on, as used in image references.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The registry's storage directory (blobs live under `docker/registry/v2/`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// What the registry printed so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self, prefix: &[String], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().context("poll registry")? {
                bail!(
                    "registry exited with {status} before answering:\n{}",
                    self.log()
                );
            }
            if probe(prefix, &self.addr) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "registry on {} did not answer within {timeout:?}:\n{}",
                    self.addr,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_yaml(addr: &str, data_dir: &Path) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}\n",
        data_dir.display()
    )
}

fn command(prefix: &[String], program: &str) -> Command {
    match prefix.split_first() {
        Some((first, rest)) => {
            let mut cmd = Command::new(first);
            cmd.args(rest).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

fn free_loopback_port() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    l.local_addr().context("find a free port")
}

/// One `GET /v2/`: true on HTTP 200.
fn probe(prefix: &[String], addr: &str) -> bool {
    if !prefix.is_empty() {
        let mut cmd = command(prefix, BUSYBOX);
        cmd.args([
            "wget",
            "-q",
            "-O",
            "/dev/null",
            &format!("http://{addr}/v2/"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        return cmd.status().is_ok_and(|s| s.success());
    }
    let Ok(sock) = addr.parse::<SocketAddr>() else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&sock, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_addr_and_storage() {
        let y = config_yaml("127.0.0.1:5000", Path::new("/d"));
        assert!(y.contains("addr: 127.0.0.1:5000"));
        assert!(y.contains("rootdirectory: /d"));
        assert!(y.starts_with("version: 0.1"));
    }

    #[test]
    fn starts_answers_and_stops() {
        if !available() {
            eprintln!("skipping: {REGISTRY_BIN} is not installed");
            return;
        }
        let r = Registry::start().expect("start registry");
        assert!(probe(&[], r.addr()));
        let addr = r.addr().to_string();
        drop(r);
        assert!(!probe(&[], &addr));
    }
}
