//! Raft consensus for the store: a raft-rs `RawNode` driven by one tokio task.
//!
//! [`RaftNode`] is the cloneable handle (it implements [`Proposer`]); the task owns the `RawNode`,
//! its sled-backed [`RaftStorage`] under `data_dir/raft`, and the pending proposals. Each loop
//! iteration ticks or drains every queued message (many proposals become one disk flush), then
//! runs the ready cycle: persist entries and hard state (flushed), send messages, apply committed
//! entries to the [`Store`] (in memory: the log is its durable copy, replayed from the last
//! snapshot at start), and every `snapshot_interval` applied entries snapshot the store and drop
//! the log before it.
//!
//! Between managers: [`transport`] carries the messages (and checks who sends them), and
//! [`forward`] takes a follower's writes and leader-only calls to the leader.

pub mod forward;
mod logger;
mod node;
mod storage;
pub mod transport;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use raft::prelude::{ConfChange, ConfChangeType, ConfState, Message};
use raft::StateRole;
use shoal_proto::v1::StoreRequest;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::store::{Proposer, Store, StoreError};

pub use forward::{ClusterProposer, Dialer};
pub use storage::RaftStorage;
pub use transport::{GrpcTransport, PeerBook, RaftGate, MAX_RAFT_MESSAGE};

/// Default number of applied entries between two snapshots. A snapshot costs the whole store
/// (encoded, written and fsync'd on every manager), so it is amortised over many writes: at
/// 10,000 writes/s the former 10,000 meant a full store rewrite every second per manager, about a
/// fifth of the CPU of the 3-manager throughput bench. 100,000 as etcd (since 3.2); the log kept
/// meanwhile is a few tens of MB at most.
pub const DEFAULT_SNAPSHOT_INTERVAL: u64 = 100_000;

/// How many messages may wait for the Raft task before senders wait.
const QUEUE: usize = 4096;

/// How long a proposal, membership change or read barrier may wait for a quorum before it fails
/// with "no quorum" instead of hanging.
pub const QUORUM_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one ReadIndex request may go unanswered before it is asked again.
const READ_RETRY: Duration = Duration::from_millis(100);

/// Errors of the Raft node and its log storage.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    /// The data directory could not be created.
    #[error("cannot create raft directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The raft sled database failed.
    #[error("raft log database: {0}")]
    Db(#[from] sled::Error),
    /// A persisted or received raft message did not (de)serialize.
    #[error("raft encoding of {what}: {source}")]
    Codec {
        /// What was being encoded or decoded.
        what: String,
        /// protobuf's error.
        source: protobuf::ProtobufError,
    },
    /// The persisted log is inconsistent with what raft asked for.
    #[error("raft log: {0}")]
    Log(String),
    /// raft-rs refused an operation.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// Applying to the store failed (a disk error: the node stops rather than skip an entry).
    #[error("applying to the store: {0}")]
    Store(#[from] StoreError),
    /// The node has been shut down.
    #[error("the raft node has stopped")]
    Stopped,
}

/// How to run the Raft node.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// This manager's Raft id (non-zero).
    pub id: u64,
    /// Directory of the manager; the log lives in `data_dir/raft`.
    pub data_dir: PathBuf,
    /// Tick period (100 ms in production): election after 10 ticks, heartbeat every tick.
    pub tick: Duration,
    /// Applied entries between two snapshots (log compactions).
    pub snapshot_interval: u64,
    /// The other managers, `(raft id, address)`; empty for a single manager. A new data dir
    /// starts with all of them (and `id`) as voters: a joining manager gets the membership that
    /// includes it from the leader, because the first manager's bootstrap membership is in no log
    /// entry it could learn it from.
    pub peers: Vec<(u64, String)>,
    /// Disaster recovery: restart an existing data dir as the only voter of its group (the
    /// other managers are dropped from the membership), keeping the whole state.
    pub force_new_cluster: bool,
}

