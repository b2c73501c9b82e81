//! Several managers as one Raft group: the gRPC transport between them, the `Raft` service
//! (peer messages, forwarded proposals, manager joins, status), the proposer that forwards a
//! follower's writes to the leader, and the view of every manager that `cluster status` prints.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::Message;
use rustls::ClientConfig;
use shoal_proto::pki::{self, CertRole};
use shoal_proto::v1::raft_client::RaftClient;
use shoal_proto::v1::raft_server::Raft;
use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::auth::{self, Caller};
use crate::raft::{RaftNode, Transport, QUORUM_TIMEOUT};
use crate::store::{Proposer, Store, StoreError};

/// Messages queued for one peer before new ones are dropped (Raft resends what matters).
const PEER_QUEUE: usize = 4096;

/// How long `cluster status` waits for each manager's answer.
const STATUS_TIMEOUT: Duration = Duration::from_millis(800);

/// Largest Raft message (a store snapshot) a manager accepts; see
/// [`shoal_proto::limits::MAX_RAFT_MESSAGE_BYTES`].
pub const MAX_RAFT_MESSAGE: usize = shoal_proto::limits::MAX_RAFT_MESSAGE_BYTES;

/// Where managers are: addresses by Raft id, learnt from the join and from the store's manager
/// nodes; and which certificate fingerprints belong to managers.
pub struct PeerBook {
    store: Store,
    addrs: RwLock<HashMap<u64, String>>,
    /// Fingerprints trusted before the store knows them (a new manager catching up).
    bootstrap_fingerprints: HashSet<String>,
    /// Set once the store held a manager record: the join-time trust has ended for good.
    caught_up: std::sync::atomic::AtomicBool,
}

impl PeerBook {
    /// A book seeded with `peers` (id, address) and trusted manager fingerprints.
    pub fn new(store: Store, peers: &[(u64, String)], fingerprints: Vec<String>) -> Arc<PeerBook> {
        Arc::new(PeerBook {
            store,
            addrs: RwLock::new(peers.iter().cloned().collect()),
            bootstrap_fingerprints: fingerprints.into_iter().collect(),
            caught_up: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The address of manager `id`: the store's record wins (it follows changes), else the seed.
    pub fn addr(&self, id: u64) -> Option<String> {
        let stored = self.store.read(|s| {
            s.nodes()
                .filter_map(|n| n.manager_status.as_ref())
                .find(|m| m.raft_id == id)
                .map(|m| m.addr.clone())
        });
        match stored {
            Some(a) => Some(a),
            None => self
                .addrs
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&id)
                .cloned(),
        }
    }

    /// Whether the join-time trust still counts: only until the store holds any manager record
    /// (a joiner's first snapshot has them all); from then on the store alone decides.
    fn store_knows_managers(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.caught_up.load(Ordering::Relaxed) {
            return true;
        }
        let knows = self
            .store
            .read(|s| s.nodes().any(|n| n.manager_status.is_some()));
        if knows {
            self.caught_up.store(true, Ordering::Relaxed);
        }
        knows
    }

    /// The Raft id a peer presenting certificate `fp` may send as, looked up afresh: the store's
    /// manager records, or before they arrived, the join-time view.
    pub fn sender_of(&self, fp: &str) -> Sender {
        let stored = self.store.read(|s| {
            s.nodes()
                .filter(|n| n.manager_status.is_some())
                .find(|n| crate::manager::is_manager_fingerprint(n, fp))
                .and_then(|n| n.manager_status.as_ref().map(|m| m.raft_id))
        });
        match stored {
            Some(id) => Sender::Member(id),
            None if !self.store_knows_managers() && self.bootstrap_fingerprints.contains(fp) => {
                Sender::Bootstrap(
                    self.addrs
                        .read()
                        .unwrap_or_else(PoisonError::into_inner)
                        .keys()
                        .copied()
                        .collect(),
                )
            }
            None => Sender::Stranger,
        }
    }

    /// Refuses a caller that is not a manager of this cluster.
    fn require_manager<T>(&self, req: &Request<T>) -> Result<(), Status> {
        if let Some(fp) = auth::peer_fingerprint(req) {
            if self.bootstrap_fingerprints.contains(&fp) && !self.store_knows_managers() {
                return Ok(());
            }
        }
        match auth::caller(&self.store, req)? {
            Caller::Node {
                role: NodeRole::RoleManager,
                ..
            } => Ok(()),
            _ => Err(Status::permission_denied(
                "the raft service is for managers only",
            )),
        }
    }
}

/// Who a Raft peer's certificate lets it speak as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// A manager of the store: exactly this Raft id.
    Member(u64),
    /// Trusted from the join response, before the store caught up: one of these peers' ids.
    Bootstrap(HashSet<u64>),
    /// No (longer a) manager.
    Stranger,
}

/// Why a received Raft message is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SenderError {
    /// The message claims another manager's id than the certificate's.
    #[error("raft message from {claimed} on the connection of manager {expected:?}")]
    Mismatch {
        /// `Message.from`.
        claimed: u64,
        /// The Raft id(s) the certificate may speak as.
        expected: Vec<u64>,
    },
    /// The certificate is no (longer a) manager's.
    #[error("the peer's certificate is not a manager's of this cluster (any more)")]
    NotAManager,
}

