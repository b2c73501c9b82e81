//! Failover figure: three managers on three test hosts; `kill -9` of the leader, then time until a
//! write (`service create -d`, sent through a surviving manager, retried until acknowledged) is
//! acknowledged. The killed manager is restarted and the group converges between trials.
//!
//! Run (root), with RELEASE binaries:
//! `cargo build --release --workspace --bins && SHOAL_BIN_DIR=$CARGO_TARGET_DIR/release cargo bench -p shoal-tests --bench failover`
//! (`SHOAL_BIN_DIR=target/release` without a `CARGO_TARGET_DIR`).
//! Optional: `SHOAL_BENCH_TRIALS=20` (default 20), `SHOAL_BENCH_KEEP=1` (copy the managers' logs
//! beside the testbed before it is removed, and print where; each trial line gives the kill's
//! wall-clock time to find it in them). The time includes one shoalctl process start per
//! attempt (a few ms), as a user would see it. Also counted: the Raft terms each trial used, from
//! the kill to the group converged again with the killed manager back (1 = one clean election; more
//! = a split vote, or an election the restarted manager caused).

use std::time::Duration;

use anyhow::Result;
use shoal_tests::ha::{History, Managers};
use shoal_tests::testbed::{Testbed, DEADLINE};

fn main() -> Result<()> {
    let trials: usize = std::env::var("SHOAL_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut m = Managers::start(Testbed::new("benchfo")?, 3, &[])?;
    let mut hist = History::default();
    let mut times: Vec<Duration> = Vec::new();
    let mut extra_terms = 0;
    let term_of = |m: &Managers, i: usize| -> Result<u64> {
        Ok(m.status(i)?.iter().map(|r| r.term).max().unwrap_or(0))
    };
    let mut leader = m.wait_converged(&[0, 1, 2])?;
    for trial in 0..trials {
        let via = (leader + 1) % 3;
        let term = term_of(&m, via)?;
        hist.write(&m, via)?;
        let killed_at = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        m.kill(leader)?;
        let took = hist.write_until_acked(&m, via, DEADLINE)?;
        times.push(took);
        m.restart(leader)?;
        let killed = leader;
        leader = m.wait_converged(&[0, 1, 2])?;
        let terms = term_of(&m, leader)?.saturating_sub(term);
        extra_terms += terms.saturating_sub(1);
        println!(
            "trial {:2}: leader m{} killed at {killed_at}, write acknowledged after {took:?}; terms used: {terms}",
            trial + 1,
            killed + 1
        );
    }
    for i in 0..3 {
        hist.check(&m, i)?;
    }
    times.sort();
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    let min = times[0];
    println!(
        "failover (kill -9 of the leader -> first acknowledged write), {} trials: median {median:?}, min {min:?}, max {max:?}; terms beyond one election per trial: {extra_terms}",
        times.len()
    );
    if std::env::var_os("SHOAL_BENCH_KEEP").is_some_and(|v| v == "1") {
        keep(m.testbed().dir());
    }
    m.shutdown()
}

/// Copies the testbed's directory (the managers' logs and data dirs) beside it and says where.
fn keep(dir: &std::path::Path) {
    let mut name = dir.file_name().unwrap_or_default().to_owned();
    name.push("-kept");
    let dest = dir.with_file_name(name);
    // `-x`: a namespace file or a mount left by a running process is not copied.
    match std::process::Command::new("cp")
        .arg("-a")
        .arg("-x")
        .arg(dir)
        .arg(&dest)
        .status()
    {
        Ok(s) if s.success() => println!("SHOAL_BENCH_KEEP: logs kept in {}", dest.display()),
        Ok(s) => eprintln!("SHOAL_BENCH_KEEP: cp exited with {s}"),
        Err(e) => eprintln!("SHOAL_BENCH_KEEP: cp: {e}"),
    }
}
