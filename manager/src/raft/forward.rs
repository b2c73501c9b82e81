//! A follower's way to the leader: channels to other managers ([`Dialer`]), the store's proposer
//! that forwards writes ([`ClusterProposer`]), and the forwarding of a whole gRPC call.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prost::Message as _;
use rustls::ClientConfig;
use shoal_proto::pki;
use shoal_proto::v1::raft_client::RaftClient;
use shoal_proto::v1::*;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tracing::debug;

use super::transport::MAX_RAFT_MESSAGE;
use crate::raft::{RaftNode, QUORUM_TIMEOUT};
use crate::store::{Proposer, StoreError};

/// Lazily-connected channels to managers by address, shared by forwarding and status calls.
#[derive(Clone)]
pub struct Dialer {
    tls: Arc<ClientConfig>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Dialer {
    /// A dialer presenting this manager's identity.
    pub fn new(tls: Arc<ClientConfig>) -> Dialer {
        Dialer {
            tls,
            channels: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Forgets every channel whenever `changes` ticks (renewal, CA rotation), so calls after it
    /// open connections with the new credentials.
    pub fn reset_on(&self, mut changes: tokio::sync::watch::Receiver<u64>) {
        let channels = self.channels.clone();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                channels
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clear();
            }
        });
    }

    /// A `Raft` client for the manager at `addr`.
    pub fn raft(&self, addr: &str) -> Result<RaftClient<Channel>, Status> {
        Ok(RaftClient::new(self.channel(addr)?)
            .max_encoding_message_size(MAX_RAFT_MESSAGE)
            .max_decoding_message_size(MAX_RAFT_MESSAGE))
    }

    /// A channel to the manager at `addr`.
    pub fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let channel = match channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                let c = pki::channel(addr, self.tls.clone())
                    .map_err(|e| Status::internal(e.to_string()))?;
                channels.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(channel)
    }
}

/// The store's proposer on a manager of a group: proposes locally on the leader, forwards to the
/// leader (`Raft.Propose`) on a follower, and fails with "no quorum" rather than hang.
pub struct ClusterProposer {
    raft: RaftNode,
    dialer: Dialer,
}

impl ClusterProposer {
    /// Wraps the local Raft node.
    pub fn new(raft: RaftNode, dialer: Dialer) -> ClusterProposer {
        ClusterProposer { raft, dialer }
    }
}

/// Whether a failed call certainly never reached the server (the connection could not be made),
/// so sending it again cannot apply it twice.
fn never_sent(s: &Status) -> bool {
    use std::error::Error as _;
    if s.code() != Code::Unavailable {
        return false;
    }
    let mut source = s.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = e.source();
    }
    false
}

impl Proposer for ClusterProposer {
    fn propose(
        &self,
        req: StoreRequest,
    ) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>> {
        let raft = self.raft.clone();
        let dialer = self.dialer.clone();
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + QUORUM_TIMEOUT;
            loop {
                let (leader, addr) = raft.wait_leader().await?;
                if leader == raft.status().id {
                    return raft.propose_local(req).await;
                }
                let addr = addr.ok_or(StoreError::NoQuorum)?;
                let mut client = dialer.raft(&addr).map_err(crate::error::from_status)?;
                let call = client.propose(ProposeRequest {
                    data: req.encode_to_vec(),
                });
                let resp = match tokio::time::timeout(QUORUM_TIMEOUT + Duration::from_secs(1), call)
                    .await
                {
                    Ok(Ok(r)) => r.into_inner(),
                    // The leader we knew is gone and the request never left this manager: it
                    // is safe to send again, to whoever leads next.
                    Ok(Err(s)) if never_sent(&s) && tokio::time::Instant::now() < deadline => {
                        debug!(leader = %addr, "leader unreachable; waiting for the next one");
                        // Until this manager hears of another leader (or 100 ms, to ask again).
                        let mut status = raft.watch_status();
                        let _ = tokio::time::timeout(
                            Duration::from_millis(100),
                            status.wait_for(|s| s.leader_id != leader),
                        )
                        .await;
                        continue;
                    }
                    Ok(Err(s)) => return Err(crate::error::from_status(s)),
                    Err(_) => return Err(StoreError::NoQuorum),
                };
                // Read-your-writes here: the caller's next read must see what it just wrote.
                return raft.wait_applied(resp.applied_index).await;
            }
        })
    }

    fn read_barrier(&self) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>> {
        let raft = self.raft.clone();
        Box::pin(async move { raft.read_barrier().await })
    }
}

/// The address of the leader, once there is one; "no quorum" when none is elected in time or
/// its address is unknown.
pub async fn leader_addr(raft: &RaftNode) -> Result<String, StoreError> {
    let (_, addr) = raft.wait_leader().await?;
    addr.ok_or(StoreError::NoQuorum)
}

/// Sends an HTTP-level gRPC request to the leader as it is and returns its answer.
pub(crate) async fn forward_to_leader(
    raft: &RaftNode,
    dialer: &Dialer,
    req: http::Request<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    use tower::ServiceExt as _;
    let addr = match leader_addr(raft).await {
        Ok(addr) => addr,
        Err(e) => return Status::from(e).into_http(),
    };
    let channel = match dialer.channel(&addr) {
        Ok(c) => c,
        Err(s) => return s.into_http(),
    };
    match channel.oneshot(req).await {
        Ok(resp) => resp.map(tonic::body::Body::new),
        Err(e) => {
            Status::unavailable(format!("forwarding to the leader at {addr}: {e}")).into_http()
        }
    }
}
