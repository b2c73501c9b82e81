//! A throwaway OCI registry (Debian's `docker-registry`) for tests and demos.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;

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
    /// Require HTTP basic authentication (an htpasswd file with this one user); `None`: open.
    pub basic_auth: Option<BasicAuth>,
}

/// The one user of a registry started with `RegistryOptions::basic_auth`.
#[derive(Clone)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password (stored bcrypt-hashed in the registry's htpasswd file).
    pub password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The registry's htpasswd line for `auth` (bcrypt, the only scheme the registry accepts).
fn htpasswd_line(auth: &BasicAuth) -> Result<String> {
    // The lowest cost bcrypt allows: these are throwaway test passwords.
    let hash = bcrypt::hash_with_result(&auth.password, 4)
        .context("bcrypt the registry password")?
        .format_for_version(bcrypt::Version::TwoY);
    Ok(format!("{}:{hash}\n", auth.username))
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            addr: None,
            data_dir: None,
            command_prefix: Vec::new(),
            timeout: Duration::from_secs(20),
            basic_auth: None,
        }
    }
}

/// A running registry; dropping it kills the process and removes its temp dir.
pub struct Registry {
    child: Child,
    addr: String,
    basic_auth: Option<BasicAuth>,
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
        let htpasswd = match &opts.basic_auth {
            Some(auth) => {
                let path = dir.path().join("htpasswd");
                fs::write(&path, htpasswd_line(auth)?).context("write htpasswd")?;
                Some(path)
            }
            None => None,
        };
        let config = dir.path().join("config.yml");
        fs::write(&config, config_yaml(&addr, &data_dir, htpasswd.as_deref()))
            .context("write registry config")?;
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
            basic_auth: opts.basic_auth,
            data_dir,
            dir,
        };
        registry.wait_ready(&opts.command_prefix, opts.timeout)?;
        Ok(registry)
    }

    /// Starts a registry on a free port of 127.0.0.1 that serves only `username` with `password`
    /// (HTTP basic authentication), keeping its blobs in `data_dir` when given: a registry
    /// started earlier on the same `data_dir` can have filled it, since pushes are anonymous.
    pub fn start_with_basic_auth(
        username: &str,
        password: &str,
        data_dir: Option<PathBuf>,
    ) -> Result<Registry> {
        let opts = RegistryOptions {
            data_dir,
            basic_auth: Some(BasicAuth {
                username: username.to_string(),
                password: password.to_string(),
            }),
            ..RegistryOptions::default()
        };
        // As `start`: the free port may be taken between finding and binding it.
        let mut last = None;
        for _ in 0..3 {
            match Registry::start_with(opts.clone()) {
                Ok(r) => return Ok(r),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("registry did not start")))
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
            if probe(prefix, &self.addr, self.basic_auth.as_ref()) {
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

fn config_yaml(addr: &str, data_dir: &Path, htpasswd: Option<&Path>) -> String {
    let mut yaml = format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}\n",
        data_dir.display()
    );
    if let Some(path) = htpasswd {
        yaml.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: shoal-test-registry\n    path: {}\n",
            path.display()
        ));
    }
    yaml
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

/// One `GET /v2/` (with `auth` when the registry wants it): true on HTTP 200.
fn probe(prefix: &[String], addr: &str, auth: Option<&BasicAuth>) -> bool {
    if !prefix.is_empty() {
        let userinfo = auth
            .map(|a| format!("{}:{}@", a.username, a.password))
            .unwrap_or_default();
        let mut cmd = command(prefix, BUSYBOX);
        cmd.args([
            "wget",
            "-q",
            "-O",
            "/dev/null",
            &format!("http://{userinfo}{addr}/v2/"),
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
    let authorization = auth
        .map(|a| {
            let credentials = format!("{}:{}", a.username, a.password);
            let basic = base64::engine::general_purpose::STANDARD.encode(credentials);
            format!("Authorization: Basic {basic}\r\n")
        })
        .unwrap_or_default();
    let req = format!("GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n{authorization}\r\n");
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
        let y = config_yaml("127.0.0.1:5000", Path::new("/d"), None);
        assert!(y.contains("addr: 127.0.0.1:5000"));
        assert!(y.contains("rootdirectory: /d"));
        assert!(y.starts_with("version: 0.1"));
        assert!(!y.contains("auth:"));
        let y = config_yaml("127.0.0.1:5000", Path::new("/d"), Some(Path::new("/h")));
        assert!(y.ends_with("auth:\n  htpasswd:\n    realm: shoal-test-registry\n    path: /h\n"));
    }

    #[test]
    fn htpasswd_line_is_bcrypt_2y_and_verifies() {
        let auth = BasicAuth {
            username: "alice".into(),
            password: "s3cret".into(),
        };
        let line = htpasswd_line(&auth).expect("htpasswd");
        let (user, hash) = line.trim_end().split_once(':').expect("user:hash");
        assert_eq!(user, "alice");
        assert!(hash.starts_with("$2y$"), "{hash}");
        assert!(bcrypt::verify("s3cret", hash).expect("verify"));
        assert!(!bcrypt::verify("wrong", hash).expect("verify"));
        assert!(!format!("{auth:?}").contains("s3cret"));
    }

    #[test]
    fn basic_auth_registry_wants_the_password() {
        if !available() {
            eprintln!("skipping: {REGISTRY_BIN} is not installed");
            return;
        }
        let r = Registry::start_with_basic_auth("alice", "s3cret", None).expect("start registry");
        let good = BasicAuth {
            username: "alice".into(),
            password: "s3cret".into(),
        };
        let bad = BasicAuth {
            password: "nope".into(),
            ..good.clone()
        };
        assert!(probe(&[], r.addr(), Some(&good)), "{}", r.log());
        assert!(!probe(&[], r.addr(), None));
        assert!(!probe(&[], r.addr(), Some(&bad)));
    }

    #[test]
    fn starts_answers_and_stops() {
        if !available() {
            eprintln!("skipping: {REGISTRY_BIN} is not installed");
            return;
        }
        let r = Registry::start().expect("start registry");
        assert!(probe(&[], r.addr(), None));
        let addr = r.addr().to_string();
        drop(r);
        assert!(!probe(&[], &addr, None));
    }
}
