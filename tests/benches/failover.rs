//! Failover figure: three managers on three test hosts; `kill -9` of the leader, then time until a
//! write (`service create -d`, sent through a surviving manager, retried until acknowledged) is
//! acknowledged. The killed manager is restarted and the group converges between trials.
//!
//! Run (root): `cargo build --workspace --bins && cargo bench -p shoal-tests --bench failover`
//! Optional: `SHOAL_BENCH_TRIALS=20` (default 20). The time includes one shoalctl process start per
//! attempt (a few ms), as a user would see it.

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
    for trial in 0..trials {
        let leader = m.wait_converged(&[0, 1, 2])?;
        let via = (leader + 1) % 3;
        hist.write(&m, via)?;
        m.kill(leader)?;
        let took = hist.write_until_acked(&m, via, DEADLINE)?;
        println!(
            "trial {:2}: leader m{} killed, write acknowledged after {took:?}",
            trial + 1,
            leader + 1
        );
        times.push(took);
        m.restart(leader)?;
    }
    m.wait_converged(&[0, 1, 2])?;
    for i in 0..3 {
        hist.check(&m, i)?;
    }
    times.sort();
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    let min = times[0];
    println!(
        "failover (kill -9 of the leader -> first acknowledged write), {} trials: median {median:?}, min {min:?}, max {max:?}",
        times.len()
    );
    m.shutdown()
}
