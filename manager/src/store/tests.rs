use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::{
    Endpoint, Meta, Network, NetworkAttachment, NetworkAttachmentConfig, NetworkSpec,
    NodeAllocation, PortConfig, ServiceEndpointUpdate, ServiceSpec, TaskAllocation, TaskAssignment,
    TaskDesiredUpdate, TaskSpec, TaskState, TaskStatus, TaskStatusUpdate, VirtualIp,
};

use super::*;

fn service(id: &str, name: &str) -> Service {
    Service {
        id: id.into(),
        meta: Some(Meta {
            created_at: 7,
            ..Meta::default()
        }),
        spec: Some(ServiceSpec {
            name: name.into(),
            replicas: 1,
            ..ServiceSpec::default()
        }),
        spec_version: 1,
        ..Default::default()
    }
}

fn task(id: &str, service_id: &str, state: TaskState) -> Task {
    Task {
        id: id.into(),
        service_id: service_id.into(),
        status: Some(TaskStatus {
            state: state as i32,
            ..TaskStatus::default()
        }),
        desired_state: TaskState::TaskRunning as i32,
        ..Task::default()
    }
}

fn node(id: &str, fp: &str) -> Node {
    Node {
        id: id.into(),
        cert_fingerprint: fp.into(),
        ..Node::default()
    }
}

fn req(actions: Vec<Action>) -> StoreRequest {
    StoreRequest {
        request_id: 1,
        actions: actions
            .into_iter()
            .map(|a| StoreAction { action: Some(a) })
            .collect(),
    }
}

fn status(id: &str, state: TaskState) -> Action {
    Action::TaskStatus(TaskStatusUpdate {
        task_id: id.into(),
        status: Some(TaskStatus {
            state: state as i32,
            message: format!("{state:?}"),
            ..TaskStatus::default()
        }),
    })
}

fn desired(id: &str, state: TaskState) -> Action {
    Action::TaskDesired(TaskDesiredUpdate {
        task_id: id.into(),
        desired_state: state as i32,
    })
}

fn assign(id: &str, node_id: &str) -> Action {
    Action::TaskAssign(TaskAssignment {
        task_id: id.into(),
        node_id: node_id.into(),
    })
}

fn state_of(store: &Store, id: &str) -> TaskState {
    store.read(|s| {
        s.task(id)
            .map_or(TaskState::TaskNew, |t| t.observed_state())
    })
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open store");
    (dir, store)
}

#[test]
fn create_update_remove_service_and_indexes() {
    let (_dir, store) = open();
    store
        .apply(1, &req(vec![Action::CreateService(service("s1", "web"))]))
        .expect("create");
    store.read(|s| {
        let svc = s.service_by_name("web").expect("indexed by name");
        assert_eq!(svc.id, "s1");
        let meta = svc.meta.as_ref().expect("meta");
        assert_eq!(meta.version, 1, "version is the raft index");
        assert_eq!(meta.created_at, 7, "timestamps come from the proposal");
    });

    let mut renamed = service("s1", "api");
    renamed.meta = store.read(|s| s.service("s1").and_then(|s| s.meta));
    store
        .apply(2, &req(vec![Action::UpdateService(renamed)]))
        .expect("rename");
    store.read(|s| {
        assert!(s.service_by_name("web").is_none());
        assert_eq!(s.service_by_name("api").map(|s| s.id.as_str()), Some("s1"));
        assert_eq!(
            s.service("s1")
                .and_then(|s| s.meta.as_ref())
                .map(|m| m.version),
            Some(2)
        );
    });

    let err = store
        .apply(3, &req(vec![Action::UpdateService(service("nope", "x"))]))
        .expect_err("missing service");
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("does not exist")),
        "{err}"
    );

    store
        .apply(4, &req(vec![Action::CreateService(service("s2", "web"))]))
        .expect("old name is free again");
    let mut onto = service("s2", "api");
    onto.meta = store.read(|s| s.service("s2").and_then(|s| s.meta));
    let err = store
        .apply(5, &req(vec![Action::UpdateService(onto)]))
        .expect_err("rename onto a taken name");
    assert_eq!(err.to_string(), r#"service name "api" is already in use"#);

    store
        .apply(6, &req(vec![Action::RemoveService("s1".into())]))
        .expect("remove");
    store
        .apply(7, &req(vec![Action::RemoveService("s1".into())]))
        .expect("removing a missing service is not an error");
    store.read(|s| {
        assert!(s.service("s1").is_none());
        assert!(s.service_by_name("api").is_none());
        assert_eq!(s.services().count(), 1);
    });
    assert_eq!(store.applied_index(), 7);
}

