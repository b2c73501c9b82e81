//! Tests of the exposure rules: the ruleset text, then crafted frames against real nftables in
//! namespaces built here (needs root, `nft` and `ip`; skipped otherwise).

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use shoal_proto::v1::{EndpointView, Network, NetworkSpec, NetworkView};
use shoal_tests::capture::{self, UdpFrame};

use super::super::lb::tests::{can_run_kernel_tests, TestNs};
use super::*;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test address literal")
}

fn view(id: &str, vni: u32, encrypted: bool, nodes: &[(&str, &str)]) -> NetworkView {
    NetworkView {
        version: 0,
        network: Some(Network {
            id: id.into(),
            vni,
            spec: Some(NetworkSpec {
                driver: "overlay".into(),
                encrypted,
                ..Default::default()
            }),
            ..Default::default()
        }),
        endpoints: nodes
            .iter()
            .enumerate()
            .map(|(i, (node, addr))| EndpointView {
                task_id: format!("t{i}"),
                node_id: node.to_string(),
                node_addr: addr.to_string(),
                addr: format!("10.1.0.{}", i + 2),
                ..Default::default()
            })
            .collect(),
        services: Vec::new(),
    }
}

#[test]
fn peers_come_from_plain_overlays_and_vnis_from_encrypted_ones() {
    let mut bridge = view("b", 0, false, &[("x", "192.0.2.9")]);
    if let Some(spec) = bridge.network.as_mut().and_then(|n| n.spec.as_mut()) {
        spec.driver = "bridge".into();
    }
    let views = vec![
        view(
            "plain",
            4097,
            false,
            &[("me", "192.0.2.1"), ("b", "192.0.2.2"), ("c", "")],
        ),
        view("ingress", 4096, false, &[("d", "192.0.2.4")]),
        view(
            "secret",
            4098,
            true,
            &[("b", "10.255.0.2"), ("e", "10.255.0.5")],
        ),
        bridge,
    ];
    let mesh = MeshIf {
        ifname: "swgme".into(),
        addr: ip("10.255.0.1"),
    };
    let guard = Guard::from_views(&views, "me", Some(mesh.clone()));
    assert_eq!(
        guard.vxlan_peers.iter().copied().collect::<Vec<_>>(),
        vec![ip("192.0.2.2"), ip("192.0.2.4")]
    );
    assert_eq!(
        guard.encrypted_vnis.iter().copied().collect::<Vec<_>>(),
        [4098]
    );
    assert_eq!(guard.mesh, Some(mesh));
    assert_eq!(Guard::from_views(&[], "me", None), Guard::default());
}

#[test]
fn ruleset_drops_outside_loopback_and_vxlan_from_strangers() {
    let guard = Guard {
        vxlan_peers: [ip("192.0.2.2"), ip("192.0.2.4")].into(),
        encrypted_vnis: [4098].into(),
        mesh: Some(MeshIf {
            ifname: "swgme".into(),
            addr: ip("10.255.0.1"),
        }),
    };
    let rules = ruleset(&guard, true);
    let order = [
        "add table ip shoal_guard\ndelete table ip shoal_guard\nadd table ip shoal_guard\n",
        "type filter hook prerouting priority -310;",
        "add rule ip shoal_guard loopback iifname != \"lo\" ip daddr 127.0.0.0/8 counter name \"loopback_dropped\" drop",
        "add rule ip shoal_guard loopback iifname != \"lo\" ip saddr 127.0.0.0/8 counter name \"loopback_dropped\" drop",
        "add rule ip shoal_guard input udp dport 4789 jump vxlan",
        "add rule ip shoal_guard vxlan iifname \"swgme\" accept",
        "add rule ip shoal_guard vxlan ip daddr 10.255.0.1 counter name \"vxlan_dropped\" drop",
        "add rule ip shoal_guard vxlan @th,96,24 @encrypted_vnis counter name \"vxlan_dropped\" drop",
        "add rule ip shoal_guard vxlan ip saddr @vxlan_peers accept",
        "add rule ip shoal_guard vxlan counter name \"vxlan_dropped\" drop",
        "add element ip shoal_guard vxlan_peers { 192.0.2.2, 192.0.2.4 }",
        "add element ip shoal_guard encrypted_vnis { 4098 }",
    ];
    let mut at = 0;
    for rule in order {
        let found = rules[at..]
            .find(rule)
            .unwrap_or_else(|| panic!("{rule:?} missing (or out of order) in:\n{rules}"));
        at += found + rule.len();
    }

    // An update keeps the table (and its counters); nothing known: everything to 4789 dropped.
    let rules = ruleset(&Guard::default(), false);
    assert!(!rules.contains("delete table"), "{rules}");
    assert!(!rules.contains("add element"), "{rules}");
    assert!(!rules.contains("swg"), "{rules}");
    assert!(
        rules.contains("flush set ip shoal_guard vxlan_peers"),
        "{rules}"
    );
    assert!(
        rules.contains("flush chain ip shoal_guard vxlan"),
        "{rules}"
    );
}

