//! The real docker clients against Shoal's Docker Engine API (issue 13): the docker CLIs found on
//! the machine (Debian's 20.10 `docker.io` and a current one), docker-py (Debian's
//! `python3-docker`) and a plain HTTPS client for the request-level contract tests.
//!
//! Every client runs inside a testbed host (the manager's API listens on that host's address) and
//! authenticates with the admin client certificate that `shoalctl cluster docker-env` writes. No
//! dockerd is ever involved: the CLIs are only clients, pointed at Shoal by `DOCKER_HOST`, with a
//! private `DOCKER_CONFIG` so nothing of the machine's own docker configuration (contexts,
//! credential helpers) leaks in.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::Value;

use crate::testbed::{stderr_of, stdout_of, Cluster, Host};

/// How long one docker command may run: `service create` without `-d` polls until the service
/// converges, then waits out the update monitor (5 s).
pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(180);

/// The docker CLIs the tests run, if present: (path, what it is). The current CLI does not exist
/// on a clean CI machine (Debian packages only 20.10); its tests are skipped there.
pub const CLI_CANDIDATES: &[(&str, &str)] = &[
    ("/usr/bin/docker", "Debian's docker.io CLI (20.10)"),
    ("/usr/local/bin/docker", "a current docker CLI (28.x)"),
];

/// A docker CLI binary and its version.
#[derive(Debug, Clone)]
pub struct DockerCli {
    /// The binary.
    pub path: PathBuf,
    /// What it is, for messages (`CLI_CANDIDATES`).
    pub what: String,
    /// Its client version, from `docker --version` (e.g. "20.10.24+dfsg1").
    pub version: String,
}

impl DockerCli {
    /// The CLI at `path` (`what` describes it), or why it cannot be used (absent, not runnable).
    pub fn locate(path: &Path, what: &str) -> std::result::Result<DockerCli, String> {
        if !path.is_file() {
            return Err(format!(
                "{what} is not installed ({} is missing)",
                path.display()
            ));
        }
        let out = Command::new(path)
            .arg("--version")
            .env(
                "DOCKER_CONFIG",
                std::env::temp_dir().join("shoal-docker-version-probe"),
            )
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{what}: cannot run {}: {e}", path.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{what}: `{} --version` failed: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let version = parse_cli_version(&text)
            .ok_or_else(|| format!("{what}: unexpected `docker --version` output {text:?}"))?;
        Ok(DockerCli {
            path: path.to_path_buf(),
            what: what.to_string(),
            version,
        })
    }

    /// The major version (20 for "20.10.24+dfsg1").
    pub fn major(&self) -> u32 {
        self.version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0)
    }
}

/// The version in `docker --version` output: "Docker version 20.10.24+dfsg1, build 297e128" gives
/// "20.10.24+dfsg1".
pub fn parse_cli_version(text: &str) -> Option<String> {
    let rest = text.trim().strip_prefix("Docker version ")?;
    let version = rest.split([',', ' ']).next()?.trim();
    (!version.is_empty()).then(|| version.to_string())
}

/// The CLI at `path` of `CLI_CANDIDATES`, or `None` after printing why the calling test is
/// skipped (a missing CLI is never a silent pass).
pub fn cli_or_skip(path: &str, test: &str) -> Option<DockerCli> {
    let what = CLI_CANDIDATES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, w)| *w)
        .unwrap_or("a docker CLI");
    match DockerCli::locate(Path::new(path), what) {
        Ok(cli) => Some(cli),
        Err(reason) => {
            eprintln!("SKIPPED {test}: {reason}");
            None
        }
    }
}