#[test]
fn duplicate_service_name_fails_whole_request() {
    let (_dir, store) = open();
    store
        .apply(1, &req(vec![Action::CreateService(service("s1", "web"))]))
        .expect("create");
    let mut rx = store.watch();
    let err = store
        .apply(
            2,
            &req(vec![
                Action::PutNode(node("n1", "fp1")),
                Action::CreateTask(task("t1", "s1", TaskState::TaskNew)),
                Action::CreateService(service("s2", "web")),
            ]),
        )
        .expect_err("name taken");
    assert_eq!(err.to_string(), r#"service name "web" is already in use"#);
    store.read(|s| {
        assert!(s.node("n1").is_none(), "earlier actions rolled back");
        assert!(s.node_by_fingerprint("fp1").is_none());
        assert!(s.task("t1").is_none());
        assert_eq!(s.tasks_of_service("s1").count(), 0);
        assert!(s.service("s2").is_none());
        assert_eq!(s.service_by_name("web").map(|s| s.id.as_str()), Some("s1"));
    });
    assert_eq!(
        store.applied_index(),
        2,
        "a failed request still consumes its index"
    );
    assert!(rx.try_recv().is_err(), "no events for a failed request");

    // Nothing of it reached the disk either.
    drop(rx);
    let dir = _dir;
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    store.read(|s| {
        assert!(s.node("n1").is_none());
        assert!(s.task("t1").is_none());
    });
    assert_eq!(store.applied_index(), 2);
}

#[test]
fn nodes_and_cluster_upsert_and_fingerprint_index() {
    let (_dir, store) = open();
    let cluster = Cluster {
        id: "c".into(),
        heartbeat_period_ns: 5,
        ..Cluster::default()
    };
    store
        .apply(
            1,
            &req(vec![
                Action::PutCluster(cluster.clone()),
                Action::PutNode(node("n1", "fp1")),
            ]),
        )
        .expect("put");
    let mut fresh = node("n1", "fp2");
    fresh.meta = store.read(|s| s.node("n1").and_then(|n| n.meta));
    store
        .apply(2, &req(vec![Action::PutNode(fresh)]))
        .expect("upsert");
    store.read(|s| {
        assert_eq!(s.cluster().map(|c| c.heartbeat_period_ns), Some(5));
        assert!(
            s.node_by_fingerprint("fp1").is_none(),
            "old fingerprint unindexed"
        );
        assert_eq!(
            s.node_by_fingerprint("fp2").map(|n| n.id.as_str()),
            Some("n1")
        );
        assert_eq!(
            s.node("n1")
                .and_then(|n| n.meta.as_ref())
                .map(|m| m.version),
            Some(2)
        );
    });
    store
        .apply(3, &req(vec![Action::RemoveNode("n1".into())]))
        .expect("remove");
    store.read(|s| {
        assert!(s.node("n1").is_none());
        assert!(s.node_by_fingerprint("fp2").is_none());
        assert_eq!(s.nodes().count(), 0);
    });
}

#[test]
fn task_create_remove_and_duplicate_id() {
    let (_dir, store) = open();
    store
        .apply(
            1,
            &req(vec![Action::CreateTask(task(
                "t1",
                "s1",
                TaskState::TaskNew,
            ))]),
        )
        .expect("create");
    let err = store
        .apply(
            2,
            &req(vec![Action::CreateTask(task(
                "t1",
                "s1",
                TaskState::TaskNew,
            ))]),
        )
        .expect_err("duplicate id");
    assert!(matches!(err, StoreError::Conflict(_)));
    store
        .apply(3, &req(vec![Action::RemoveTask("t1".into())]))
        .expect("remove");
    store.read(|s| {
        assert!(s.task("t1").is_none());
        assert_eq!(s.tasks_of_service("s1").count(), 0);
    });
}

#[test]
fn task_status_desired_and_assign_only_move_forward() {
    let (_dir, store) = open();
    store
        .apply(
            1,
            &req(vec![
                Action::CreateTask(task("t1", "s1", TaskState::TaskPending)),
                Action::CreateTask(task("t2", "s1", TaskState::TaskNew)),
            ]),
        )
        .expect("create");

    // (action, expected state of t1 afterwards, expected node of t1, what the case checks)
    let cases: Vec<(Action, TaskState, &str, &str)> = vec![
        (
            assign("t2", "n1"),
            TaskState::TaskPending,
            "",
            "t2 is NEW, not PENDING: ignored",
        ),
        (
            assign("t1", "n1"),
            TaskState::TaskAssigned,
            "n1",
            "pending + unassigned: assigned",
        ),
        (
            assign("t1", "n2"),
            TaskState::TaskAssigned,
            "n1",
            "already assigned: ignored",
        ),
        (
            status("t1", TaskState::TaskRunning),
            TaskState::TaskRunning,
            "n1",
            "forward",
        ),
        (
            status("t1", TaskState::TaskStarting),
            TaskState::TaskRunning,
            "n1",
            "backward ignored",
        ),
        (
            status("t1", TaskState::TaskRunning),
            TaskState::TaskRunning,
            "n1",
            "same ignored",
        ),
        (
            status("gone", TaskState::TaskRunning),
            TaskState::TaskRunning,
            "n1",
            "missing ignored",
        ),
        (
            status("t1", TaskState::TaskFailed),
            TaskState::TaskFailed,
            "n1",
            "to terminal",
        ),
        (
            assign("t1", "n3"),
            TaskState::TaskFailed,
            "n1",
            "not pending: ignored",
        ),
    ];
    for (i, (action, want_state, want_node, why)) in cases.into_iter().enumerate() {
        store
            .apply(10 + i as u64, &req(vec![action]))
            .unwrap_or_else(|e| panic!("{why}: {e}"));
        assert_eq!(state_of(&store, "t1"), want_state, "{why}");
        let node_id = store.read(|s| s.task("t1").map(|t| t.node_id.clone()));
        assert_eq!(node_id.as_deref(), Some(want_node), "{why}");
    }
    store.read(|s| {
        assert_eq!(s.tasks_of_node("n1").count(), 1);
        assert_eq!(s.tasks_of_node("n2").count(), 0);
    });

    let desired_of =
        |store: &Store| store.read(|s| s.task("t1").map(|t| t.desired_state).unwrap_or(-1));
    store
        .apply(30, &req(vec![desired("t1", TaskState::TaskShutdown)]))
        .expect("desired forward");
    assert_eq!(desired_of(&store), TaskState::TaskShutdown as i32);
    store
        .apply(31, &req(vec![desired("t1", TaskState::TaskRunning)]))
        .expect("desired backward is ignored, not an error");
    assert_eq!(desired_of(&store), TaskState::TaskShutdown as i32);
    store
        .apply(32, &req(vec![desired("t1", TaskState::TaskRemove)]))
        .expect("desired forward");
    assert_eq!(desired_of(&store), TaskState::TaskRemove as i32);
}

#[test]
fn reapplying_an_old_index_is_a_noop() {
    let (_dir, store) = open();
    store
        .apply(5, &req(vec![Action::CreateService(service("s1", "web"))]))
        .expect("create");
    let mut rx = store.watch();
    store
        .apply(5, &req(vec![Action::CreateService(service("s1", "web"))]))
        .expect("same index again: no-op, not a conflict");
    store
        .apply(3, &req(vec![Action::RemoveService("s1".into())]))
        .expect("older index: no-op");
    assert!(store.read(|s| s.service("s1").is_some()));
    assert_eq!(store.applied_index(), 5);
    assert!(rx.try_recv().is_err(), "no events for skipped indexes");
}

#[test]
fn reopen_keeps_state_and_applied_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        store
            .apply(
                1,
                &req(vec![
                    Action::CreateService(service("s1", "web")),
                    Action::CreateTask(task("t1", "s1", TaskState::TaskPending)),
                    Action::PutNode(node("n1", "fp")),
                ]),
            )
            .expect("apply");
        store
            .apply(2, &req(vec![assign("t1", "n1")]))
            .expect("assign");
        store.flush().expect("flush");
    }
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(store.applied_index(), 2);
    store.read(|s| {
        assert_eq!(s.service_by_name("web").map(|s| s.id.as_str()), Some("s1"));
        assert_eq!(s.tasks_of_service("s1").count(), 1);
        assert_eq!(s.tasks_of_node("n1").count(), 1);
        assert_eq!(
            s.node_by_fingerprint("fp").map(|n| n.id.as_str()),
            Some("n1")
        );
    });
    assert_eq!(state_of(&store, "t1"), TaskState::TaskAssigned);
}

