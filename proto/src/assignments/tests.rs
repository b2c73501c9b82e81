use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::v1::{Network, NetworkViewChange, NodeAddresses, PortConfig, TaskStatus};

fn network(id: &str, name: &str) -> Network {
    Network {
        id: id.into(),
        spec: Some(crate::v1::NetworkSpec {
            name: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A random view of network `id` at `version`: endpoints drawn from a pool of 40 addresses (so
/// two views share some, differ in others), services from a pool of 6.
fn random_view(rng: &mut StdRng, id: &str, version: u64) -> NetworkView {
    let picked: Vec<u32> = (0..40u32).filter(|_| rng.random_bool(0.6)).collect();
    let mut endpoints: Vec<EndpointView> = picked
        .into_iter()
        .map(|i| {
            // A node's own address has no task.
            let task = rng.random_bool(0.9);
            EndpointView {
                task_id: if task {
                    format!("t{}", i % 17)
                } else {
                    String::new()
                },
                service_id: if task {
                    format!("s{}", i % 6)
                } else {
                    String::new()
                },
                node_id: format!("n{}", rng.random_range(0..5)),
                node_addr: format!("192.168.0.{}", rng.random_range(1..5)),
                addr: format!("10.0.0.{i}"),
                running: rng.random_bool(0.5),
                slot: rng.random_range(0..3),
            }
        })
        .collect();
    endpoints.sort_by(|a, b| endpoint_order(a).cmp(&endpoint_order(b)));
    let picked: Vec<u32> = (0..6u32).filter(|_| rng.random_bool(0.5)).collect();
    let services = picked
        .into_iter()
        .map(|i| ServiceView {
            service_id: format!("s{i}"),
            name: format!("svc{i}"),
            mode: "vip".into(),
            vip: format!("10.0.1.{}", rng.random_range(1..3)),
            ports: (0..rng.random_range(0..2))
                .map(|p| PortConfig {
                    target_port: 80 + p,
                    published_port: 30000 + p,
                    ..Default::default()
                })
                .collect(),
            aliases: Vec::new(),
            subset_groups: rng.random_range(0..3),
            subset: rng.random_range(0..2),
        })
        .collect();
    let name = if rng.random_bool(0.8) {
        "front"
    } else {
        "renamed"
    };
    NetworkView {
        network: Some(network(id, name)),
        endpoints,
        services,
        version,
    }
}

#[test]
fn a_view_delta_applied_to_the_old_view_gives_the_new_one() {
    let mut rng = StdRng::seed_from_u64(15);
    for round in 0..2000 {
        let old = random_view(&mut rng, "net", round);
        let new = random_view(&mut rng, "net", round + 1);
        let d = view_delta(&old, &new);
        let mut got = old.clone();
        apply_view_delta(&mut got, d).unwrap();
        assert_eq!(got, new, "round {round}");
        // Nothing changed: nothing but the version is sent.
        let same = NetworkView {
            version: round + 1,
            ..old.clone()
        };
        assert!(view_delta_is_empty(&view_delta(&old, &same)));
    }
}

#[test]
fn a_view_delta_for_another_version_or_view_is_refused() {
    let mut rng = StdRng::seed_from_u64(1);
    let old = random_view(&mut rng, "net", 3);
    let new = random_view(&mut rng, "net", 4);
    let d = view_delta(&old, &new);
    let mut other = NetworkView {
        version: 2,
        ..old.clone()
    };
    assert!(matches!(
        apply_view_delta(&mut other, d.clone()),
        Err(DeltaError::ViewBase {
            base: 3,
            held: 2,
            ..
        })
    ));
    // Same version number, different contents: the endpoint count gives it away (one more).
    let mut extra = old.clone();
    extra.endpoints.push(EndpointView {
        task_id: "zz".into(),
        addr: "10.9.9.9".into(),
        ..Default::default()
    });
    assert!(matches!(
        apply_view_delta(&mut extra, d),
        Err(DeltaError::ViewCount { .. })
    ));
}

fn task(id: &str, desired: i32, state: i32) -> Task {
    Task {
        id: id.into(),
        desired_state: desired,
        status: Some(TaskStatus {
            state,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn a_task_whose_status_alone_changed_is_the_same_for_the_agent() {
    let a = task("t1", 4, 2);
    let mut b = task("t1", 4, 4);
    b.meta = Some(Default::default());
    assert!(same_for_agent(&a, &b));
    assert!(!same_for_agent(&a, &task("t1", 5, 2)));
    let (up, gone) = keyed_diff(std::slice::from_ref(&a), &[b], |t| &t.id, same_for_agent);
    assert!(up.is_empty() && gone.is_empty());
    let (up, gone) = keyed_diff(&[a], &[task("t2", 4, 0)], |t| &t.id, same_for_agent);
    assert_eq!((up.len(), gone), (1, vec!["t1".to_string()]));
}

#[test]
fn an_assignments_delta_upserts_removes_and_keeps_the_order() {
    let mut rng = StdRng::seed_from_u64(7);
    let (v1, v2) = (random_view(&mut rng, "a", 1), random_view(&mut rng, "a", 2));
    let b = random_view(&mut rng, "b", 1);
    let c = random_view(&mut rng, "c", 5);
    let mut set = Assignments {
        tasks: vec![task("t1", 4, 4), task("t3", 4, 4)],
        networks: vec![v1.clone(), b],
        version: 10,
        ..Default::default()
    };
    let delta = AssignmentsDelta {
        base: 10,
        version: 11,
        tasks: vec![task("t2", 4, 0), task("t3", 5, 4)],
        removed_tasks: vec!["t1".into()],
        networks: vec![
            NetworkViewChange {
                change: Some(network_view_change::Change::Delta(view_delta(&v1, &v2))),
            },
            NetworkViewChange {
                change: Some(network_view_change::Change::Full(c.clone())),
            },
        ],
        removed_networks: vec!["b".into()],
        node: Some(NodeAddresses {
            node_attachments: Vec::new(),
            mesh_addr: "10.255.0.2/16".into(),
        }),
        ..Default::default()
    };
    apply(&mut set, delta.clone()).unwrap();
    let ids: Vec<&str> = set.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["t2", "t3"]);
    assert_eq!(set.tasks[1].desired_state, 5);
    assert_eq!(set.networks, vec![v2, c]);
    assert_eq!((set.version, set.mesh_addr.as_str()), (11, "10.255.0.2/16"));
    // Again: the set is at 11 now, the delta's base is 10.
    assert_eq!(
        apply(&mut set, delta),
        Err(DeltaError::Base { base: 10, held: 11 })
    );
}

#[test]
fn a_view_delta_for_a_network_not_held_is_refused() {
    let mut rng = StdRng::seed_from_u64(3);
    let (v1, v2) = (random_view(&mut rng, "a", 1), random_view(&mut rng, "a", 2));
    let mut set = Assignments::default();
    let delta = AssignmentsDelta {
        networks: vec![NetworkViewChange {
            change: Some(network_view_change::Change::Delta(view_delta(&v1, &v2))),
        }],
        version: 1,
        ..Default::default()
    };
    assert!(matches!(
        apply(&mut set, delta),
        Err(DeltaError::ViewBase { held: 0, .. })
    ));
}
