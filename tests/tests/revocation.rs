//! End-to-end: admin credentials are revoked for good. Demoting a manager revokes the admin.conf
//! it was given at join on every manager; `cluster admin revoke` of another manager's credential
//! is refused at once; `cluster admin ls` lists the holders and refuses to revoke the caller's
//! own credential without --force.

use std::ffi::OsStr;
use std::time::Duration;

use anyhow::{anyhow, ensure, Result};
use shoal_tests::ha::{Managers, CTL_TIMEOUT};
use shoal_tests::testbed::{stderr_of, Testbed, DEADLINE};

/// "At once": the revoking call returns after the leader applied it; a follower may apply it
/// a moment later, never more than this.
const AT_ONCE: Duration = Duration::from_secs(2);

/// One row of `cluster admin ls --format json`.
#[derive(Debug, serde::Deserialize)]
struct AdminRow {
    #[serde(rename = "Fingerprint")]
    fingerprint: String,
    #[serde(rename = "Holder")]
    holder: String,
}

fn admin_rows(m: &Managers, via: usize) -> Result<Vec<AdminRow>> {
    m.ctl_ok(via, ["cluster", "admin", "ls", "--format", "json"])?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| anyhow!("bad admin row {l:?}: {e}")))
        .collect()
}

fn node_id_of(m: &Managers, via: usize, i: usize) -> Result<String> {
    m.status(via)?
        .iter()
        .find(|r| m.index_of(&r.addr) == Some(i))
        .map(|r| r.node_id.clone())
        .ok_or_else(|| anyhow!("m{} not in cluster status", i + 1))
}

/// Whether shoalctl with manager `conf_of`'s admin.conf, run on host `on`, is refused as no
/// longer valid.
fn refused(m: &Managers, on: usize, conf_of: usize) -> Result<bool> {
    let conf = m.admin_conf(conf_of);
    let out = m.hosts[on].run_timeout(
        &m.bins.ctl,
        [
            OsStr::new("--config"),
            conf.as_os_str(),
            OsStr::new("service"),
            OsStr::new("ls"),
        ],
        CTL_TIMEOUT,
    )?;
    let err = stderr_of(&out);
    if out.status.success() {
        return Ok(false);
    }
    ensure!(
        err.contains("no longer") || err.to_lowercase().contains("permission"),
        "shoalctl failed, but not with a refusal: {err}"
    );
    Ok(true)
}

#[test]
fn demoted_and_revoked_admin_credentials_are_refused_everywhere() -> Result<()> {
    let m = Managers::start(Testbed::new("revoke")?, 3, &[])?;
    let leader = m.wait_converged(&[0, 1, 2])?;
    let rows = admin_rows(&m, leader)?;
    ensure!(rows.len() == 3, "one credential per manager: {rows:?}");
    ensure!(
        rows.iter().any(|r| r.holder == "init"),
        "init's credential listed: {rows:?}"
    );
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (demoted, revoked) = (followers[0], followers[1]);
    let demoted_id = node_id_of(&m, leader, demoted)?;
    let revoked_id = node_id_of(&m, leader, revoked)?;
    ensure!(
        rows.iter().any(|r| r.holder == demoted_id) && rows.iter().any(|r| r.holder == revoked_id),
        "each joined manager holds its own credential: {rows:?}"
    );
    for i in 0..3 {
        ensure!(
            !refused(&m, i, demoted)?,
            "m{}'s admin.conf refused before any change",
            demoted + 1
        );
    }

    // Demoted: its admin.conf is refused by every manager left (run from every host).
    m.ctl_ok(leader, ["node", "demote", &demoted_id])?;
    let status = m.wait_exit(demoted, DEADLINE)?;
    eprintln!("demoted manager exited with {status}");
    for on in 0..3 {
        Testbed::wait_for(
            AT_ONCE,
            "the demoted manager's admin.conf to be refused",
            || refused(&m, on, demoted),
        )?;
    }
    let rows = admin_rows(&m, leader)?;
    ensure!(
        rows.iter().all(|r| r.holder != demoted_id),
        "the demoted manager's credential is still listed: {rows:?}"
    );

    // Revoking one's own credential needs --force.
    let own = m.ctl(
        revoked,
        ["cluster", "admin", "revoke", &rows_fp(&rows, &revoked_id)?],
    )?;
    ensure!(
        !own.status.success(),
        "revoking the caller's own credential was accepted"
    );
    ensure!(
        stderr_of(&own).contains("--force"),
        "the refusal does not name --force: {}",
        stderr_of(&own)
    );
    // No prefix at all names no credential: refused.
    let empty = m.ctl(leader, ["cluster", "admin", "revoke", ""])?;
    ensure!(!empty.status.success(), "an empty prefix was accepted");

    // Revoked by another admin: refused at once, on every manager still up.
    let fp = rows_fp(&rows, &revoked_id)?;
    m.ctl_ok(leader, ["cluster", "admin", "revoke", &fp[..16]])?;
    for on in [leader, revoked] {
        Testbed::wait_for(AT_ONCE, "the revoked admin.conf to be refused", || {
            refused(&m, on, revoked)
        })?;
    }
    // The leader's own credential still works.
    ensure!(
        !refused(&m, leader, leader)?,
        "the leader's admin.conf was refused"
    );
    m.shutdown()
}

fn rows_fp(rows: &[AdminRow], holder: &str) -> Result<String> {
    rows.iter()
        .find(|r| r.holder == holder)
        .map(|r| r.fingerprint.clone())
        .ok_or_else(|| anyhow!("no credential held by {holder}: {rows:?}"))
}
