use super::*;
use shoal_proto::v1::ServiceView;

#[test]
fn groups_follow_the_backend_count_in_powers_of_two() {
    let cases = [
        // (backends, k, groups)
        (0, 128, 1),
        (1, 128, 1),
        (255, 128, 1),
        (256, 128, 2),
        (511, 128, 2),
        (512, 128, 4),
        (25_000, 128, 128),
        (100_000, 128, 512),
        (100_000, 0, 1),
        (u64::MAX, 1, MAX_GROUPS),
    ];
    for (backends, k, want) in cases {
        let g = groups_for(backends, k);
        assert_eq!(g, want, "{backends} backends, k {k}");
        assert!(g.is_power_of_two());
        if g > 1 && g < MAX_GROUPS {
            // Every group holds between k and 2k backends.
            let per = backends / u64::from(g);
            assert!(per >= k && per < 2 * k, "{backends} / {g} = {per}");
        }
    }
}

#[test]
fn a_backend_keeps_its_group_and_global_ones_go_with_their_node() {
    assert_eq!(backend_group(1, "n", 4), 0);
    assert_eq!(backend_group(4, "n", 4), 3);
    assert_eq!(backend_group(5, "n", 4), 0);
    assert_eq!(backend_group(7, "n", 1), 0);
    for node in ["a", "b", "node-17"] {
        assert_eq!(backend_group(0, node, 8), node_key(node) % 8);
    }
    // The hash is fixed (SHA-256), not the process's: another manager splits the same way.
    assert_eq!(node_key("a"), 0xca97_8112);
}

fn endpoint(task: &str, service: &str, node: &str, addr: &str, slot: u64) -> EndpointView {
    EndpointView {
        task_id: task.into(),
        service_id: service.into(),
        node_id: node.into(),
        node_addr: format!("192.168.0.{}", node.len()),
        addr: addr.into(),
        running: true,
        slot,
    }
}

fn service(id: &str, groups: u32) -> ServiceView {
    ServiceView {
        service_id: id.into(),
        name: id.into(),
        subset_groups: groups,
        ..Default::default()
    }
}

/// Nodes' addresses, a small service "s-small" (3 backends, not split), "s-two" split in 2 and
/// "s-four" in 4 (12 backends each, slots 1..=12).
fn full_view() -> NetworkView {
    let mut endpoints = vec![
        endpoint("", "", "n1", "10.0.0.1", 0),
        endpoint("", "", "n2", "10.0.0.2", 0),
    ];
    for i in 1..=3u64 {
        endpoints.push(endpoint(
            &format!("small-{i}"),
            "s-small",
            "n1",
            &format!("10.0.1.{i}"),
            i,
        ));
    }
    for (svc, net) in [("s-two", 2), ("s-four", 3)] {
        for i in 1..=12u64 {
            let task = format!("{svc}-{i:02}");
            endpoints.push(endpoint(&task, svc, "n2", &format!("10.0.{net}.{i}"), i));
        }
    }
    endpoints
        .sort_by(|a, b| (&a.task_id, &a.node_id, &a.addr).cmp(&(&b.task_id, &b.node_id, &b.addr)));
    NetworkView {
        network: None,
        endpoints,
        services: vec![
            service("s-four", 4),
            service("s-small", 0),
            service("s-two", 2),
        ],
        version: 7,
    }
}

