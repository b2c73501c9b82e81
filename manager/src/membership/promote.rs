//! Promotion of a worker to manager, on the leader: the rule a node must pass, and the wish
//! recorded in its spec that the dispatcher passes on to its agent.

use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::*;
use tonic::Status;
use tracing::info;

use crate::dispatcher::Sessions;
use crate::store::Store;

/// Asks node `node` (id, prefix or hostname) to become a manager; returns its id. The wish is
/// recorded in the node's spec; the dispatcher tells the agent, which starts `shoal-manager join`
/// as this node. Its record gets a manager status once it is a voter.
pub(crate) async fn promote(
    store: &Store,
    sessions: &Sessions,
    node: &str,
) -> Result<String, Status> {
    let node = store.read(|s| crate::controlapi::find_node(s, node))?;
    let connected = sessions.get(&node.id).is_some();
    check_promotion(&node, connected).map_err(Status::failed_precondition)?;
    if node.spec.as_ref().map(|s| s.role) == Some(NodeRole::RoleManager as i32) {
        // Asked already: the agent was told (and is told again at each session).
        return Ok(node.id);
    }
    let id = node.id.clone();
    store
        .propose_fresh(|s| {
            let mut wish = s
                .node(&id)
                .cloned()
                .ok_or_else(|| Status::not_found(format!("node {id} was removed")))?;
            check_promotion(&wish, connected).map_err(Status::failed_precondition)?;
            wish.spec.get_or_insert_with(Default::default).role = NodeRole::RoleManager as i32;
            if let Some(m) = wish.meta.as_mut() {
                m.updated_at = shoal_proto::now_ns();
            }
            Ok::<_, Status>((
                vec![StoreAction {
                    action: Some(Action::PutNode(wish)),
                }],
                (),
            ))
        })
        .await?;
    info!(node.id = %id, "node promotion asked: its agent starts a manager");
    Ok(id)
}

/// Whether `node` can be promoted: a worker (or one whose promotion is under way) that is up
/// with its agent connected to the leader, since its agent starts the manager.
pub fn check_promotion(node: &Node, agent_connected: bool) -> Result<(), String> {
    if node.manager_status.is_some() {
        return Err(format!("node {} is already a manager", node.id));
    }
    let ready = crate::node_record::is_ready(node);
    if !ready || !agent_connected {
        return Err(format!(
            "node {} is not ready with its agent connected: its agent starts the manager, so it must be up",
            node.id
        ));
    }
    Ok(())
}
