//! Versioned puts: stale ones refused, fresh ones taken, deltas composed.

use super::*;

fn put_node(n: Node) -> Action {
    Action::PutNode(n)
}

#[test]
fn stale_puts_are_refused_fresh_ones_taken_and_deltas_compose() {
    use shoal_proto::v1::NodeSpecUpdate;
    let (_dir, store) = open();
    store
        .apply(1, &req(vec![put_node(node("n1", "F1"))]))
        .unwrap();
    let read = store.read(|s| s.node("n1").cloned()).unwrap();
    assert_eq!(read.meta.as_ref().unwrap().version, 1);

    // Fresh: based on the stored version.
    let mut fresh = read.clone();
    fresh.cert_fingerprint = "F2".into();
    store.apply(2, &req(vec![put_node(fresh)])).unwrap();

    // Stale: based on version 1, the node is at 2 now.
    let mut stale = read.clone();
    stale.cert_fingerprint = "F3".into();
    match store.apply(3, &req(vec![put_node(stale)])) {
        Err(StoreError::OutOfSequence {
            kind: Kind::Node,
            id,
            expected: 1,
            found: 2,
        }) => assert_eq!(id, "n1"),
        other => panic!("stale put: {other:?}"),
    }
    assert_eq!(store.applied_index(), 3, "a refusal consumes its index");
    store.read(|s| assert_eq!(s.node("n1").unwrap().cert_fingerprint, "F2"));
    assert!(store
        .apply(4, &req(vec![put_node(node("n1", "F4"))]))
        .unwrap_err()
        .is_out_of_sequence());

    // The same for the cluster, services and networks.
    let c = Cluster {
        id: "c".into(),
        ..Cluster::default()
    };
    store
        .apply(5, &req(vec![Action::PutCluster(c.clone())]))
        .unwrap();
    assert!(store
        .apply(6, &req(vec![Action::PutCluster(c)]))
        .unwrap_err()
        .is_out_of_sequence());
    store
        .apply(7, &req(vec![Action::CreateService(service("s1", "web"))]))
        .unwrap();
    let svc = store.read(|s| s.service("s1").cloned()).unwrap();
    store
        .apply(8, &req(vec![Action::UpdateService(svc.clone())]))
        .unwrap();
    assert!(store
        .apply(9, &req(vec![Action::UpdateService(svc)]))
        .unwrap_err()
        .is_out_of_sequence());
    store
        .apply(
            10,
            &req(vec![Action::CreateNetwork(network(
                "w1",
                "a",
                "10.0.1.0/24",
                4097,
            ))]),
        )
        .unwrap();
    let net = store.read(|s| s.network("w1").cloned()).unwrap();
    store
        .apply(11, &req(vec![Action::UpdateNetwork(net.clone())]))
        .unwrap();
    assert!(store
        .apply(12, &req(vec![Action::UpdateNetwork(net)]))
        .unwrap_err()
        .is_out_of_sequence());

    // A refused put fails its whole request: the other action is not applied either.
    let mut stale = store.read(|s| s.node("n1").cloned()).unwrap();
    stale.meta.as_mut().unwrap().version = 1;
    assert!(store
        .apply(
            13,
            &req(vec![
                Action::CreateTask(task("t1", "s1", TaskState::TaskNew)),
                put_node(stale)
            ])
        )
        .unwrap_err()
        .is_out_of_sequence());
    store.read(|s| assert!(s.task("t1").is_none()));

    // Deltas apply to the node as it is, whatever was read: they compose.
    let delta = |add: &[(&str, &str)], rm: &[&str], availability: Option<i32>| {
        Action::NodeSpecUpdate(NodeSpecUpdate {
            node_id: "n1".into(),
            availability,
            labels_add: add
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            labels_rm: rm.iter().map(|k| k.to_string()).collect(),
        })
    };
    store
        .apply(14, &req(vec![delta(&[("a", "1")], &[], None)]))
        .unwrap();
    store
        .apply(15, &req(vec![delta(&[("b", "2")], &[], Some(2))]))
        .unwrap();
    store
        .apply(16, &req(vec![delta(&[("c", "3")], &["a"], None)]))
        .unwrap();
    store.read(|s| {
        let n = s.node("n1").unwrap();
        let spec = n.spec.as_ref().unwrap();
        let keys: Vec<&str> = spec.labels.keys().map(String::as_str).collect();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, ["b", "c"]);
        assert_eq!(spec.availability, 2);
        assert_eq!(
            n.cert_fingerprint, "F2",
            "a delta keeps the rest of the node"
        );
        assert_eq!(n.meta.as_ref().unwrap().version, 16);
    });
    // A delta for a node that is gone is a no-op, not an error.
    store
        .apply(17, &req(vec![Action::RemoveNode("n1".into())]))
        .unwrap();
    store
        .apply(18, &req(vec![delta(&[("d", "4")], &[], None)]))
        .unwrap();
    store.read(|s| assert!(s.node("n1").is_none()));
}