#[test]
fn counters_are_read_from_the_listing() {
    let listing = "table ip shoal_guard {\n\tcounter loopback_dropped {\n\t\tpackets 3 bytes 126\n\t}\n\n\tcounter vxlan_dropped {\n\t\tpackets 0 bytes 0\n\t}\n}\n";
    assert_eq!(counted(listing, LOOPBACK_COUNTER), Some(3));
    assert_eq!(counted(listing, VXLAN_COUNTER), Some(0));
    assert_eq!(counted(listing, "other"), None);
}

// ---------------------------------------------------------------------------------------------
// Crafted frames through real nftables
// ---------------------------------------------------------------------------------------------

/// A UDP socket bound to `addr:port` inside `ns`.
async fn listen_udp(ns: &TestNs, addr: Ipv4Addr, port: u16) -> UdpSocket {
    let socket = netns::on_thread(Some(ns.path()), "test-udp-listen", move || {
        UdpSocket::bind((addr, port))
    })
    .await
    .expect("enter netns")
    .expect("bind udp listener");
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout");
    socket
}

/// Whether `socket` receives `payload` within `wait`.
fn receives(socket: &UdpSocket, payload: &[u8], wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            if &buf[..n] == payload {
                return true;
            }
        }
    }
    false
}

/// The packets counted by `counter` in `ns`'s guard table (0 without the table).
fn guard_count(ns: &TestNs, counter: &str) -> u64 {
    let out = ns.exec("nft", &["list", "table", "ip", TABLE]);
    counted(&String::from_utf8_lossy(&out.stdout), counter).unwrap_or(0)
}

