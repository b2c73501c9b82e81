//! The cluster store: the state machine Raft replicates.
//!
//! Objects live in memory in an indexed [`State`] (read through [`Store::read`]). [`Store::apply`]
//! is the only writer: it applies one committed `StoreRequest` to memory and then tells watchers.
//! Under Raft ([`Store::set_log_backed`]) the Raft log and its snapshots are the durable copy and
//! a start rebuilds the state from them; a store used alone (tests, tools) also persists the
//! changed objects and the applied index in one sled transaction per apply.
//! Components write with [`Store::propose`], which goes through the [`Proposer`] (Raft) and
//! returns once the request has been applied here.

pub mod admin_credentials;
mod disk;
pub(crate) use disk::open_sled;
mod state;

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use prost::Message as _;
use shoal_proto::v1::{
    Cluster, Config, Network, Node, Secret, Service, StoreAction, StoreRequest, Task,
};
use tokio::sync::broadcast;

pub use state::{
    ip_of, service_network_ids, task_has_ended, Event, Holder, Key, Kind, Object, State,
    MESH_NETWORK,
};

/// How many times a read-modify-write ([`Store::propose_fresh`]) is built from a fresh read
/// before an out-of-sequence refusal is handed to the caller.
pub const FRESH_ATTEMPTS: usize = 32;

/// How many applied requests a slow watcher may fall behind before it sees `Lagged`.
const WATCH_CAPACITY: usize = 4096;

/// Errors of the store and of writes proposed through it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// This manager is not the Raft leader; `leader` is the leader's address when known.
    #[error("this manager is not the leader{}", leader.as_ref().map(|l| format!(" (the leader is {l})")).unwrap_or_default())]
    NotLeader {
        /// The current leader's address, if one is known.
        leader: Option<String>,
    },
    /// The write could not be committed by a majority of managers.
    #[error("no quorum of managers is reachable")]
    NoQuorum,
    /// The leader still hears from a quorum, yet the write was not applied within the quorum
    /// timeout: the managers are overloaded (CPU or disk). It may still be applied later.
    #[error(
        "not committed within 3 s although a quorum of managers answers: the managers are \
         overloaded (CPU or disk); the write may still be applied, check before retrying"
    )]
    NotCommitted,
    /// A precondition of the request failed; nothing of it was applied.
    #[error("{0}")]
    Conflict(String),
    /// A read-modify-write was based on an older version of the object than the stored one: the
    /// object changed since it was read (docker's "update out of sequence"). Read it again.
    #[error("update out of sequence: {kind:?} {id} is at version {found}, the update was based on version {expected}")]
    OutOfSequence {
        /// The object's kind.
        kind: Kind,
        /// The object's id.
        id: String,
        /// The version the writer read (and sent).
        expected: u64,
        /// The version stored when the write was applied.
        found: u64,
    },
    /// The sled database failed.
    #[error("store database: {0}")]
    Storage(#[from] sled::Error),
    /// Stored or replicated bytes did not decode.
    #[error("cannot decode {what}: {source}")]
    Codec {
        /// What was being decoded.
        what: String,
        /// The decoder's error.
        source: prost::DecodeError,
    },
    /// Stored bytes are malformed in a way the decoder cannot describe.
    #[error("corrupt {what}: {reason}")]
    Corrupt {
        /// What was being read.
        what: String,
        /// Why it is unusable.
        reason: String,
    },
    /// The proposer (Raft node) has stopped.
    #[error("the raft node has stopped")]
    Stopped,
}

impl StoreError {
    /// Whether the write lost a race with another write of the same object (read it again).
    pub fn is_out_of_sequence(&self) -> bool {
        matches!(self, StoreError::OutOfSequence { .. })
    }
}

/// Carries a `StoreRequest` to consensus; implemented by the Raft node.
pub trait Proposer: Send + Sync {
    /// Proposes `req`; resolves with the request's apply result once it is committed and applied
    /// on this manager.
    fn propose(
        &self,
        req: StoreRequest,
    ) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

    /// Resolves once this manager has applied every write acknowledged before the call (a
    /// ReadIndex round with several managers); a lone manager is always up to date.
    fn read_barrier(&self) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>> {
        Box::pin(async { Ok(()) })
    }
}