/// Why docker-py cannot be used here (`python3 -c 'import docker'` fails), if it cannot.
pub fn docker_py_missing() -> Option<String> {
    match Command::new("python3")
        .args(["-c", "import docker, docker.tls; print(docker.__version__)"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "docker-py is not installed (apt-get install python3-docker): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("python3 is not installed: {e}")),
    }
}

/// The environment of `shoalctl cluster docker-env`: where the API is and the admin client
/// certificate files.
#[derive(Debug, Clone)]
pub struct DockerEnv {
    /// `tcp://IP:PORT`.
    pub docker_host: String,
    /// `DOCKER_TLS_VERIFY` as printed ("1").
    pub tls_verify: String,
    /// The directory holding `ca.pem`, `cert.pem` and `key.pem`.
    pub cert_path: PathBuf,
}

impl DockerEnv {
    /// Runs `shoalctl cluster docker-env --dir DIR` on the cluster and reads what it printed;
    /// checks the three files exist.
    pub fn from_shoalctl(c: &Cluster, dir: &Path) -> Result<DockerEnv> {
        let dir_s = dir.to_string_lossy().into_owned();
        let text = c.ctl_ok(["cluster", "docker-env", "--dir", &dir_s])?;
        let env = DockerEnv::from_exports(&text)?;
        ensure!(
            env.cert_path == dir,
            "docker-env printed DOCKER_CERT_PATH={} for --dir {}",
            env.cert_path.display(),
            dir.display()
        );
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            ensure!(
                env.cert_path.join(f).is_file(),
                "docker-env did not write {}",
                env.cert_path.join(f).display()
            );
        }
        if let Some(expected) = c.docker_api_addr() {
            ensure!(
                env.addr() == expected,
                "docker-env printed DOCKER_HOST={}, the manager serves the API on {expected}",
                env.docker_host
            );
        }
        Ok(env)
    }

    /// Reads `export DOCKER_HOST=…`, `export DOCKER_TLS_VERIFY=…`, `export DOCKER_CERT_PATH=…`.
    pub fn from_exports(text: &str) -> Result<DockerEnv> {
        let vars = parse_exports(text);
        let get = |k: &str| {
            vars.get(k)
                .cloned()
                .ok_or_else(|| anyhow!("no `export {k}=` in docker-env's output {text:?}"))
        };
        let docker_host = get("DOCKER_HOST")?;
        ensure!(
            docker_host.starts_with("tcp://"),
            "DOCKER_HOST={docker_host} is not tcp://IP:PORT"
        );
        Ok(DockerEnv {
            docker_host,
            tls_verify: get("DOCKER_TLS_VERIFY")?,
            cert_path: PathBuf::from(get("DOCKER_CERT_PATH")?),
        })
    }

    /// `IP:PORT` (DOCKER_HOST without `tcp://`).
    pub fn addr(&self) -> &str {
        self.docker_host
            .strip_prefix("tcp://")
            .unwrap_or(&self.docker_host)
    }

    /// The CA certificate file.
    pub fn ca(&self) -> PathBuf {
        self.cert_path.join("ca.pem")
    }

    /// The client certificate file.
    pub fn cert(&self) -> PathBuf {
        self.cert_path.join("cert.pem")
    }

    /// The client key file.
    pub fn key(&self) -> PathBuf {
        self.cert_path.join("key.pem")
    }
}

/// The `NAME=VALUE` pairs of `export NAME=VALUE` lines (values optionally quoted).
pub fn parse_exports(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

/// One JSON value per non-empty line (`docker … --format '{{json .}}'`).
pub fn parse_json_lines(text: &str) -> Result<Vec<Value>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("not a JSON line: {l:?}")))
        .collect()
}

/// A docker CLI pointed at a cluster's Docker API, run inside a testbed host.
pub struct Docker {
    /// The CLI.
    pub cli: DockerCli,
    /// The API and certificates.
    pub env: DockerEnv,
    /// The host the CLI runs in.
    pub host: Host,
    /// Its private `DOCKER_CONFIG` directory.
    pub config_dir: PathBuf,
}