#[test]
fn watch_delivers_one_message_per_request() {
    let (_dir, store) = open();
    let mut rx = store.watch();
    store
        .apply(
            1,
            &req(vec![
                Action::CreateService(service("s1", "web")),
                Action::CreateTask(task("t1", "s1", TaskState::TaskPending)),
            ]),
        )
        .expect("apply");
    store
        .apply(2, &req(vec![assign("t1", "n1")]))
        .expect("assign");
    store
        .apply(3, &req(vec![Action::RemoveTask("t1".into())]))
        .expect("remove");

    let first = rx.try_recv().expect("first request");
    assert_eq!(first.len(), 2);
    assert!(matches!(&first[0], Event::Created(Object::Service(s)) if s.id == "s1"));
    assert!(matches!(&first[1], Event::Created(Object::Task(t)) if t.id == "t1"));
    let second = rx.try_recv().expect("second request");
    match &second[..] {
        [Event::Updated {
            old: Object::Task(old),
            new: Object::Task(new),
        }] => {
            assert!(old.node_id.is_empty());
            assert_eq!(new.node_id, "n1");
        }
        other => panic!("unexpected events {other:?}"),
    }
    let third = rx.try_recv().expect("third request");
    assert!(matches!(&third[..], [Event::Removed(Object::Task(t))] if t.id == "t1"));
}