impl RaftConfig {
    /// A single-manager configuration with the default tick and snapshot interval.
    pub fn new(id: u64, data_dir: PathBuf) -> RaftConfig {
        RaftConfig {
            id,
            data_dir,
            tick: Duration::from_millis(100),
            snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
            peers: Vec::new(),
            force_new_cluster: false,
        }
    }
}

/// Carries Raft messages to other managers. Messages are fire-and-forget: Raft retries.
pub trait Transport: Send + Sync {
    /// Sends messages to their `to` peers (encode with `protobuf::Message::write_to_bytes`).
    fn send(&self, msgs: Vec<Message>);

    /// Gives the transport the hook to call when it knows a peer's process is gone (its
    /// connection closed and a new one is refused), as opposed to merely silent. The node uses it
    /// to start an election at once when that peer led. Transports that cannot tell ignore it.
    fn on_peer_gone(&self, _hook: PeerGoneHook) {}
}

/// What a transport calls with the Raft id of a peer whose process is gone.
pub type PeerGoneHook = Arc<dyn Fn(u64) + Send + Sync>;

/// The transport of a single-manager cluster: there is nobody to talk to.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopTransport;

impl Transport for NoopTransport {
    fn send(&self, _msgs: Vec<Message>) {}
}

/// A point-in-time view of the Raft node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftStatus {
    /// This node's id.
    pub id: u64,
    /// The leader's id, 0 when unknown.
    pub leader_id: u64,
    /// Current term.
    pub term: u64,
    /// Highest committed index.
    pub commit: u64,
    /// Highest index applied to the store.
    pub applied: u64,
    /// Whether this node is the leader.
    pub is_leader: bool,
    /// The voters of the current configuration.
    pub voters: Vec<u64>,
    /// On the leader: the voters it heard from within the last election timeout (itself
    /// included); empty on followers.
    pub active: Vec<u64>,
}

/// A call timed out on a leader that heard from a quorum within the last election timeout (a
/// single manager always does): nothing is cut off, the managers are too busy to commit in time.
/// Anywhere else the quorum is what is missing.
fn timeout_cause(status: &RaftStatus) -> StoreError {
    let heard = status
        .active
        .iter()
        .filter(|id| status.voters.contains(id))
        .count();
    if status.is_leader && heard * 2 > status.voters.len() {
        StoreError::NotCommitted
    } else {
        StoreError::NoQuorum
    }
}

