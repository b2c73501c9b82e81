//! Networks and the addresses, VIPs and ports allocated on them.

use super::*;

#[test]
fn networks_refuse_duplicate_names_overlapping_subnets_and_vnis() {
    let (_dir, store) = open();
    store
        .apply(
            1,
            &req(vec![Action::CreateNetwork(network(
                "n1",
                "front",
                "10.1.0.0/24",
                4097,
            ))]),
        )
        .expect("create");
    assert_eq!(
        store.read(|s| s.network_by_name("front").map(|n| n.id.clone())),
        Some("n1".to_string())
    );
    for (index, (net, what)) in [
        (network("n2", "front", "10.2.0.0/24", 4098), "name"),
        (network("n2", "back", "10.1.0.128/25", 4098), "overlaps"),
        (network("n2", "back", "10.0.0.0/8", 4098), "overlaps"),
        (network("n2", "back", "10.2.0.0/24", 4097), "VXLAN id"),
    ]
    .into_iter()
    .enumerate()
    {
        let err = store
            .apply(2 + index as u64, &req(vec![Action::CreateNetwork(net)]))
            .expect_err("refused");
        assert!(
            err.to_string().contains(what),
            "{err} should mention {what}"
        );
    }
    store
        .apply(
            9,
            &req(vec![Action::CreateNetwork(network(
                "n2",
                "back",
                "10.2.0.0/24",
                4098,
            ))]),
        )
        .expect("a distinct network is fine");
    assert_eq!(store.read(|s| s.networks().count()), 2);
}

#[test]
fn task_addresses_are_unique_while_live_and_free_once_ended() {
    let (_dir, store) = open();
    store
        .apply(
            1,
            &req(vec![
                Action::CreateNetwork(network("n1", "front", "10.1.0.0/24", 4097)),
                Action::CreateTask(task("t1", "s1", TaskState::TaskNew)),
                Action::CreateTask(task("t2", "s1", TaskState::TaskNew)),
            ]),
        )
        .expect("setup");
    store
        .apply(2, &req(vec![allocate("t1", "n1", "10.1.0.2/24")]))
        .expect("allocate t1");
    assert_eq!(state_of(&store, "t1"), TaskState::TaskPending);
    assert_eq!(
        store.read(|s| s.address_holder("n1", "10.1.0.2").cloned()),
        Some((Kind::Task, "t1".to_string()))
    );
    let err = store
        .apply(3, &req(vec![allocate("t2", "n1", "10.1.0.2/24")]))
        .expect_err("a held address is refused");
    assert!(err.to_string().contains("already in use"), "{err}");
    assert_eq!(
        state_of(&store, "t2"),
        TaskState::TaskNew,
        "nothing applied"
    );

    // A second allocation of an already allocated task is stale and ignored.
    store
        .apply(4, &req(vec![allocate("t1", "n1", "10.1.0.9/24")]))
        .expect("stale allocation ignored");
    assert!(store.read(|s| s.address_holder("n1", "10.1.0.9").is_none()));

    // The network cannot go while a live task holds an address on it.
    let err = store
        .apply(5, &req(vec![Action::RemoveNetwork("n1".into())]))
        .expect_err("in use");
    assert!(err.to_string().contains("t1"), "{err}");

    // Once t1 has ended its address is free for t2.
    store
        .apply(6, &req(vec![status("t1", TaskState::TaskShutdown)]))
        .expect("t1 ends");
    assert!(store.read(|s| s.address_holder("n1", "10.1.0.2").is_none()));
    store
        .apply(7, &req(vec![allocate("t2", "n1", "10.1.0.2/24")]))
        .expect("reused after the end");
    assert_eq!(
        store.read(|s| s.address_holder("n1", "10.1.0.2").cloned()),
        Some((Kind::Task, "t2".to_string()))
    );
    // Removing the task releases the address too.
    store
        .apply(8, &req(vec![Action::RemoveTask("t2".into())]))
        .expect("remove");
    assert_eq!(store.read(|s| s.addresses_in_use("n1").count()), 0);
}