/// The check of every message on one inbound `Raft.Send` stream: the sender id must be the raft
/// id of the manager whose certificate is on the connection. The answer is cached per store
/// applied index, so a demotion or removal counts from the next message after it is applied.
pub struct SenderCheck {
    book: Arc<PeerBook>,
    fingerprint: String,
    cached: Option<(u64, Sender)>,
}

impl SenderCheck {
    /// The check for a connection presenting the certificate with fingerprint `fingerprint`.
    pub fn new(book: Arc<PeerBook>, fingerprint: String) -> SenderCheck {
        SenderCheck {
            book,
            fingerprint,
            cached: None,
        }
    }

    /// Whether a message claiming to be from `from` may be stepped.
    pub fn check(&mut self, from: u64) -> Result<(), SenderError> {
        let applied = self.book.store.applied_index();
        let sender = match &self.cached {
            Some((at, sender)) if *at == applied => sender.clone(),
            _ => {
                let sender = self.book.sender_of(&self.fingerprint);
                self.cached = Some((applied, sender.clone()));
                sender
            }
        };
        match sender {
            Sender::Member(id) if id == from => Ok(()),
            Sender::Member(id) => Err(SenderError::Mismatch {
                claimed: from,
                expected: vec![id],
            }),
            Sender::Bootstrap(ids) if ids.contains(&from) => Ok(()),
            Sender::Bootstrap(ids) => {
                let mut expected: Vec<u64> = ids.into_iter().collect();
                expected.sort_unstable();
                Err(SenderError::Mismatch {
                    claimed: from,
                    expected,
                })
            }
            Sender::Stranger => Err(SenderError::NotAManager),
        }
    }
}

/// Carries Raft messages over gRPC: one long-lived `Raft.Send` stream per peer, reopened after
/// failures; messages for an unreachable peer are dropped (Raft retries).
pub struct GrpcTransport {
    book: Arc<PeerBook>,
    tls: Arc<ClientConfig>,
    peers: Mutex<HashMap<u64, mpsc::Sender<Message>>>,
    /// Bumped when this manager's certificate or trusted CAs change: streams are reopened, so no
    /// connection outlives the credentials it was authenticated with.
    changes: Option<tokio::sync::watch::Receiver<u64>>,
}

impl GrpcTransport {
    /// A transport dialing peers with this manager's own identity (`tls`).
    pub fn new(book: Arc<PeerBook>, tls: Arc<ClientConfig>) -> Arc<GrpcTransport> {
        Arc::new(GrpcTransport {
            book,
            tls,
            peers: Mutex::new(HashMap::new()),
            changes: None,
        })
    }

    /// A transport whose streams are reopened whenever `changes` ticks (renewal, CA rotation).
    pub fn reconnecting(
        book: Arc<PeerBook>,
        tls: Arc<ClientConfig>,
        changes: tokio::sync::watch::Receiver<u64>,
    ) -> Arc<GrpcTransport> {
        Arc::new(GrpcTransport {
            book,
            tls,
            peers: Mutex::new(HashMap::new()),
            changes: Some(changes),
        })
    }
}

impl Transport for GrpcTransport {
    fn send(&self, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        for m in msgs {
            let to = m.to;
            let tx = peers.entry(to).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(PEER_QUEUE);
                tokio::spawn(peer_loop(
                    to,
                    self.book.clone(),
                    self.tls.clone(),
                    self.changes.clone(),
                    rx,
                ));
                tx
            });
            if tx.try_send(m).is_err() {
                debug!(peer = to, "raft message dropped: peer queue full");
            }
        }
    }
}

/// Keeps one `Raft.Send` stream open to peer `id` and feeds it.
async fn peer_loop(
    id: u64,
    book: Arc<PeerBook>,
    tls: Arc<ClientConfig>,
    mut changes: Option<tokio::sync::watch::Receiver<u64>>,
    mut rx: mpsc::Receiver<Message>,
) {
    loop {
        let channel = match book.addr(id).map(|a| pki::channel(&a, tls.clone())) {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                warn!(peer = id, error = %e, "bad peer address");
                None
            }
            None => {
                debug!(peer = id, "no address known for raft peer yet");
                None
            }
        };
        if let Some(channel) = channel {
            let (tx, stream_rx) = mpsc::channel::<RaftMessage>(PEER_QUEUE);
            let mut client = RaftClient::new(channel)
                .max_encoding_message_size(MAX_RAFT_MESSAGE)
                .max_decoding_message_size(MAX_RAFT_MESSAGE);
            let mut call =
                Box::pin(async move { client.send(ReceiverStream::new(stream_rx)).await });
            loop {
                tokio::select! {
                    r = &mut call => {
                        if let Err(e) = r {
                            debug!(peer = id, error = %e, "raft stream to peer ended");
                        }
                        break;
                    }
                    Some(Ok(())) = async {
                        match changes.as_mut() {
                            Some(c) => Some(c.changed().await),
                            None => None,
                        }
                    } => {
                        debug!(peer = id, "credentials changed: reopening the raft stream");
                        break;
                    }
                    m = rx.recv() => {
                        let Some(m) = m else { return };
                        match m.write_to_bytes() {
                            Ok(data) => {
                                // Full means the peer is slow or gone: drop, Raft resends.
                                let _ = tx.try_send(RaftMessage { data });
                            }
                            Err(e) => warn!(peer = id, error = %e, "cannot encode raft message"),
                        }
                    }
                }
            }
        }
        // Drop what queued up meanwhile (it is stale), then try again shortly.
        tokio::time::sleep(Duration::from_millis(100)).await;
        loop {
            match rx.try_recv() {
                Ok(_) => continue,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            }
        }
    }
}

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

