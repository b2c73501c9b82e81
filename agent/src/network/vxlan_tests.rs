//! An overlay's devices in real namespaces (root and `ip`; skipped with a reason otherwise).

use super::*;
use crate::network::lb::tests::{bridge, can_run_kernel_tests, network, plug, TestNs};

/// The links of `ns`, one line each (`ip -o link show`).
fn links(ns: &TestNs) -> String {
    let out = ns.exec("ip", &["-o", "link", "show"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The line of link `name` in `links`, if there is one.
fn line_of<'a>(links: &'a str, name: &str) -> Option<&'a str> {
    links.lines().find(|l| {
        l.split_whitespace()
            .nth(1)
            .and_then(|n| n.trim_end_matches(':').split('@').next())
            == Some(name)
    })
}

/// An agent that kept an overlay in the host namespace (the layout before the overlay
/// namespace) is upgraded: the first program moves the task's veth host end, not just the
/// devices, so the running task stays on the overlay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_layout_overlay_moves_with_its_task_links_into_the_overlay_namespace() {
    if !can_run_kernel_tests() {
        return;
    }
    if std::process::Command::new("busybox")
        .arg("true")
        .output()
        .is_err()
    {
        eprintln!("skipped: busybox (for ping) is not installed");
        return;
    }
    let host = TestNs::new("vxh");
    let overlays = TestNs::new("vxo");
    let task = TestNs::new("vxt");
    let newer = TestNs::new("vxn");
    let mut net = network("4f1c2d3e4a5b", "front", false);
    net.vni = 4242;
    let (br, vx) = (bridge_name(&net.id), vxlan_name(&net.id));
    let view = NetworkView {
        network: Some(net.clone()),
        ..Default::default()
    };

    // The old layout, as an older agent left it: bridge, VXLAN device and the task's veth host
    // end in the host namespace.
    bridge(&host, &br);
    host.ip(&[
        "link",
        "add",
        &vx,
        "type",
        "vxlan",
        "id",
        "4242",
        "dstport",
        "4789",
        "nolearning",
        "proxy",
    ]);
    host.ip(&["link", "set", &vx, "master", &br, "up"]);
    plug(&host, &br, "vo0ld0001", &task, "eth0", "10.9.0.2/24");

    let program_in_overlays = |programmed| {
        program(
            Some(host.path()),
            Some(overlays.path()),
            "node1",
            &view,
            None,
            programmed,
        )
    };
    let programmed = program_in_overlays(None)
        .await
        .expect("program the overlay in the overlay namespace");
    assert_eq!(programmed.devices_netns(), Some(overlays.path().as_path()));

    // Nothing of the overlay is left in the host namespace.
    let host_links = links(&host);
    for name in [br.as_str(), vx.as_str(), "vo0ld0001"] {
        assert!(
            line_of(&host_links, name).is_none(),
            "{name} left: {host_links}"
        );
    }
    // Everything is in the overlay namespace, the task's link a port of the new bridge, up.
    let ovl_links = links(&overlays);
    let port = line_of(&ovl_links, "vo0ld0001").unwrap_or_else(|| panic!("{ovl_links}"));
    assert!(port.contains(&format!("master {br}")), "{port}");
    assert!(port.contains("state UP"), "{port}");
    let vxlan = line_of(&ovl_links, &vx).unwrap_or_else(|| panic!("{ovl_links}"));
    assert!(vxlan.contains(&format!("master {br}")), "{vxlan}");

    // The task still reaches a task plugged in the new layout, over the new bridge.
    plug(&overlays, &br, "vonew0001", &newer, "eth0", "10.9.0.3/24");
    let ping = task.exec("busybox", &["ping", "-c", "3", "-w", "10", "10.9.0.3"]);
    assert!(
        ping.status.success(),
        "{}{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr)
    );

    // A second program (the agent's next apply) changes nothing and keeps the port.
    program_in_overlays(Some(programmed))
        .await
        .expect("program again");
    let ovl_links = links(&overlays);
    let port = line_of(&ovl_links, "vo0ld0001").unwrap_or_else(|| panic!("{ovl_links}"));
    assert!(port.contains(&format!("master {br}")), "{port}");
}
