use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::*;
use tonic::Code;

use super::demote::check_demotion;
use super::promote::check_promotion;
use super::status::removed_from_group;
use crate::auth::{self, Caller};
use crate::node_record::demoted_node;
use crate::store::Store;
use crate::test_support::{apply, manager};

fn status(voters: &[u64], active: &[u64]) -> crate::raft::RaftStatus {
    crate::raft::RaftStatus {
        id: 1,
        is_leader: true,
        voters: voters.to_vec(),
        active: active.to_vec(),
        ..Default::default()
    }
}

#[test]
fn a_demoted_managers_node_and_admin_certificates_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open store");
    let cluster = Cluster {
        id: "c".into(),
        admin_credentials: vec![
            AdminCredential {
                fingerprint: "admin-init".into(),
                holder: auth::INIT_HOLDER.into(),
                issued_at: 1,
                expires_at: 0,
            },
            AdminCredential {
                fingerprint: "admin-n2".into(),
                holder: "n2".into(),
                issued_at: 2,
                expires_at: 0,
            },
            AdminCredential {
                fingerprint: "admin-n3".into(),
                holder: "n3".into(),
                issued_at: 3,
                expires_at: 0,
            },
        ],
        ..Default::default()
    };
    apply(
        &store,
        1,
        vec![
            Action::PutCluster(cluster),
            Action::PutNode(manager("n1", "fp1", 1)),
            Action::PutNode(manager("n2", "fp2", 2)),
            Action::PutNode(manager("n3", "fp3", 3)),
        ],
    );
    let caller = |fp: &str| store.read(|s| auth::caller_of(s, fp));
    assert_eq!(caller("admin-n2").ok(), Some(Caller::Admin));
    assert!(matches!(
        caller("fp2"),
        Ok(Caller::Node {
            role: NodeRole::RoleManager,
            ..
        })
    ));

    let n2 = store.read(|s| s.node("n2").cloned()).expect("n2");
    apply(&store, 2, vec![Action::PutNode(demoted_node(&n2))]);
    assert_eq!(
        caller("admin-n2").map_err(|s| s.code()),
        Err(Code::PermissionDenied)
    );
    assert_eq!(
        caller("fp2").map_err(|s| s.code()),
        Err(Code::PermissionDenied)
    );
    assert_eq!(caller("admin-init").ok(), Some(Caller::Admin));

    // Removal does the same for a manager removed outright.
    apply(&store, 3, vec![Action::RemoveNode("n3".into())]);
    assert_eq!(
        caller("admin-n3").map_err(|s| s.code()),
        Err(Code::PermissionDenied)
    );

    // Revoked by fingerprint: refused at once.
    apply(
        &store,
        4,
        vec![Action::RevokeAdmin(AdminRevocation {
            fingerprints: vec!["admin-init".into()],
            holder: String::new(),
        })],
    );
    assert_eq!(
        caller("admin-init").map_err(|s| s.code()),
        Err(Code::PermissionDenied)
    );
}

#[test]
fn a_store_written_before_holders_migrates_its_admin_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open store");
        apply(
            &store,
            1,
            vec![Action::PutCluster(Cluster {
                id: "c".into(),
                admin_fingerprints: vec!["old-admin".into()],
                ..Default::default()
            })],
        );
        store.flush().expect("flush");
    }
    let store = Store::open(dir.path()).expect("reopen store");
    let c = store.read(|s| s.cluster().cloned()).expect("cluster");
    assert!(c.admin_fingerprints.is_empty());
    assert_eq!(c.admin_credentials.len(), 1);
    assert_eq!(c.admin_credentials[0].holder, auth::INIT_HOLDER);
    assert_eq!(
        store.read(|s| auth::caller_of(s, "old-admin")).ok(),
        Some(Caller::Admin)
    );
}

#[test]
fn promotion_needs_a_connected_worker() {
    let mut n = Node {
        id: "w1".into(),
        status: Some(NodeStatus {
            state: NodeState::NodeReady as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(check_promotion(&n, true).is_ok());
    let err = check_promotion(&n, false).expect_err("no session");
    assert!(err.contains("agent connected"), "{err}");
    n.status = Some(NodeStatus {
        state: NodeState::NodeDown as i32,
        ..Default::default()
    });
    assert!(check_promotion(&n, true).is_err(), "down");
    n.status = Some(NodeStatus {
        state: NodeState::NodeReady as i32,
        ..Default::default()
    });
    n.manager_status = Some(ManagerStatus::default());
    let err = check_promotion(&n, true).expect_err("a manager");
    assert!(err.contains("already a manager"), "{err}");
}

#[test]
fn demotion_keeps_a_reachable_majority() {
    // 3 managers all up: demoting one leaves 2 of 2.
    assert!(check_demotion(&status(&[1, 2, 3], &[1, 2, 3]), 3, false).is_ok());
    // 3 managers, 2 down... demoting a down one leaves 1 of 2 reachable: refused.
    let err = check_demotion(&status(&[1, 2, 3], &[1]), 3, false).expect_err("refused");
    assert!(err.contains("lose quorum"), "{err}");
    // 5 managers, 1 down: demoting it leaves 4, 4 reachable.
    assert!(check_demotion(&status(&[1, 2, 3, 4, 5], &[1, 2, 3, 4]), 5, false).is_ok());
    // 4 managers, 2 down: demoting a down one leaves 3, 2 reachable: fine.
    assert!(check_demotion(&status(&[1, 2, 3, 4], &[1, 2]), 4, false).is_ok());
    // 4 managers, 2 down: demoting an up one leaves 1 of 3 reachable: refused.
    assert!(check_demotion(&status(&[1, 2, 3, 4], &[1, 2]), 2, false).is_err());
    assert!(
        check_demotion(&status(&[1, 2], &[1, 2]), 1, false).is_err(),
        "the leader, without handing over"
    );
    // The leader hands over first: fine while the others keep a reachable majority.
    assert!(check_demotion(&status(&[1, 2, 3], &[1, 2, 3]), 1, true).is_ok());
    assert!(check_demotion(&status(&[1, 2, 3], &[1, 2]), 1, true).is_err());
}

#[test]
fn removal_is_seen_in_the_voters() {
    let st = |id, voters: &[u64]| crate::raft::RaftStatus {
        id,
        voters: voters.to_vec(),
        ..Default::default()
    };
    assert!(!removed_from_group(&st(2, &[1, 2, 3])));
    assert!(removed_from_group(&st(2, &[1, 3])));
    // Not started yet: no configuration is no verdict.
    assert!(!removed_from_group(&st(2, &[])));
    assert!(!removed_from_group(&st(0, &[1])));
}
