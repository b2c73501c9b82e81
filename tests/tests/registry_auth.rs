//! End-to-end scenarios of issue 12, "private registries", on one-host clusters (the agent
//! beside the manager, so a registry on the host's loopback is reachable by both shoalctl and the
//! agent):
//!
//! - a docker-registry with htpasswd (basic) authentication: `service create` of an image there
//!   without credentials fails with "unauthorized"; after `shoalctl login 127.0.0.1:PORT -u U
//!   --password-stdin` (with `DOCKER_CONFIG` pointing at a temp dir, where docker keeps its
//!   config.json) and with `--with-registry-auth` the service runs, and `service inspect` does
//!   not show the password;
//! - a registry mirror: an agent started with `--registry-mirror http://127.0.0.1:PORT` runs
//!   `busybox` (docker.io/library/busybox, which this machine cannot reach) from the mirror.

use std::fs;

use anyhow::{ensure, Context, Result};
use base64::Engine as _;
use shoal_tests::stack_support::{
    ctl_with, ctl_with_ok, htpasswd_available, htpasswd_line, start_host_registry, wait_task_error,
};
use shoal_tests::testbed::{check_output, stderr_of, Cluster, ClusterOptions, Testbed};

/// The authenticated registry, on the manager host's loopback.
const AUTH_ADDR: &str = "127.0.0.1:5443";
/// The mirror, on the manager host's loopback.
const MIRROR_ADDR: &str = "127.0.0.1:5001";
/// The registry's user.
const USER: &str = "shoaluser";

/// Pushes the fixture's busybox to the registry at `addr` (inside the manager host) as `image`.
fn push_busybox(c: &Cluster, addr: &str, image: &str) -> Result<()> {
    let out = c.manager.run(
        &c.bins.fixture,
        ["push-busybox", "--registry", addr, "--image", image],
    )?;
    check_output(&out, &format!("shoal-fixture push-busybox to {addr}"))
}

#[test]
fn private_registry_needs_login_and_with_registry_auth() -> Result<()> {
    if !htpasswd_available() {
        eprintln!(
            "skipping private_registry_needs_login_and_with_registry_auth: htpasswd is not \
             installed (apt-get install apache2-utils)"
        );
        return Ok(());
    }
    let opts = ClusterOptions::new(0).agent_args(0, &["--insecure-registry", AUTH_ADDR]);
    let c = Cluster::start_with(Testbed::new("regauth")?, opts)?;
    let dir = c.testbed().dir().join("auth-registry");
    let password = shoal_tests::stack_support::unique_value("Pa55");

    // The image goes in while the registry is open; then it restarts on the same storage with
    // authentication required.
    let open = start_host_registry(c.testbed(), &c.manager, AUTH_ADDR, &dir, None)?;
    push_busybox(&c, AUTH_ADDR, "private/busybox:latest")?;
    open.proc.kill()?;
    let htpasswd = htpasswd_line(USER, &password)?;
    let _locked = start_host_registry(c.testbed(), &c.manager, AUTH_ADDR, &dir, Some(&htpasswd))?;
    let image = format!("{AUTH_ADDR}/private/busybox:latest");

    // No credentials: the pull is refused, and the task says so.
    c.ctl_ok([
        "service", "create", "--detach", "--name", "anon", &image, "sleep", "3600",
    ])?;
    wait_task_error(&c, "anon", "unauthorized")?;
    c.ctl_ok(["service", "rm", "anon"])?;

    // `login` stores the credentials where docker does.
    let docker_config = c.testbed().dir().join("docker-config");
    fs::create_dir_all(&docker_config)?;
    let docker_config_text = docker_config.to_string_lossy().into_owned();
    let env = [("DOCKER_CONFIG", docker_config_text.as_str())];
    ctl_with_ok(
        &c,
        &env,
        &["login", AUTH_ADDR, "-u", USER, "--password-stdin"],
        format!("{password}\n").as_bytes(),
    )?;
    let stored = fs::read_to_string(docker_config.join("config.json"))
        .context("login wrote no $DOCKER_CONFIG/config.json")?;
    let doc: serde_json::Value = serde_json::from_str(&stored)?;
    ensure!(
        doc["auths"][AUTH_ADDR].is_object(),
        "config.json has no auths entry for {AUTH_ADDR}: {stored}"
    );

    // Without --with-registry-auth the credentials stay on the client: still refused.
    ctl_with_ok(
        &c,
        &env,
        &[
            "service", "create", "--detach", "--name", "noauth", &image, "sleep", "3600",
        ],
        b"",
    )?;
    wait_task_error(&c, "noauth", "unauthorized")?;

    // With them, the service runs.
    ctl_with_ok(
        &c,
        &env,
        &[
            "service",
            "create",
            "--detach",
            "--with-registry-auth",
            "--name",
            "private",
            &image,
            "sleep",
            "3600",
        ],
        b"",
    )?;
    c.wait_running("private", 1)?;

    // The password is nowhere in what the cluster shows of the service.
    let inspect = ctl_with(&c, &env, &["service", "inspect", "private"], b"")?;
    ensure!(inspect.status.success(), "{}", stderr_of(&inspect));
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&inspect.stdout),
        stderr_of(&inspect)
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
    ensure!(
        !shown.contains(&password) && !shown.contains(&basic),
        "service inspect shows the registry password: {shown}"
    );
    c.shutdown()
}

#[test]
fn docker_hub_images_come_through_the_mirror() -> Result<()> {
    let opts = ClusterOptions::new(0)
        .agent_args(0, &["--registry-mirror", &format!("http://{MIRROR_ADDR}")]);
    let c = Cluster::start_with(Testbed::new("mirror")?, opts)?;
    let dir = c.testbed().dir().join("mirror");
    let mirror = start_host_registry(c.testbed(), &c.manager, MIRROR_ADDR, &dir, None)?;
    push_busybox(&c, MIRROR_ADDR, "library/busybox:latest")?;

    // `busybox` is docker.io/library/busybox:latest: only the mirror has it here.
    c.ctl_ok([
        "service", "create", "--detach", "--name", "hub", "busybox", "sleep", "3600",
    ])?;
    c.wait_running("hub", 1)?;
    let log = mirror.log_text();
    ensure!(
        log.contains("/v2/library/busybox/manifests/"),
        "the mirror served no busybox manifest; its log:\n{log}"
    );
    c.shutdown()
}
