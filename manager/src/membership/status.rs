//! What the managers look like: each one's own answer for `cluster status`, and (on the leader)
//! the store's manager records kept in line with Raft.

use std::time::Duration;

use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::*;
use shoal_proto::wire::Reachability;
use tracing::{debug, info, warn};

use crate::raft::forward::Dialer;
use crate::raft::RaftNode;
use crate::store::Store;

/// How long `cluster status` waits for each manager's answer.
const STATUS_TIMEOUT: Duration = Duration::from_millis(800);

/// Every manager the store knows, as each one reports itself (unreachable ones as such); this
/// manager serves the Docker Engine API at `own_docker_api_addr` ("" when it does not).
pub async fn manager_view(
    raft: &RaftNode,
    store: &Store,
    dialer: &Dialer,
    own_docker_api_addr: &str,
) -> Vec<ManagerInfo> {
    let managers: Vec<(String, ManagerStatus)> = store.read(|s| {
        s.nodes()
            .filter_map(|n| n.manager_status.clone().map(|m| (n.id.clone(), m)))
            .collect()
    });
    let me = raft.status();
    let asks = managers.into_iter().map(|(node_id, ms)| {
        let dialer = dialer.clone();
        let me = me.clone();
        async move {
            let mut info = ManagerInfo {
                node_id,
                addr: ms.addr.clone(),
                raft_id: ms.raft_id,
                ..ManagerInfo::default()
            };
            let answer = if ms.raft_id == me.id {
                Ok(RaftStatusResponse {
                    leader_id: me.leader_id,
                    term: me.term,
                    commit: me.commit,
                    applied: me.applied,
                    is_leader: me.is_leader,
                    docker_api_addr: own_docker_api_addr.to_string(),
                    ..RaftStatusResponse::default()
                })
            } else {
                match dialer.raft(&ms.addr) {
                    Ok(mut c) => {
                        match tokio::time::timeout(STATUS_TIMEOUT, c.status(RaftStatusRequest {}))
                            .await
                        {
                            Ok(Ok(r)) => Ok(r.into_inner()),
                            Ok(Err(s)) => Err(s.message().to_string()),
                            Err(_) => Err("no answer within 800 ms".to_string()),
                        }
                    }
                    Err(s) => Err(s.message().to_string()),
                }
            };
            match answer {
                Ok(r) => {
                    info.reachable = true;
                    info.leader = r.is_leader;
                    info.term = r.term;
                    info.commit = r.commit;
                    info.applied = r.applied;
                    info.docker_api_addr = r.docker_api_addr;
                }
                Err(e) => info.error = e,
            }
            info
        }
    });
    let mut all = futures::future::join_all(asks).await;
    all.sort_by_key(|m| m.raft_id);
    all
}

/// While this manager leads: keeps every manager node's `leader` and `reachability` in the store
/// in line with Raft (so `node ls` shows them on any manager), and removes from the Raft group a
/// voter whose manager node was removed from the store.
pub async fn run_manager_status(
    raft: RaftNode,
    store: Store,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let st = raft.status();
        if !st.is_leader {
            continue;
        }
        let (updates, known): (Vec<StoreAction>, Vec<u64>) = store.read(|s| {
            let mut updates = Vec::new();
            let mut known = Vec::new();
            for n in s.nodes() {
                let Some(ms) = n.manager_status.as_ref() else {
                    continue;
                };
                known.push(ms.raft_id);
                let leader = ms.raft_id == st.id;
                let reachability = if st.active.contains(&ms.raft_id) {
                    Reachability::Reachable
                } else {
                    Reachability::Unreachable
                };
                if ms.leader != leader || ms.reachability_kind() != Ok(reachability) {
                    let mut n = n.clone();
                    if let Some(m) = n.manager_status.as_mut() {
                        m.leader = leader;
                        m.reachability = reachability.as_wire().into();
                    }
                    updates.push(StoreAction {
                        action: Some(Action::PutNode(n)),
                    });
                }
            }
            (updates, known)
        });
        if !updates.is_empty() {
            if let Err(e) = store.propose(updates).await {
                debug!(error = %e, "could not record manager status");
            }
        }
        // No manager node at all means the store is not loaded yet, not that all were removed.
        let gone: Vec<u64> = if known.is_empty() {
            Vec::new()
        } else {
            st.voters
                .iter()
                .copied()
                .filter(|v| !known.contains(v))
                .collect()
        };
        for gone in gone.iter() {
            if *gone == st.id {
                continue;
            }
            info!(
                raft_id = gone,
                "manager node removed: removing it from the raft group"
            );
            if let Err(e) = raft.change_membership(*gone, false).await {
                warn!(raft_id = gone, error = %e, "could not remove manager from the raft group");
            }
        }
    }
}

/// Whether the Raft status `st` says this member is no longer a voter (it applied its removal).
pub(crate) fn removed_from_group(st: &crate::raft::RaftStatus) -> bool {
    st.id != 0 && !st.voters.is_empty() && !st.voters.contains(&st.id)
}

/// Returns once this manager has applied its own removal from the Raft group (seen twice in a
/// row, half a second apart): a demoted or removed manager has nothing left to do.
pub(crate) async fn wait_removed(raft: RaftNode) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut strikes = 0;
    loop {
        tick.tick().await;
        if removed_from_group(&raft.status()) {
            strikes += 1;
            if strikes >= 2 {
                return;
            }
        } else {
            strikes = 0;
        }
    }
}
