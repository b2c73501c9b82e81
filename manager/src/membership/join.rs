//! Join admission on the leader: a new manager (or a worker being promoted) gets a certificate,
//! a store record, an admin credential, and then a vote.

use shoal_proto::pki::{self, CertRole};
use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::*;
use tonic::Status;
use tracing::info;

use crate::node_record::{manager_fingerprint, manager_node, promoted_node};
use crate::raft::RaftNode;
use crate::store::{Store, StoreError};

/// Records the new manager, then adds it as a voter; on the leader only, one join at a time (the
/// caller holds the lock: raft ids are allocated from the store).
pub(crate) async fn admit(
    raft: &RaftNode,
    store: &Store,
    req: JoinManagerRequest,
) -> Result<JoinManagerResponse, Status> {
    let cluster = check_manager_token(store, &req.token)?;
    let ca = crate::certs::signing_ca(&cluster);
    let lifetime = crate::certs::lifetime(&cluster);
    let addr = req.addr.trim().to_string();
    if addr.parse::<std::net::SocketAddr>().is_err() {
        return Err(Status::invalid_argument(format!(
            "addr: {addr:?} is not IP:PORT"
        )));
    }
    // Promoting a worker: the node must still be one (its agent keeps its certificate).
    let worker = if req.node_id.is_empty() {
        None
    } else {
        let node = store
            .read(|s| s.node(&req.node_id).cloned())
            .ok_or_else(|| {
                Status::not_found(format!("node {} is not in the cluster", req.node_id))
            })?;
        if node.manager_status.is_some() {
            return Err(Status::already_exists(format!(
                "node {} is already a manager",
                node.id
            )));
        }
        Some(node)
    };
    let (raft_id, taken) = store.read(|s| {
        let managers: Vec<&ManagerStatus> = s
            .nodes()
            .filter_map(|n| n.manager_status.as_ref())
            .collect();
        let max = managers.iter().map(|m| m.raft_id).max().unwrap_or(0);
        (max + 1, managers.iter().any(|m| m.addr == addr))
    });
    let raft_id = raft_id.max(raft.status().voters.iter().max().map_or(1, |m| m + 1));
    if taken {
        return Err(Status::already_exists(format!(
            "a manager with address {addr} is already a member; remove it first (`shoalctl node rm`)"
        )));
    }
    let node_id = match &worker {
        Some(w) => w.id.clone(),
        None => shoal_proto::new_id(),
    };
    let cert_pem = pki::sign_csr(&ca, &req.csr_pem, &node_id, CertRole::Manager, lifetime)
        .map_err(|e| Status::invalid_argument(format!("csr: {e}")))?;
    let fingerprint = pki::fingerprint_pem(&cert_pem)
        .map_err(|e| Status::internal(format!("issued certificate: {e}")))?;
    let admin = pki::issue(&ca, "admin", CertRole::Admin, lifetime)
        .map_err(|e| Status::internal(format!("admin certificate: {e}")))?;
    let admin_fp = pki::fingerprint_pem(&admin.cert_pem)
        .map_err(|e| Status::internal(format!("admin certificate: {e}")))?;
    let admin_expires = pki::validity(&admin.cert_pem)
        .map_err(|e| Status::internal(format!("admin certificate: {e}")))?
        .not_after_ns();
    let issuer = crate::certs::ca_fingerprint(&cluster);
    let now = shoal_proto::now_ns();
    // The record first, so every manager knows the new member's address (and trusts its
    // certificate) by the time Raft starts talking to it. Built from a fresh read each time
    // a concurrent write (a heartbeat, another join) makes it out of sequence.
    let worker = store
        .propose_fresh(|s| {
            let mut cluster = s
                .cluster()
                .cloned()
                .ok_or_else(|| Status::unavailable("the cluster is not initialised yet"))?;
            cluster.admin_credentials.push(AdminCredential {
                fingerprint: admin_fp.clone(),
                holder: node_id.clone(),
                issued_at: now,
                expires_at: admin_expires,
            });
            let worker = match &worker {
                Some(w) => {
                    let fresh = s.node(&w.id).cloned().ok_or_else(|| {
                        Status::not_found(format!("node {} is not in the cluster", w.id))
                    })?;
                    if fresh.manager_status.is_some() {
                        return Err(Status::already_exists(format!(
                            "node {} is already a manager",
                            fresh.id
                        )));
                    }
                    Some(fresh)
                }
                None => None,
            };
            let mut node = match &worker {
                Some(w) => promoted_node(w, &addr, raft_id, fingerprint.clone(), now),
                None => manager_node(
                    &node_id,
                    NodeDescription {
                        hostname: req.hostname.trim().to_string(),
                        ..Default::default()
                    },
                    &addr,
                    raft_id,
                    false,
                    fingerprint.clone(),
                    now,
                ),
            };
            // Which CA signed the manager's certificate (CA rotation progress).
            match node.manager_status.as_mut() {
                Some(m) if !m.cert_fingerprint.is_empty() => {
                    m.cert_issuer_fingerprint = issuer.clone()
                }
                _ => node.cert_issuer_fingerprint = issuer.clone(),
            }
            let actions = vec![
                StoreAction {
                    action: Some(Action::PutNode(node)),
                },
                StoreAction {
                    action: Some(Action::PutCluster(cluster)),
                },
            ];
            Ok((actions, worker))
        })
        .await?;
    raft.set_peer(raft_id, addr.clone());
    if let Err(e) = raft.change_membership(raft_id, true).await {
        // Leave no member record for a manager that is not in the group (a promoted worker
        // goes back to what it was).
        let _ = store
            .propose_fresh(|s| {
                let undo = match (&worker, s.node(&node_id)) {
                    // The worker as it was, over whatever version the promotion left.
                    (Some(w), Some(now)) => Action::PutNode(Node {
                        meta: now.meta,
                        ..w.clone()
                    }),
                    (Some(_), None) => return Ok::<_, StoreError>((Vec::new(), ())),
                    (None, _) => Action::RemoveNode(node_id.clone()),
                };
                Ok((vec![StoreAction { action: Some(undo) }], ()))
            })
            .await;
        return Err(e.into());
    }
    info!(node.id = %node_id, raft_id, %addr, promoted = worker.is_some(), "manager joined");
    let (peers, manager_fingerprints, cluster_id) = store.read(|s| {
        let managers: Vec<&Node> = s.nodes().filter(|n| n.manager_status.is_some()).collect();
        (
            managers
                .iter()
                .filter_map(|n| {
                    n.manager_status.as_ref().map(|m| RaftPeer {
                        raft_id: m.raft_id,
                        addr: m.addr.clone(),
                        node_id: n.id.clone(),
                    })
                })
                .collect(),
            managers
                .iter()
                .map(|n| manager_fingerprint(n).to_string())
                .collect(),
            s.cluster().map(|c| c.id.clone()).unwrap_or_default(),
        )
    });
    Ok(JoinManagerResponse {
        node_id,
        cert_pem,
        ca_cert_pem: crate::certs::trust_bundle(&cluster),
        raft_id,
        cluster_id,
        peers,
        manager_fingerprints,
        admin_cert_pem: admin.cert_pem,
        admin_key_pem: admin.key_pem,
    })
}

/// Checks that `token` is this cluster's manager join token; returns the CA that signs.
pub(crate) fn check_manager_token(store: &Store, token: &str) -> Result<Cluster, Status> {
    let (role, cluster) = crate::ca::check_token(store, token)?;
    if role != NodeRole::RoleManager {
        return Err(Status::permission_denied(
            "this is a worker token: `shoal-manager join` needs the manager token (`shoalctl cluster join-token manager`)",
        ));
    }
    Ok(cluster)
}