/// A forwarded call's error, back in store terms.
fn from_status(s: Status) -> StoreError {
    if let Some(e) = crate::error::out_of_sequence(&s) {
        return e;
    }
    match s.code() {
        Code::AlreadyExists => StoreError::Conflict(s.message().to_string()),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            StoreError::NoQuorum
        }
        _ => StoreError::Conflict(s.message().to_string()),
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
                let mut client = dialer.raft(&addr).map_err(from_status)?;
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
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    Ok(Err(s)) => return Err(from_status(s)),
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

/// The `Raft` gRPC service.
pub struct RaftService {
    raft: RaftNode,
    store: Store,
    book: Arc<PeerBook>,
    dialer: Dialer,
    node_id: String,
    addr: String,
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
            joining: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Records the new manager, then adds it as a voter; on the leader only.
    async fn admit(&self, req: JoinManagerRequest) -> Result<JoinManagerResponse, Status> {
        let _one = self.joining.lock().await;
        let cluster = check_manager_token(&self.store, &req.token)?;
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
            let node = self
                .store
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
        let (raft_id, taken) = self.store.read(|s| {
            let managers: Vec<&ManagerStatus> = s
                .nodes()
                .filter_map(|n| n.manager_status.as_ref())
                .collect();
            let max = managers.iter().map(|m| m.raft_id).max().unwrap_or(0);
            (max + 1, managers.iter().any(|m| m.addr == addr))
        });
        let raft_id = raft_id.max(self.raft.status().voters.iter().max().map_or(1, |m| m + 1));
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
        let worker = self
            .store
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
                    Some(w) => {
                        crate::manager::promoted_node(w, &addr, raft_id, fingerprint.clone(), now)
                    }
                    None => crate::manager::manager_node(
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
        self.raft.set_peer(raft_id, addr.clone());
        if let Err(e) = self.raft.change_membership(raft_id, true).await {
            // Leave no member record for a manager that is not in the group (a promoted worker
            // goes back to what it was).
            let _ = self
                .store
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
            return Err(crate::error::to_status(e));
        }
        info!(node.id = %node_id, raft_id, %addr, promoted = worker.is_some(), "manager joined");
        let (peers, manager_fingerprints, cluster_id) = self.store.read(|s| {
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
                    .map(|n| crate::manager::manager_fingerprint(n).to_string())
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
        }
    }
}

/// Checks that `token` is this cluster's manager join token; returns the CA that signs.
fn check_manager_token(store: &Store, token: &str) -> Result<Cluster, Status> {
    let (role, cluster) = crate::ca::check_token(store, token)?;
    if role != NodeRole::RoleManager {
        return Err(Status::permission_denied(
            "this is a worker token: `shoal-manager join` needs the manager token (`shoalctl cluster join-token manager`)",
        ));
    }
    Ok(cluster)
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
        self.raft
            .propose_local(req)
            .await
            .map_err(crate::error::to_status)?;
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
            return self.admit(req).await.map(Response::new);
        }
        // Any manager takes the join; the leader does it.
        let (_, addr) = self
            .raft
            .wait_leader()
            .await
            .map_err(crate::error::to_status)?;
        let addr = addr.ok_or_else(|| crate::error::to_status(StoreError::NoQuorum))?;
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

/// Every manager the store knows, as each one reports itself (unreachable ones as such).
pub async fn manager_view(raft: &RaftNode, store: &Store, dialer: &Dialer) -> Vec<ManagerInfo> {
    let managers: Vec<(String, ManagerStatus)> = store.read(|s| {
        s.nodes()
            .filter_map(|n| n.manager_status.clone().map(|m| (n.id.clone(), m)))
            .collect()
    });
    let me = raft.status();
    let asks = managers.into_iter().map(|(node_id, ms)| {
        let dialer = dialer.clone();
        let me = me.clone();
        async move {
            let mut info = ManagerInfo {
                node_id,
                addr: ms.addr.clone(),
                raft_id: ms.raft_id,
                ..ManagerInfo::default()
            };
            let answer = if ms.raft_id == me.id {
                Ok(RaftStatusResponse {
                    leader_id: me.leader_id,
                    term: me.term,
                    commit: me.commit,
                    applied: me.applied,
                    is_leader: me.is_leader,
                    ..RaftStatusResponse::default()
                })
            } else {
                match dialer.raft(&ms.addr) {
                    Ok(mut c) => {
                        match tokio::time::timeout(STATUS_TIMEOUT, c.status(RaftStatusRequest {}))
                            .await
                        {
                            Ok(Ok(r)) => Ok(r.into_inner()),
                            Ok(Err(s)) => Err(s.message().to_string()),
                            Err(_) => Err("no answer within 800 ms".to_string()),
                        }
                    }
                    Err(s) => Err(s.message().to_string()),
                }
            };
            match answer {
                Ok(r) => {
                    info.reachable = true;
                    info.leader = r.is_leader;
                    info.term = r.term;
                    info.commit = r.commit;
                    info.applied = r.applied;
                }
                Err(e) => info.error = e,
            }
            info
        }
    });
    let mut all = futures::future::join_all(asks).await;
    all.sort_by_key(|m| m.raft_id);
    all
}

/// The `ClusterAdmin` service (`shoalctl cluster status`, `node promote`, `node demote`).
pub struct ClusterAdminService {
    raft: RaftNode,
    store: Store,
    dialer: Dialer,
    /// This manager's agent sessions (a promotion needs the node's agent connected to the leader).
    sessions: crate::dispatcher::Sessions,
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
        }
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
        let (_, addr) = self
            .raft
            .wait_leader()
            .await
            .map_err(crate::error::to_status)?;
        let addr = addr.ok_or_else(|| crate::error::to_status(StoreError::NoQuorum))?;
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
            managers: manager_view(&self.raft, &self.store, &self.dialer).await,
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
        let node = self
            .store
            .read(|s| crate::controlapi::find_node(s, &req.node))?;
        let connected = self.sessions.get(&node.id).is_some();
        check_promotion(&node, connected).map_err(Status::failed_precondition)?;
        if node.spec.as_ref().map(|s| s.role) == Some(NodeRole::RoleManager as i32) {
            // Asked already: the agent was told (and is told again at each session).
            return Ok(Response::new(PromoteNodeResponse { node_id: node.id }));
        }
        // The wish is recorded in the node's spec; the dispatcher tells the agent, which starts
        // `shoal-manager join` as this node. Its record gets a manager status once it is a voter.
        let id = node.id.clone();
        self.store
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
        Ok(Response::new(PromoteNodeResponse { node_id: id }))
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
        let node = self
            .store
            .read(|s| crate::controlapi::find_node(s, &req.node))?;
        let pending = node.manager_status.is_none()
            && node.spec.as_ref().map(|s| s.role) == Some(NodeRole::RoleManager as i32);
        if pending {
            // A promotion not done yet: call it off (the agent is told to stop what it started).
            let id = node.id.clone();
            put_demoted(&self.store, &id).await?;
            info!(node.id = %id, "promotion called off");
            return Ok(Response::new(DemoteManagerResponse { node_id: id }));
        }
        let raft_id = node
            .manager_status
            .as_ref()
            .map(|m| m.raft_id)
            .ok_or_else(|| {
                Status::failed_precondition(format!("node {} is not a manager", node.id))
            })?;
        // A leader elected a moment ago (after a hand-over, say) has not heard from every voter
        // yet: give the reachability picture up to 2 s to fill in before refusing.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        let st = loop {
            let st = self.raft.status();
            let ok = check_demotion(&st, raft_id, raft_id == st.id).is_ok();
            if ok || tokio::time::Instant::now() >= deadline {
                break st;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        if raft_id == st.id {
            // Demoting the leader: hand leadership to the most up-to-date reachable voter, then
            // let the new leader do the demotion (this manager is then an ordinary member).
            check_demotion(&st, raft_id, true).map_err(Status::failed_precondition)?;
            let to = st
                .voters
                .iter()
                .copied()
                .find(|v| *v != raft_id && st.active.contains(v))
                .ok_or_else(|| Status::failed_precondition("no other reachable manager"))?;
            self.raft
                .transfer_leadership(to)
                .await
                .map_err(crate::error::to_status)?;
            info!(node.id = %node.id, to, "leadership handed over before demoting the leader");
            let mut leader = self.leader_client().await?.ok_or_else(|| {
                Status::unavailable("leadership moved but the new leader is not known yet: retry")
            })?;
            return leader.demote_manager(req).await;
        }
        check_demotion(&st, raft_id, false).map_err(Status::failed_precondition)?;
        // Out of the Raft group first, then the record: a demoted manager never counts for quorum.
        self.raft
            .change_membership(raft_id, false)
            .await
            .map_err(crate::error::to_status)?;
        let id = node.id.clone();
        put_demoted(&self.store, &id).await?;
        info!(node.id = %id, raft_id, "manager demoted");
        Ok(Response::new(DemoteManagerResponse { node_id: id }))
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
            .await
            .map_err(crate::error::to_status)?;
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

/// Whether `node` can be promoted: a worker (or one whose promotion is under way) that is up
/// with its agent connected to the leader, since its agent starts the manager.
pub fn check_promotion(node: &Node, agent_connected: bool) -> Result<(), String> {
    if node.manager_status.is_some() {
        return Err(format!("node {} is already a manager", node.id));
    }
    let ready = node.status.as_ref().map(|s| s.state) == Some(NodeState::NodeReady as i32);
    if !ready || !agent_connected {
        return Err(format!(
            "node {} is not ready with its agent connected: its agent starts the manager, so it must be up",
            node.id
        ));
    }
    Ok(())
}

/// Whether voter `raft_id` can leave the group the leader sees in `st`: refused for the last
/// manager and when the remaining voters would not have a reachable majority. The leader itself
/// is refused unless `hand_over` (it first hands leadership to another voter).
pub fn check_demotion(
    st: &crate::raft::RaftStatus,
    raft_id: u64,
    hand_over: bool,
) -> Result<(), String> {
    if raft_id == st.id && !hand_over {
        return Err("this manager is the leader: it must hand leadership over first".into());
    }
    let remaining: Vec<u64> = st
        .voters
        .iter()
        .copied()
        .filter(|v| *v != raft_id)
        .collect();
    if remaining.is_empty() {
        return Err("it is the last manager".into());
    }
    let reachable = remaining.iter().filter(|v| st.active.contains(v)).count();
    let majority = remaining.len() / 2 + 1;
    if reachable < majority {
        return Err(format!(
            "demoting it would lose quorum: {reachable} of the {} remaining managers are reachable, {majority} are needed",
            remaining.len()
        ));
    }
    Ok(())
}

/// Writes node `id` back as a worker (a demotion, or a promotion called off), built from a fresh
/// read each time a concurrent write makes it out of sequence; a node gone meanwhile is left alone.
async fn put_demoted(store: &Store, id: &str) -> Result<(), Status> {
    store
        .propose_fresh(|s| {
            let actions = match s.node(id) {
                Some(n) => vec![StoreAction {
                    action: Some(Action::PutNode(crate::manager::demoted_node(n))),
                }],
                None => Vec::new(),
            };
            Ok::<_, Status>((actions, ()))
        })
        .await
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::Service as _;

    /// A proposer that only counts what it is asked: a read barrier or a proposal is work.
    #[derive(Default)]
    pub(crate) struct Counting {
        pub(crate) barriers: AtomicUsize,
        pub(crate) proposals: AtomicUsize,
    }

    impl Proposer for Counting {
        fn propose(
            &self,
            _req: StoreRequest,
        ) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>> {
            self.proposals.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        }

        fn read_barrier(&self) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>> {
            self.barriers.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        }
    }

    /// A store whose every Raft call is counted.
    pub(crate) fn counted_store(dir: &std::path::Path) -> (Store, Arc<Counting>) {
        let store = Store::open(dir).expect("open store");
        let counting = Arc::new(Counting::default());
        store.set_proposer(counting.clone());
        (store, counting)
    }

    /// A stand-in for a generated gRPC server that counts the calls it gets.
    fn counted_service(
        calls: Arc<AtomicUsize>,
    ) -> impl tower::Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
        Error = std::convert::Infallible,
        Future = impl Future<
            Output = Result<http::Response<tonic::body::Body>, std::convert::Infallible>,
        > + Send,
    > + Clone
           + Send
           + 'static {
        tower::service_fn(move |_req: http::Request<tonic::body::Body>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok(http::Response::new(tonic::body::Body::empty())) }
        })
    }

    fn grpc_request(path: &str) -> http::Request<tonic::body::Body> {
        http::Request::builder()
            .uri(path)
            .body(tonic::body::Body::empty())
            .expect("a valid request")
    }

    #[tokio::test]
    async fn a_control_call_without_a_certificate_gets_no_read_barrier() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, counting) = counted_store(dir.path());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut linearized = Linearized::new(counted_service(calls.clone()), store);
        for path in [
            "/shoal.v1.Control/ListServices",
            "/shoal.v1.Control/CreateService",
        ] {
            let resp = linearized
                .call(grpc_request(path))
                .await
                .expect("infallible");
            let code = resp
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map(Code::from_i32);
            assert_eq!(code, Some(Code::Unauthenticated), "{path}");
        }
        assert_eq!(counting.barriers.load(Ordering::SeqCst), 0, "read barriers");
        assert_eq!(counting.proposals.load(Ordering::SeqCst), 0, "proposals");
        assert_eq!(calls.load(Ordering::SeqCst), 0, "handler calls");
    }

    #[tokio::test]
    async fn the_raft_service_gives_strangers_the_small_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, counting) = counted_store(dir.path());
        let book = PeerBook::new(store, &[], vec![]);
        let managers = Arc::new(AtomicUsize::new(0));
        let others = Arc::new(AtomicUsize::new(0));
        let mut gate = RaftGate::new(
            counted_service(managers.clone()),
            counted_service(others.clone()),
            book,
        );
        for path in ["/shoal.v1.Raft/JoinManager", "/shoal.v1.Raft/Send"] {
            gate.call(grpc_request(path)).await.expect("infallible");
        }
        assert_eq!(managers.load(Ordering::SeqCst), 0);
        assert_eq!(others.load(Ordering::SeqCst), 2);
        assert_eq!(counting.barriers.load(Ordering::SeqCst), 0);
    }

    fn status(voters: &[u64], active: &[u64]) -> crate::raft::RaftStatus {
        crate::raft::RaftStatus {
            id: 1,
            is_leader: true,
            voters: voters.to_vec(),
            active: active.to_vec(),
            ..Default::default()
        }
    }

    fn apply(store: &Store, index: u64, actions: Vec<Action>) {
        let req = StoreRequest {
            request_id: index,
            actions: actions
                .into_iter()
                .map(|a| StoreAction { action: Some(a) })
                .collect(),
        };
        store.apply(index, &req).expect("apply");
    }

    fn manager(id: &str, fp: &str, raft_id: u64) -> Node {
        Node {
            id: id.into(),
            cert_fingerprint: fp.into(),
            manager_status: Some(ManagerStatus {
                raft_id,
                addr: format!("10.0.0.{raft_id}:4242"),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_raft_message_must_come_from_the_certificates_manager() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open store");
        // A joiner before its store caught up: the join response's managers, by their ids.
        let book = PeerBook::new(
            store.clone(),
            &[(1, "10.0.0.1:4242".into()), (2, "10.0.0.2:4242".into())],
            vec!["fp1".into(), "fp2".into()],
        );
        let mut one = SenderCheck::new(book.clone(), "fp1".into());
        assert_eq!(one.check(1), Ok(()));
        assert!(matches!(
            one.check(9),
            Err(SenderError::Mismatch { claimed: 9, .. })
        ));
        let mut stranger = SenderCheck::new(book.clone(), "nobody".into());
        assert_eq!(stranger.check(1), Err(SenderError::NotAManager));

        // The store knows better: fp1 is manager 1 only, and fp2 is no manager at all.
        apply(&store, 1, vec![Action::PutNode(manager("n1", "fp1", 1))]);
        assert_eq!(one.check(1), Ok(()));
        assert_eq!(
            one.check(2),
            Err(SenderError::Mismatch {
                claimed: 2,
                expected: vec![1]
            })
        );
        let mut two = SenderCheck::new(book.clone(), "fp2".into());
        assert_eq!(two.check(2), Err(SenderError::NotAManager));

        // Demoted: from the next message on, its stream is refused. (The stored record: a put
        // carries the version it read.)
        let stored = store.read(|s| s.node("n1").cloned()).expect("n1 is stored");
        apply(
            &store,
            2,
            vec![Action::PutNode(crate::manager::demoted_node(&stored))],
        );
        assert_eq!(one.check(1), Err(SenderError::NotAManager));
    }

    #[test]
    fn a_demoted_managers_node_and_admin_certificates_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open store");
        let cluster = Cluster {
            id: "c".into(),
            admin_credentials: vec![
                AdminCredential {
                    fingerprint: "admin-init".into(),
                    holder: auth::INIT_HOLDER.into(),
                    issued_at: 1,
                    expires_at: 0,
                },
                AdminCredential {
                    fingerprint: "admin-n2".into(),
                    holder: "n2".into(),
                    issued_at: 2,
                    expires_at: 0,
                },
                AdminCredential {
                    fingerprint: "admin-n3".into(),
                    holder: "n3".into(),
                    issued_at: 3,
                    expires_at: 0,
                },
            ],
            ..Default::default()
        };
        apply(
            &store,
            1,
            vec![
                Action::PutCluster(cluster),
                Action::PutNode(manager("n1", "fp1", 1)),
                Action::PutNode(manager("n2", "fp2", 2)),
                Action::PutNode(manager("n3", "fp3", 3)),
            ],
        );
        let caller = |fp: &str| store.read(|s| auth::caller_of(s, fp));
        assert_eq!(caller("admin-n2").ok(), Some(Caller::Admin));
        assert!(matches!(
            caller("fp2"),
            Ok(Caller::Node {
                role: NodeRole::RoleManager,
                ..
            })
        ));

        let n2 = store.read(|s| s.node("n2").cloned()).expect("n2");
        apply(
            &store,
            2,
            vec![Action::PutNode(crate::manager::demoted_node(&n2))],
        );
        assert_eq!(
            caller("admin-n2").map_err(|s| s.code()),
            Err(Code::PermissionDenied)
        );
        assert_eq!(
            caller("fp2").map_err(|s| s.code()),
            Err(Code::PermissionDenied)
        );
        assert_eq!(caller("admin-init").ok(), Some(Caller::Admin));

        // Removal does the same for a manager removed outright.
        apply(&store, 3, vec![Action::RemoveNode("n3".into())]);
        assert_eq!(
            caller("admin-n3").map_err(|s| s.code()),
            Err(Code::PermissionDenied)
        );

        // Revoked by fingerprint: refused at once.
        apply(
            &store,
            4,
            vec![Action::RevokeAdmin(AdminRevocation {
                fingerprints: vec!["admin-init".into()],
                holder: String::new(),
            })],
        );
        assert_eq!(
            caller("admin-init").map_err(|s| s.code()),
            Err(Code::PermissionDenied)
        );
    }

    #[test]
    fn a_store_written_before_holders_migrates_its_admin_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open store");
            apply(
                &store,
                1,
                vec![Action::PutCluster(Cluster {
                    id: "c".into(),
                    admin_fingerprints: vec!["old-admin".into()],
                    ..Default::default()
                })],
            );
            store.flush().expect("flush");
        }
        let store = Store::open(dir.path()).expect("reopen store");
        let c = store.read(|s| s.cluster().cloned()).expect("cluster");
        assert!(c.admin_fingerprints.is_empty());
        assert_eq!(c.admin_credentials.len(), 1);
        assert_eq!(c.admin_credentials[0].holder, auth::INIT_HOLDER);
        assert_eq!(
            store.read(|s| auth::caller_of(s, "old-admin")).ok(),
            Some(Caller::Admin)
        );
    }

    #[test]
    fn promotion_needs_a_connected_worker() {
        let mut n = Node {
            id: "w1".into(),
            status: Some(NodeStatus {
                state: NodeState::NodeReady as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(check_promotion(&n, true).is_ok());
        let err = check_promotion(&n, false).expect_err("no session");
        assert!(err.contains("agent connected"), "{err}");
        n.status = Some(NodeStatus {
            state: NodeState::NodeDown as i32,
            ..Default::default()
        });
        assert!(check_promotion(&n, true).is_err(), "down");
        n.status = Some(NodeStatus {
            state: NodeState::NodeReady as i32,
            ..Default::default()
        });
        n.manager_status = Some(ManagerStatus::default());
        let err = check_promotion(&n, true).expect_err("a manager");
        assert!(err.contains("already a manager"), "{err}");
    }

    #[test]
    fn demotion_keeps_a_reachable_majority() {
        // 3 managers all up: demoting one leaves 2 of 2.
        assert!(check_demotion(&status(&[1, 2, 3], &[1, 2, 3]), 3, false).is_ok());
        // 3 managers, 2 down... demoting a down one leaves 1 of 2 reachable: refused.
        let err = check_demotion(&status(&[1, 2, 3], &[1]), 3, false).expect_err("refused");
        assert!(err.contains("lose quorum"), "{err}");
        // 5 managers, 1 down: demoting it leaves 4, 4 reachable.
        assert!(check_demotion(&status(&[1, 2, 3, 4, 5], &[1, 2, 3, 4]), 5, false).is_ok());
        // 4 managers, 2 down: demoting a down one leaves 3, 2 reachable: fine.
        assert!(check_demotion(&status(&[1, 2, 3, 4], &[1, 2]), 4, false).is_ok());
        // 4 managers, 2 down: demoting an up one leaves 1 of 3 reachable: refused.
        assert!(check_demotion(&status(&[1, 2, 3, 4], &[1, 2]), 2, false).is_err());
        assert!(
            check_demotion(&status(&[1, 2], &[1, 2]), 1, false).is_err(),
            "the leader, without handing over"
        );
        // The leader hands over first: fine while the others keep a reachable majority.
        assert!(check_demotion(&status(&[1, 2, 3], &[1, 2, 3]), 1, true).is_ok());
        assert!(check_demotion(&status(&[1, 2, 3], &[1, 2]), 1, true).is_err());
    }
}

/// While this manager leads: keeps every manager node's `leader` and `reachability` in the store
/// in line with Raft (so `node ls` shows them on any manager), and removes from the Raft group a
/// voter whose manager node was removed from the store.
pub async fn run_manager_status(
    raft: RaftNode,
    store: Store,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let st = raft.status();
        if !st.is_leader {
            continue;
        }
        let (updates, known): (Vec<StoreAction>, Vec<u64>) = store.read(|s| {
            let mut updates = Vec::new();
            let mut known = Vec::new();
            for n in s.nodes() {
                let Some(ms) = n.manager_status.as_ref() else {
                    continue;
                };
                known.push(ms.raft_id);
                let leader = ms.raft_id == st.id;
                let reachability = if st.active.contains(&ms.raft_id) {
                    "reachable"
                } else {
                    "unreachable"
                };
                if ms.leader != leader || ms.reachability != reachability {
                    let mut n = n.clone();
                    if let Some(m) = n.manager_status.as_mut() {
                        m.leader = leader;
                        m.reachability = reachability.into();
                    }
                    updates.push(StoreAction {
                        action: Some(Action::PutNode(n)),
                    });
                }
            }
            (updates, known)
        });
        if !updates.is_empty() {
            if let Err(e) = store.propose(updates).await {
                debug!(error = %e, "could not record manager status");
            }
        }
        // No manager node at all means the store is not loaded yet, not that all were removed.
        let gone: Vec<u64> = if known.is_empty() {
            Vec::new()
        } else {
            st.voters
                .iter()
                .copied()
                .filter(|v| !known.contains(v))
                .collect()
        };
        for gone in gone.iter() {
            if *gone == st.id {
                continue;
            }
            info!(
                raft_id = gone,
                "manager node removed: removing it from the raft group"
            );
            if let Err(e) = raft.change_membership(*gone, false).await {
                warn!(raft_id = gone, error = %e, "could not remove manager from the raft group");
            }
        }
    }
}

/// Wraps a gRPC service so that every call first passes a read barrier ([`Store::linearize`]):
/// whatever manager shoalctl reaches, its reads see every write acknowledged before them. When
/// no leader answers in time the call fails with "no quorum" without reaching the service.
/// Calls whose streams only the leader can serve (they come from agents' sessions) are
/// forwarded to it as they are.
#[derive(Clone)]
pub struct Linearized<S> {
    inner: S,
    store: Store,
    leader_only: Option<(RaftNode, Dialer)>,
}

/// The Control call that only the leader serves: log streams come from agents' sessions.
const SERVICE_LOGS_PATH: &str = "/shoal.v1.Control/ServiceLogs";

impl<S> Linearized<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, store: Store) -> Linearized<S> {
        Linearized {
            inner,
            store,
            leader_only: None,
        }
    }

    /// Forwards `service logs` to the leader when this manager does not lead.
    pub fn forward_logs(mut self, raft: RaftNode, dialer: Dialer) -> Linearized<S> {
        self.leader_only = Some((raft, dialer));
        self
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Linearized<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for Linearized<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        // The clone is the ready one (tower's usual swap), the original stays for later calls.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let store = self.store.clone();
        let forward = self
            .leader_only
            .clone()
            .filter(|(raft, _)| req.uri().path() == SERVICE_LOGS_PATH && !raft.status().is_leader);
        Box::pin(async move {
            if let Some((raft, dialer)) = forward {
                // Authenticate here: the leader sees this manager's certificate, not the admin's.
                if let Err(s) = admin_of_http(&store, &req) {
                    return Ok(s.into_http());
                }
                return Ok(forward_to_leader(&raft, &dialer, req).await);
            }
            // Nobody gets a read barrier (a Raft round) before they are authenticated.
            if let Err(s) = admitted_before_barrier(&store, &req) {
                return Ok(s.into_http());
            }
            if let Err(e) = store.linearize().await {
                // Refused before the handler ran: nothing was proposed, so a client may safely
                // send even a write to another manager.
                let mut status = crate::error::to_status(e);
                status.metadata_mut().insert(
                    shoal_proto::config::NOTHING_PROPOSED_KEY,
                    tonic::metadata::MetadataValue::from_static("true"),
                );
                return Ok(status.into_http());
            }
            inner.call(req).await
        })
    }
}