#[test]
fn network_in_use_by_a_service_is_not_removed_and_names_it() {
    let (_dir, store) = open();
    let mut svc = service("s1", "web");
    if let Some(spec) = svc.spec.as_mut() {
        spec.task = Some(TaskSpec {
            networks: vec![NetworkAttachmentConfig {
                target: "n1".into(),
                aliases: Vec::new(),
            }],
            ..TaskSpec::default()
        });
    }
    store
        .apply(
            1,
            &req(vec![
                Action::CreateNetwork(network("n1", "front", "10.1.0.0/24", 4097)),
                Action::CreateService(svc),
            ]),
        )
        .expect("setup");
    let err = store
        .apply(2, &req(vec![Action::RemoveNetwork("n1".into())]))
        .expect_err("in use");
    assert!(err.to_string().contains("web"), "{err}");
    store
        .apply(
            3,
            &req(vec![
                Action::RemoveService("s1".into()),
                Action::RemoveNetwork("n1".into()),
            ]),
        )
        .expect("free once the service is gone");
    assert!(store.read(|s| s.network("n1").is_none()));
}

#[test]
fn service_vips_and_ingress_ports_are_unique() {
    let (_dir, store) = open();
    let endpoint = |vip: &str, port: u32| Endpoint {
        spec: None,
        ports: vec![PortConfig {
            protocol: "tcp".into(),
            target_port: 80,
            published_port: port,
            publish_mode: "ingress".into(),
            ..PortConfig::default()
        }],
        virtual_ips: vec![VirtualIp {
            network_id: "n1".into(),
            addr: vip.into(),
        }],
    };
    let set = |id: &str, vip: &str, port: u32| {
        Action::ServiceEndpoint(ServiceEndpointUpdate {
            service_id: id.into(),
            spec_version: 1,
            endpoint: Some(endpoint(vip, port)),
        })
    };
    store
        .apply(
            1,
            &req(vec![
                Action::CreateNetwork(network("n1", "front", "10.1.0.0/24", 4097)),
                Action::CreateService(service("s1", "web")),
                Action::CreateService(service("s2", "api")),
            ]),
        )
        .expect("setup");
    store
        .apply(2, &req(vec![set("s1", "10.1.0.2/24", 8080)]))
        .expect("s1 endpoint");
    assert_eq!(
        store.read(|s| s.ingress_port_holder("tcp", 8080).map(str::to_string)),
        Some("s1".into())
    );
    let err = store
        .apply(3, &req(vec![set("s2", "10.1.0.2/24", 8081)]))
        .expect_err("same VIP");
    assert!(err.to_string().contains("already in use"), "{err}");
    let err = store
        .apply(4, &req(vec![set("s2", "10.1.0.3/24", 8080)]))
        .expect_err("same port");
    assert!(err.to_string().contains("web"), "{err}");
    // A stale spec version is ignored.
    store
        .apply(
            5,
            &req(vec![Action::ServiceEndpoint(ServiceEndpointUpdate {
                service_id: "s2".into(),
                spec_version: 9,
                endpoint: Some(endpoint("10.1.0.4/24", 8082)),
            })]),
        )
        .expect("ignored");
    assert!(store.read(|s| s.service("s2").is_some_and(|s| s.endpoint.is_none())));
    store
        .apply(6, &req(vec![Action::RemoveService("s1".into())]))
        .expect("remove s1");
    store
        .apply(7, &req(vec![set("s2", "10.1.0.2/24", 8080)]))
        .expect("free after removal");
}

#[test]
fn node_attachments_and_mesh_addresses_are_unique_and_survive_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        let alloc = |id: &str, addr: &str, mesh: &str| {
            Action::NodeAllocate(NodeAllocation {
                node_id: id.into(),
                attachments: vec![attachment("ingress", addr)],
                mesh_addr: mesh.into(),
            })
        };
        store
            .apply(
                1,
                &req(vec![
                    Action::PutNode(node("a", "fa")),
                    Action::PutNode(node("b", "fb")),
                    Action::CreateNetwork(network("ingress", "ingress", "10.0.0.0/16", 4096)),
                ]),
            )
            .expect("setup");
        store
            .apply(2, &req(vec![alloc("a", "10.0.0.2/16", "10.255.0.2/16")]))
            .expect("a");
        let err = store
            .apply(3, &req(vec![alloc("b", "10.0.0.3/16", "10.255.0.2/16")]))
            .expect_err("same mesh address");
        assert!(err.to_string().contains("in use"), "{err}");
        store
            .apply(4, &req(vec![alloc("b", "10.0.0.3/16", "10.255.0.3/16")]))
            .expect("b");
    }
    let store = Store::open(dir.path()).expect("reopen");
    store.read(|s| {
        assert_eq!(
            s.address_holder(MESH_NETWORK, "10.255.0.3"),
            Some(&(Kind::Node, "b".to_string()))
        );
        assert_eq!(
            s.address_holder("ingress", "10.0.0.2"),
            Some(&(Kind::Node, "a".to_string()))
        );
        assert!(s.network_by_name("ingress").is_some(), "networks persist");
    });
}
