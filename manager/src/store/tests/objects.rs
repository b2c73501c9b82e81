//! Services, tasks, nodes and the cluster: create, update, remove, indexes, forward-only task moves.

use super::*;

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