impl Docker {
    /// `cli` with `env`, run inside `host`, with an empty `DOCKER_CONFIG` under the host's dir.
    pub fn new(cli: DockerCli, env: DockerEnv, host: Host) -> Result<Docker> {
        let config_dir = host.dir()?.join(format!("docker-config-{}", cli.major()));
        fs::create_dir_all(&config_dir)?;
        Ok(Docker {
            cli,
            env,
            host,
            config_dir,
        })
    }

    fn env_args(&self) -> Vec<OsString> {
        let mut all: Vec<OsString> = ["-u", "DOCKER_CONTEXT", "-u", "DOCKER_API_VERSION"]
            .iter()
            .map(OsString::from)
            .collect();
        for (k, v) in [
            ("DOCKER_HOST", self.env.docker_host.clone()),
            ("DOCKER_TLS_VERIFY", self.env.tls_verify.clone()),
            (
                "DOCKER_CERT_PATH",
                self.env.cert_path.to_string_lossy().into_owned(),
            ),
            (
                "DOCKER_CONFIG",
                self.config_dir.to_string_lossy().into_owned(),
            ),
            // No "What's next" hints or update checks.
            ("DOCKER_CLI_HINTS", "false".to_string()),
        ] {
            all.push(format!("{k}={v}").into());
        }
        all.push(self.cli.path.clone().into_os_string());
        all
    }

    /// Runs `docker ARGS` (whatever its exit status).
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        self.run_input(args, b"")
    }

    /// Runs `docker ARGS` with `input` on its stdin.
    pub fn run_input(&self, args: &[&str], input: &[u8]) -> Result<Output> {
        let mut all = self.env_args();
        all.extend(args.iter().map(OsString::from));
        self.host.run_input("env", all, input, DOCKER_TIMEOUT)
    }

    /// `docker ARGS` stopped after `secs` seconds (coreutils `timeout`): for commands that do not
    /// end by themselves (`service logs -f`). Exit status 124 means it was still running.
    pub fn run_for(&self, secs: u32, args: &[&str]) -> Result<Output> {
        let mut all = self.env_args();
        let cli = all.pop().context("the CLI path")?;
        all.extend(["timeout".into(), secs.to_string().into(), cli]);
        all.extend(args.iter().map(OsString::from));
        self.host.run_input("env", all, b"", DOCKER_TIMEOUT)
    }

    /// `docker ARGS`, which must exit 0; its stdout.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        if !out.status.success() {
            bail!(
                "docker {} ({} {}) exited with {}: {}{}",
                args.join(" "),
                self.cli.what,
                self.cli.version,
                out.status,
                stderr_of(&out),
                stdout_of(&out)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `docker ARGS`, which must fail; what it printed (stderr, then stdout).
    pub fn fails(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        let text = format!("{}{}", stderr_of(&out), stdout_of(&out));
        ensure!(
            !out.status.success(),
            "docker {} ({}) succeeded but must fail; it printed {text}",
            args.join(" "),
            self.cli.version
        );
        Ok(text)
    }

    /// `docker ARGS --format '{{json .}}'`: one JSON value per line.
    pub fn json_lines(&self, args: &[&str]) -> Result<Vec<Value>> {
        let mut all = args.to_vec();
        all.extend(["--format", "{{json .}}"]);
        parse_json_lines(&self.ok(&all)?)
    }

    /// `docker ARGS --format '{{json .}}'` printing one JSON document (`version`, `info`).
    pub fn json(&self, args: &[&str]) -> Result<Value> {
        let mut lines = self.json_lines(args)?;
        ensure!(
            lines.len() == 1,
            "docker {} printed {} JSON lines, not one",
            args.join(" "),
            lines.len()
        );
        Ok(lines.remove(0))
    }

    /// `docker KIND inspect NAME` (a JSON array of one object): that object.
    pub fn inspect(&self, kind: &str, name: &str) -> Result<Value> {
        let text = self.ok(&[kind, "inspect", name])?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("docker {kind} inspect {name} printed {text:?}"))?;
        match v {
            Value::Array(mut a) if a.len() == 1 => Ok(a.remove(0)),
            other => bail!("docker {kind} inspect {name} printed {other}, not one object"),
        }
    }
}