/// What the handle asks of the Raft task.
enum Msg {
    Propose {
        req: StoreRequest,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Step(Message),
    /// A linearizable read barrier: answers the commit index a read must wait to have applied.
    ReadIndex {
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    /// A membership change; answered once the change is applied here.
    ConfChange {
        cc: ConfChange,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Hands leadership to voter `to` (raft-rs leader transfer); only on the leader.
    TransferLeader {
        to: u64,
    },
    /// The transport saw peer `id`'s process go away (see [`Transport::on_peer_gone`]).
    PeerGone(u64),
    Shutdown,
}

/// State shared between the handle and the task.
struct Shared {
    status: Mutex<RaftStatus>,
    /// Every published status, for waiters (a leader to appear, an index to be applied).
    status_tx: watch::Sender<RaftStatus>,
    /// Raft id -> address, for "the leader is ..." answers and the transport.
    peers: RwLock<HashMap<u64, String>>,
}

impl Shared {
    fn status(&self) -> RaftStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Why a call that waited [`QUORUM_TIMEOUT`] for the Raft loop got no answer.
    fn timed_out(&self) -> StoreError {
        timeout_cause(&self.status())
    }

    fn not_leader(&self, leader_id: u64) -> StoreError {
        if leader_id == 0 {
            return StoreError::NoQuorum;
        }
        StoreError::NotLeader {
            leader: self.peer_addr(leader_id),
        }
    }

    fn peer_addr(&self, id: u64) -> Option<String> {
        self.peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }
}

/// Handle to the running Raft node; cheap to clone.
#[derive(Clone)]
pub struct RaftNode {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    leadership: watch::Receiver<bool>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for RaftNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl RaftNode {
    /// Starts a node with no peers to talk to (a single manager). See [`RaftNode::start_with`].
    pub fn start(cfg: RaftConfig, store: Store) -> Result<RaftNode, RaftError> {
        Self::start_with(cfg, store, Arc::new(NoopTransport))
    }

    /// Starts the node: a new data dir bootstraps the cluster (`id` plus `peers` as voters; a
    /// lone voter elects itself at once), an existing one restarts from the persisted log, hard
    /// state and snapshot. Installs the node as the store's proposer. Must run inside tokio.
    pub fn start_with(
        cfg: RaftConfig,
        store: Store,
        transport: Arc<dyn Transport>,
    ) -> Result<RaftNode, RaftError> {
        let dir = cfg.data_dir.join("raft");
        // Owner-only: the log and snapshots hold the CA key and the join-token secrets.
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| RaftError::Dir {
                path: dir.clone(),
                source,
            })?;
        let mut storage = RaftStorage::open(&dir, store.clone())?;
        if storage.is_new() {
            let mut voters: Vec<u64> = std::iter::once(cfg.id)
                .chain(cfg.peers.iter().map(|(id, _)| *id))
                .collect();
            voters.sort_unstable();
            voters.dedup();
            storage.bootstrap(ConfState {
                voters,
                ..ConfState::default()
            })?;
        } else if cfg.force_new_cluster {
            tracing::warn!(
                old_voters = ?storage.conf_state().voters,
                "--force-new-cluster: this manager becomes the only voter"
            );
            // Every membership entry in the log is overridden: a start must not apply one again.
            let last = storage.last_index();
            storage.set_conf_state(
                ConfState {
                    voters: vec![cfg.id],
                    ..ConfState::default()
                },
                last,
            )?;
        }
        let on_disk = store.applied_index();
        if on_disk > storage.last_index() {
            return Err(RaftError::Log(format!(
                "the store has applied index {on_disk} but the raft log ends at {}: \
                 store and raft directories do not belong together",
                storage.last_index()
            )));
        }
        // The log is the store's durable copy from here on (see `Store::set_log_backed`).
        store.set_log_backed();
        if !storage.is_new() && on_disk < storage.snapshot_index() {
            // The store's sled holds less than the snapshot (emptied, lost, or never written):
            // start from the snapshot, the tail of the log does the rest.
            if let Some(snap) = storage.load_snapshot()? {
                store.restore(snap.get_metadata().index, &snap.data)?;
            }
        } else if on_disk > storage.snapshot_index() {
            // A data dir of a version that wrote the store's sled on every apply: its state
            // becomes a snapshot first, so the sled copy can be emptied below.
            let snap = storage.snapshot_of_store()?;
            storage.compact(&snap)?;
            tracing::info!(
                index = on_disk,
                "the store's on-disk copy became a raft snapshot"
            );
        }
        // A snapshot covers whatever the sled copy held: empty it, so nothing reads that older
        // state before the log has been replayed.
        store.forget_disk_copy()?;
        storage.raise_commit(store.applied_index())?;
        node::replay_committed(&storage, &store)?;
        let applied = store.applied_index();
        let config = raft::Config {
            id: cfg.id,
            election_tick: 10,
            heartbeat_tick: 1,
            pre_vote: true,
            check_quorum: true,
            applied,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            ..raft::Config::default()
        };
        config.validate()?;
        let lone_voter = storage.conf_state().voters == [cfg.id];
        let snapshot_index = storage.snapshot_index();
        let mut raw = raft::RawNode::new(&config, storage, &logger::logger())?;
        if lone_voter {
            raw.campaign()?;
        }

        let is_leader = raw.raft.state == StateRole::Leader;
        let status = RaftStatus {
            id: cfg.id,
            leader_id: raw.raft.leader_id,
            term: raw.raft.term,
            commit: raw.raft.raft_log.committed,
            applied,
            is_leader,
            voters: raw.raft.prs().conf().voters().ids().iter().collect(),
            active: Vec::new(),
        };
        let (status_tx, _) = watch::channel(status.clone());
        let shared = Arc::new(Shared {
            status: Mutex::new(status),
            status_tx,
            peers: RwLock::new(cfg.peers.iter().cloned().collect()),
        });
        let (leader_tx, leadership) = watch::channel(is_leader);
        let (tx, rx) = mpsc::channel(QUEUE);
        // A weak sender: the hook kept by the transport must not keep the task alive.
        let weak = tx.downgrade();
        transport.on_peer_gone(Arc::new(move |id| {
            if let Some(tx) = weak.upgrade() {
                let _ = tx.try_send(Msg::PeerGone(id));
            }
        }));
        let driver = node::Driver::new(node::DriverParts {
            raw,
            store: store.clone(),
            transport,
            rx,
            shared: shared.clone(),
            leadership: leader_tx,
            tick: cfg.tick,
            snapshot_interval: cfg.snapshot_interval.max(1),
            last_snapshot: snapshot_index.max(applied),
        });
        let task = tokio::spawn(driver.run());
        let handle = RaftNode {
            tx,
            shared,
            leadership,
            task: Arc::new(Mutex::new(Some(task))),
        };
        store.set_proposer(Arc::new(handle.clone()));
        Ok(handle)
    }

    /// The node's current id, leader, term, commit and applied indexes.
    pub fn status(&self) -> RaftStatus {
        self.shared.status()
    }

    /// Whether this node leads, updated on every change.
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leadership.clone()
    }

    /// Every status change (leader, term, commit, applied), for waiting on a condition.
    pub fn watch_status(&self) -> watch::Receiver<RaftStatus> {
        self.shared.status_tx.subscribe()
    }

    /// Records (or changes) the address of a manager, used to send it messages.
    pub fn set_peer(&self, id: u64, addr: String) {
        self.shared
            .peers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, addr);
    }

    /// The address of manager `id`, if known.
    pub fn peer_addr(&self, id: u64) -> Option<String> {
        self.shared.peer_addr(id)
    }

    /// Waits (at most [`QUORUM_TIMEOUT`]) for a known leader; its id and address.
    pub async fn wait_leader(&self) -> Result<(u64, Option<String>), StoreError> {
        let mut rx = self.watch_status();
        let found = tokio::time::timeout(QUORUM_TIMEOUT, rx.wait_for(|s| s.leader_id != 0))
            .await
            .map(|r| r.map(|s| s.leader_id));
        match found {
            Ok(Ok(id)) => Ok((id, self.peer_addr(id))),
            Ok(Err(_)) => Err(StoreError::Stopped),
            Err(_) => Err(StoreError::NoQuorum),
        }
    }

    /// Waits (at most [`QUORUM_TIMEOUT`]) until this manager has applied `index`.
    pub async fn wait_applied(&self, index: u64) -> Result<(), StoreError> {
        let mut rx = self.watch_status();
        let waited = tokio::time::timeout(QUORUM_TIMEOUT, rx.wait_for(|s| s.applied >= index))
            .await
            .map(|r| r.map(|_| ()));
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(StoreError::Stopped),
            Err(_) => Err(StoreError::NoQuorum),
        }
    }

