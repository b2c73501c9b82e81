//! Applied indexes, reopening, watches, snapshots and batches.

use super::*;

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

#[test]
fn the_snapshot_encoding_is_that_of_snapshot_data() {
    let (_dir, store) = open();
    store
        .apply(
            7,
            &req(vec![
                Action::CreateService(service("s1", "web")),
                Action::CreateService(service("s2", "db")),
                Action::CreateTask(task("t1", "s1", TaskState::TaskPending)),
                Action::PutNode(node("n1", "fp1")),
                Action::CreateNetwork(network("net1", "front", "10.0.9.0/24", 4097)),
            ]),
        )
        .expect("apply");
    let (index, data) = store.snapshot().expect("snapshot");
    // What the encoder replaced: every object cloned into a `SnapshotData`, then encoded.
    let mut want = SnapshotData {
        index,
        ..SnapshotData::default()
    };
    store.read(|s| {
        for obj in s.objects() {
            match obj {
                Object::Cluster(o) => want.clusters.push(o),
                Object::Node(o) => want.nodes.push(o),
                Object::Service(o) => want.services.push(o),
                Object::Task(o) => want.tasks.push(o),
                Object::Network(o) => want.networks.push(o),
                Object::Secret(o) => want.secrets.push(o),
                Object::Config(o) => want.configs.push(o),
            }
        }
    });
    assert_eq!(want.services.len(), 2);
    assert_eq!(data, want.encode_to_vec());
    assert_eq!(SnapshotData::decode(data.as_slice()).expect("decode"), want);
}
