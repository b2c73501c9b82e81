//! The `Raft` gRPC service every manager serves: peer messages in, proposals forwarded by
//! followers, manager joins (admitted by the leader, see [`super::join`]), and its own status.

use std::sync::Arc;

use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::Message;
use shoal_proto::v1::raft_server::Raft;
use shoal_proto::v1::*;
use tonic::{Request, Response, Status, Streaming};
use tracing::warn;

use super::join::{admit, check_manager_token};
use crate::auth::{self, Caller};
use crate::raft::forward::{leader_addr, Dialer};
use crate::raft::transport::{PeerBook, SenderCheck, SenderError};
use crate::raft::RaftNode;
use crate::store::Store;

/// The `Raft` gRPC service.
pub struct RaftService {
    raft: RaftNode,
    store: Store,
    book: Arc<PeerBook>,
    dialer: Dialer,
    node_id: String,
    addr: String,
    /// Where this manager serves the Docker Engine API over TLS ("" when it does not).
    docker_api_addr: String,
    /// One join at a time: raft ids are allocated from the store.
    joining: Arc<tokio::sync::Mutex<()>>,
}

impl RaftService {
    /// The service of this manager (`node_id`, reachable at `addr`).
    pub fn new(
        raft: RaftNode,
        store: Store,
        book: Arc<PeerBook>,
        dialer: Dialer,
        node_id: String,
        addr: String,
    ) -> RaftService {
        RaftService {
            raft,
            store,
            book,
            dialer,
            node_id,
            addr,
            docker_api_addr: String::new(),
            joining: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Reports `addr` as where this manager serves the Docker Engine API (`--docker-api-addr`).
    pub fn with_docker_api_addr(mut self, addr: String) -> RaftService {
        self.docker_api_addr = addr;
        self
    }

    /// The worker node a join claims to be (`node promote`), or "" for a new manager. The claim
    /// is proven by the TLS handshake: the joining process presented that node's current
    /// certificate, whose key never left the node's host. A manager forwarding a join to the
    /// leader checked this itself and passes the node id on; nobody else may set it.
    fn joining_node(&self, request: &Request<JoinManagerRequest>) -> Result<String, Status> {
        let claimed = request.get_ref().node_id.clone();
        if auth::peer_fingerprint(request).is_none() {
            if !claimed.is_empty() {
                return Err(Status::permission_denied(
                    "node_id: joining as a node needs that node's certificate",
                ));
            }
            return Ok(String::new());
        }
        if self.book.require_manager(request).is_ok() {
            return Ok(claimed);
        }
        match auth::caller(&self.store, request)? {
            Caller::Node { id, .. } if claimed.is_empty() || claimed == id => Ok(id),
            Caller::Node { id, .. } => Err(Status::permission_denied(format!(
                "node_id: this certificate belongs to node {id}, not {claimed}"
            ))),
            Caller::Admin => Err(Status::permission_denied(
                "an admin certificate cannot join as a manager: join with no certificate, or with a worker node's to promote it",
            )),
        }
    }

    /// This manager's own status.
    fn local_status(&self) -> RaftStatusResponse {
        let st = self.raft.status();
        RaftStatusResponse {
            node_id: self.node_id.clone(),
            raft_id: st.id,
            addr: self.addr.clone(),
            leader_id: st.leader_id,
            term: st.term,
            commit: st.commit,
            applied: st.applied,
            is_leader: st.is_leader,
            docker_api_addr: self.docker_api_addr.clone(),
        }
    }
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn send(
        &self,
        request: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<RaftAck>, Status> {
        self.book.require_manager(&request)?;
        let fingerprint = auth::peer_fingerprint(&request).unwrap_or_default();
        let mut check = SenderCheck::new(self.book.clone(), fingerprint);
        let mut inbound = request.into_inner();
        while let Some(m) = inbound.message().await? {
            match Message::parse_from_bytes(&m.data) {
                Ok(msg) => {
                    match check.check(msg.from) {
                        Ok(()) => {}
                        Err(e @ SenderError::Mismatch { .. }) => {
                            warn!(error = %e, "raft message with a forged sender dropped");
                            continue;
                        }
                        Err(e @ SenderError::NotAManager) => {
                            warn!(claimed = msg.from, error = %e, "raft stream refused");
                            return Err(Status::permission_denied(e.to_string()));
                        }
                    }
                    if self.raft.step(msg).await.is_err() {
                        return Err(Status::unavailable("this manager is stopping"));
                    }
                }
                Err(e) => warn!(error = %e, "undecodable raft message dropped"),
            }
        }
        Ok(Response::new(RaftAck {}))
    }

    async fn propose(
        &self,
        request: Request<ProposeRequest>,
    ) -> Result<Response<ProposeResponse>, Status> {
        self.book.require_manager(&request)?;
        let req = StoreRequest::decode(request.into_inner().data.as_slice())
            .map_err(|e| Status::invalid_argument(format!("store request: {e}")))?;
        self.raft.propose_local(req).await?;
        Ok(Response::new(ProposeResponse {
            applied_index: self.store.applied_index(),
        }))
    }

    async fn join_manager(
        &self,
        request: Request<JoinManagerRequest>,
    ) -> Result<Response<JoinManagerResponse>, Status> {
        let as_node = self.joining_node(&request)?;
        let mut req = request.into_inner();
        // The token is what authenticates a joiner without a certificate: check it before any
        // work (waiting for a leader, forwarding, the one-join-at-a-time lock). This manager's
        // copy of the cluster may lag a token rotation by a moment; the leader checks again.
        check_manager_token(&self.store, &req.token)?;
        req.node_id = as_node;
        let st = self.raft.status();
        if st.is_leader {
            let _one = self.joining.lock().await;
            return admit(&self.raft, &self.store, req).await.map(Response::new);
        }
        // Any manager takes the join; the leader does it.
        let addr = leader_addr(&self.raft).await?;
        let mut client = self.dialer.raft(&addr)?;
        client.join_manager(req).await
    }

    async fn status(
        &self,
        request: Request<RaftStatusRequest>,
    ) -> Result<Response<RaftStatusResponse>, Status> {
        if self.book.require_manager(&request).is_err() {
            auth::require_admin(&self.store, &request)?;
        }
        Ok(Response::new(self.local_status()))
    }
}