/// Runs a docker-py `script` inside `host` with `client` already made as a user would
/// (`docker.DockerClient(base_url=…, tls=docker.tls.TLSConfig(client_cert=(cert, key),
/// ca_cert=ca, verify=True))`); must exit 0; its stdout.
pub fn run_docker_py(host: &Host, env: &DockerEnv, script: &str) -> Result<String> {
    let program = format!("{DOCKER_PY_PRELUDE}{script}");
    let args: Vec<OsString> = vec![
        // requests lets these replace the TLSConfig's CA (psf/requests#3829): a machine that sets
        // them for its own trust store would otherwise fail the handshake with our CA.
        "-u".into(),
        "REQUESTS_CA_BUNDLE".into(),
        "-u".into(),
        "CURL_CA_BUNDLE".into(),
        format!("SHOAL_DOCKER_URL=https://{}", env.addr()).into(),
        format!("SHOAL_DOCKER_CA={}", env.ca().display()).into(),
        format!("SHOAL_DOCKER_CERT={}", env.cert().display()).into(),
        format!("SHOAL_DOCKER_KEY={}", env.key().display()).into(),
        "python3".into(),
        "-c".into(),
        program.into(),
    ];
    let out = host.run_input("env", args, b"", DOCKER_TIMEOUT)?;
    if !out.status.success() {
        bail!(
            "docker-py script failed with {}: {}{}",
            out.status,
            stderr_of(&out),
            stdout_of(&out)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

const DOCKER_PY_PRELUDE: &str = r#"
import json, os, sys
import docker, docker.tls
tls = docker.tls.TLSConfig(
    client_cert=(os.environ["SHOAL_DOCKER_CERT"], os.environ["SHOAL_DOCKER_KEY"]),
    ca_cert=os.environ["SHOAL_DOCKER_CA"],
    verify=True,
)
client = docker.DockerClient(base_url=os.environ["SHOAL_DOCKER_URL"], tls=tls, timeout=60)
"#;

/// Percent-encodes `s` for a URL query value (everything but RFC 3986's unreserved characters).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `filters=<escaped JSON>` for docker's map form (`{"key":{"value":true}}`).
pub fn filters_query(filters: &[(&str, &str)]) -> String {
    let mut m = serde_json::Map::new();
    for (k, v) in filters {
        let entry = m
            .entry(k.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(vals) = entry {
            vals.insert(v.to_string(), Value::Bool(true));
        }
    }
    format!("filters={}", query_escape(&Value::Object(m).to_string()))
}

/// An answer of the Docker API.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// The method and path asked, for messages.
    pub request: String,
    /// The HTTP status.
    pub status: u16,
    /// The headers.
    pub headers: http::HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

impl ApiResponse {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "{}: the body is not JSON: {:?}",
                self.request,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Fails unless the status is `status`; returns self for chaining.
    pub fn expect(&self, status: u16) -> Result<&Self> {
        ensure!(
            self.status == status,
            "{}: status {} (expected {status}), body {}",
            self.request,
            self.status,
            self.text()
        );
        Ok(self)
    }

    /// Checks an error answer as the CLI reads it: Content-Type exactly `application/json` and a
    /// JSON `{"message": …}`; the message.
    pub fn error_message(&self) -> Result<String> {
        ensure!(
            self.status >= 400,
            "{}: status {} is not an error, body {}",
            self.request,
            self.status,
            self.text()
        );
        let ct = self.header("content-type").unwrap_or_default();
        ensure!(
            ct == "application/json",
            "{}: error Content-Type {ct:?}, not exactly application/json (the CLI would print \
             the raw body)",
            self.request
        );
        let v = self.json()?;
        v["message"]
            .as_str()
            .map(str::to_string)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| anyhow!("{}: error body {v} has no message", self.request))
    }
}

/// An HTTPS client of the Docker API with the admin client certificate, whose connections are
/// made inside a testbed host's network namespace.
pub struct ApiClient {
    netns: PathBuf,
    base: String,
    ca_pem: Vec<u8>,
    identity_pem: Option<Vec<u8>>,
}

impl ApiClient {
    /// A client of the API in `env`, connecting from `host`, with the admin certificate.
    pub fn new(host: &Host, env: &DockerEnv) -> Result<ApiClient> {
        let mut identity = fs::read(env.cert())?;
        if !identity.ends_with(b"\n") {
            identity.push(b'\n');
        }
        identity.extend(fs::read(env.key())?);
        Ok(ApiClient {
            netns: host.netns_path(),
            base: format!("https://{}", env.addr()),
            ca_pem: fs::read(env.ca())?,
            identity_pem: Some(identity),
        })
    }

    /// Sends `method path` (path with its query, e.g. `/v1.41/services?status=true`) with an
    /// optional JSON body; the answer (any status).
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<ApiResponse> {
        self.request_raw(method, path, body.map(|b| b.to_string().into_bytes()))
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<ApiResponse> {
        self.request("GET", path, None)
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Result<ApiResponse> {
        self.request("POST", path, Some(body))
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Result<ApiResponse> {
        self.request("DELETE", path, None)
    }

    /// Like `request`, with raw body bytes (sent as application/json).
    pub fn request_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<ApiResponse> {
        let netns = self.netns.clone();
        let url = format!("{}{path}", self.base);
        let request = format!("{method} {path}");
        let method = http::Method::from_bytes(method.as_bytes())?;
        let ca = reqwest::Certificate::from_pem(&self.ca_pem)?;
        let identity = self
            .identity_pem
            .as_deref()
            .map(reqwest::Identity::from_pem)
            .transpose()?;
        // setns affects this thread only: the runtime below is single-threaded, so every socket
        // it makes lives in the host's namespace.
        std::thread::spawn(move || -> Result<ApiResponse> {
            let ns =
                fs::File::open(&netns).with_context(|| format!("opening {}", netns.display()))?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering {}", netns.display()))?;
            let _ = rustls::crypto::ring::default_provider().install_default();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let mut builder = reqwest::Client::builder()
                    .tls_certs_only([ca])
                    .timeout(Duration::from_secs(30))
                    .no_proxy();
                if let Some(id) = identity {
                    builder = builder.identity(id);
                }
                let client = builder.build()?;
                let mut req = client.request(method, &url);
                if let Some(b) = body {
                    req = req
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(b);
                }
                let resp = req
                    .send()
                    .await
                    .with_context(|| format!("{request}: no answer"))?;
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                let body = resp.bytes().await?.to_vec();
                Ok(ApiResponse {
                    request,
                    status,
                    headers,
                    body,
                })
            })
        })
        .join()
        .map_err(|_| anyhow!("the API client thread panicked"))?
    }
}

/// The frames of a docker log stream (stdcopy: 8-byte header `[stream, 0, 0, 0, BE u32 len]`
/// then the payload): (stream, payload as text).
pub fn parse_log_frames(mut body: &[u8]) -> Result<Vec<(u8, String)>> {
    let mut frames = Vec::new();
    while !body.is_empty() {
        ensure!(body.len() >= 8, "a truncated frame header: {body:?}");
        let stream = body[0];
        ensure!(
            matches!(stream, 1 | 2) && body[1..4] == [0, 0, 0],
            "not a stdout/stderr frame header: {:?}",
            &body[..8]
        );
        let len = u32::from_be_bytes([body[4], body[5], body[6], body[7]]) as usize;
        ensure!(
            body.len() >= 8 + len,
            "a frame of {len} bytes with {} left",
            body.len() - 8
        );
        frames.push((
            stream,
            String::from_utf8_lossy(&body[8..8 + len]).into_owned(),
        ));
        body = &body[8 + len..];
    }
    Ok(frames)
}

/// Whether any object named `Labels` in `v` (at any depth) maps `key` to `value`.
pub fn has_label(v: &Value, key: &str, value: &str) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, child)| {
            (k == "Labels" && child[key].as_str() == Some(value)) || has_label(child, key, value)
        }),
        Value::Array(a) => a.iter().any(|c| has_label(c, key, value)),
        _ => false,
    }
}