/// The full store content at one applied index, as carried by a Raft snapshot.
#[derive(Clone, PartialEq, prost::Message)]
struct SnapshotData {
    #[prost(uint64, tag = "1")]
    index: u64,
    #[prost(message, repeated, tag = "2")]
    clusters: Vec<Cluster>,
    #[prost(message, repeated, tag = "3")]
    nodes: Vec<Node>,
    #[prost(message, repeated, tag = "4")]
    services: Vec<Service>,
    #[prost(message, repeated, tag = "5")]
    tasks: Vec<Task>,
    #[prost(message, repeated, tag = "6")]
    networks: Vec<Network>,
    #[prost(message, repeated, tag = "7")]
    secrets: Vec<Secret>,
    #[prost(message, repeated, tag = "8")]
    configs: Vec<Config>,
}

/// The encoding of [`SnapshotData`] for `state` at `index`, written field by field from the
/// state's own objects: the same bytes as building a `SnapshotData` and encoding it, without
/// first cloning the whole store (the clone was most of a snapshot's cost on the Raft task).
fn encode_snapshot(index: u64, state: &State) -> Vec<u8> {
    use prost::encoding::{message, uint64};
    let mut buf = Vec::new();
    if index != 0 {
        uint64::encode(1, &index, &mut buf);
    }
    state
        .clusters()
        .for_each(|o| message::encode(2, o, &mut buf));
    state.nodes().for_each(|o| message::encode(3, o, &mut buf));
    state
        .services()
        .for_each(|o| message::encode(4, o, &mut buf));
    state.tasks().for_each(|o| message::encode(5, o, &mut buf));
    state
        .networks()
        .for_each(|o| message::encode(6, o, &mut buf));
    state
        .secrets()
        .for_each(|o| message::encode(7, o, &mut buf));
    state
        .configs()
        .for_each(|o| message::encode(8, o, &mut buf));
    buf
}

/// Memory state and the index it reflects; always changed together under one lock.
struct Applied {
    state: State,
    index: u64,
}

struct Inner {
    applied: RwLock<Applied>,
    disk: disk::Disk,
    events: broadcast::Sender<Arc<Vec<Event>>>,
    proposer: RwLock<Option<Arc<dyn Proposer>>>,
    next_request_id: AtomicU64,
    /// Set by [`Store::set_log_backed`]: applies and restores change memory only.
    log_backed: AtomicBool,
}

