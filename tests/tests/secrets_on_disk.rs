//! End-to-end: secrets on disk and on command lines. After `init`, two agents joining and the
//! promotion of one of them, every data dir is 0700 and every key and secret file 0600 (a
//! manager's data dir holds nothing anyone else may read), no process on the machine carries a
//! join token's secret on its command line (the testbed's agents join with `--token-file`, the
//! promoted manager gets its token in its environment), and `--token` still joins, with a warning.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, ensure, Context, Result};
use shoal_proto::token::JoinToken;
use shoal_tests::testbed::{fatal, Cluster, Testbed, DEADLINE};

/// The part of the warning `--token` prints that names the problem.
const WARNING: &str = "--token puts the join token on the command line";

/// `path`'s permission bits.
fn mode(path: &Path) -> Result<u32> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .permissions()
        .mode()
        & 0o7777)
}

/// Fails unless `path` has exactly `want`.
fn expect_mode(path: &Path, want: u32) -> Result<()> {
    let got = mode(path)?;
    ensure!(
        got == want,
        "{} has mode {got:o}, expected {want:o}",
        path.display()
    );
    Ok(())
}

/// Entries under `dir` (itself included, links not followed) that anyone but the owner may read,
/// write or enter.
fn open_entries(dir: &Path) -> Vec<String> {
    let mut open = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        let m = meta.permissions().mode() & 0o777;
        if m & 0o077 != 0 {
            open.push(format!("{} ({m:o})", p.display()));
        }
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    open
}

/// A manager's data dir: 0700, with nothing in it open to others, and its secrets 0600.
fn check_manager_dir(dir: &Path) -> Result<()> {
    expect_mode(dir, 0o700)?;
    for f in ["certs/node-key.pem", "admin.conf", "manager.json"] {
        expect_mode(&dir.join(f), 0o600)?;
    }
    for d in ["certs", "raft"] {
        expect_mode(&dir.join(d), 0o700)?;
    }
    let open = open_entries(dir);
    ensure!(
        open.is_empty(),
        "a manager's data dir holds entries others can read: {open:?}"
    );
    Ok(())
}

/// An agent's data dir: 0700, its identity 0600 (images and containers keep their modes).
fn check_agent_dir(dir: &Path) -> Result<()> {
    expect_mode(dir, 0o700)?;
    expect_mode(&dir.join("certs"), 0o700)?;
    for f in [
        "certs/node-key.pem",
        "certs/node.pem",
        "certs/ca.pem",
        "agent.json",
    ] {
        expect_mode(&dir.join(f), 0o600)?;
    }
    // Made with the first encrypted network, or at start (a node without --no-wg).
    let wg = dir.join("network/wg.key");
    if wg.exists() {
        expect_mode(&wg, 0o600)?;
    }
    Ok(())
}

/// Pids (with their command lines) of every process on the machine whose command line holds
/// `secret`.
fn command_lines_holding(secret: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let needle = secret.as_bytes();
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            cmdline
                .windows(needle.len())
                .any(|w| w == needle)
                .then(|| format!("{pid}: {}", String::from_utf8_lossy(&cmdline)))
        })
        .collect()
}

/// The secret part of a join token.
fn secret_of(token: &str) -> Result<String> {
    Ok(JoinToken::parse(token)
        .map_err(|e| anyhow!("{token:?}: {e}"))?
        .secret)
}

#[test]
fn data_dirs_and_keys_are_private_and_no_token_is_on_a_command_line() -> Result<()> {
    let c = Cluster::start(Testbed::new("secrets")?, 2)?;
    let worker_secret = secret_of(c.worker_token())?;
    let manager_secret = secret_of(&c.join_token("manager")?)?;

    // Promote w1: its agent starts `shoal-manager join` as the same node.
    let promoted: PathBuf = c.agents[0].data_dir.join("manager");
    c.ctl_ok(["node", "promote", "w1"])?;
    Testbed::wait_for(DEADLINE, "w1's manager to join and answer", || {
        if !promoted.join("manager.json").exists() {
            return Ok(false);
        }
        let rows = c.ctl_json(["cluster", "status"])?;
        Ok(rows.len() == 2 && rows.iter().all(|r| r["Reachable"].as_bool() == Some(true)))
    })?;

    check_manager_dir(&c.manager_dir)?;
    check_manager_dir(&promoted)?;
    for agent in &c.agents {
        check_agent_dir(&agent.data_dir)?;
    }

    // Neither token's secret is on any command line: not the agents' (--token-file), not the
    // promoted manager's (its environment), not shoalctl's.
    for (what, secret) in [("worker", &worker_secret), ("manager", &manager_secret)] {
        let holders = command_lines_holding(secret);
        ensure!(
            holders.is_empty(),
            "the {what} token's secret is on a command line: {holders:?}"
        );
    }

    // `--token` keeps working, with a warning on stderr naming the alternatives.
    let w3 = c.testbed().add_host("w3")?;
    let data_dir = w3.dir()?.join("agent");
    let ip = w3.ip().to_string();
    let registry = c.registry_addr();
    let manager = c.manager_addr();
    let args = [
        "join",
        "--data-dir",
        &data_dir.to_string_lossy(),
        "--token",
        c.worker_token(),
        "--hostname",
        "w3",
        "--insecure-registry",
        &registry,
        "--advertise-addr",
        &ip,
        &manager,
    ];
    let proc = w3.spawn(&c.bins.agent, args, "agent-w3.log")?;
    Testbed::wait_for(DEADLINE, "w3 (joined with --token) to be Ready", || {
        if let Some(status) = proc.try_wait()? {
            return Err(fatal(format!(
                "the agent joining with --token exited with {status}; see agent-w3.log"
            )));
        }
        Ok(c.node_ls()?
            .iter()
            .any(|n| n.hostname == "w3" && n.status.eq_ignore_ascii_case("ready")))
    })?;
    let log_path = c.testbed().log_dir().join("agent-w3.log");
    let log = std::fs::read_to_string(&log_path)
        .with_context(|| format!("reading {}", log_path.display()))?;
    ensure!(
        log.contains(WARNING) && log.contains("--token-file") && log.contains("SHOAL_JOIN_TOKEN"),
        "an agent joining with --token did not warn that the token is visible; agent-w3.log:\n{log}"
    );
    check_agent_dir(&data_dir)?;
    c.shutdown()
}
