//! End-to-end: certificates that renew and a CA that rotates.
//!
//! - A cluster with 2-minute certificates runs through several renewal cycles: every node (the
//!   manager, its admin.conf, each agent) renews on its own before expiry, sessions reconnect,
//!   containers are never touched, and a node kept offline past its certificate's expiry refuses
//!   to start with a clear instruction instead of a TLS error.
//! - `cluster ca --rotate` on three hosts reissues every certificate under a new CA, shows its
//!   progress, updates the admin.conf it ran with in place, and afterwards a certificate signed
//!   by the old CA is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, ensure, Context, Result};
use shoal_proto::config::AdminConfig;
use shoal_proto::pki;
use shoal_tests::testbed::{stderr_of, stdout_of, Cluster, ClusterOptions, Testbed, DEADLINE};

/// Lifetime of the certificates of the renewal test.
const LIFETIME: &str = "2m";

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The certificates whose renewal the test follows, by name: the manager's own, the admin.conf
/// of its data dir, and each agent's.
fn cert_files(c: &Cluster) -> Vec<(String, PathBuf)> {
    let mut files = vec![
        (
            "manager".to_string(),
            c.manager_dir.join("certs").join("node.pem"),
        ),
        ("admin.conf".to_string(), c.admin_conf()),
    ];
    for (i, a) in c.agents.iter().enumerate() {
        files.push((
            format!("agent w{}", i + 1),
            a.data_dir.join("certs").join("node.pem"),
        ));
    }
    files
}

/// The certificate PEM of a file: node.pem itself, or the `cert` of an admin.conf.
fn cert_of(path: &Path) -> Result<String> {
    if path.extension().is_some_and(|e| e == "conf") {
        Ok(AdminConfig::load(path)?.cert)
    } else {
        read(path)
    }
}

/// Containers by task id with their init pid.
fn container_pids(c: &Cluster) -> Result<BTreeMap<String, i32>> {
    Ok(c.containers()?
        .into_iter()
        .filter_map(|(_, ct)| ct.pid.map(|p| (ct.task_id, p)))
        .collect())
}

fn all_ready(c: &Cluster, n: usize) -> Result<bool> {
    let nodes = c.node_ls()?;
    Ok(nodes.len() >= n && nodes.iter().all(|r| r.status.eq_ignore_ascii_case("ready")))
}

