//! The gRPC transport between the managers of a Raft group: where peers are ([`PeerBook`]), who
//! may speak as which Raft id ([`SenderCheck`]), the outbound streams ([`GrpcTransport`]), and the
//! gate that gives only managers the snapshot-sized message limit ([`RaftGate`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use protobuf::Message as _;
use raft::prelude::Message;
use rustls::ClientConfig;
use shoal_proto::pki;
use shoal_proto::v1::raft_client::RaftClient;
use shoal_proto::v1::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};
use tracing::{debug, warn};

use crate::auth::{self, probe_of, Caller};
use crate::raft::{PeerGoneHook, Transport};
use crate::store::Store;

/// Messages queued for one peer before new ones are dropped (Raft resends what matters).
const PEER_QUEUE: usize = 4096;

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
                .find(|n| crate::node_record::is_manager_fingerprint(n, fp))
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
    pub fn require_manager<T>(&self, req: &Request<T>) -> Result<(), Status> {
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
    /// Told when a peer's stream ended and its address refuses connections.
    gone: Arc<std::sync::OnceLock<PeerGoneHook>>,
}

impl GrpcTransport {
    /// A transport dialing peers with this manager's own identity (`tls`).
    pub fn new(book: Arc<PeerBook>, tls: Arc<ClientConfig>) -> Arc<GrpcTransport> {
        Arc::new(GrpcTransport {
            book,
            tls,
            peers: Mutex::new(HashMap::new()),
            changes: None,
            gone: Arc::default(),
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
            gone: Arc::default(),
        })
    }
}

impl Transport for GrpcTransport {
    fn on_peer_gone(&self, hook: PeerGoneHook) {
        if self.gone.set(hook).is_err() {
            warn!("raft transport: a second peer-gone hook ignored");
        }
    }

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
                    self.gone.clone(),
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
    gone: Arc<std::sync::OnceLock<PeerGoneHook>>,
    mut rx: mpsc::Receiver<Message>,
) {
    loop {
        let addr = book.addr(id);
        let channel = match addr.as_deref().map(|a| pki::channel(a, tls.clone())) {
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
                        if let (Some(addr), Some(hook)) = (addr.as_deref(), gone.get()) {
                            if process_gone(addr).await {
                                debug!(peer = id, "raft peer's process is gone");
                                hook(id);
                            }
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

/// What one TCP connection attempt to a peer's address found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// Refused at once: nothing listens there any more (the process died or stopped).
    Refused,
    /// Accepted: something still listens.
    Accepted,
    /// No answer in time, or another error: a peer that is only slow or cut off.
    NoAnswer,
}

async fn probe(addr: &str) -> Probe {
    let attempt = tokio::net::TcpStream::connect(addr);
    match tokio::time::timeout(Duration::from_millis(500), attempt).await {
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Probe::Refused,
        Ok(Ok(_)) => Probe::Accepted,
        _ => Probe::NoAnswer,
    }
}

/// Pauses before each connection attempt of [`process_gone`]: 77 ms in all.
const GONE_PROBES: [Duration; 6] = [
    Duration::ZERO,
    Duration::from_millis(2),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(20),
    Duration::from_millis(40),
];

/// After a peer's stream ended: whether its process is gone, i.e. a TCP connection to `addr`
/// is refused at once, as opposed to a peer that is only slow or cut off, whose connection
/// attempt times out instead. The kernel tears a killed process down one socket at a time, so
/// the stream can end while its listening socket still accepts for a moment: an accepted
/// attempt is tried again a few times within [`GONE_PROBES`] (without that, one failover in
/// several waited for the next reconnection, 100 ms later). A peer that keeps accepting is alive.
async fn process_gone(addr: &str) -> bool {
    for pause in GONE_PROBES {
        tokio::time::sleep(pause).await;
        match probe(addr).await {
            Probe::Refused => return true,
            Probe::NoAnswer => return false,
            Probe::Accepted => {}
        }
    }
    false
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

#[cfg(test)]
mod tests;