/// `v` with every object member named `name` removed, at any depth.
pub fn without_key(v: &Value, name: &str) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != name)
                .map(|(k, c)| (k.clone(), without_key(c, name)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|c| without_key(c, name)).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cli_versions_are_read_from_docker_version() {
        assert_eq!(
            parse_cli_version("Docker version 20.10.24+dfsg1, build 297e128\n").as_deref(),
            Some("20.10.24+dfsg1")
        );
        assert_eq!(
            parse_cli_version("Docker version 28.2.2, build e6534b4").as_deref(),
            Some("28.2.2")
        );
        assert_eq!(parse_cli_version("podman version 4.3.1"), None);
    }

    #[test]
    fn a_missing_cli_is_reported_and_a_present_one_versioned() {
        let err = DockerCli::locate(Path::new("/nonexistent/docker"), "a test CLI").unwrap_err();
        assert!(err.contains("/nonexistent/docker is missing"), "{err}");
        // Whichever candidates this machine has must be usable (their --version parsed).
        for (path, what) in CLI_CANDIDATES {
            if Path::new(path).is_file() {
                let cli = DockerCli::locate(Path::new(path), what).unwrap();
                assert!(cli.major() >= 20, "{cli:?}");
            }
        }
    }

    #[test]
    fn docker_env_exports_are_parsed() {
        let env = DockerEnv::from_exports(
            "export DOCKER_HOST=tcp://10.1.0.2:2376\nexport DOCKER_TLS_VERIFY=1\n\
             export DOCKER_CERT_PATH=\"/tmp/x y\"\n# Run this command to configure your shell\n",
        )
        .unwrap();
        assert_eq!(env.addr(), "10.1.0.2:2376");
        assert_eq!(env.tls_verify, "1");
        assert_eq!(env.cert_path, PathBuf::from("/tmp/x y"));
        assert_eq!(env.key(), PathBuf::from("/tmp/x y/key.pem"));
        assert!(DockerEnv::from_exports("export DOCKER_TLS_VERIFY=1").is_err());
    }

    #[test]
    fn filters_use_the_map_form_and_are_escaped() {
        assert_eq!(
            filters_query(&[("label", "com.docker.stack.namespace=demo")]),
            "filters=%7B%22label%22%3A%7B%22com.docker.stack.namespace%3Ddemo%22%3Atrue%7D%7D"
        );
    }

    #[test]
    fn log_frames_are_split_and_checked() {
        let mut body = vec![1, 0, 0, 0, 0, 0, 0, 3];
        body.extend(b"ab\n");
        body.extend([2, 0, 0, 0, 0, 0, 0, 1]);
        body.extend(b"c");
        assert_eq!(
            parse_log_frames(&body).unwrap(),
            vec![(1, "ab\n".to_string()), (2, "c".to_string())]
        );
        assert!(parse_log_frames(&[3, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(parse_log_frames(&[1, 0, 0, 0, 0, 0, 0, 9, b'x']).is_err());
    }

    #[test]
    fn labels_and_keys_are_found_at_any_depth() {
        let v = json!({"Spec": {"Labels": {"k": "v"}, "TaskTemplate": {"Env": ["A=1"]}}});
        assert!(has_label(&v, "k", "v"));
        assert!(!has_label(&v, "k", "w"));
        assert_eq!(
            without_key(&v, "Env"),
            json!({"Spec": {"Labels": {"k": "v"}, "TaskTemplate": {}}})
        );
    }

    #[test]
    fn json_lines_skip_blank_lines() {
        let rows = parse_json_lines("{\"a\":1}\n\n{\"a\":2}\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert!(parse_json_lines("not json").is_err());
    }
}