#[test]
fn certificates_renew_on_their_own_and_containers_keep_running() -> Result<()> {
    // The service lives on w1, which stays up; w2 is the node that goes away.
    let mut opts = ClusterOptions::new(2)
        .heartbeat_period("1s")
        .agent_args(0, &["--label", "keep=yes"]);
    opts.manager_args
        .extend(["--cert-expiry".to_string(), LIFETIME.to_string()]);
    let mut c = Cluster::start_with(Testbed::new("certs")?, opts)?;
    let image = c.busybox_image();
    c.ctl_ok([
        "service",
        "create",
        "--name",
        "steady",
        "--replicas",
        "2",
        "--constraint",
        "engine.labels.keep==yes",
        &image,
        "sleep",
        "3600",
    ])?;
    let tasks = c.wait_running("steady", 2)?;
    let pids = container_pids(&c)?;
    ensure!(pids.len() == 2, "two containers: {pids:?}");

    // w2 goes away now and stays away past its certificate's expiry.
    let away = c.agents[1].data_dir.join("certs").join("node.pem");
    let away_expiry = pki::validity(&read(&away)?)?.not_after;
    c.kill_agent(1)?;

    // Follow every other certificate through two renewals, checking as we go that nothing
    // expired and the cluster stayed whole.
    let files: Vec<(String, PathBuf)> = cert_files(&c)
        .into_iter()
        .filter(|(name, _)| name != "agent w2")
        .collect();
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, path) in &files {
        seen.insert(name.clone(), vec![pki::fingerprint_pem(&cert_of(path)?)?]);
    }
    Testbed::wait_for(
        Duration::from_secs(5 * 60),
        "two renewals of every certificate",
        || {
            for (name, path) in &files {
                let pem = cert_of(path)?;
                let v = pki::validity(&pem)?;
                if v.expired_at(SystemTime::now()) {
                    return Err(shoal_tests::testbed::fatal(format!(
                        "{name}: certificate expired at {:?} without being renewed",
                        v.not_after
                    )));
                }
                let fp = pki::fingerprint_pem(&pem)?;
                let list = seen.entry(name.clone()).or_default();
                if list.last() != Some(&fp) {
                    list.push(fp);
                }
            }
            Ok(seen.values().all(|l| l.len() >= 3))
        },
    )?;
    // Sessions came back after each renewal: the running node is Ready and the admin.conf the
    // manager renewed in place still works (node ls runs with it).
    Testbed::wait_for(DEADLINE, "w1 Ready after the renewals", || {
        let nodes = c.node_ls()?;
        Ok(nodes
            .iter()
            .filter(|r| r.status.eq_ignore_ascii_case("ready"))
            .count()
            >= 1)
    })?;
    // Containers untouched: same tasks, same processes, still alive.
    let running = c.wait_running("steady", 2)?;
    let mut before: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    let mut after: Vec<&str> = running.iter().map(|t| t.id.as_str()).collect();
    before.sort_unstable();
    after.sort_unstable();
    ensure!(
        before == after,
        "tasks replaced during renewals: {before:?} -> {after:?}"
    );
    let now = container_pids(&c)?;
    ensure!(
        now == pids,
        "containers changed during renewals: {pids:?} -> {now:?}"
    );
    for (task, pid) in &now {
        ensure!(
            shoal_tests::testbed::pid_alive(*pid),
            "container of {task} (pid {pid}) died"
        );
    }
    // The node that stayed away past expiry says what to do instead of failing in TLS.
    let wait = away_expiry
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    std::thread::sleep(wait + Duration::from_secs(1));
    c.restart_agent(1)?;
    let proc = c.agents[1]
        .proc()
        .cloned()
        .ok_or_else(|| anyhow!("w2's agent did not start"))?;
    let status = proc.wait_timeout(DEADLINE)?;
    ensure!(
        !status.success(),
        "an agent with an expired certificate started"
    );
    let log = read(&c.testbed().log_dir().join(log_name_of(&c, 1)))?;
    ensure!(
        log.contains("certificate expired") && log.contains("join again"),
        "w2's agent did not explain its expired certificate: {}",
        log.lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
    c.shutdown()
}

/// The log file name the testbed gives agent `i`.
fn log_name_of(c: &Cluster, i: usize) -> String {
    format!("agent-{}.log", c.agents[i].host.name())
}

/// Whether shoalctl with the config at `conf` (run on the manager host) is refused.
fn refused_with(c: &Cluster, conf: &Path) -> Result<(bool, String)> {
    let out = c.manager.run_timeout(
        &c.bins.ctl,
        [
            "--config".as_ref(),
            conf.as_os_str(),
            "node".as_ref(),
            "ls".as_ref(),
        ],
        Duration::from_secs(20),
    )?;
    Ok((!out.status.success(), stderr_of(&out)))
}