    /// A ReadIndex round (raft-rs forwards it to the leader from a follower): returns once this
    /// manager has applied everything committed when the read was asked, so a read that follows
    /// sees every write acknowledged before it, on any manager.
    pub async fn read_barrier(&self) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + QUORUM_TIMEOUT;
        // Raft drops the request silently when there is no leader, or when it went to a leader
        // that just died: ask again every few ticks until a leader answers or time is up.
        let index = loop {
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(Msg::ReadIndex { reply })
                .await
                .map_err(|_| StoreError::Stopped)?;
            let retry = (tokio::time::Instant::now() + READ_RETRY).min(deadline);
            match tokio::time::timeout_at(retry, rx).await {
                Ok(Ok(r)) => break r?,
                Ok(Err(_)) => return Err(StoreError::Stopped),
                Err(_) if retry >= deadline => return Err(StoreError::NoQuorum),
                Err(_) => continue,
            }
        };
        self.wait_applied(index).await
    }

    /// Adds (`add`) or removes a voter through a Raft configuration change; only on the leader.
    /// Returns once the change is applied here.
    pub async fn change_membership(&self, id: u64, add: bool) -> Result<(), StoreError> {
        let mut cc = ConfChange {
            node_id: id,
            ..ConfChange::default()
        };
        cc.set_change_type(if add {
            ConfChangeType::AddNode
        } else {
            ConfChangeType::RemoveNode
        });
        self.until_applied(|reply| Msg::ConfChange { cc, reply })
            .await
    }

    /// Sends the Raft loop the message `msg` makes around its reply channel and waits (at most
    /// [`QUORUM_TIMEOUT`]) for the reply.
    async fn until_applied(
        &self,
        msg: impl FnOnce(oneshot::Sender<Result<(), StoreError>>) -> Msg,
    ) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(msg(reply))
            .await
            .map_err(|_| StoreError::Stopped)?;
        match tokio::time::timeout(QUORUM_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(StoreError::Stopped),
            Err(_) => Err(self.shared.timed_out()),
        }
    }

    /// Hands leadership to voter `to` and waits (at most [`QUORUM_TIMEOUT`]) until this manager
    /// no longer leads. Used to demote the leader itself, as `docker node demote` allows.
    pub async fn transfer_leadership(&self, to: u64) -> Result<(), StoreError> {
        let mut rx = self.watch_status();
        self.tx
            .send(Msg::TransferLeader { to })
            .await
            .map_err(|_| StoreError::Stopped)?;
        let me = self.shared.status().id;
        let moved = tokio::time::timeout(
            QUORUM_TIMEOUT,
            rx.wait_for(|s| s.leader_id != 0 && s.leader_id != me),
        )
        .await;
        match moved {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(StoreError::Stopped),
            Err(_) => Err(StoreError::NoQuorum),
        }
    }

    /// Proposes `req` on this node, which must lead (followers forward through the cluster
    /// layer instead); fails with "no quorum" when it does not commit within [`QUORUM_TIMEOUT`].
    pub async fn propose_local(&self, req: StoreRequest) -> Result<(), StoreError> {
        let status = self.shared.status();
        if !status.is_leader {
            return Err(self.shared.not_leader(status.leader_id));
        }
        self.until_applied(|reply| Msg::Propose { req, reply })
            .await
    }

    /// Tells Raft that manager `id`'s process is gone (what [`Transport::on_peer_gone`] reports).
    /// If it led, the first surviving voter campaigns at once instead of waiting out the election
    /// timeout; pre-vote and check-quorum still keep a leader that is in fact alive in place.
    pub async fn peer_gone(&self, id: u64) -> Result<(), RaftError> {
        self.tx
            .send(Msg::PeerGone(id))
            .await
            .map_err(|_| RaftError::Stopped)
    }

    /// Hands a message received from another manager to Raft.
    pub async fn step(&self, msg: Message) -> Result<(), RaftError> {
        self.tx
            .send(Msg::Step(msg))
            .await
            .map_err(|_| RaftError::Stopped)
    }

    /// Stops the task after it has persisted what it holds; pending proposals fail with
    /// `Stopped`. Returns once the task (and its databases) are closed.
    pub async fn shutdown(&self) {
        // An error means the task already ended; the join below still waits for it.
        let _ = self.tx.send(Msg::Shutdown).await;
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            if let Err(e) = task.await {
                tracing::error!("raft task ended abnormally: {e}");
            }
        }
    }
}

impl Proposer for RaftNode {
    fn propose(
        &self,
        req: StoreRequest,
    ) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>> {
        let node = self.clone();
        Box::pin(async move { node.propose_local(req).await })
    }
}

#[cfg(test)]
mod tests;
