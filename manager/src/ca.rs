//! The CA service: a joining node proves its token and gets a certificate for a key it made itself.

use std::sync::Arc;

use shoal_proto::pki::{self, CertRole};
use shoal_proto::token::{secrets_match, JoinToken};
use shoal_proto::v1::ca_server::Ca;
use shoal_proto::v1::{
    store_action::Action, Cluster, IssueCertificateRequest, IssueCertificateResponse, Meta, Node,
    NodeAvailability, NodeDescription, NodeRole, NodeSpec, NodeState, NodeStatus, StoreAction,
};
use tonic::{Request, Response, Status};
use tracing::info;

use crate::store::Store;

/// The gRPC CA service.
pub struct CaService {
    store: Store,
    /// Manager addresses handed to joining nodes.
    managers: Arc<Vec<String>>,
}

impl CaService {
    /// Makes the service over the store.
    pub fn new(store: Store, managers: Vec<String>) -> Self {
        CaService {
            store,
            managers: Arc::new(managers),
        }
    }
}

impl CaService {
    /// Every manager address: this one's first, then those the store records.
    fn manager_addrs(&self) -> Vec<String> {
        let mut all = self.managers.as_ref().clone();
        let stored: Vec<String> = self.store.read(|s| {
            s.nodes()
                .filter_map(|n| n.manager_status.as_ref().map(|m| m.addr.clone()))
                .collect()
        });
        for a in stored {
            if !all.contains(&a) {
                all.push(a);
            }
        }
        all
    }
}

/// Checks a join token against the cluster; returns the role it grants.
pub fn check_token(store: &Store, token: &str) -> Result<(NodeRole, Cluster), Status> {
    let token = JoinToken::parse(token).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let cluster = store
        .read(|s| s.cluster().cloned())
        .ok_or_else(|| Status::unavailable("the cluster is not initialised yet"))?;
    let fp = pki::fingerprint_pem(&cluster.ca_cert_pem)
        .map_err(|e| Status::internal(format!("cluster CA: {e}")))?;
    if token.ca_fingerprint != fp {
        return Err(Status::permission_denied(
            "join token was made for another cluster (CA fingerprint differs)",
        ));
    }
    let role = if secrets_match(&token.secret, &cluster.worker_token_secret) {
        NodeRole::RoleWorker
    } else if secrets_match(&token.secret, &cluster.manager_token_secret) {
        NodeRole::RoleManager
    } else {
        return Err(Status::permission_denied(
            "invalid join token: it was rotated or never valid; get the current one with `shoalctl cluster join-token worker`",
        ));
    };
    Ok((role, cluster))
}

#[tonic::async_trait]
impl Ca for CaService {
    async fn renew_certificate(
        &self,
        request: Request<shoal_proto::v1::RenewCertificateRequest>,
    ) -> Result<Response<shoal_proto::v1::RenewCertificateResponse>, Status> {
        crate::certs::renew_node(&self.store, request)
            .await
            .map(Response::new)
    }

    async fn issue_certificate(
        &self,
        request: Request<IssueCertificateRequest>,
    ) -> Result<Response<IssueCertificateResponse>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let req = request.into_inner();
        let (role, cluster) = check_token(&self.store, &req.token)?;
        if role == NodeRole::RoleManager {
            return Err(Status::failed_precondition(
                "this is a manager token: managers join with `shoal-manager join`; agents use the worker token",
            ));
        }
        let hostname = req.hostname.trim();
        if hostname.is_empty() {
            return Err(Status::invalid_argument("hostname: must not be empty"));
        }
        let node_id = shoal_proto::new_id();
        let cert_pem = pki::sign_csr(
            &crate::certs::signing_ca(&cluster),
            &req.csr_pem,
            &node_id,
            CertRole::Worker,
            crate::certs::lifetime(&cluster),
        )
        .map_err(|e| Status::invalid_argument(format!("csr: {e}")))?;
        let expires_at = pki::validity(&cert_pem)
            .map_err(|e| Status::internal(format!("issued certificate: {e}")))?
            .not_after_ns();
        let fingerprint = pki::fingerprint_pem(&cert_pem)
            .map_err(|e| Status::internal(format!("issued certificate: {e}")))?;
        let now = shoal_proto::now_ns();
        let node = Node {
            id: node_id.clone(),
            meta: Some(Meta::new_at(now)),
            spec: Some(NodeSpec {
                role: NodeRole::RoleWorker as i32,
                availability: NodeAvailability::AvailabilityActive as i32,
                labels: Default::default(),
            }),
            description: Some(NodeDescription {
                hostname: hostname.to_string(),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: NodeState::NodeUnknown as i32,
                message: "joined, waiting for its first session".into(),
                addr: peer,
                last_heartbeat: 0,
            }),
            manager_status: None,
            cert_fingerprint: fingerprint,
            cert_issuer_fingerprint: crate::certs::ca_fingerprint(&cluster),
            cert_expires_at: expires_at,
            ..Default::default()
        };
        self.store
            .propose(vec![StoreAction {
                action: Some(Action::PutNode(node)),
            }])
            .await?;
        info!(node.id = %node_id, %hostname, "node joined as worker");
        Ok(Response::new(IssueCertificateResponse {
            node_id,
            cert_pem,
            ca_cert_pem: crate::certs::trust_bundle(&cluster),
            role: NodeRole::RoleWorker as i32,
            managers: self.manager_addrs(),
        }))
    }
}
