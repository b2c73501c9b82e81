//! End-to-end: encryption at rest and autolock. A manager's store and Raft files hold no CA key
//! and no join-token secret in clear; `cluster update --autolock=true` prints an unlock key and
//! seals the manager's data key; after kill -9 and a restart the manager stays locked (shoalctl
//! gets the "locked" message, the key file is sealed) until `cluster unlock` gets the right key on
//! stdin (a wrong one is refused); then the cluster and its agent work again. With autolock off a
//! restart needs no unlock.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, ensure, Context, Result};
use shoal_proto::token::JoinToken;
use shoal_tests::ha::{Managers, CTL_TIMEOUT};
use shoal_tests::testbed::{fatal, stderr_of, NodeRow, Testbed, DEADLINE};

/// What a locked manager answers (part of it).
const LOCKED: &str = "this manager is locked (autolock)";

/// The data dir of manager `i` (its admin.conf sits at the top of it).
fn data_dir(m: &Managers, i: usize) -> Result<PathBuf> {
    m.admin_conf(i)
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("admin.conf has no parent directory"))
}

/// Whether manager `i`'s data key file is sealed (under an unlock key).
fn key_file_sealed(m: &Managers, i: usize) -> Result<bool> {
    let path = data_dir(m, i)?.join("certs/data-key");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let file: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    file["sealed"]
        .as_bool()
        .ok_or_else(|| anyhow!("{}: no \"sealed\" field", path.display()))
}

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        match std::fs::read_dir(&p) {
            Ok(entries) => stack.extend(entries.flatten().map(|e| e.path())),
            Err(_) if p.is_file() => files.push(p),
            Err(_) => {}
        }
    }
    files
}

/// Fails if a file under the manager's `store/` or `raft/` holds one of `needles`.
fn no_plaintext(m: &Managers, i: usize, needles: &[(&str, &str)]) -> Result<()> {
    let dir = data_dir(m, i)?;
    let files: Vec<PathBuf> = ["store", "raft"]
        .iter()
        .flat_map(|d| files_under(&dir.join(d)))
        .collect();
    ensure!(
        !files.is_empty(),
        "no store or raft file under {}",
        dir.display()
    );
    for f in &files {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        for (what, needle) in needles {
            ensure!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds {what} in clear",
                f.display()
            );
        }
    }
    Ok(())
}

/// `node ls` through manager 0.
fn node_ls(m: &Managers) -> Result<Vec<NodeRow>> {
    m.ctl_ok(0, ["node", "ls", "--format", "json"])?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad node row {l:?}")))
        .collect()
}

/// Waits until the agent on `w1` is Ready.
fn wait_worker_ready(m: &Managers, what: &str) -> Result<()> {
    Testbed::wait_for(DEADLINE, what, || {
        Ok(node_ls(m)?
            .iter()
            .any(|n| n.hostname == "w1" && n.status.eq_ignore_ascii_case("ready")))
    })
}

/// Waits until manager 0 answers "locked" to `service ls`, checking its process stays up.
fn wait_locked(m: &Managers) -> Result<()> {
    Testbed::wait_for(
        DEADLINE,
        "the restarted manager to answer as locked",
        || {
            if !m.is_running(0) {
                return Err(fatal("the locked manager exited; see manager-m1.log"));
            }
            let out = m.ctl(0, ["service", "ls"])?;
            ensure!(
                !out.status.success(),
                "service ls worked on a manager that should be locked"
            );
            Ok(stderr_of(&out).contains(LOCKED))
        },
    )
}

/// `cluster unlock` on m1 with `input` on stdin.
fn unlock(m: &Managers, input: &str) -> Result<std::process::Output> {
    let conf = m.admin_conf(0);
    m.hosts[0].run_input(
        &m.bins.ctl,
        [
            "--config".as_ref(),
            conf.as_os_str(),
            "cluster".as_ref(),
            "unlock".as_ref(),
        ],
        input.as_bytes(),
        CTL_TIMEOUT,
    )
}

/// The first word of `text` that is an unlock key.
fn key_in(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.starts_with("SHOALKEY-1-"))
        .map(str::to_string)
}

