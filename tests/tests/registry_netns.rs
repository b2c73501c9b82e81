//! A registry started inside a network namespace through a command prefix.

use std::path::Path;
use std::process::Command;

use shoal_tests::registry::{self, Registry, RegistryOptions};

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn registry_runs_inside_a_namespace() {
    if !registry::available()
        || !Path::new("/bin/busybox").is_file()
        || !nix::unistd::Uid::effective().is_root()
    {
        eprintln!(
            "skipping: needs root, {} and /bin/busybox",
            registry::REGISTRY_BIN
        );
        return;
    }
    let ns = format!("shoal-regtest-{}", std::process::id());
    if !ip(&["netns", "add", &ns]) {
        eprintln!("skipping: cannot create a network namespace");
        return;
    }
    let data = tempfile::tempdir().expect("tempdir");
    let result = (|| {
        anyhow::ensure!(
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]),
            "lo up"
        );
        let reg = Registry::start_with(RegistryOptions {
            addr: Some("127.0.0.1:5000".to_string()),
            data_dir: Some(data.path().to_path_buf()),
            command_prefix: ["ip", "netns", "exec", &ns].map(String::from).to_vec(),
            ..RegistryOptions::default()
        })?;
        anyhow::ensure!(reg.addr() == "127.0.0.1:5000", "addr");
        drop(reg);
        Ok(())
    })();
    ip(&["netns", "del", &ns]);
    result.expect("registry in namespace");
    // The caller's data dir outlives the registry.
    assert!(data.path().is_dir());
}
