//! The load balancer in real namespaces: VIPs, published ports and the bridge's own table
//! (root, `ip` and `nft`; skipped with a reason otherwise).

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vip_connections_are_spread_over_running_backends_only() {
    if !can_run_kernel_tests() {
        return;
    }
    let fabric = TestNs::new("fab");
    let task = TestNs::new("task");
    let backends: Vec<TestNs> = (1..=3).map(|i| TestNs::new(&format!("be{i}"))).collect();
    let mut servers = Vec::new();
    bridge(&fabric, "br0");
    plug(&fabric, "br0", "vtask", &task, "eth0", "10.1.0.2/24");
    for (i, be) in backends.iter().enumerate() {
        let addr = format!("10.1.0.{}/24", 11 + i);
        plug(&fabric, "br0", &format!("vbe{i}"), be, "eth0", &addr);
        servers.push(serve_name(be, 80, &format!("be{}", i + 1)).await);
    }
    // The task serves too: reaching its own service's VIP must work (hairpin).
    servers.push(serve_name(&task, 80, "self").await);

    let vip = ip("10.1.0.100");
    let self_vip = ip("10.1.0.101");
    let all = vec![ip("10.1.0.11"), ip("10.1.0.12"), ip("10.1.0.13")];
    let vips = |backends: Vec<Ipv4Addr>| {
        vec![
            Vip {
                service_id: "web".into(),
                vip,
                backends,
            },
            Vip {
                service_id: "me".into(),
                vip: self_vip,
                backends: vec![ip("10.1.0.2")],
            },
        ]
    };
    apply_vip("task1", &task.path(), &vips(all.clone()))
        .await
        .expect("apply VIP rules");
    let seen = tally(&task, SocketAddrV4::new(vip, 80), 30).await;
    assert_eq!(keys(&seen), ["be1", "be2", "be3"], "{seen:?}");
    let seen = tally(&task, SocketAddrV4::new(self_vip, 80), 3).await;
    assert_eq!(keys(&seen), ["self"], "{seen:?}");

    // be3 stops: it leaves the rotation at once.
    apply_vip("task1", &task.path(), &vips(all[..2].to_vec()))
        .await
        .expect("apply VIP rules without be3");
    let seen = tally(&task, SocketAddrV4::new(vip, 80), 30).await;
    assert_eq!(keys(&seen), ["be1", "be2"], "{seen:?}");

    // No running task: refused, not hanging.
    apply_vip("task1", &task.path(), &vips(Vec::new()))
        .await
        .expect("apply VIP rules with no backend");
    let seen = tally(&task, SocketAddrV4::new(vip, 80), 3).await;
    assert_eq!(keys(&seen), ["refused"], "{seen:?}");

    // Empty set: the table is gone.
    apply_vip("task1", &task.path(), &[])
        .await
        .expect("remove VIP rules");
    let out = task.exec("nft", &["list", "tables"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(VIP_TABLE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_ports_reach_backends_from_outside_and_from_the_host_itself() {
    if !can_run_kernel_tests() {
        return;
    }
    // host: ingress bridge with the node's ingress address, a local bridge with a host-mode task,
    // and an uplink to a client.
    let host = TestNs::new("host");
    let client = TestNs::new("cli");
    let be1 = TestNs::new("ing1");
    let be2 = TestNs::new("ing2");
    let local_task = TestNs::new("loc");
    let ingress_bridge = "sbr1a2b3c4d";
    bridge(&host, ingress_bridge);
    host.ip(&["addr", "add", "10.0.0.2/16", "dev", ingress_bridge]);
    plug(&host, ingress_bridge, "ving1", &be1, "eth0", "10.0.0.5/16");
    plug(&host, ingress_bridge, "ving2", &be2, "eth0", "10.0.0.6/16");
    hairpin(&host, "ving1");
    hairpin(&host, "ving2");
    let _s1 = serve_name(&be1, 80, "ing1").await;
    let _s2 = serve_name(&be2, 80, "ing2").await;
    let _u1 = serve_name_udp(&be1, 53, "ing1").await;
    let _u2 = serve_name_udp(&be2, 53, "ing2").await;
    bridge(&host, "shl0");
    host.ip(&["addr", "add", "10.88.0.1/16", "dev", "shl0"]);
    plug(&host, "shl0", "vloc", &local_task, "eth0", "10.88.0.5/16");
    hairpin(&host, "vloc");
    local_task.ip(&["route", "add", "default", "via", "10.88.0.1"]);
    let _s3 = serve_name(&local_task, 90, "hosttask").await;
    host.ip(&[
        "link",
        "add",
        "up0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &client.name,
    ]);
    host.ip(&["addr", "add", "10.99.0.1/24", "dev", "up0"]);
    host.ip(&["link", "set", "up0", "up"]);
    client.ip(&["addr", "add", "10.99.0.2/24", "dev", "eth0"]);
    client.ip(&["link", "set", "eth0", "up"]);

    let view = NetworkView {
        version: 0,
        network: Some(network("1a2b3c4d5e", "ingress", true)),
        endpoints: vec![
            endpoint("t1", "s1", "10.0.0.5", true),
            endpoint("t2", "s1", "10.0.0.6", true),
            endpoint("", "", "10.0.0.2", true),
        ],
        services: vec![
            ServiceView {
                ports: vec![
                    PortConfig {
                        protocol: "tcp".into(),
                        target_port: 80,
                        published_port: 8080,
                        publish_mode: "ingress".into(),
                        ..Default::default()
                    },
                    PortConfig {
                        protocol: "udp".into(),
                        target_port: 53,
                        published_port: 5353,
                        publish_mode: "ingress".into(),
                        ..Default::default()
                    },
                ],
                ..service("s1", "web", "vip", "10.0.0.3")
            },
            ServiceView {
                ports: vec![PortConfig {
                    protocol: "tcp".into(),
                    target_port: 80,
                    published_port: 8081,
                    publish_mode: "ingress".into(),
                    ..Default::default()
                }],
                ..service("s2", "down", "vip", "10.0.0.4")
            },
        ],
    };
    let mut rules = ingress_port_rules(&view);
    rules.extend(host_port_rules(&[HostPort {
        protocol: Protocol::Tcp,
        published_port: 9090,
        addr: ip("10.88.0.5"),
        target_port: 90,
    }]));
    // As the agent does: the loopback guard first; every path below must work behind it.
    use crate::network::guard;
    guard::apply(
        Some(host.path()),
        guard::ruleset(&guard::Guard::default(), true),
    )
    .await
    .expect("apply the exposure rules");
    apply_ports(Some(&host.path()), Some(ingress_bridge), &rules)
        .await
        .expect("apply published ports");
    assert_eq!(host.sysctl("net/ipv4/conf/all/route_localnet"), "1");

    let at = |a: &str, p: u16| SocketAddrV4::new(ip(a), p);
    // From another machine: balanced over both ingress backends.
    let seen = tally(&client, at("10.99.0.1", 8080), 20).await;
    assert_eq!(keys(&seen), ["ing1", "ing2"], "{seen:?}");
    // From the host itself: loopback, the uplink address, the ingress address.
    for to in [
        at("127.0.0.1", 8080),
        at("10.99.0.1", 8080),
        at("10.0.0.2", 8080),
    ] {
        let seen = tally(&host, to, 4).await;
        assert_eq!(keys(&seen), ["ing1", "ing2"], "{to}: {seen:?}");
    }
    // UDP too, from outside and from the host.
    let seen = tally_udp(&client, at("10.99.0.1", 5353), 20).await;
    assert_eq!(keys(&seen), ["ing1", "ing2"], "{seen:?}");
    let seen = tally_udp(&host, at("127.0.0.1", 5353), 10).await;
    assert_eq!(keys(&seen), ["ing1", "ing2"], "{seen:?}");
    // A service with no running task: refused.
    assert_eq!(
        keys(&tally(&client, at("10.99.0.1", 8081), 2).await),
        ["refused"]
    );
    assert_eq!(
        keys(&tally(&host, at("127.0.0.1", 8081), 2).await),
        ["refused"]
    );
    // Host mode: the local task, from outside and from the host.
    assert_eq!(
        keys(&tally(&client, at("10.99.0.1", 9090), 2).await),
        ["hosttask"]
    );
    assert_eq!(
        keys(&tally(&host, at("127.0.0.1", 9090), 2).await),
        ["hosttask"]
    );
    // Hairpin: the tasks reach their own published ports through the host.
    for to in [at("10.88.0.1", 9090), at("10.99.0.1", 9090)] {
        assert_eq!(keys(&tally(&local_task, to, 2).await), ["hosttask"], "{to}");
    }
    let seen = tally(&local_task, at("10.99.0.1", 8080), 10).await;
    assert_eq!(keys(&seen), ["ing1", "ing2"], "{seen:?}");
    // An ingress backend reaching the routing mesh through the node, itself included.
    let seen = tally(&be1, at("10.0.0.2", 8080), 10).await;
    assert_eq!(keys(&seen), ["ing1", "ing2"], "{seen:?}");

    // A backend stops: it leaves the rotation.
    let view = NetworkView {
        endpoints: vec![
            endpoint("t1", "s1", "10.0.0.5", true),
            endpoint("t2", "s1", "10.0.0.6", false),
        ],
        ..view
    };
    apply_ports(
        Some(&host.path()),
        Some(ingress_bridge),
        &ingress_port_rules(&view),
    )
    .await
    .expect("re-apply published ports");
    assert_eq!(
        keys(&tally(&client, at("10.99.0.1", 8080), 10).await),
        ["ing1"]
    );
    // The host-mode port went with the rules not given any more.
    assert_eq!(
        keys(&tally(&client, at("10.99.0.1", 9090), 1).await),
        ["refused"]
    );

    cleanup(Some(&host.path())).await.expect("cleanup");
    cleanup(Some(&host.path()))
        .await
        .expect("cleanup is idempotent");
    assert_eq!(host.sysctl("net/ipv4/conf/all/route_localnet"), "0");
    let out = host.exec("nft", &["list", "tables"]);
    let tables = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !tables.contains(PORTS_TABLE) && !tables.contains(VIP_TABLE),
        "{tables}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_masquerade_table_is_left_alone() {
    if !can_run_kernel_tests() {
        return;
    }
    let host = TestNs::new("keep");
    let out = host.exec("nft", &["add", "table", "ip", "shoal"]);
    assert!(out.status.success());
    apply_ports(
        Some(&host.path()),
        None,
        &host_port_rules(&[HostPort {
            protocol: Protocol::Udp,
            published_port: 5000,
            addr: ip("10.88.0.9"),
            target_port: 5000,
        }]),
    )
    .await
    .expect("apply");
    cleanup(Some(&host.path())).await.expect("cleanup");
    let out = host.exec("nft", &["list", "tables"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "table ip shoal"
    );
}
