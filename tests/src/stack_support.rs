//! Helpers of the real-application scenarios (issue 12: stacks, secrets, volumes, private
//! registries): shoalctl with stdin and environment, commands inside a task, service logs, task
//! errors, a second docker-registry inside a testbed host (optionally with htpasswd
//! authentication), and the three-tier compose file of the stack tests.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::testbed::{fatal, stderr_of, Cluster, Host, Proc, Testbed, DEADLINE};

/// How long one shoalctl (or other) command may run before it is killed.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs shoalctl with the cluster's admin.conf inside the manager host, with `env` added to its
/// environment (through `env(1)`, as `Host::run` inherits the test's) and `input` on its stdin.
pub fn ctl_with(c: &Cluster, env: &[(&str, &str)], args: &[&str], input: &[u8]) -> Result<Output> {
    let mut all: Vec<OsString> = env
        .iter()
        .map(|(k, v)| OsString::from(format!("{k}={v}")))
        .collect();
    all.push(c.bins.ctl.clone().into_os_string());
    all.push("--config".into());
    all.push(c.admin_conf().into_os_string());
    all.extend(args.iter().map(OsString::from));
    c.manager.run_input("env", all, input, CMD_TIMEOUT)
}

/// [`ctl_with`] that must exit 0; its stdout.
pub fn ctl_with_ok(
    c: &Cluster,
    env: &[(&str, &str)],
    args: &[&str],
    input: &[u8],
) -> Result<String> {
    let out = ctl_with(c, env, args, input)?;
    ensure!(
        out.status.success(),
        "shoalctl {}: exit {}: {}",
        args.join(" "),
        out.status,
        stderr_of(&out)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs shoalctl, which must fail; its stderr and stdout together (where the reason is).
pub fn ctl_fails(c: &Cluster, args: &[&str]) -> Result<String> {
    let out = c.ctl(args)?;
    ensure!(
        !out.status.success(),
        "shoalctl {} succeeded, but should have been refused: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(format!(
        "{}{}",
        stderr_of(&out),
        String::from_utf8_lossy(&out.stdout)
    ))
}

/// Runs `script` with `/bin/sh` inside a task's container (its network and mount namespaces:
/// the image's own programs); its stdout.
pub fn exec_in_task(c: &Cluster, task_id: &str, script: &str) -> Result<String> {
    let (_, container) = c.container_of(task_id)?;
    let pid = container
        .pid
        .with_context(|| format!("task {task_id} has no recorded pid"))?;
    let out = c.manager.run_timeout(
        "nsenter",
        ["-t", &pid.to_string(), "-n", "-m", "/bin/sh", "-c", script],
        Duration::from_secs(20),
    )?;
    if !out.status.success() {
        bail!(
            "in task {task_id}: `{script}` failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr_of(&out)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The pid (in the machine's namespace) of a task's main process.
pub fn task_pid(c: &Cluster, task_id: &str) -> Result<i32> {
    c.container_of(task_id)?
        .1
        .pid
        .with_context(|| format!("task {task_id} has no recorded pid"))
}

/// `service logs NAME` with the `TASK@NODE | ` prefixes cut off: the lines the tasks printed.
pub fn service_log_lines(c: &Cluster, service: &str) -> Result<Vec<String>> {
    Ok(c.ctl_ok(["service", "logs", service])?
        .lines()
        .map(|l| l.split_once("| ").map_or(l, |(_, line)| line).to_string())
        .collect())
}

/// Waits until `service` has logged a line `DONE` (its probe script finished), failing at once
/// when one of its tasks failed; the `KEY=VALUE` lines it printed (later ones win).
pub fn probe_output(c: &Cluster, service: &str) -> Result<BTreeMap<String, String>> {
    let mut lines = Vec::new();
    Testbed::wait_for(
        DEADLINE,
        &format!("{service}: the probe's DONE line"),
        || {
            lines = service_log_lines(c, service)?;
            if lines.iter().any(|l| l.trim_end() == "DONE") {
                return Ok(true);
            }
            let failed: Vec<String> = c
                .service_ps(service)?
                .into_iter()
                .filter(|t| !t.error.is_empty())
                .map(|t| t.error)
                .collect();
            if !failed.is_empty() {
                return Err(fatal(format!("{service}: task failed: {failed:?}")));
            }
            Ok(false)
        },
    )?;
    Ok(lines
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

/// Waits until a task of `service` reports an error containing `needle` (case-insensitive);
/// that error.
pub fn wait_task_error(c: &Cluster, service: &str, needle: &str) -> Result<String> {
    let needle = needle.to_ascii_lowercase();
    let mut found = String::new();
    let mut seen = Vec::new();
    Testbed::wait_for(
        DEADLINE,
        &format!("{service}: a task error containing {needle:?}"),
        || {
            let tasks = c.service_ps(service)?;
            seen = tasks.iter().map(|t| t.error.clone()).collect();
            if let Some(t) = tasks
                .iter()
                .find(|t| t.error.to_ascii_lowercase().contains(&needle))
            {
                found = t.error.clone();
                return Ok(true);
            }
            Ok(false)
        },
    )
    .with_context(|| format!("task errors seen: {seen:?}"))?;
    Ok(found)
}

/// Whether a NODE cell (`volume ls`) names the node called `hostname`: by its hostname, or by
/// its id (possibly truncated, as docker prints ids).
pub fn names_node(c: &Cluster, cell: &str, hostname: &str) -> Result<bool> {
    if cell == hostname {
        return Ok(true);
    }
    Ok(!cell.is_empty()
        && c.node_ls()?
            .iter()
            .any(|n| n.hostname == hostname && n.id.starts_with(cell)))
}

/// HTTP GET from `host`'s own namespace (curl); (whether it answered 2xx, the body).
pub fn http_get(host: &Host, url: &str) -> Result<(bool, String)> {
    let out = host.run_timeout(
        "curl",
        ["-sS", "--fail", "-m", "3", url],
        Duration::from_secs(10),
    )?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

/// Waits until `GET url` from `host` answers 2xx with a body `accept` takes; that body.
pub fn wait_http(host: &Host, url: &str, mut accept: impl FnMut(&str) -> bool) -> Result<String> {
    let mut body = String::new();
    let mut last = String::new();
    Testbed::wait_for(DEADLINE, &format!("GET {url} from {}", host.name()), || {
        let (ok, text) = http_get(host, url)?;
        if ok && accept(&text) {
            body = text;
            return Ok(true);
        }
        last = text;
        Ok(false)
    })
    .with_context(|| format!("last answer: {last:?}"))?;
    Ok(body)
}

/// Whether `htpasswd` (apache2-utils) is installed: the authenticated registry needs it.
pub fn htpasswd_available() -> bool {
    which("htpasswd").is_some()
}

/// One bcrypt line of an htpasswd file (docker-registry accepts bcrypt only).
pub fn htpasswd_line(user: &str, password: &str) -> Result<String> {
    let bin = which("htpasswd")
        .ok_or_else(|| anyhow!("htpasswd is not installed (apt-get install apache2-utils)"))?;
    let out = std::process::Command::new(bin)
        .args(["-nbB", user, password])
        .output()
        .context("running htpasswd")?;
    ensure!(out.status.success(), "htpasswd: {}", stderr_of(&out));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A docker-registry started inside a testbed host by [`start_host_registry`].
pub struct HostRegistry {
    /// The registry process.
    pub proc: Proc,
    /// `IP:PORT` it listens on, inside its host.
    pub addr: String,
    /// Its storage, kept across restarts (so images pushed before auth is turned on stay).
    pub data_dir: PathBuf,
    /// Its log file (with access lines: which repositories were pulled).
    pub log: PathBuf,
}

impl HostRegistry {
    /// What the registry logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts Debian's docker-registry inside `host` listening on `addr` (e.g. `127.0.0.1:5443`, so
/// only that host reaches it), storing under `dir`; with `htpasswd` (the file's content) it
/// requires basic authentication. Access logging is on. Returns once `/v2/` answers (200, or 401
/// with authentication).
pub fn start_host_registry(
    tb: &Testbed,
    host: &Host,
    addr: &str,
    dir: &Path,
    htpasswd: Option<&str>,
) -> Result<HostRegistry> {
    let bin = which("docker-registry")
        .context("the test needs Debian's docker-registry (apt-get install docker-registry)")?;
    let data_dir = dir.join("data");
    fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let htpasswd_file = match htpasswd {
        Some(lines) => {
            let file = dir.join("htpasswd");
            fs::write(&file, format!("{}\n", lines.trim()))
                .with_context(|| format!("writing {}", file.display()))?;
            Some(file)
        }
        None => None,
    };
    let config = registry_config(addr, &data_dir, htpasswd_file.as_deref());
    let config_path = dir.join(if htpasswd.is_some() {
        "config-auth.yml"
    } else {
        "config.yml"
    });
    fs::write(&config_path, config)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let log_name = format!("registry-{}.log", addr.replace([':', '.'], "_"));
    let proc = host.spawn(
        bin,
        [OsString::from("serve"), config_path.into_os_string()],
        &log_name,
    )?;
    let url = format!("http://{addr}/v2/");
    Testbed::wait_for(
        DEADLINE,
        &format!("docker-registry on {addr} to answer"),
        || {
            if let Some(status) = proc.try_wait()? {
                return Err(fatal(format!(
                    "docker-registry on {addr} exited with {status}; see {log_name}"
                )));
            }
            let out = host.run_timeout(
                "curl",
                [
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "2",
                    &url,
                ],
                Duration::from_secs(5),
            )?;
            let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Ok(code == "200" || (htpasswd.is_some() && code == "401"))
        },
    )?;
    let log = tb.log_dir().join(&log_name);
    Ok(HostRegistry {
        proc,
        addr: addr.to_string(),
        data_dir,
        log,
    })
}

/// docker-registry's config: listening on `addr`, storing in `data_dir`, logging every request,
/// and with `htpasswd` (a file of bcrypt lines) requiring basic authentication.
pub fn registry_config(addr: &str, data_dir: &Path, htpasswd: Option<&Path>) -> String {
    let mut config = format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
         delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
        data_dir.display()
    );
    if let Some(file) = htpasswd {
        config.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: shoal-test\n    path: {}\n",
            file.display()
        ));
    }
    config
}

/// The image references of the three-tier stack.
#[derive(Debug, Clone)]
pub struct StackImages {
    /// nginx (`ServiceImage::Nginx`).
    pub nginx: String,
    /// The python app (`app_image::push_app_to`).
    pub app: String,
    /// redis (`ServiceImage::Redis`).
    pub redis: String,
}

/// The published port of the stack's front end.
pub const STACK_PORT: u16 = 8080;

/// The front end's nginx site: everything to the app, by its service name on the stack's
/// network.
pub const NGINX_SITE: &str = "server {\n    listen 80 default_server;\n    location / {\n        proxy_pass http://app:80;\n        proxy_read_timeout 10s;\n    }\n}\n";

/// The three-tier compose file of the stack tests, as a user writes it: `web` (nginx, its site
/// from the config `site`, port [`STACK_PORT`] published on the routing mesh, after `app`),
/// `app` (the python app, 2 replicas on `tier == app` nodes, greeting `${APP_GREETING:-hello}`,
/// counting hits in `db`, started once `db` is healthy) and `db` (redis on the `tier == db` node,
/// its password the secret `db_password`, its data in the named volume `dbdata`, a healthcheck,
/// a stop-first update config). The secret's and the config's files are `secret_file` and
/// `site_file` (paths relative to the compose file work too).
pub fn three_tier_compose(images: &StackImages, secret_file: &str, site_file: &str) -> String {
    format!(
        r#"# A three-tier stack: nginx -> python app -> redis.
version: "3.8"

x-common-deploy: &restart
  restart_policy:
    condition: any
    delay: 1s

services:
  web:
    image: {nginx}
    ports:
      - "{STACK_PORT}:80"
    configs:
      - source: site
        target: /etc/nginx/conf.d/default.conf
    depends_on:
      - app
    deploy:
      <<: *restart
      replicas: 1
      placement:
        constraints:
          - node.labels.tier == web

  app:
    image: {app}
    environment:
      APP_GREETING: ${{APP_GREETING:-hello}}
      REDIS_HOST: db
      REDIS_PASSWORD_FILE: /run/secrets/db_password
    secrets:
      - db_password
    healthcheck:
      test: ["CMD", "python3", "/app/server.py", "check"]
      interval: 1s
      timeout: 3s
      retries: 2
    depends_on:
      db:
        condition: service_healthy
    deploy:
      <<: *restart
      replicas: 2
      placement:
        constraints: [node.labels.tier == app]
      update_config:
        parallelism: 1
        delay: 1s
        order: start-first

  db:
    image: {redis}
    command:
      - sh
      - -c
      - 'read -r pw < /run/secrets/db_password; exec redis-server --protected-mode no --dir /data --appendonly yes --requirepass "$$pw"'
    volumes:
      - dbdata:/data
    secrets:
      - source: db_password
        target: db_password
        uid: "999"
        gid: "999"
    healthcheck:
      test: ["CMD-SHELL", 'read -r pw < /run/secrets/db_password; test "$$(REDISCLI_AUTH=$$pw redis-cli ping)" = PONG']
      interval: 2s
      timeout: 3s
      retries: 3
    stop_grace_period: 10s
    deploy:
      <<: *restart
      replicas: 1
      placement:
        constraints:
          - node.labels.tier == db
      update_config:
        parallelism: 1
        delay: 1s
        order: stop-first
        failure_action: pause

volumes:
  dbdata:

secrets:
  db_password:
    file: {secret_file}

configs:
  site:
    file: {site_file}
"#,
        nginx = images.nginx,
        app = images.app,
        redis = images.redis,
    )
}

/// A stack of `n` busybox services (`s1`…`sN`, one replica each, on the default network), for
/// the deploy-time figure.
pub fn busybox_compose(image: &str, n: usize) -> String {
    let mut text = String::from("services:\n");
    for i in 1..=n {
        text.push_str(&format!(
            "  s{i}:\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n    stop_grace_period: 1s\n    deploy:\n      replicas: 1\n"
        ));
    }
    text
}

/// Files under `dir` (links not followed) whose content contains `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    search(dir, needle, false)
}

/// [`files_containing`] without entering other file systems mounted under `dir` (a tmpfs of a
/// container's secrets is not the node's disk).
pub fn files_containing_same_fs(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    search(dir, needle, true)
}

fn search(dir: &Path, needle: &[u8], same_fs: bool) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let mut found = Vec::new();
    let Ok(root) = fs::symlink_metadata(dir) else {
        return found;
    };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if same_fs && meta.dev() != root.dev() {
            continue;
        }
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        } else if meta.is_file() && meta.len() < 64 << 20 {
            if let Ok(data) = fs::read(&p) {
                if data.windows(needle.len()).any(|w| w == needle) {
                    found.push(p);
                }
            }
        }
    }
    found
}

/// A value nobody else could have written anywhere: `prefix` and this process' id and the time.
pub fn unique_value(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_files_name_their_images_and_escape_dollars() {
        let images = StackImages {
            nginx: "r/nginx".into(),
            app: "r/app".into(),
            redis: "r/redis".into(),
        };
        let text = three_tier_compose(&images, "/s/pw", "site.conf");
        for want in [
            "image: r/nginx",
            "image: r/app",
            "image: r/redis",
            "${APP_GREETING:-hello}",
            "file: /s/pw",
            "\"$$pw\"",
            "condition: service_healthy",
            "\"8080:80\"",
        ] {
            assert!(text.contains(want), "{want} missing:\n{text}");
        }
        // Every `$` the shell should see is escaped as `$$`; the only interpolation is the
        // greeting.
        let singles: Vec<&str> = text
            .match_indices('$')
            .map(|(i, _)| &text[i..])
            .filter(|rest| !rest.starts_with("$$"))
            .collect();
        assert!(
            singles.iter().all(|r| r.starts_with("${APP_GREETING")
                || r.starts_with("$pw")
                || r.starts_with("$(")),
            "{singles:?}"
        );
        let many = busybox_compose("r/busybox", 10);
        assert_eq!(many.matches("image: r/busybox").count(), 10);
        assert!(many.contains("  s10:\n"));
    }

    /// The status code of `curl URL` with `extra` arguments.
    fn curl_code(url: &str, extra: &[&str]) -> String {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "2",
            ])
            .args(extra)
            .arg(url)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Debian's docker-registry with the htpasswd config, on loopback: 401 without credentials
    /// or with a wrong password, 200 with the right one; access lines in its log.
    #[test]
    fn registry_with_htpasswd_wants_the_password() {
        if !htpasswd_available() || which("docker-registry").is_none() || which("curl").is_none() {
            eprintln!("skipping: needs htpasswd (apache2-utils), docker-registry and curl");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("htpasswd");
        fs::write(&file, htpasswd_line("u", "right").expect("htpasswd") + "\n").expect("write");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            registry_config(&addr, &dir.path().join("data"), Some(&file)),
        )
        .expect("config");
        let log = fs::File::create(dir.path().join("log")).expect("log");
        let mut child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("docker-registry");
        let url = format!("http://{addr}/v2/");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while curl_code(&url, &[]) != "401" {
            assert!(
                std::time::Instant::now() < deadline,
                "the registry never answered 401: {}",
                fs::read_to_string(dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let wrong = curl_code(&url, &["-u", "u:wrong"]);
        let right = curl_code(&url, &["-u", "u:right"]);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(wrong, "401");
        assert_eq!(right, "200");
        let text = fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        assert!(text.contains("/v2/"), "no access lines: {text}");
    }

    #[test]
    fn files_containing_finds_needles_only_where_they_are() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        fs::write(dir.path().join("a/b/hit"), b"xx needle-1 yy").expect("write");
        fs::write(dir.path().join("a/miss"), b"needle-2").expect("write");
        let found = files_containing(dir.path(), b"needle-1");
        assert_eq!(found, vec![dir.path().join("a/b/hit")]);
        assert_eq!(files_containing_same_fs(dir.path(), b"needle-1"), found);
        assert!(files_containing(&dir.path().join("nothing"), b"needle-1").is_empty());
        let v = unique_value("pw");
        assert!(v.starts_with("pw-") && v != unique_value("pw"));
    }
}