#[test]
fn a_restarted_manager_stays_locked_until_unlocked_and_holds_no_secret_in_clear() -> Result<()> {
    let mut m = Managers::start(Testbed::new("autolock")?, 1, &[])?;
    // No registry: the agent only has to be Ready, it pulls nothing.
    m.add_agent("w1", "127.0.0.1:5000", 0)?;
    wait_worker_ready(&m, "w1 to be Ready")?;

    // Nothing secret in clear in the store or the Raft log.
    let token = m.ctl_ok(0, ["cluster", "join-token", "worker", "-q"])?;
    let secret = JoinToken::parse(token.trim())
        .map_err(|e| anyhow!("{token:?}: {e}"))?
        .secret;
    let needles = [
        ("a private key", "PRIVATE KEY"),
        ("the worker join-token secret", secret.as_str()),
    ];
    no_plaintext(&m, 0, &needles)?;
    ensure!(
        !key_file_sealed(&m, 0)?,
        "the data key is sealed while autolock is off"
    );

    // Autolock on: the key is printed, and unlock-key -q prints the same.
    let out = m.ctl_ok(0, ["cluster", "update", "--autolock=true"])?;
    let key = key_in(&out).ok_or_else(|| anyhow!("no unlock key printed: {out:?}"))?;
    let shown = m.ctl_ok(0, ["cluster", "unlock-key", "-q"])?;
    ensure!(
        shown.trim() == key,
        "unlock-key -q prints {shown:?}, update printed {key:?}"
    );
    Testbed::wait_for(DEADLINE, "the data key file to be sealed", || {
        key_file_sealed(&m, 0)
    })?;

    // kill -9 and restart: locked, its key file still sealed, its process waiting.
    m.kill(0)?;
    m.restart(0)?;
    wait_locked(&m)?;
    ensure!(
        key_file_sealed(&m, 0)?,
        "the data key file of a locked manager is not sealed"
    );

    // A wrong key is refused, and the manager stays locked.
    let wrong = format!("SHOALKEY-1-{}\n", "A".repeat(43));
    let out = unlock(&m, &wrong)?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out)
    );
    ensure!(
        !out.status.success(),
        "a wrong unlock key was accepted: {said}"
    );
    ensure!(
        said.contains("invalid unlock key"),
        "the refusal does not say the key is invalid: {said}"
    );
    wait_locked(&m)?;

    // The right key, on stdin: unlocked, and the cluster works again.
    let out = unlock(&m, &format!("{key}\n"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success() && stdout.contains(": unlocked"),
        "cluster unlock with the right key failed: {stdout} {}",
        stderr_of(&out)
    );
    Testbed::wait_for(DEADLINE, "service ls to work after the unlock", || {
        Ok(m.ctl(0, ["service", "ls"])?.status.success())
    })?;
    wait_worker_ready(&m, "w1 to be Ready after the unlock")?;
    let out = unlock(&m, &format!("{key}\n"))?;
    ensure!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(": not locked"),
        "a second unlock does not say \"not locked\": {}",
        String::from_utf8_lossy(&out.stdout)
    );
    no_plaintext(&m, 0, &needles)?;

    // Autolock off: the key file goes back to clear and a restart needs no unlock.
    m.ctl_ok(0, ["cluster", "update", "--autolock=false"])?;
    Testbed::wait_for(DEADLINE, "the data key file to be in clear", || {
        Ok(!key_file_sealed(&m, 0)?)
    })?;
    let off = m.ctl(0, ["cluster", "unlock-key"])?;
    ensure!(
        !off.status.success() && stderr_of(&off).contains("autolock is off"),
        "unlock-key with autolock off: {}",
        stderr_of(&off)
    );
    m.kill(0)?;
    m.restart(0)?;
    Testbed::wait_for(
        DEADLINE,
        "the manager to serve again without unlock",
        || {
            if !m.is_running(0) {
                return Err(fatal("the manager exited; see manager-m1.log"));
            }
            Ok(m.ctl(0, ["node", "ls"])?.status.success())
        },
    )?;
    wait_worker_ready(&m, "w1 to be Ready after the last restart")?;
    m.shutdown()
}
