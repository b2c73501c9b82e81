//! Who is calling: every RPC but certificate issuance needs a client certificate from our CA whose
//! fingerprint the store knows (an admin's, or a node's current one). A removed node's certificate
//! is therefore refused at once, without a revocation list.

use shoal_proto::pki::fingerprint_der;
use shoal_proto::v1::{Node, NodeRole};
use tonic::{Request, Status};

use crate::store::Store;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// shoalctl with an admin certificate.
    Admin,
    /// A node's agent (or a manager), by node id.
    Node {
        /// The node's id.
        id: String,
        /// Its role.
        role: NodeRole,
    },
}

/// The SHA-256 fingerprint of the peer's leaf certificate, if it presented one.
pub fn peer_fingerprint<T>(req: &Request<T>) -> Option<String> {
    let certs = req.peer_certs()?;
    certs.first().map(|c| fingerprint_der(c.as_ref()))
}

/// Identifies the caller of a request or refuses it.
pub fn caller<T>(store: &Store, req: &Request<T>) -> Result<Caller, Status> {
    let fp = peer_fingerprint(req).ok_or_else(|| {
        Status::unauthenticated(
            "no client certificate: use the admin.conf written by `shoal-manager init` (shoalctl --config) or join the node with a token",
        )
    })?;
    store.read(|s| {
        if s.cluster()
            .is_some_and(|c| c.admin_fingerprints.contains(&fp))
        {
            return Ok(Caller::Admin);
        }
        if let Some(node) = s.node_by_fingerprint(&fp) {
            return Ok(Caller::Node {
                id: node.id.clone(),
                role: node_cert_role(node),
            });
        }
        // A promoted worker's manager process has a certificate of its own, recorded in its
        // manager status (few nodes are managers: a scan is cheap, and only on this path).
        match s.nodes().find(|n| {
            n.manager_status
                .as_ref()
                .is_some_and(|m| !m.cert_fingerprint.is_empty() && m.cert_fingerprint == fp)
        }) {
            Some(node) => Ok(Caller::Node {
                id: node.id.clone(),
                role: NodeRole::RoleManager,
            }),
            None => Err(Status::permission_denied(
                "certificate is not (or no longer) valid in this cluster: the node was removed or the certificate replaced",
            )),
        }
    })
}

/// The role a node's own certificate (`Node::cert_fingerprint`) carries: manager only for a
/// manager started with `shoal-manager init/join`. A promoted worker's certificate stays its
/// agent's, a worker's (its manager process has its own); so does a node whose promotion is only
/// asked for (role manager in its spec, not a Raft member yet).
pub fn node_cert_role(node: &Node) -> NodeRole {
    match &node.manager_status {
        Some(m) if m.cert_fingerprint.is_empty() => NodeRole::RoleManager,
        _ => NodeRole::RoleWorker,
    }
}

/// Refuses any caller but an admin, or another manager forwarding an admin's call (a manager
/// already holds the CA key, so this grants it nothing it could not mint itself).
pub fn require_admin<T>(store: &Store, req: &Request<T>) -> Result<(), Status> {
    match caller(store, req)? {
        Caller::Admin => Ok(()),
        Caller::Node {
            role: NodeRole::RoleManager,
            ..
        } => Ok(()),
        Caller::Node { .. } => Err(Status::permission_denied(
            "this call needs the admin certificate (admin.conf)",
        )),
    }
}

/// Refuses any caller but a node; returns its id.
pub fn require_node<T>(store: &Store, req: &Request<T>) -> Result<String, Status> {
    match caller(store, req)? {
        Caller::Node { id, .. } => Ok(id),
        Caller::Admin => Err(Status::permission_denied(
            "the dispatcher is for agents: an admin certificate cannot open a node session",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::ManagerStatus;

    #[test]
    fn only_a_manager_only_node_certificate_is_a_managers() {
        let mut n = Node::default();
        assert_eq!(node_cert_role(&n), NodeRole::RoleWorker);
        // Asked to be promoted, not a member yet: still the agent's worker certificate.
        n.spec = Some(shoal_proto::v1::NodeSpec {
            role: NodeRole::RoleManager as i32,
            ..Default::default()
        });
        assert_eq!(node_cert_role(&n), NodeRole::RoleWorker);
        // Promoted: the manager process has its own certificate; the node's stays the agent's.
        n.manager_status = Some(ManagerStatus {
            cert_fingerprint: "m".into(),
            ..Default::default()
        });
        assert_eq!(node_cert_role(&n), NodeRole::RoleWorker);
        // Started with init/join: the node certificate is the manager's.
        n.manager_status = Some(ManagerStatus::default());
        assert_eq!(node_cert_role(&n), NodeRole::RoleManager);
    }
}
