//! The store records of manager nodes: how a manager, a promoted worker and a demoted manager
//! look, and which certificate a manager node's manager process presents. Pure functions over
//! [`Node`], shared by membership, the Raft transport, the dispatcher and the control API.

use shoal_proto::v1::*;
use shoal_proto::wire::Reachability;

/// The store record of a manager: role manager, drained (the manager process runs no containers;
/// an agent on its host joins as a node of its own), ready, with its Raft id and address.
pub fn manager_node(
    id: &str,
    description: NodeDescription,
    addr: &str,
    raft_id: u64,
    leader: bool,
    cert_fingerprint: String,
    now: i64,
) -> Node {
    Node {
        id: id.to_string(),
        meta: Some(Meta::new_at(now)),
        spec: Some(NodeSpec {
            role: NodeRole::RoleManager as i32,
            availability: NodeAvailability::AvailabilityDrain as i32,
            labels: Default::default(),
        }),
        description: Some(description),
        status: Some(NodeStatus {
            state: NodeState::NodeReady as i32,
            message: String::new(),
            addr: addr.to_string(),
            last_heartbeat: now,
        }),
        manager_status: Some(ManagerStatus {
            raft_id,
            addr: addr.to_string(),
            leader,
            reachability: Reachability::Reachable.as_wire().into(),
            // Its node certificate is the manager's own.
            cert_fingerprint: String::new(),
            ..Default::default()
        }),
        cert_fingerprint,
        ..Default::default()
    }
}

/// The store record of a worker promoted to manager (`node promote`): the same node, keeping its
/// id, labels, availability, description and status (its agent goes on running its tasks), with
/// role manager and a manager status carrying the manager process's own certificate.
pub fn promoted_node(
    worker: &Node,
    addr: &str,
    raft_id: u64,
    manager_fingerprint: String,
    now: i64,
) -> Node {
    let mut node = worker.clone();
    node.spec.get_or_insert_with(Default::default).role = NodeRole::RoleManager as i32;
    node.manager_status = Some(ManagerStatus {
        raft_id,
        addr: addr.to_string(),
        leader: false,
        reachability: Reachability::Reachable.as_wire().into(),
        cert_fingerprint: manager_fingerprint,
        ..Default::default()
    });
    if let Some(meta) = node.meta.as_mut() {
        meta.updated_at = now;
    }
    node
}

/// A manager node made a worker again (`node demote`): no manager status (which revokes a
/// promoted node's manager certificate at once), role worker.
pub fn demoted_node(node: &Node) -> Node {
    let mut node = node.clone();
    node.spec.get_or_insert_with(Default::default).role = NodeRole::RoleWorker as i32;
    // A manager started with init/join has no agent: its node certificate is its manager's,
    // which must stop working with the demotion (a promoted worker's agent keeps its own).
    if node
        .manager_status
        .take()
        .is_some_and(|m| m.cert_fingerprint.is_empty())
    {
        node.cert_fingerprint.clear();
        node.previous_cert_fingerprint.clear();
    }
    node
}

/// The fingerprint of the certificate a manager node's manager process presents.
pub fn manager_fingerprint(node: &Node) -> &str {
    match &node.manager_status {
        Some(m) if !m.cert_fingerprint.is_empty() => &m.cert_fingerprint,
        _ => &node.cert_fingerprint,
    }
}

/// Whether `fp` is the certificate of a manager node's manager process, or the one it replaced
/// at its last renewal (still accepted: its renewal answer may have been lost).
pub fn is_manager_fingerprint(node: &Node, fp: &str) -> bool {
    if fp.is_empty() {
        return false;
    }
    match &node.manager_status {
        Some(m) if !m.cert_fingerprint.is_empty() => {
            m.cert_fingerprint == fp || m.previous_cert_fingerprint == fp
        }
        _ => node.cert_fingerprint == fp || node.previous_cert_fingerprint == fp,
    }
}

/// Whether the node is up: its agent registered and has not missed its heartbeats since.
pub fn is_ready(node: &Node) -> bool {
    node.status.as_ref().map(|s| s.state) == Some(NodeState::NodeReady as i32)
}

/// Whether an agent runs on this node: every worker, and a worker promoted to manager; not a
/// manager started with `shoal-manager init/join` (its health comes from Raft, it runs no task).
pub fn runs_agent(node: &Node) -> bool {
    node.manager_status
        .as_ref()
        .is_none_or(|m| !m.cert_fingerprint.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker() -> Node {
        Node {
            id: "w1".into(),
            meta: Some(Meta {
                version: 4,
                created_at: 10,
                updated_at: 20,
            }),
            spec: Some(NodeSpec {
                role: NodeRole::RoleWorker as i32,
                availability: NodeAvailability::AvailabilityActive as i32,
                labels: [("zone".to_string(), "a".to_string())].into(),
            }),
            description: Some(NodeDescription {
                hostname: "host-a".into(),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: NodeState::NodeReady as i32,
                addr: "10.0.0.5".into(),
                ..Default::default()
            }),
            cert_fingerprint: "agent-fp".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_promoted_worker_keeps_what_it_was() {
        let p = promoted_node(&worker(), "10.0.0.5:4242", 4, "manager-fp".into(), 30);
        assert_eq!(p.id, "w1");
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(spec.role, NodeRole::RoleManager as i32);
        // Still runs its tasks, with its labels.
        assert_eq!(
            spec.availability,
            NodeAvailability::AvailabilityActive as i32
        );
        assert_eq!(spec.labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(p.description, worker().description);
        assert_eq!(p.status, worker().status);
        // The agent keeps its certificate; the manager process has its own.
        assert_eq!(p.cert_fingerprint, "agent-fp");
        assert_eq!(manager_fingerprint(&p), "manager-fp");
        let ms = p.manager_status.as_ref().expect("manager status");
        assert_eq!((ms.raft_id, ms.addr.as_str()), (4, "10.0.0.5:4242"));
        assert_eq!(
            p.meta.as_ref().map(|m| (m.created_at, m.updated_at)),
            Some((10, 30))
        );
        assert!(runs_agent(&p));

        // Demoted: a worker again, the manager certificate gone with its status.
        let d = demoted_node(&p);
        assert_eq!(
            d.spec.as_ref().map(|s| s.role),
            Some(NodeRole::RoleWorker as i32)
        );
        assert!(d.manager_status.is_none());
        assert_eq!(d.cert_fingerprint, "agent-fp");
        assert!(runs_agent(&d));
    }

    #[test]
    fn a_manager_only_node_runs_no_agent() {
        let m = manager_node(
            "m1",
            NodeDescription::default(),
            "10.0.0.1:4242",
            1,
            true,
            "m-fp".into(),
            1,
        );
        assert!(!runs_agent(&m));
        assert_eq!(manager_fingerprint(&m), "m-fp");
        assert!(runs_agent(&worker()));
    }
}