/// A tonic request view of an HTTP-level request, carrying its TLS peer certificates (tonic
/// keeps them in the request extensions), for the checks in [`auth`].
fn probe_of<B>(req: &http::Request<B>) -> Request<()> {
    let mut probe = Request::new(());
    if let Some(certs) = req
        .extensions()
        .get::<tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>>()
    {
        probe.extensions_mut().insert(certs.clone());
    }
    probe
}

/// Checks that an HTTP-level request carries the admin certificate.
fn admin_of_http(store: &Store, req: &http::Request<tonic::body::Body>) -> Result<(), Status> {
    auth::require_admin(store, &probe_of(req))
}

/// Whether a control call may have its read barrier: refused at once without a client
/// certificate, or with a worker node's; an admin's or a manager's passes. A certificate our CA
/// signed that this manager's store does not know yet (one issued a moment ago on the leader)
/// passes too: the TLS handshake verified it, and after the barrier the handler checks it again
/// against an up-to-date store.
fn admitted_before_barrier<B>(store: &Store, req: &http::Request<B>) -> Result<(), Status> {
    match auth::caller(store, &probe_of(req)) {
        Ok(Caller::Admin)
        | Ok(Caller::Node {
            role: NodeRole::RoleManager,
            ..
        }) => Ok(()),
        Ok(Caller::Node { .. }) => Err(Status::permission_denied(
            "this call needs the admin certificate (admin.conf)",
        )),
        Err(s) if s.code() == Code::PermissionDenied => Ok(()),
        Err(s) => Err(s),
    }
}