#[test]
fn every_group_holds_the_small_services_and_its_share_of_the_split_ones() {
    let full = full_view();
    let Split {
        groups: views,
        forwarders,
    } = split(&full);
    assert_eq!(views.len(), 4);
    // The nodes' addresses apart, each in the class of its node's key.
    assert_eq!(forwarders.len(), 4);
    for (c, class) in forwarders.iter().enumerate() {
        for e in class {
            assert!(e.task_id.is_empty());
            assert_eq!(node_key(&e.node_id) % 4, c as u32, "{}", e.node_id);
        }
    }
    let mut nodes: Vec<&str> = forwarders
        .iter()
        .flatten()
        .map(|e| e.addr.as_str())
        .collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["10.0.0.1", "10.0.0.2"]);
    let mut seen: std::collections::HashMap<&str, Vec<u32>> = Default::default();
    for (g, v) in views.iter().enumerate() {
        let g = g as u32;
        assert_eq!(v.version, 7);
        assert_eq!(view_group(v), g);
        let subsets: Vec<(&str, u32)> = v
            .services
            .iter()
            .map(|s| (s.service_id.as_str(), s.subset))
            .collect();
        assert_eq!(subsets, [("s-four", g), ("s-small", 0), ("s-two", g % 2)]);
        // The full view's order is kept.
        let mut sorted = v.endpoints.clone();
        sorted.sort_by(|a, b| {
            (&a.task_id, &a.node_id, &a.addr).cmp(&(&b.task_id, &b.node_id, &b.addr))
        });
        assert_eq!(sorted, v.endpoints);
        let count = |svc: &str| v.endpoints.iter().filter(|e| e.service_id == svc).count();
        assert_eq!(
            v.endpoints.iter().filter(|e| e.task_id.is_empty()).count(),
            0
        );
        assert_eq!(
            (count("s-small"), count("s-two"), count("s-four")),
            (3, 6, 3)
        );
        for e in v.endpoints.iter().filter(|e| e.service_id == "s-four") {
            assert_eq!((e.slot - 1) % 4, u64::from(g), "{}", e.task_id);
            seen.entry("s-four").or_default().push(e.slot as u32);
        }
        for e in v.endpoints.iter().filter(|e| e.service_id == "s-two") {
            assert_eq!((e.slot - 1) % 2, u64::from(g % 2), "{}", e.task_id);
        }
    }
    // Each backend of the largest split in exactly one group.
    let mut four = seen.remove("s-four").unwrap_or_default();
    four.sort_unstable();
    assert_eq!(four, (1..=12).collect::<Vec<u32>>());
}

#[test]
fn a_view_with_no_split_service_is_not_split() {
    let mut full = full_view();
    for s in &mut full.services {
        s.subset_groups = if s.service_id == "s-small" { 0 } else { 1 };
    }
    assert_eq!(split(&full), Split::default());
    assert_eq!((max_groups(&full), view_group(&full)), (1, 0));
    assert_eq!(group_of_node(&full, "n1"), 0);
}

#[test]
fn a_node_reaches_the_nodes_that_can_forward_to_its_backends() {
    let full = full_view();
    let node = "n2";
    // No backend: no node address.
    assert_eq!(reach(&full, node, []), Reach::Classes(vec![]));
    // Slot 2 of "s-four" (4 groups) is in group 1: the nodes of class 1 of the largest split (4).
    assert_eq!(reach(&full, node, [("s-four", 2)]), Reach::Classes(vec![1]));
    // Slot 2 of "s-two" (2 groups) is in group 1: classes 1 and 3 of 4 nest in it.
    assert_eq!(
        reach(&full, node, [("s-two", 2), ("s-four", 2)]),
        Reach::Classes(vec![1, 3])
    );
    // A backend of a service not split (or not in the view) is balanced over by every node.
    assert_eq!(reach(&full, node, [("s-small", 1)]), Reach::All);
    assert_eq!(reach(&full, node, [("s-gone", 1)]), Reach::All);
    // Every class reached is every node.
    assert_eq!(reach(&full, node, [("s-two", 1), ("s-two", 2)]), Reach::All);
    // A global backend (slot 0) is in its node's group.
    let own = node_key(node) % 4;
    assert_eq!(
        reach(&full, node, [("s-four", 0)]),
        Reach::Classes(vec![own])
    );
    let r = reach(&full, node, [("s-four", 3)]);
    assert!(r.contains(2) && !r.contains(1));
    assert!(Reach::All.contains(7));
}
