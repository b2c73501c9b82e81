//! Who is calling: every RPC but certificate issuance needs a client certificate from our CA whose
//! fingerprint the store knows (an admin's, or a node's current one). A removed node's certificate
//! is therefore refused at once, without a revocation list. Admin certificates are listed with
//! their holder (`Cluster.admin_credentials`): revoking one, demoting or removing the manager it
//! was issued to takes it out of the list, and every manager refuses it once it applied that.

use shoal_proto::pki::fingerprint_der;
use shoal_proto::v1::{AdminCredential, Node, NodeRole};
use tonic::{Request, Status};

pub use crate::store::admin_credentials::{
    is_admin, migrate_admin_credentials, revoke_admin_credentials, INIT_HOLDER, UNKNOWN_HOLDER,
};
use crate::store::{State, Store};

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

/// A tonic request view of an HTTP-level request, carrying its TLS peer certificates (tonic
/// keeps them in the request extensions), for the checks of this module in a tower layer.
pub fn probe_of<B>(req: &http::Request<B>) -> Request<()> {
    let mut probe = Request::new(());
    if let Some(certs) = req
        .extensions()
        .get::<tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>>()
    {
        probe.extensions_mut().insert(certs.clone());
    }
    probe
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
    store.read(|s| caller_of(s, &fp))
}

/// Who holds the certificate with fingerprint `fp` in state `s`, or why it is refused.
pub fn caller_of(s: &State, fp: &str) -> Result<Caller, Status> {
    if s.cluster().is_some_and(|c| is_admin(c, fp)) {
        return Ok(Caller::Admin);
    }
    if let Some(node) = s.node_by_fingerprint(fp) {
        return Ok(Caller::Node {
            id: node.id.clone(),
            role: node_cert_role(node),
        });
    }
    // A promoted worker's manager process has a certificate of its own, recorded in its
    // manager status (few nodes are managers: a scan is cheap, and only on this path).
    match s.nodes().find(|n| {
        n.manager_status.as_ref().is_some_and(|m| {
            !m.cert_fingerprint.is_empty()
                && (m.cert_fingerprint == fp || m.previous_cert_fingerprint == fp)
        })
    }) {
        Some(node) => Ok(Caller::Node {
            id: node.id.clone(),
            role: NodeRole::RoleManager,
        }),
        None => Err(Status::permission_denied(
            "certificate is not (or no longer) valid in this cluster: the node was removed or demoted, or the certificate replaced or revoked",
        )),
    }
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

/// Why a fingerprint prefix names no single admin credential.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrefixError {
    /// Nothing given.
    #[error("a fingerprint prefix is needed")]
    Empty,
    /// No credential starts with it.
    #[error("no admin credential has a fingerprint starting with {prefix:?}")]
    NotFound {
        /// The prefix asked for.
        prefix: String,
    },
    /// Several do.
    #[error(
        "{prefix:?} is ambiguous: it starts {count} admin credential fingerprints, give more of it"
    )]
    Ambiguous {
        /// The prefix asked for.
        prefix: String,
        /// How many credentials it matches.
        count: usize,
    },
}

/// The one admin credential whose fingerprint starts with `prefix` (case-insensitive; an exact
/// fingerprint always wins).
pub fn find_admin_credential<'a>(
    creds: &'a [AdminCredential],
    prefix: &str,
) -> Result<&'a AdminCredential, PrefixError> {
    let prefix = prefix.trim().to_ascii_lowercase();
    if prefix.is_empty() {
        return Err(PrefixError::Empty);
    }
    if let Some(c) = creds
        .iter()
        .find(|c| c.fingerprint.eq_ignore_ascii_case(&prefix))
    {
        return Ok(c);
    }
    let matching: Vec<&AdminCredential> = creds
        .iter()
        .filter(|c| c.fingerprint.to_ascii_lowercase().starts_with(&prefix))
        .collect();
    match matching.as_slice() {
        [one] => Ok(one),
        [] => Err(PrefixError::NotFound { prefix }),
        many => Err(PrefixError::Ambiguous {
            prefix,
            count: many.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::cred;
    use shoal_proto::v1::ManagerStatus;

    #[test]
    fn a_prefix_names_one_credential_or_is_refused() {
        let creds = vec![cred("ab12", "init"), cred("ab34", "n2"), cred("cd", "n3")];
        assert_eq!(
            find_admin_credential(&creds, "AB3").map(|c| &*c.holder),
            Ok("n2")
        );
        assert_eq!(
            find_admin_credential(&creds, "cd").map(|c| &*c.holder),
            Ok("n3")
        );
        assert_eq!(
            find_admin_credential(&creds, "ab"),
            Err(PrefixError::Ambiguous {
                prefix: "ab".into(),
                count: 2
            })
        );
        assert!(matches!(
            find_admin_credential(&creds, "ff"),
            Err(PrefixError::NotFound { .. })
        ));
        assert_eq!(find_admin_credential(&creds, " "), Err(PrefixError::Empty));
    }

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