/// Routes `Raft` calls by caller: a manager's to `managers`, whose decoding limit is a whole
/// snapshot ([`MAX_RAFT_MESSAGE`]); anyone else's (a joiner with a token, an admin asking for
/// status, a stranger) to `others`, the same service with a limit of
/// [`shoal_proto::limits::MAX_UNAUTHENTICATED_RAFT_REQUEST_BYTES`]. tonic refuses a larger
/// message from its 5-byte header (`OUT_OF_RANGE`), before it reserves room for it: only
/// managers can make another manager buffer a snapshot.
#[derive(Clone)]
pub struct RaftGate<S> {
    managers: S,
    others: S,
    book: Arc<PeerBook>,
}

impl<S> RaftGate<S> {
    /// Routes between the two configurations of one service, recognising managers with `book`.
    pub fn new(managers: S, others: S, book: Arc<PeerBook>) -> RaftGate<S> {
        RaftGate {
            managers,
            others,
            book,
        }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for RaftGate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for RaftGate<S>
where
    S: tower::Service<http::Request<tonic::body::Body>> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Both are tonic's generated servers, always ready; ask both so either may be called.
        match self.managers.poll_ready(cx) {
            std::task::Poll::Ready(Ok(())) => self.others.poll_ready(cx),
            other => other,
        }
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if self.book.require_manager(&probe_of(&req)).is_ok() {
            self.managers.call(req)
        } else {
            self.others.call(req)
        }
    }
}

/// Sends an HTTP-level gRPC request to the leader as it is and returns its answer.
async fn forward_to_leader(
    raft: &RaftNode,
    dialer: &Dialer,
    req: http::Request<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    use tower::ServiceExt as _;
    let addr = match raft.wait_leader().await {
        Ok((_, Some(addr))) => addr,
        Ok((_, None)) => return crate::error::to_status(StoreError::NoQuorum).into_http(),
        Err(e) => return crate::error::to_status(e).into_http(),
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
