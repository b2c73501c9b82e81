//! The `ClusterAdmin` gRPC service: cluster status, promotion and demotion (see
//! [`super::promote`] and [`super::demote`]), admin credentials, and the cluster-wide settings
//! that [`crate::certs`] and [`crate::lock`] carry out.

use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::*;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::info;

use super::demote::{demote, Demotion};
use super::promote::promote;
use super::status::manager_view;
use crate::auth::{self, Caller};
use crate::raft::forward::{leader_addr, Dialer};
use crate::raft::RaftNode;
use crate::store::Store;

/// The `ClusterAdmin` service (`shoalctl cluster status`, `node promote`, `node demote`).
pub struct ClusterAdminService {
    raft: RaftNode,
    store: Store,
    dialer: Dialer,
    /// This manager's agent sessions (a promotion needs the node's agent connected to the leader).
    sessions: crate::dispatcher::Sessions,
    /// Where this manager serves the Docker Engine API ("" when it does not), for `cluster status`.
    docker_api_addr: String,
}

impl ClusterAdminService {
    /// The service over this manager's Raft node and its dispatcher's sessions.
    pub fn new(
        raft: RaftNode,
        store: Store,
        dialer: Dialer,
        sessions: crate::dispatcher::Sessions,
    ) -> ClusterAdminService {
        ClusterAdminService {
            raft,
            store,
            dialer,
            sessions,
            docker_api_addr: String::new(),
        }
    }

    /// Reports `addr` as where this manager serves the Docker Engine API (`--docker-api-addr`).
    pub fn with_docker_api_addr(mut self, addr: String) -> ClusterAdminService {
        self.docker_api_addr = addr;
        self
    }

    /// Refuses callers other than an admin or a manager forwarding an admin's call.
    fn require_admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if auth::require_admin(&self.store, request).is_ok() {
            return Ok(());
        }
        match auth::caller(&self.store, request)? {
            Caller::Node {
                role: NodeRole::RoleManager,
                ..
            } => Ok(()),
            _ => Err(Status::permission_denied(
                "this call needs the admin certificate (admin.conf)",
            )),
        }
    }

    /// The leader's `ClusterAdmin` client when this manager does not lead, `None` on the leader.
    async fn leader_client(
        &self,
    ) -> Result<Option<shoal_proto::v1::cluster_admin_client::ClusterAdminClient<Channel>>, Status>
    {
        if self.raft.status().is_leader {
            return Ok(None);
        }
        let addr = leader_addr(&self.raft).await?;
        let channel = self.dialer.channel(&addr)?;
        Ok(Some(
            shoal_proto::v1::cluster_admin_client::ClusterAdminClient::new(channel)
                .max_encoding_message_size(shoal_proto::limits::MAX_CONTROL_REQUEST_BYTES)
                .max_decoding_message_size(shoal_proto::limits::MAX_CONTROL_RESPONSE_BYTES),
        ))
    }
}

#[tonic::async_trait]
impl shoal_proto::v1::cluster_admin_server::ClusterAdmin for ClusterAdminService {
    async fn cluster_status(
        &self,
        request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        auth::require_admin(&self.store, &request)?;
        Ok(Response::new(ClusterStatusResponse {
            managers: manager_view(&self.raft, &self.store, &self.dialer, &self.docker_api_addr)
                .await,
        }))
    }

    async fn promote_node(
        &self,
        request: Request<PromoteNodeRequest>,
    ) -> Result<Response<PromoteNodeResponse>, Status> {
        self.require_admin(&request)?;
        let req = request.into_inner();
        // The leader holds the agents' sessions: it checks the node's and tells its agent.
        if let Some(mut leader) = self.leader_client().await? {
            return leader.promote_node(req).await;
        }
        let node_id = promote(&self.store, &self.sessions, &req.node).await?;
        Ok(Response::new(PromoteNodeResponse { node_id }))
    }

    async fn demote_manager(
        &self,
        request: Request<DemoteManagerRequest>,
    ) -> Result<Response<DemoteManagerResponse>, Status> {
        // An admin, or a follower forwarding an admin's call.
        self.require_admin(&request)?;
        let req = request.into_inner();
        if let Some(mut leader) = self.leader_client().await? {
            return leader.demote_manager(req).await;
        }
        match demote(&self.raft, &self.store, &req.node).await? {
            Demotion::Done(node_id) => Ok(Response::new(DemoteManagerResponse { node_id })),
            // The new leader demotes this manager.
            Demotion::HandedOver => {
                let mut leader = self.leader_client().await?.ok_or_else(|| {
                    Status::unavailable(
                        "leadership moved but the new leader is not known yet: retry",
                    )
                })?;
                leader.demote_manager(req).await
            }
        }
    }