/// Handle to the cluster store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("applied_index", &self.applied_index())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store kept in the sled database at `dir` (created if missing), values in clear
    /// (tests and benches; a manager opens it with [`Store::open_sealed`]).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Self::with_disk(disk::Disk::open(dir)?)
    }

    /// Opens the store at `dir` with every value sealed by the manager's data key; what an older
    /// version wrote in clear is sealed first. The Raft log opened with this store
    /// ([`crate::raft::RaftStorage::open`]) is sealed with the same key.
    pub fn open_sealed(dir: &Path, key: crate::seal::DataKey) -> Result<Store, StoreError> {
        Self::with_disk(disk::Disk::open_sealed(dir, key)?)
    }

    /// The data key sealing what this manager writes to disk, if it has one.
    pub(crate) fn data_key(&self) -> Option<crate::seal::DataKey> {
        self.inner.disk.key().cloned()
    }

    fn with_disk(disk: disk::Disk) -> Result<Store, StoreError> {
        let (state, index) = disk.load()?;
        let (events, _) = broadcast::channel(WATCH_CAPACITY);
        // Request ids only need to be unique among in-flight proposals cluster-wide: a random
        // start per process keeps two managers (or two runs) from colliding.
        let first_id = rand::random::<u64>() | 1;
        Ok(Store {
            inner: Arc::new(Inner {
                applied: RwLock::new(Applied { state, index }),
                disk,
                events,
                proposer: RwLock::new(None),
                next_request_id: AtomicU64::new(first_id),
                log_backed: AtomicBool::new(false),
            }),
        })
    }

    /// Runs `f` on the current state. Never hold what it borrows across an `.await`.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let guard = self
            .inner
            .applied
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        f(&guard.state)
    }

    /// Subscribes to changes: one message per applied request that changed something.
    pub fn watch(&self) -> broadcast::Receiver<Arc<Vec<Event>>> {
        self.inner.events.subscribe()
    }

    /// Runs `f` on the state and subscribes in the same instant, so no change falls in between.
    pub fn read_and_watch<R>(
        &self,
        f: impl FnOnce(&State) -> R,
    ) -> (R, broadcast::Receiver<Arc<Vec<Event>>>) {
        let guard = self
            .inner
            .applied
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        (f(&guard.state), self.inner.events.subscribe())
    }

    /// The Raft index of the last applied request.
    pub fn applied_index(&self) -> u64 {
        self.inner
            .applied
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .index
    }

    /// Installs the component that carries proposals to consensus (the Raft node).
    pub fn set_proposer(&self, p: Arc<dyn Proposer>) {
        *self
            .inner
            .proposer
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(p);
    }

    /// Writes `actions` as one request through consensus; returns once it is applied here, with
    /// `Err(StoreError::Conflict(..))` if one of its preconditions failed (nothing applied then).
    pub async fn propose(&self, actions: Vec<StoreAction>) -> Result<(), StoreError> {
        let proposer = self
            .inner
            .proposer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::NotLeader { leader: None })?;
        let req = StoreRequest {
            request_id: self.inner.next_request_id.fetch_add(1, Ordering::Relaxed),
            actions,
        };
        proposer.propose(req).await
    }

    /// A read-modify-write that survives concurrent writers: `build` makes the actions from the
    /// current state (whole-object puts carry the version they read) and returns them with a
    /// value for the caller; when the store refuses them as out of sequence they are built again
    /// from a fresh read, up to [`FRESH_ATTEMPTS`] times. No actions means nothing to write.
    pub async fn propose_fresh<T, E: From<StoreError>>(
        &self,
        mut build: impl FnMut(&State) -> Result<(Vec<StoreAction>, T), E>,
    ) -> Result<T, E> {
        let mut attempt = 1;
        loop {
            let (actions, value) = self.read(&mut build)?;
            if actions.is_empty() {
                return Ok(value);
            }
            match self.propose(actions).await {
                Ok(()) => return Ok(value),
                // The refused request consumed its index and changed nothing. A follower may not
                // have applied the write that beat it yet: catch up before reading again.
                Err(e) if e.is_out_of_sequence() && attempt < FRESH_ATTEMPTS => {
                    attempt += 1;
                    self.linearize().await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits until reads here are linearizable: everything acknowledged cluster-wide before the
    /// call is applied on this manager. Fails with `NoQuorum` when no leader answers in time.
    pub async fn linearize(&self) -> Result<(), StoreError> {
        let proposer = self
            .inner
            .proposer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match proposer {
            Some(p) => p.read_barrier().await,
            None => Ok(()),
        }
    }

    /// Applies the committed request at Raft `index`. A no-op for an index already applied; a
    /// failed precondition still consumes the index (and returns `Conflict`), so the outcome is
    /// the same on every manager and after every restart.
    pub fn apply(&self, index: u64, req: &StoreRequest) -> Result<(), StoreError> {
        let mut guard = self
            .inner
            .applied
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if index <= guard.index {
            return Ok(());
        }
        let applied = match guard.state.apply_request(index, req) {
            Ok(applied) => applied,
            Err(e) => {
                if !self.is_log_backed() {
                    self.inner.disk.write(index, &[])?;
                }
                guard.index = index;
                return Err(e);
            }
        };
        if !self.is_log_backed() {
            let writes = writes_for(&guard.state, &applied.touched);
            if let Err(e) = self.inner.disk.write(index, &writes) {
                guard.state.rollback(applied.undo);
                return Err(e);
            }
        }
        guard.index = index;
        if !applied.events.is_empty() {
            // Sent under the lock so watchers see requests in apply order; no receiver is fine.
            let _ = self.inner.events.send(Arc::new(applied.events));
        }
        Ok(())
    }

    /// Applies consecutive committed requests (`(index, request)`, indexes increasing) with one
    /// disk transaction for all of them: the same outcome as [`Store::apply`] on each in turn, one
    /// result per request (`Conflict` for a failed precondition), far fewer disk writes. A disk
    /// error undoes the whole batch in memory and is returned for the batch.
    pub fn apply_batch(
        &self,
        batch: &[(u64, &StoreRequest)],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut guard = self
            .inner
            .applied
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let log_backed = self.is_log_backed();
        let mut results = Vec::with_capacity(batch.len());
        let mut touched = BTreeSet::new();
        let mut undo = Vec::new();
        let mut events = Vec::new();
        let mut last = guard.index;
        for (index, req) in batch {
            if *index <= last {
                results.push(Ok(()));
                continue;
            }
            last = *index;
            match guard.state.apply_request(*index, req) {
                Ok(applied) => {
                    if !log_backed {
                        touched.extend(applied.touched);
                        undo.extend(applied.undo);
                    }
                    if !applied.events.is_empty() {
                        events.push(applied.events);
                    }
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if last == guard.index {
            return Ok(results);
        }
        if !log_backed {
            let writes = writes_for(&guard.state, &touched);
            if let Err(e) = self.inner.disk.write(last, &writes) {
                guard.state.rollback(undo);
                return Err(e);
            }
        }
        guard.index = last;
        for ev in events {
            // Under the lock, one message per request, in apply order (as `apply` does).
            let _ = self.inner.events.send(Arc::new(ev));
        }
        Ok(results)
    }

    /// Encodes the whole state; returns it with the index it reflects.
    pub fn snapshot(&self) -> Result<(u64, Vec<u8>), StoreError> {
        let guard = self
            .inner
            .applied
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Ok((guard.index, encode_snapshot(guard.index, &guard.state)))
    }

    /// Replaces the whole content with a snapshot taken at `index`, in one transaction; watchers
    /// get the difference as events.
    pub fn restore(&self, index: u64, data: &[u8]) -> Result<(), StoreError> {
        let snap = SnapshotData::decode(data).map_err(|source| StoreError::Codec {
            what: format!("store snapshot at index {index}"),
            source,
        })?;
        let mut next = State::default();
        let objects = (snap.clusters.into_iter().map(Object::Cluster))
            .chain(snap.nodes.into_iter().map(Object::Node))
            .chain(snap.networks.into_iter().map(Object::Network))
            .chain(snap.secrets.into_iter().map(Object::Secret))
            .chain(snap.configs.into_iter().map(Object::Config))
            .chain(snap.services.into_iter().map(Object::Service))
            .chain(snap.tasks.into_iter().map(Object::Task));
        for obj in objects {
            next.put(obj);
        }
        let mut guard = self
            .inner
            .applied
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if !self.is_log_backed() {
            let old_keys: Vec<Key> = guard.state.objects().map(|o| o.key()).collect();
            let new: Vec<disk::Write> = next
                .objects()
                .map(|o| (o.kind(), o.id().to_string(), Some(disk::encode(&o))))
                .collect();
            self.inner.disk.replace(index, &old_keys, &new)?;
        }
        let events = diff(&guard.state, &next);
        guard.state = next;
        guard.index = index;
        if !events.is_empty() {
            let _ = self.inner.events.send(Arc::new(events));
        }
        Ok(())
    }

    /// Forces every applied write to stable storage (before the Raft log behind it is dropped).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.disk.flush()
    }

    /// Makes the Raft log (with its snapshots) this store's durable copy, as the Raft node does
    /// when it takes the store: from now on [`Store::apply`], [`Store::apply_batch`] and
    /// [`Store::restore`] change memory only, and a start rebuilds the state from the last
    /// snapshot plus the committed log after it. A write is acknowledged only once its entry is
    /// fsynced in the log of a quorum, so nothing acknowledged rests on the store's own sled;
    /// writing it on every apply (a sled transaction per ready, 13 % of the 3-manager throughput
    /// bench's CPU, plus sled's background writes of it) kept that bench near 8,000 writes/s.
    pub fn set_log_backed(&self) {
        self.inner.log_backed.store(true, Ordering::Release);
    }

    /// Whether [`Store::set_log_backed`] was called.
    pub fn is_log_backed(&self) -> bool {
        self.inner.log_backed.load(Ordering::Acquire)
    }

    /// Empties the store's sled copy (memory is untouched), once a durable Raft snapshot holds
    /// at least what it held: a later open then starts empty at index 0 rather than from an old
    /// state, and the state comes from the snapshot and the log. The applied index goes first,
    /// so a crash halfway leaves objects under index 0, which a snapshot restore replaces.
    pub fn forget_disk_copy(&self) -> Result<(), StoreError> {
        self.inner.disk.clear()
    }
}

/// The disk writes that bring sled in line with `state` for the `touched` keys.
fn writes_for(state: &State, touched: &BTreeSet<Key>) -> Vec<disk::Write> {
    touched
        .iter()
        .map(|key| {
            let value = state.get(key).map(|o| disk::encode(&o));
            (key.0, key.1.clone(), value)
        })
        .collect()
}

/// Events that turn `old` into `new`.
fn diff(old: &State, new: &State) -> Vec<Event> {
    let mut events = Vec::new();
    for o in old.objects() {
        match new.get(&o.key()) {
            None => events.push(Event::Removed(o)),
            Some(n) if n != o => events.push(Event::Updated { old: o, new: n }),
            Some(_) => {}
        }
    }
    for n in new.objects() {
        if old.get(&n.key()).is_none() {
            events.push(Event::Created(n));
        }
    }
    events
}

#[cfg(test)]
mod tests;