#[test]
fn snapshot_restore_replaces_everything() {
    let (_dir, a) = open();
    a.apply(
        1,
        &req(vec![
            Action::CreateService(service("s1", "web")),
            Action::CreateTask(task("t1", "s1", TaskState::TaskPending)),
        ]),
    )
    .expect("apply");
    let (index, data) = a.snapshot().expect("snapshot");
    assert_eq!(index, 1);

    let dir_b = tempfile::tempdir().expect("tempdir");
    {
        let b = Store::open(dir_b.path()).expect("open b");
        b.apply(
            1,
            &req(vec![
                Action::CreateService(service("old", "old")),
                Action::PutNode(node("n9", "fp9")),
            ]),
        )
        .expect("apply b");
        let mut rx = b.watch();
        b.restore(index + 10, &data).expect("restore");
        let events = rx.try_recv().expect("restore events");
        assert_eq!(events.len(), 4, "2 removed + 2 created: {events:?}");
        b.flush().expect("flush");
    }
    let b = Store::open(dir_b.path()).expect("reopen b");
    assert_eq!(b.applied_index(), 11);
    b.read(|s| {
        assert!(s.service("old").is_none());
        assert!(s.node("n9").is_none());
        assert!(s.node_by_fingerprint("fp9").is_none());
        assert_eq!(s.service_by_name("web").map(|s| s.id.as_str()), Some("s1"));
        assert_eq!(s.tasks_of_service("s1").count(), 1);
    });
}

#[tokio::test]
async fn propose_without_proposer_is_not_leader() {
    let (_dir, store) = open();
    let err = store
        .propose(vec![StoreAction {
            action: Some(Action::RemoveNode("x".into())),
        }])
        .await
        .expect_err("no proposer");
    assert!(matches!(err, StoreError::NotLeader { leader: None }));
}

#[test]
fn a_batch_applies_like_one_request_at_a_time() {
    let create = |id: &str, name: &str| StoreRequest {
        request_id: 7,
        actions: vec![StoreAction {
            action: Some(Action::CreateService(service(id, name))),
        }],
    };
    // The third request conflicts (same name): it must consume its index and change nothing.
    let reqs = [
        create("a", "web"),
        create("b", "db"),
        create("c", "web"),
        StoreRequest::default(),
        create("d", "cache"),
    ];
    let d1 = tempfile::tempdir().expect("tempdir");
    let d2 = tempfile::tempdir().expect("tempdir");
    let one = Store::open(d1.path()).expect("open");
    let batched = Store::open(d2.path()).expect("open");
    let mut expected = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        expected.push(one.apply(i as u64 + 1, r).is_ok());
    }
    let batch: Vec<(u64, &StoreRequest)> = reqs
        .iter()
        .enumerate()
        .map(|(i, r)| (i as u64 + 1, r))
        .collect();
    let got: Vec<bool> = batched
        .apply_batch(&batch)
        .expect("apply batch")
        .iter()
        .map(|r| r.is_ok())
        .collect();
    assert_eq!(got, expected);
    assert_eq!(expected, [true, true, false, true, true]);
    assert_eq!(
        one.snapshot().expect("snap"),
        batched.snapshot().expect("snap")
    );
    // Applying the same batch again is a no-op, as after a restart.
    batched.apply_batch(&batch).expect("apply again");
    assert_eq!(batched.applied_index(), 5);
    drop(batched);
    let reopened = Store::open(d2.path()).expect("reopen");
    assert_eq!(
        reopened.snapshot().expect("snap"),
        one.snapshot().expect("snap")
    );
}

fn network(id: &str, name: &str, subnet: &str, vni: u32) -> Network {
    Network {
        id: id.into(),
        spec: Some(NetworkSpec {
            name: name.into(),
            driver: "overlay".into(),
            ..NetworkSpec::default()
        }),
        subnet: subnet.into(),
        vni,
        ..Network::default()
    }
}

fn attachment(net: &str, addr: &str) -> NetworkAttachment {
    NetworkAttachment {
        network_id: net.into(),
        addresses: vec![addr.into()],
        aliases: Vec::new(),
    }
}

fn allocate(task_id: &str, net: &str, addr: &str) -> Action {
    Action::TaskAllocate(TaskAllocation {
        task_id: task_id.into(),
        networks: vec![attachment(net, addr)],
        endpoint: None,
    })
}

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