    async fn list_admin_credentials(
        &self,
        request: Request<ListAdminCredentialsRequest>,
    ) -> Result<Response<ListAdminCredentialsResponse>, Status> {
        self.require_admin(&request)?;
        let caller = auth::peer_fingerprint(&request).unwrap_or_default();
        let credentials = self
            .store
            .read(|s| s.cluster().map(|c| c.admin_credentials.clone()))
            .unwrap_or_default();
        let caller_fingerprint = if credentials.iter().any(|c| c.fingerprint == caller) {
            caller
        } else {
            String::new()
        };
        Ok(Response::new(ListAdminCredentialsResponse {
            credentials,
            caller_fingerprint,
        }))
    }

    async fn revoke_admin_credential(
        &self,
        request: Request<RevokeAdminCredentialRequest>,
    ) -> Result<Response<RevokeAdminCredentialResponse>, Status> {
        self.require_admin(&request)?;
        let caller = auth::peer_fingerprint(&request).unwrap_or_default();
        let req = request.into_inner();
        let cred = self.store.read(|s| {
            let creds = s
                .cluster()
                .map(|c| c.admin_credentials.as_slice())
                .unwrap_or(&[]);
            auth::find_admin_credential(creds, &req.fingerprint_prefix)
                .cloned()
                .map_err(|e| match e {
                    auth::PrefixError::NotFound { .. } => Status::not_found(e.to_string()),
                    _ => Status::invalid_argument(e.to_string()),
                })
        })?;
        if cred.fingerprint == caller && !req.force {
            return Err(Status::failed_precondition(
                "this is the credential this call is made with: revoking it locks you out (use --force to do it anyway)",
            ));
        }
        // The proposal goes to the leader through the store; once applied, every manager
        // refuses the certificate.
        self.store
            .propose(vec![StoreAction {
                action: Some(Action::RevokeAdmin(AdminRevocation {
                    fingerprints: vec![cred.fingerprint.clone()],
                    holder: String::new(),
                })),
            }])
            .await?;
        info!(fingerprint = %cred.fingerprint, holder = %cred.holder, "admin credential revoked");
        Ok(Response::new(RevokeAdminCredentialResponse {
            revoked: Some(cred),
        }))
    }

    async fn renew_admin_certificate(
        &self,
        request: Request<RenewAdminCertificateRequest>,
    ) -> Result<Response<RenewAdminCertificateResponse>, Status> {
        crate::certs::renew_admin(&self.store, request)
            .await
            .map(Response::new)
    }

    async fn get_cluster(
        &self,
        request: Request<GetClusterRequest>,
    ) -> Result<Response<GetClusterResponse>, Status> {
        self.require_admin(&request)?;
        crate::certs::cluster_info(&self.store).map(Response::new)
    }

    async fn update_cluster(
        &self,
        request: Request<UpdateClusterRequest>,
    ) -> Result<Response<UpdateClusterResponse>, Status> {
        self.require_admin(&request)?;
        let req = request.into_inner();
        if let Some(ns) = req.cert_expiry_ns {
            crate::certs::set_cert_expiry(&self.store, ns).await?;
        }
        let mut unlock_key = String::new();
        if let Some(on) = req.autolock {
            unlock_key = crate::lock::set_autolock(&self.store, on).await?;
        }
        Ok(Response::new(UpdateClusterResponse { unlock_key }))
    }

    async fn rotate_ca(
        &self,
        request: Request<RotateCaRequest>,
    ) -> Result<Response<RotateCaResponse>, Status> {
        self.require_admin(&request)?;
        crate::certs::start_rotation(&self.store)
            .await
            .map(Response::new)
    }

    async fn unlock(
        &self,
        _request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        Err(Status::failed_precondition("this manager is not locked"))
    }

    async fn unlock_key(
        &self,
        request: Request<UnlockKeyRequest>,
    ) -> Result<Response<UnlockKeyResponse>, Status> {
        self.require_admin(&request)?;
        let req = request.into_inner();
        crate::lock::unlock_key(&self.store, req.rotate)
            .await
            .map(|unlock_key| Response::new(UnlockKeyResponse { unlock_key }))
    }
}
