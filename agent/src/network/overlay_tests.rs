//! Unit tests of the cluster networks' pure parts (names, MACs, FDB, notrack rules).

use super::*;
use shoal_proto::v1::{EndpointView, Network, NetworkSpec};

#[test]
fn macs_derive_from_addresses_and_back() {
    let ip = Ipv4Addr::new(10, 1, 0, 5);
    assert_eq!(mac_of(ip), [0x02, 0x42, 10, 1, 0, 5]);
    assert_eq!(ip_of_mac(mac_of(ip)), Some(ip));
    assert_eq!(ip_of_mac([0x02, 0, 1, 2, 3, 4]), None);
}

#[test]
fn notrack_covers_overlay_bridges_and_underlay_ports_but_not_the_node() {
    let none = notrack_ruleset(&Untracked::default());
    assert!(none.contains("delete table ip shoal_overlay") && !none.contains("chain"));
    let two = notrack_ruleset(&Untracked {
        bridges: vec![
            ("sbra".into(), None),
            ("sbrb".into(), None),
            ("sbri".into(), Some(Ipv4Addr::new(10, 0, 0, 3))),
        ],
        udp_ports: vec![4789, 51820],
    });
    for rule in [
        r#"iifname { "sbra", "sbrb" } notrack"#,
        r#"iifname "sbri" ip daddr != 10.0.0.3 notrack"#,
        "udp dport { 4789, 51820 } notrack",
        "type filter hook output priority raw",
    ] {
        assert!(two.contains(rule), "{rule} missing from:\n{two}");
    }
}

#[test]
fn notrack_keeps_underlay_ports_untracked_with_no_bridge_in_the_host_namespace() {
    let ports_only = notrack_ruleset(&Untracked {
        bridges: vec![],
        udp_ports: vec![4789],
    });
    assert!(
        ports_only.contains("udp dport { 4789 } notrack"),
        "{ports_only}"
    );
    assert!(!ports_only.contains("iifname"), "{ports_only}");
}

fn overlay_view(ingress: bool) -> NetworkView {
    NetworkView {
        network: Some(Network {
            id: "n1".into(),
            spec: Some(NetworkSpec {
                driver: "overlay".into(),
                ingress,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn every_overlay_but_ingress_lives_in_the_overlay_namespace() {
    assert!(namespaced(&overlay_view(false)));
    assert!(!namespaced(&overlay_view(true)));
}

#[test]
fn the_overlay_namespace_is_not_in_the_task_namespaces_directory() {
    let ns = overlay_netns_beside(Path::new("/var/lib/shoal/network/netns"));
    assert_eq!(
        ns,
        PathBuf::from("/var/lib/shoal/network/netns-overlay/overlays")
    );
    assert!(!ns.starts_with("/var/lib/shoal/network/netns/"));
}

#[test]
fn names_fit_linux_interface_names() {
    let id = "k3j4h5g6f7d8s9a0";
    assert_eq!(bridge_name(id), "sbrk3j4h5g6");
    assert_eq!(vxlan_name(id), "svxk3j4h5g6");
    let (host, peer) = overlay_veth("task0123456789", id);
    assert!(host.len() <= 15 && peer.len() <= 15, "{host} {peer}");
    assert_ne!(overlay_veth("task0123456789", "other").0, host);
}

#[test]
fn remote_endpoints_leave_out_this_node_and_unknown_addresses() {
    let ep = |task: &str, node: &str, node_addr: &str, addr: &str| EndpointView {
        task_id: task.into(),
        node_id: node.into(),
        node_addr: node_addr.into(),
        addr: addr.into(),
        ..Default::default()
    };
    let view = NetworkView {
        version: 0,
        network: Some(Network {
            id: "n1".into(),
            spec: Some(NetworkSpec {
                driver: "overlay".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        endpoints: vec![
            ep("t1", "me", "192.168.1.1", "10.1.0.2"),
            ep("t2", "b", "192.168.1.2", "10.1.0.3"),
            ep("", "c", "192.168.1.3", "10.1.0.4"),
            ep("t4", "d", "", "10.1.0.5"),
        ],
        services: Vec::new(),
    };
    let fdb = remote_endpoints(&view, "me");
    assert_eq!(
        fdb.into_iter().collect::<Vec<_>>(),
        vec![
            (Ipv4Addr::new(10, 1, 0, 3), Ipv4Addr::new(192, 168, 1, 2)),
            (Ipv4Addr::new(10, 1, 0, 4), Ipv4Addr::new(192, 168, 1, 3)),
        ]
    );
}
