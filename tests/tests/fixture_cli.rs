//! The `shoal-fixture` binary pushes images a registry then serves.

use std::process::Command;

use shoal_tests::image_fixture;
use shoal_tests::registry::{self, Registry};

#[test]
fn push_busybox_and_demo_print_their_digests() {
    if !registry::available() {
        eprintln!("skipping: {} is not installed", registry::REGISTRY_BIN);
        return;
    }
    let reg = Registry::start().expect("start registry");
    for (command, built) in [
        (
            "push-busybox",
            image_fixture::busybox_image().expect("build"),
        ),
        ("push-demo", image_fixture::demo_image().expect("build")),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_shoal-fixture"))
            .args([command, "--registry", reg.addr(), "--image", "shoal/img:1"])
            .output()
            .expect("run shoal-fixture");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            built.manifest_digest
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_shoal-fixture"))
        .args(["push-busybox", "--registry", reg.addr()])
        .output()
        .expect("run shoal-fixture");
    assert!(!out.status.success());
}
