//! Who is calling: every RPC but certificate issuance needs a client certificate from our CA whose
//! fingerprint the store knows (an admin's, or a node's current one). A removed node's certificate
//! is therefore refused at once, without a revocation list.

use shoal_proto::pki::fingerprint_der;
use shoal_proto::v1::NodeRole;
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
        match s.node_by_fingerprint(&fp) {
            Some(node) => Ok(Caller::Node {
                id: node.id.clone(),
                role: node
                    .spec
                    .as_ref()
                    .and_then(|sp| NodeRole::try_from(sp.role).ok())
                    .unwrap_or(NodeRole::RoleWorker),
            }),
            None => Err(Status::permission_denied(
                "certificate is not (or no longer) valid in this cluster: the node was removed or the certificate replaced",
            )),
        }
    })
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