#[test]
fn ca_rotation_reissues_every_certificate_and_the_old_ca_is_refused() -> Result<()> {
    let c = Cluster::start_with(
        Testbed::new("carot")?,
        ClusterOptions::new(2).heartbeat_period("1s"),
    )?;
    let image = c.busybox_image();
    c.ctl_ok([
        "service",
        "create",
        "--name",
        "steady",
        "--replicas",
        "2",
        &image,
        "sleep",
        "3600",
    ])?;
    c.wait_running("steady", 2)?;
    let pids = container_pids(&c)?;
    // The lifetime of new certificates is a cluster setting, with a floor of one minute.
    let bad = c.ctl(["cluster", "update", "--cert-expiry", "10s"])?;
    ensure!(
        !bad.status.success() && stderr_of(&bad).contains("cert-expiry"),
        "a 10 s lifetime was not refused clearly: {}",
        stderr_of(&bad)
    );
    c.ctl_ok(["cluster", "update", "--cert-expiry", "10m"])?;
    let info = c.ctl_json(["cluster", "ca"])?;
    ensure!(
        info.first()
            .and_then(|v| v["NodeCertExpirySeconds"].as_i64())
            == Some(600),
        "cluster ca does not show the new lifetime: {info:?}"
    );
    let old_fp = c.ctl_ok(["cluster", "ca", "-q"])?.trim().to_string();
    ensure!(old_fp.len() == 64, "cluster ca -q printed {old_fp:?}");

    // Keep the old credentials: the admin.conf as it is, and w1's node certificate and key.
    let dir = c.testbed().dir().join("old-creds");
    std::fs::create_dir_all(&dir)?;
    let old_admin = dir.join("old-admin.conf");
    std::fs::copy(c.admin_conf(), &old_admin)?;
    let w1_certs = c.agents[0].data_dir.join("certs");
    let old_w1 = AdminConfig {
        managers: vec![c.manager_addr()],
        ca_cert: String::new(),
        cert: read(&w1_certs.join("node.pem"))?,
        key: read(&w1_certs.join("node-key.pem"))?,
    };

    let out = c.ctl(["cluster", "ca", "--rotate"])?;
    let (stdout, stderr) = (stdout_of(&out), stderr_of(&out));
    ensure!(out.status.success(), "cluster ca --rotate failed: {stderr}");
    let new_fp = stdout.trim().to_string();
    ensure!(new_fp.len() == 64 && new_fp != old_fp, "new CA {new_fp:?}");
    ensure!(
        stderr.contains("node certificates on the new CA") && stderr.contains("complete"),
        "no progress shown: {stderr}"
    );
    ensure!(
        c.ctl_ok(["cluster", "ca", "-q"])?.trim() == new_fp,
        "cluster ca shows another CA"
    );

    // Every node's certificate comes from the new CA, and trusts only it.
    let conf = AdminConfig::load(&c.admin_conf())?;
    ensure!(
        pki::fingerprint_pem(&conf.ca_cert)? == new_fp
            && conf.ca_cert.matches("BEGIN CERTIFICATE").count() == 1,
        "the admin.conf used was not updated in place to trust only the new CA"
    );
    ensure!(
        pki::issued_by(&conf.cert, &conf.ca_cert)?,
        "admin.conf certificate not from the new CA"
    );
    Testbed::wait_for(
        DEADLINE,
        "every node to trust only the new CA on disk",
        || {
            for (name, path) in cert_files(&c) {
                let ca = path.with_file_name("ca.pem");
                let (cert, ca) = if name == "admin.conf" {
                    (conf.cert.clone(), conf.ca_cert.clone())
                } else {
                    (read(&path)?, read(&ca)?)
                };
                if !pki::issued_by(&cert, &ca)? || pki::fingerprint_pem(&ca)? != new_fp {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )?;
    ensure!(all_ready(&c, 2)?, "nodes not Ready after the rotation");
    // Certificates issued since carry the lifetime set above.
    let w1 = read(&w1_certs.join("node.pem"))?;
    let v = pki::validity(&w1)?;
    let life = v.not_after.duration_since(v.not_before)?;
    ensure!(
        life <= Duration::from_secs(660) && life >= Duration::from_secs(600),
        "w1's renewed certificate lives {life:?}, not 10 minutes"
    );
    let now = container_pids(&c)?;
    ensure!(
        now == pids,
        "containers changed during the rotation: {pids:?} -> {now:?}"
    );

    // The old admin.conf is refused, whether it trusts the old CA or is given the new one.
    let (refused, err) = refused_with(&c, &old_admin)?;
    ensure!(refused, "the pre-rotation admin.conf still works");
    let mut with_new_ca = AdminConfig::load(&old_admin)?;
    with_new_ca.ca_cert = conf.ca_cert.clone();
    let crafted = dir.join("old-cert-new-ca.conf");
    with_new_ca.save(&crafted)?;
    let (refused2, err2) = refused_with(&c, &crafted)?;
    ensure!(refused2, "an old-CA admin certificate is accepted: {err}");
    // A node certificate signed by the old CA is refused in the TLS handshake, before any
    // authorisation (its fingerprint was the node's a moment ago).
    let mut w1 = old_w1;
    w1.ca_cert = conf.ca_cert.clone();
    let crafted_w1 = dir.join("old-w1.conf");
    w1.save(&crafted_w1)?;
    let (refused3, err3) = refused_with(&c, &crafted_w1)?;
    ensure!(refused3, "w1's old-CA certificate is accepted");
    ensure!(
        !err3.contains("admin certificate"),
        "w1's old certificate got past TLS to the authorisation check: {err3} ({err2})"
    );
    c.shutdown()
}
