//! Images from an archive on disk: a host that cannot reach a registry runs a service from an
//! image loaded with `shoal-agent load` (a `docker save` tar made by the fixture).

use anyhow::{ensure, Result};
use shoal_tests::testbed::{check_output, Cluster, Testbed};

#[test]
fn service_runs_from_an_image_loaded_from_an_archive() -> Result<()> {
    let c = Cluster::start(Testbed::new("archive")?, 0)?;
    let archive = c.testbed().dir().join("offline.tar");
    let archive_s = archive.to_string_lossy().into_owned();
    let host = c.agents[0].host.clone();
    let out = host.run(
        &c.bins.fixture,
        [
            "save-busybox",
            "--output",
            &archive_s,
            "--image",
            "offline/busybox:1",
        ],
    )?;
    check_output(&out, "shoal-fixture save-busybox")?;
    let data_dir = c.agents[0].data_dir.to_string_lossy().into_owned();
    let out = host.run(
        &c.bins.agent,
        ["load", "--data-dir", &data_dir, "--input", &archive_s],
    )?;
    check_output(&out, "shoal-agent load")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        stdout.contains("docker.io/offline/busybox:1"),
        "load did not report the normalised name: {stdout}"
    );
    // docker.io is unreachable from the test hosts: the agent must fall back to the loaded copy.
    c.ctl_ok([
        "service",
        "create",
        "--name",
        "offline",
        "--replicas",
        "2",
        "offline/busybox:1",
        "sleep",
        "3600",
    ])?;
    c.wait_running("offline", 2)?;
    c.ctl_ok(["service", "rm", "offline"])?;
    c.shutdown()
}
