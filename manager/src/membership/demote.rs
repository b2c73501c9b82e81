//! Demotion of a manager to worker, on the leader: the quorum rule it must pass, the hand-over
//! when the leader itself goes, and the record written back as a worker's.

use std::time::Duration;

use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::*;
use tonic::Status;
use tracing::info;

use crate::node_record::demoted_node;
use crate::raft::RaftNode;
use crate::store::Store;

/// How a demotion on the leader ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Demotion {
    /// Node (id) is a worker again (or its pending promotion was called off).
    Done(String),
    /// The node is this manager, the leader: it handed leadership over, and the new leader must
    /// be asked to do the demotion.
    HandedOver,
}

/// Demotes node `node` (id, prefix or hostname): out of the Raft group first, then its record, so
/// a demoted manager never counts for quorum.
pub(crate) async fn demote(raft: &RaftNode, store: &Store, node: &str) -> Result<Demotion, Status> {
    let node = store.read(|s| crate::controlapi::find_node(s, node))?;
    let pending = node.manager_status.is_none()
        && node.spec.as_ref().map(|s| s.role) == Some(NodeRole::RoleManager as i32);
    if pending {
        // A promotion not done yet: call it off (the agent is told to stop what it started).
        let id = node.id.clone();
        put_demoted(store, &id).await?;
        info!(node.id = %id, "promotion called off");
        return Ok(Demotion::Done(id));
    }
    let raft_id = node
        .manager_status
        .as_ref()
        .map(|m| m.raft_id)
        .ok_or_else(|| Status::failed_precondition(format!("node {} is not a manager", node.id)))?;
    // A leader elected a moment ago (after a hand-over, say) has not heard from every voter
    // yet: give the reachability picture up to 2 s to fill in before refusing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let st = loop {
        let st = raft.status();
        let ok = check_demotion(&st, raft_id, raft_id == st.id).is_ok();
        if ok || tokio::time::Instant::now() >= deadline {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if raft_id == st.id {
        // Demoting the leader: hand leadership to the most up-to-date reachable voter, then
        // let the new leader do the demotion (this manager is then an ordinary member).
        check_demotion(&st, raft_id, true).map_err(Status::failed_precondition)?;
        let to = st
            .voters
            .iter()
            .copied()
            .find(|v| *v != raft_id && st.active.contains(v))
            .ok_or_else(|| Status::failed_precondition("no other reachable manager"))?;
        raft.transfer_leadership(to).await?;
        info!(node.id = %node.id, to, "leadership handed over before demoting the leader");
        return Ok(Demotion::HandedOver);
    }
    check_demotion(&st, raft_id, false).map_err(Status::failed_precondition)?;
    raft.change_membership(raft_id, false).await?;
    let id = node.id.clone();
    put_demoted(store, &id).await?;
    info!(node.id = %id, raft_id, "manager demoted");
    Ok(Demotion::Done(id))
}

/// Whether voter `raft_id` can leave the group the leader sees in `st`: refused for the last
/// manager and when the remaining voters would not have a reachable majority. The leader itself
/// is refused unless `hand_over` (it first hands leadership to another voter).
pub fn check_demotion(
    st: &crate::raft::RaftStatus,
    raft_id: u64,
    hand_over: bool,
) -> Result<(), String> {
    if raft_id == st.id && !hand_over {
        return Err("this manager is the leader: it must hand leadership over first".into());
    }
    let remaining: Vec<u64> = st
        .voters
        .iter()
        .copied()
        .filter(|v| *v != raft_id)
        .collect();
    if remaining.is_empty() {
        return Err("it is the last manager".into());
    }
    let reachable = remaining.iter().filter(|v| st.active.contains(v)).count();
    let majority = remaining.len() / 2 + 1;
    if reachable < majority {
        return Err(format!(
            "demoting it would lose quorum: {reachable} of the {} remaining managers are reachable, {majority} are needed",
            remaining.len()
        ));
    }
    Ok(())
}

/// Writes node `id` back as a worker (a demotion, or a promotion called off), built from a fresh
/// read each time a concurrent write makes it out of sequence; a node gone meanwhile is left alone.
pub(crate) async fn put_demoted(store: &Store, id: &str) -> Result<(), Status> {
    store
        .propose_fresh(|s| {
            let actions = match s.node(id) {
                Some(n) => vec![StoreAction {
                    action: Some(Action::PutNode(demoted_node(n))),
                }],
                None => Vec::new(),
            };
            Ok::<_, Status>((actions, ()))
        })
        .await
}