/// Waits until `counter` in `ns` reaches `n` (the frame was seen and dropped).
fn wait_count(ns: &TestNs, counter: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while guard_count(ns, counter) < n {
        assert!(Instant::now() < deadline, "{counter} never reached {n}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mac(ns: &TestNs, ifname: &str) -> capture::Mac {
    let out = ns.exec("cat", &[&format!("/sys/class/net/{ifname}/address")]);
    if out.status.success() && !out.stdout.is_empty() {
        return capture::parse_mac(&String::from_utf8_lossy(&out.stdout)).expect("MAC");
    }
    // sysfs shows the caller's namespace: ask ip instead.
    let out = ns.exec("ip", &["-o", "link", "show", ifname]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let word = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {text:?}"));
    capture::parse_mac(word).expect("MAC")
}

/// A host with an uplink `up0` (10.99.0.1) to a neighbour's `eth0` (10.99.0.2).
fn host_and_neighbour() -> (TestNs, TestNs) {
    let host = TestNs::new("gh");
    let nb = TestNs::new("gn");
    host.ip(&[
        "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", &nb.name,
    ]);
    host.ip(&["addr", "add", "10.99.0.1/24", "dev", "up0"]);
    host.ip(&["link", "set", "up0", "up"]);
    nb.ip(&["addr", "add", "10.99.0.2/24", "dev", "eth0"]);
    nb.ip(&["link", "set", "eth0", "up"]);
    (host, nb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbour_cannot_reach_the_hosts_loopback() {
    if !can_run_kernel_tests() {
        return;
    }
    let (host, nb) = host_and_neighbour();
    // What published ports turn on.
    host.exec(
        "sh",
        &["-c", "echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet"],
    );
    assert_eq!(host.sysctl("net/ipv4/conf/all/route_localnet"), "1");
    let local = listen_udp(&host, Ipv4Addr::LOCALHOST, 7070).await;
    let frame = UdpFrame {
        dst_mac: mac(&host, "up0"),
        src_mac: mac(&nb, "eth0"),
        src: ip("10.99.0.2"),
        dst: Ipv4Addr::LOCALHOST,
        sport: 40000,
        dport: 7070,
    };
    let send = |payload: &[u8]| {
        capture::send_frame(&nb.path(), "eth0", &frame.build(payload)).expect("send frame");
    };
    // Without the guard the door is open: that is what the frame proves.
    send(b"before");
    assert!(
        receives(&local, b"before", Duration::from_secs(3)),
        "the crafted frame did not reach 127.0.0.1 even without the guard: the test proves nothing"
    );

    apply(Some(host.path()), ruleset(&Guard::default(), true))
        .await
        .expect("apply guard");
    send(b"after");
    wait_count(&host, LOOPBACK_COUNTER, 1);
    assert!(!receives(&local, b"after", Duration::from_millis(300)));
    // The same to the host's own address still arrives (only loopback is closed).
    let open = listen_udp(&host, ip("10.99.0.1"), 7071).await;
    let frame = UdpFrame {
        dst: ip("10.99.0.1"),
        dport: 7071,
        ..frame
    };
    capture::send_frame(&nb.path(), "eth0", &frame.build(b"open")).expect("send frame");
    assert!(receives(&open, b"open", Duration::from_secs(3)));

    apply(Some(host.path()), remove_ruleset())
        .await
        .expect("remove");
    apply(Some(host.path()), remove_ruleset())
        .await
        .expect("remove is idempotent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vxlan_is_taken_from_cluster_peers_only_and_encrypted_vnis_only_through_the_mesh() {
    if !can_run_kernel_tests() {
        return;
    }
    let (host, nb) = host_and_neighbour();
    let task = TestNs::new("gt");
    // An overlay as the agent builds it: bridge + VXLAN device (VNI 4242), a task on the bridge.
    host.ip(&["link", "add", "sbrg", "type", "bridge"]);
    host.ip(&["link", "set", "sbrg", "up"]);
    host.ip(&[
        "link",
        "add",
        "svxg",
        "type",
        "vxlan",
        "id",
        "4242",
        "dstport",
        "4789",
        "nolearning",
    ]);
    host.ip(&["link", "set", "svxg", "master", "sbrg", "up"]);
    host.ip(&[
        "link", "add", "vog", "type", "veth", "peer", "name", "eth0", "netns", &task.name,
    ]);
    host.ip(&["link", "set", "vog", "master", "sbrg", "up"]);
    task.ip(&["link", "set", "eth0", "address", "02:42:0a:01:00:05"]);
    task.ip(&["addr", "add", "10.1.0.5/24", "dev", "eth0"]);
    task.ip(&["link", "set", "eth0", "up"]);
    let listener = listen_udp(&task, ip("10.1.0.5"), 8080).await;
    let inner = UdpFrame {
        dst_mac: [0x02, 0x42, 10, 1, 0, 5],
        src_mac: [0x02, 0x42, 10, 1, 0, 66],
        src: ip("10.1.0.66"),
        dst: ip("10.1.0.5"),
        sport: 40000,
        dport: 8080,
    };
    let outer = UdpFrame {
        dst_mac: mac(&host, "up0"),
        src_mac: mac(&nb, "eth0"),
        src: ip("10.99.0.2"),
        dst: ip("10.99.0.1"),
        sport: 50000,
        dport: 4789,
    };
    let inject = |vni: u32, payload: &[u8]| {
        let frame = outer.build(&capture::vxlan_payload(vni, &inner.build(payload)));
        capture::send_frame(&nb.path(), "eth0", &frame).expect("send frame");
    };
    // The bridge forwards to the task only once it knows where the MAC is.
    let bridge_ready = Instant::now() + Duration::from_secs(5);
    loop {
        inject(4242, b"before");
        if receives(&listener, b"before", Duration::from_millis(200)) {
            break;
        }
        assert!(
            Instant::now() < bridge_ready,
            "the crafted VXLAN frame did not reach the task even without the guard: the test proves nothing"
        );
    }

    // A stranger: dropped and counted.
    apply(Some(host.path()), ruleset(&Guard::default(), true))
        .await
        .expect("apply guard");
    inject(4242, b"stranger");
    wait_count(&host, VXLAN_COUNTER, 1);
    assert!(!receives(
        &listener,
        b"stranger",
        Duration::from_millis(300)
    ));

    // The neighbour joins the cluster: accepted (and the counter kept its count).
    let mut guard = Guard {
        vxlan_peers: [ip("10.99.0.2")].into(),
        ..Guard::default()
    };
    apply(Some(host.path()), ruleset(&guard, false))
        .await
        .expect("update guard");
    assert_eq!(guard_count(&host, VXLAN_COUNTER), 1);
    inject(4242, b"peer");
    assert!(receives(&listener, b"peer", Duration::from_secs(3)));

    // The network is encrypted: even a peer may not send it in clear.
    guard.encrypted_vnis.insert(4242);
    apply(Some(host.path()), ruleset(&guard, false))
        .await
        .expect("update guard");
    inject(4242, b"clear");
    wait_count(&host, VXLAN_COUNTER, 2);
    assert!(!receives(&listener, b"clear", Duration::from_millis(300)));

    // Nor to the mesh address from the underlay, whatever the VNI.
    // A stand-in for the mesh device (this kernel may have no dummy links): only its name counts.
    host.ip(&["link", "add", "swgg", "type", "bridge"]);
    host.ip(&["addr", "add", "10.255.0.1/16", "dev", "swgg"]);
    host.ip(&["link", "set", "swgg", "up"]);
    guard.mesh = Some(MeshIf {
        ifname: "swgg".into(),
        addr: ip("10.255.0.1"),
    });
    guard.encrypted_vnis.clear();
    apply(Some(host.path()), ruleset(&guard, false))
        .await
        .expect("update guard");
    let frame = UdpFrame {
        dst: ip("10.255.0.1"),
        ..outer.clone()
    }
    .build(&capture::vxlan_payload(4242, &inner.build(b"mesh")));
    capture::send_frame(&nb.path(), "eth0", &frame).expect("send frame");
    wait_count(&host, VXLAN_COUNTER, 3);
    assert!(!receives(&listener, b"mesh", Duration::from_millis(300)));

    // Other UDP and TCP are none of the guard's business.
    let other = listen_udp(&host, ip("10.99.0.1"), 4790).await;
    let frame = UdpFrame {
        dport: 4790,
        ..outer
    }
    .build(b"other");
    capture::send_frame(&nb.path(), "eth0", &frame).expect("send frame");
    assert!(receives(&other, b"other", Duration::from_secs(3)));
    assert_eq!(guard_count(&host, VXLAN_COUNTER), 3);
}
