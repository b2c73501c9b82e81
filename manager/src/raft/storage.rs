//! The Raft log, hard state, conf state and last snapshot, persisted in sled.
//!
//! Tree `raft`: entries under `e` + big-endian index (so key order is log order), and the fixed
//! keys below for the hard and conf states. Tree `raft-snapshot`: the last snapshot, alone, so the
//! whole store it holds is not rewritten each time sled consolidates the page the hard state and
//! the newest entries live on (it was: a blob file per few ready cycles). Every mutating call ends
//! with a sled flush: Raft may only act on (and acknowledge) what survives a `kill -9`. The one
//! exception is deleting entries a saved snapshot covers: that runs in the background after the
//! snapshot is durable, and what a crash leaves of it is deleted at the next open.
//!
//! When the store was opened with the manager's data key ([`Store::open_sealed`]), every value
//! here is sealed with it too (entries carry the CA key and join-token secrets the store writes).

use std::collections::VecDeque;
use std::path::Path;

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

use super::RaftError;
use crate::seal::{self, DataKey};
use crate::store::Store;

const ENTRY_PREFIX: u8 = b'e';
const HARD_STATE: &[u8] = b"m:hard_state";
const CONF_STATE: &[u8] = b"m:conf_state";
/// The log index up to which membership entries are reflected in [`CONF_STATE`] (big-endian
/// u64; absent in data dirs of older versions, read as 0).
const CONF_INDEX: &[u8] = b"m:conf_index";
const SNAPSHOT: &[u8] = b"m:snapshot";
/// The tree holding [`SNAPSHOT`] (older versions kept it in the `raft` tree).
const SNAPSHOT_TREE: &str = "raft-snapshot";
/// How many of the newest entries' terms are kept in memory (see [`RecentTerms`]).
const RECENT_TERMS: usize = 4096;

fn entry_key(index: u64) -> [u8; 9] {
    let mut key = [ENTRY_PREFIX; 9];
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

/// `raft::Storage` on sled. The store handle lets it build a fresh snapshot when a follower needs
/// one newer than the last compaction.
pub struct RaftStorage {
    db: sled::Db,
    tree: sled::Tree,
    /// Holds only the last snapshot.
    snaps: sled::Tree,
    hard_state: HardState,
    conf_state: ConfState,
    /// See [`CONF_INDEX`].
    conf_index: u64,
    /// Metadata of the last snapshot (index 0 = none); entries up to its index are gone.
    snapshot_meta: SnapshotMetadata,
    /// Index of the last entry, or the snapshot index when the log after it is empty.
    last: u64,
    store: Store,
    /// The store's data key; `None` keeps values in clear.
    key: Option<DataKey>,
    /// Terms of the newest entries: raft-rs asks for them on every append and commit, and a sled
    /// read plus decode of the whole entry each time was ~3 % of the throughput bench's CPU.
    recent: RecentTerms,
    /// Deletes compacted entries off the Raft task.
    pruner: Pruner,
}

/// The terms of a contiguous run of the newest log entries, `terms[i]` being the term of entry
/// `first + i`; never holds an entry the log does not (it follows every write of the log).
#[derive(Debug)]
struct RecentTerms {
    first: u64,
    terms: VecDeque<u64>,
}

impl RecentTerms {
    /// Nothing cached; the next entry appended is `next`.
    fn empty(next: u64) -> RecentTerms {
        RecentTerms {
            first: next,
            terms: VecDeque::new(),
        }
    }

    fn get(&self, index: u64) -> Option<u64> {
        let offset = usize::try_from(index.checked_sub(self.first)?).ok()?;
        self.terms.get(offset).copied()
    }

    /// Records entries written from `from` on (a conflicting tail is replaced).
    fn appended(&mut self, from: u64, terms: impl Iterator<Item = u64>) {
        let end = self.first + self.terms.len() as u64;
        if from < self.first || from > end {
            *self = RecentTerms::empty(from);
        } else {
            self.terms.truncate((from - self.first) as usize);
        }
        self.terms.extend(terms);
        while self.terms.len() > RECENT_TERMS {
            self.terms.pop_front();
            self.first += 1;
        }
    }

    /// Forgets entries up to `index` (compacted).
    fn compacted(&mut self, index: u64) {
        while self.first <= index && self.terms.pop_front().is_some() {
            self.first += 1;
        }
        self.first = self.first.max(index + 1);
    }
}

impl RaftStorage {
    /// Opens (or creates) the Raft database in `dir`, sealed with the store's data key when it
    /// has one (values an older version wrote in clear are sealed first).
    pub fn open(dir: &Path, store: Store) -> Result<RaftStorage, RaftError> {
        let db = crate::store::open_sled(dir)?;
        let tree = db.open_tree("raft")?;
        let snaps = db.open_tree(SNAPSHOT_TREE)?;
        move_snapshot(&db, &tree, &snaps)?;
        let key = store.data_key();
        if let Some(key) = &key {
            seal_legacy(&db, &tree, key)?;
            seal_legacy(&db, &snaps, key)?;
        }
        let k = key.as_ref();
        let hard_state: HardState = read_pb(k, &tree, HARD_STATE)?.unwrap_or_default();
        let conf_state: ConfState = read_pb(k, &tree, CONF_STATE)?.unwrap_or_default();
        let conf_index = read_index(k, &tree, CONF_INDEX)?.unwrap_or(0);
        let snapshot: Option<Snapshot> = read_pb(k, &snaps, SNAPSHOT)?;
        let snapshot_meta = snapshot.map(|mut s| s.take_metadata()).unwrap_or_default();
        let last_entry = match tree.scan_prefix([ENTRY_PREFIX]).next_back() {
            Some(item) => {
                let (key, _) = item?;
                index_of(&key)?
            }
            None => 0,
        };
        let last = last_entry.max(snapshot_meta.index);
        Ok(RaftStorage {
            db,
            tree,
            snaps,
            hard_state,
            conf_state,
            conf_index,
            last,
            recent: RecentTerms::empty(last + 1),
            snapshot_meta,
            store,
            key,
            pruner: Pruner::default(),
        }
        .with_leftovers_pruned())
    }

    /// Starts deleting entries a compaction covered but a crash (or shutdown) left on disk.
    fn with_leftovers_pruned(mut self) -> RaftStorage {
        if self.snapshot_meta.index > 0 {
            self.pruner.prune(&self.tree, self.snapshot_meta.index);
        }
        self
    }

    /// True when nothing was ever persisted here (a brand-new data directory).
    pub fn is_new(&self) -> bool {
        self.hard_state == HardState::default()
            && self.conf_state == ConfState::default()
            && self.last == 0
    }

    /// The persisted hard state (term, vote, commit).
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The persisted membership.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Index of the last snapshot (0 when none was taken or received).
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_meta.index
    }

    /// The last snapshot with its data, if there is one.
    pub fn load_snapshot(&self) -> Result<Option<Snapshot>, RaftError> {
        read_pb(self.key.as_ref(), &self.snaps, SNAPSHOT)
    }

    /// Index of the first entry still in the log.
    pub fn first_index(&self) -> u64 {
        self.snapshot_meta.index + 1
    }

    /// Index of the last entry (or of the snapshot when the log after it is empty).
    pub fn last_index(&self) -> u64 {
        self.last
    }

    /// Records the initial membership of a new cluster.
    pub fn bootstrap(&mut self, conf_state: ConfState) -> Result<(), RaftError> {
        self.set_conf_state(conf_state, 0)
    }

    /// Appends `entries` (dropping any conflicting tail) and saves `hs`, atomically and durably.
    pub fn append(&mut self, entries: &[Entry], hs: Option<&HardState>) -> Result<(), RaftError> {
        if entries.is_empty() && hs.is_none() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let mut last = self.last;
        if let Some(first) = entries.first() {
            if first.index < self.first_index() {
                return Err(RaftError::Log(format!(
                    "append at {} overwrites the compacted log (first index {})",
                    first.index,
                    self.first_index()
                )));
            }
            for index in first.index..=self.last {
                batch.remove(&entry_key(index));
            }
            for e in entries {
                let key = entry_key(e.index);
                batch.insert(&key, self.write_pb(&key, e)?);
                last = e.index;
            }
        }
        if let Some(hs) = hs {
            batch.insert(HARD_STATE, self.write_pb(HARD_STATE, hs)?);
        }
        self.tree.apply_batch(batch)?;
        self.flush()?;
        self.last = last;
        if let Some(first) = entries.first() {
            self.recent
                .appended(first.index, entries.iter().map(|e| e.term));
        }
        if let Some(hs) = hs {
            self.hard_state = hs.clone();
        }
        Ok(())
    }

    /// Saves a new commit index, without waiting for the disk: it reaches the disk with the next
    /// append's flush (or sled's own). A commit index that lags on disk is safe: Raft re-learns
    /// it, and at start the store's applied index (only ever committed entries) raises it.
    pub fn set_commit(&mut self, commit: u64) -> Result<(), RaftError> {
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        self.tree
            .insert(HARD_STATE, self.write_pb(HARD_STATE, &hs)?)?;
        self.hard_state = hs;
        Ok(())
    }

    /// At start: the store applied entries up to `applied`, so they were committed, even if the
    /// commit index on disk (written lazily, see [`Self::set_commit`]) is older.
    pub fn raise_commit(&mut self, applied: u64) -> Result<(), RaftError> {
        if applied <= self.hard_state.commit {
            return Ok(());
        }
        let mut hs = self.hard_state.clone();
        hs.commit = applied;
        self.append(&[], Some(&hs))
    }

    /// Saves the membership `cs` as it stands once the log up to `index` is applied: after the
    /// membership entry at `index` was applied, or (`--force-new-cluster`) one that overrides
    /// every membership entry up to the end of the log.
    pub fn set_conf_state(&mut self, cs: ConfState, index: u64) -> Result<(), RaftError> {
        let mut batch = sled::Batch::default();
        batch.insert(CONF_STATE, self.write_pb(CONF_STATE, &cs)?);
        batch.insert(CONF_INDEX, self.write_index(CONF_INDEX, index)?);
        self.tree.apply_batch(batch)?;
        self.flush()?;
        self.conf_state = cs;
        self.conf_index = index;
        Ok(())
    }

    /// The log index up to which membership entries are reflected in [`Self::conf_state`]:
    /// a start replays an entry above it as a change still to apply, not as one already saved.
    /// Never below the snapshot's index: a snapshot is taken of what was applied, and a
    /// membership change is saved before its entry counts as applied (this also covers data
    /// dirs of older versions, which have no saved conf index).
    pub fn conf_index(&self) -> u64 {
        self.conf_index.max(self.snapshot_meta.index)
    }

    /// Installs a snapshot received from the leader: it replaces the whole log.
    pub fn apply_snapshot(&mut self, snap: &Snapshot) -> Result<(), RaftError> {
        let meta = snap.get_metadata();
        let mut hs = self.hard_state.clone();
        hs.term = hs.term.max(meta.term);
        hs.commit = hs.commit.max(meta.index);
        let cs = meta.get_conf_state().clone();
        let mut batch = sled::Batch::default();
        for index in self.first_index()..=self.last {
            batch.remove(&entry_key(index));
        }
        batch.insert(HARD_STATE, self.write_pb(HARD_STATE, &hs)?);
        batch.insert(CONF_STATE, self.write_pb(CONF_STATE, &cs)?);
        batch.insert(CONF_INDEX, self.write_index(CONF_INDEX, meta.index)?);
        self.write_with_snapshot(batch, self.write_pb(SNAPSHOT, snap)?)?;
        self.flush()?;
        self.hard_state = hs;
        self.conf_state = cs;
        self.conf_index = meta.index;
        self.snapshot_meta = meta.clone();
        self.last = meta.index;
        self.recent = RecentTerms::empty(meta.index + 1);
        Ok(())
    }

    /// Saves a snapshot taken locally; the entries it covers are no longer part of the log.
    ///
    /// Only the snapshot is written (one value, then a flush): the covered entries are deleted
    /// afterwards by a background thread ([`Pruner`]). Removing ~100,000 keys inside the sled
    /// transaction that saved the snapshot was a fifth of the throughput bench's CPU, all of it
    /// on the Raft task. Entries at or below the snapshot's index are never read again (the log
    /// starts after it), so one left behind by a crash is garbage, deleted at the next open.
    pub fn compact(&mut self, snap: &Snapshot) -> Result<(), RaftError> {
        let meta = snap.get_metadata();
        if meta.index < self.first_index() || meta.index > self.last {
            return Err(RaftError::Log(format!(
                "cannot compact to {}: the log holds {}..={}",
                meta.index,
                self.first_index(),
                self.last
            )));
        }
        self.save_snapshot(snap)?;
        self.pruner.prune(&self.tree, meta.index);
        Ok(())
    }

    /// The durable half of [`Self::compact`]: the snapshot is saved and the log starts after it;
    /// the entries it covers are still on disk.
    fn save_snapshot(&mut self, snap: &Snapshot) -> Result<(), RaftError> {
        self.snaps
            .insert(SNAPSHOT, self.write_pb(SNAPSHOT, snap)?)?;
        self.flush()?;
        let meta = snap.get_metadata();
        self.snapshot_meta = meta.clone();
        self.recent.compacted(meta.index);
        Ok(())
    }

    /// Applies `batch` to the log tree and stores `snapshot` (encoded), atomically: a snapshot
    /// never replaces the log it covers only in part.
    fn write_with_snapshot(&self, batch: sled::Batch, snapshot: Vec<u8>) -> Result<(), RaftError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
        (&self.tree, &self.snaps)
            .transaction(|(log, snaps)| {
                log.apply_batch(&batch)?;
                snaps.insert(SNAPSHOT, snapshot.as_slice())?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => RaftError::Db(e),
                TransactionError::Abort(()) => RaftError::Log("snapshot write aborted".into()),
            })
    }

    /// Forces everything to stable storage.
    pub fn flush(&self) -> Result<(), RaftError> {
        self.db.flush()?;
        Ok(())
    }

    fn entry(&self, index: u64) -> raft::Result<Entry> {
        match read_pb(self.key.as_ref(), &self.tree, &entry_key(index)) {
            Ok(Some(e)) => Ok(e),
            Ok(None) => Err(raft::Error::Store(StorageError::Unavailable)),
            Err(e) => Err(other(e)),
        }
    }

    /// Encodes `index` to be stored under `key`, sealed when there is a data key.
    fn write_index(&self, key: &[u8], index: u64) -> Result<Vec<u8>, RaftError> {
        seal::seal_stored(self.key.as_ref(), &value_aad(key), &index.to_be_bytes())
            .map_err(|e| seal_error(key, e))
    }

    /// Encodes `m` to be stored under `key`, sealed when there is a data key.
    fn write_pb<M: protobuf::Message>(&self, key: &[u8], m: &M) -> Result<Vec<u8>, RaftError> {
        let plain = m.write_to_bytes().map_err(|source| RaftError::Codec {
            what: m.descriptor().name().to_string(),
            source,
        })?;
        seal::seal_stored(self.key.as_ref(), &value_aad(key), &plain)
            .map_err(|e| seal_error(key, e))
    }

    /// A Raft snapshot of the store as it is now (its applied index), with the membership.
    pub fn snapshot_of_store(&self) -> raft::Result<Snapshot> {
        let (index, data) = self.store.snapshot().map_err(other)?;
        let term = raft::Storage::term(self, index)?;
        let mut meta = SnapshotMetadata {
            index,
            term,
            ..SnapshotMetadata::default()
        };
        meta.set_conf_state(self.conf_state.clone());
        let mut snap = Snapshot {
            data: data.into(),
            ..Snapshot::default()
        };
        snap.set_metadata(meta);
        Ok(snap)
    }
}

/// Entries deleted per sled batch by the [`Pruner`]: small enough that a shutdown waits for at
/// most one batch.
const PRUNE_BATCH: usize = 1024;

/// Deletes the entries a compaction covered, on a thread of its own. The keys it deletes are all
/// at or below a saved snapshot's index, which nothing reads or writes again: no ordering with
/// the Raft task's writes is needed, and a deletion lost to a crash is redone at the next open.
#[derive(Default)]
struct Pruner {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    running: Option<std::thread::JoinHandle<()>>,
}

impl Pruner {
    /// Deletes every entry with an index up to `upto`, in the background. A previous run still
    /// going is waited for first (its range is a prefix of this one).
    fn prune(&mut self, tree: &sled::Tree, upto: u64) {
        if let Some(running) = self.running.take() {
            if running.join().is_err() {
                tracing::warn!("raft log: a pruning thread panicked");
            }
        }
        let tree = tree.clone();
        let stop = self.stop.clone();
        let spawned = std::thread::Builder::new()
            .name("raft-log-prune".into())
            .spawn(move || {
                if let Err(e) = prune_entries(&tree, upto, &stop) {
                    // Harmless: the entries are below the log's first index; the next open
                    // tries again.
                    tracing::warn!("raft log: deleting compacted entries: {e}");
                }
            });
        match spawned {
            Ok(handle) => self.running = Some(handle),
            Err(e) => tracing::warn!("raft log: cannot start the pruning thread: {e}"),
        }
    }
}

impl Drop for Pruner {
    /// Stops a pruning run after its current batch and waits for it, so the sled database is
    /// released when the storage is (a restart in the same process opens it again at once).
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(running) = self.running.take() {
            let _ = running.join();
        }
    }
}

/// Deletes the entries with an index up to `upto`, [`PRUNE_BATCH`] keys per sled batch, until
/// none is left or `stop` is set. Returns how many it deleted.
fn prune_entries(
    tree: &sled::Tree,
    upto: u64,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<usize, RaftError> {
    let end = entry_key(upto.saturating_add(1));
    let mut deleted = 0;
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(deleted);
        }
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in tree.range(entry_key(0)..end).keys().take(PRUNE_BATCH) {
            batch.remove(item?);
            n += 1;
        }
        if n == 0 {
            if deleted > 0 {
                tracing::debug!(deleted, upto, "raft log: compacted entries deleted");
            }
            return Ok(deleted);
        }
        tree.apply_batch(batch)?;
        deleted += n;
    }
}

impl raft::Storage for RaftStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut entries = Vec::with_capacity((high - low) as usize);
        for item in self.tree.range(entry_key(low)..entry_key(high)) {
            let (key, value) = item.map_err(other)?;
            let value = unseal(self.key.as_ref(), &key, &value).map_err(other)?;
            entries.push(Entry::parse_from_bytes(&value).map_err(other)?);
        }
        if entries.len() as u64 != high - low {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.snapshot_meta.index {
            return Ok(self.snapshot_meta.term);
        }
        if idx < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if let Some(term) = self.recent.get(idx) {
            return Ok(term);
        }
        Ok(self.entry(idx)?.term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(RaftStorage::first_index(self))
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        match self.load_snapshot() {
            // A snapshot taken before `to` joined does not name it as a member, and raft-rs
            // refuses to restore such a snapshot: those get a fresh one below.
            Ok(Some(snap))
                if snap.get_metadata().index >= request_index
                    && snap.get_metadata().get_conf_state().voters.contains(&to) =>
            {
                Ok(snap)
            }
            Ok(_) => {
                // Older than what the follower needs: make one of the store as it is now.
                let snap = self.snapshot_of_store()?;
                if snap.get_metadata().index < request_index {
                    return Err(raft::Error::Store(
                        StorageError::SnapshotTemporarilyUnavailable,
                    ));
                }
                Ok(snap)
            }
            Err(e) => Err(other(e)),
        }
    }
}

fn other(e: impl std::error::Error + Send + Sync + 'static) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

fn index_of(key: &[u8]) -> Result<u64, RaftError> {
    key.get(1..)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| RaftError::Log(format!("malformed log key {key:?}")))
}

/// The additional data a value is sealed with: its key, so a value moved elsewhere (an entry to
/// another index, a snapshot into the hard state) no longer opens.
fn value_aad(key: &[u8]) -> Vec<u8> {
    let mut aad = b"raft/".to_vec();
    aad.extend_from_slice(key);
    aad
}

fn seal_error(key: &[u8], e: seal::SealError) -> RaftError {
    RaftError::Log(format!(
        "{}: data key: {e}",
        String::from_utf8_lossy(key).escape_debug()
    ))
}

fn unseal(key: Option<&DataKey>, k: &[u8], value: &[u8]) -> Result<Vec<u8>, RaftError> {
    seal::unseal_stored(key, &value_aad(k), value).map_err(|e| seal_error(k, e))
}

/// The migration to the snapshot's own tree: moves a snapshot an older version kept in the log
/// tree (same key, so a sealed value still opens), then flushes. Idempotent.
fn move_snapshot(db: &sled::Db, tree: &sled::Tree, snaps: &sled::Tree) -> Result<(), RaftError> {
    use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
    let Some(old) = tree.get(SNAPSHOT)? else {
        return Ok(());
    };
    (tree, snaps)
        .transaction(|(log, snaps)| {
            snaps.insert(SNAPSHOT, old.clone())?;
            log.remove(SNAPSHOT)?;
            Ok::<(), ConflictableTransactionError<()>>(())
        })
        .map_err(|e| match e {
            TransactionError::Storage(e) => RaftError::Db(e),
            TransactionError::Abort(()) => RaftError::Log("snapshot move aborted".into()),
        })?;
    db.flush()?;
    tracing::info!("raft log: the snapshot moved to its own tree");
    Ok(())
}

/// The migration to encryption at rest: seals every value an older version wrote in clear, then
/// flushes. Idempotent. sled may keep the old plaintext in log segments it has not compacted yet:
/// they are reclaimed as sled rewrites its segments, not at once.
fn seal_legacy(db: &sled::Db, tree: &sled::Tree, key: &DataKey) -> Result<(), RaftError> {
    let mut batch = sled::Batch::default();
    let mut sealed = 0usize;
    for item in tree.iter() {
        let (k, v) = item?;
        if seal::is_sealed(&v) {
            continue;
        }
        let value = key
            .seal(&value_aad(&k), &v)
            .map_err(|e| seal_error(&k, e))?;
        batch.insert(k, value);
        sealed += 1;
    }
    if sealed > 0 {
        tree.apply_batch(batch)?;
        db.flush()?;
        tracing::info!(
            values = sealed,
            "raft log: values kept in clear sealed with the data key"
        );
    }
    Ok(())
}

/// An index [`RaftStorage::write_index`] wrote.
fn read_index(
    key: Option<&DataKey>,
    tree: &sled::Tree,
    k: &[u8],
) -> Result<Option<u64>, RaftError> {
    let Some(bytes) = tree.get(k)? else {
        return Ok(None);
    };
    let plain = unseal(key, k, &bytes)?;
    let raw = <[u8; 8]>::try_from(plain.as_slice()).map_err(|_| {
        RaftError::Log(format!(
            "{}: {} bytes, not an index",
            String::from_utf8_lossy(k).escape_debug(),
            plain.len()
        ))
    })?;
    Ok(Some(u64::from_be_bytes(raw)))
}

fn read_pb<M: protobuf::Message>(
    key: Option<&DataKey>,
    tree: &sled::Tree,
    k: &[u8],
) -> Result<Option<M>, RaftError> {
    match tree.get(k)? {
        Some(bytes) => M::parse_from_bytes(&unseal(key, k, &bytes)?)
            .map(Some)
            .map_err(|source| RaftError::Codec {
                what: String::from_utf8_lossy(k).into_owned(),
                source,
            }),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use raft::prelude::{Entry, HardState};
    use raft::{GetEntriesContext, Storage as _};

    use super::RaftStorage;
    use crate::seal::DataKey;
    use crate::store::Store;

    const SECRET: &[u8] = b"-----BEGIN PRIVATE KEY-----";

    fn entries() -> Vec<Entry> {
        (1..=3)
            .map(|index| Entry {
                index,
                term: 1,
                data: SECRET.to_vec().into(),
                ..Entry::default()
            })
            .collect()
    }

    fn append(storage: &mut RaftStorage) {
        let hs = HardState {
            term: 1,
            vote: 1,
            commit: 3,
            ..HardState::default()
        };
        storage.append(&entries(), Some(&hs)).unwrap();
    }

    fn read_back(storage: &RaftStorage) -> Vec<Entry> {
        storage
            .entries(1, 4, None, GetEntriesContext::empty(false))
            .unwrap()
    }

    fn raw_values(dir: &std::path::Path) -> Vec<Vec<u8>> {
        let db = crate::store::open_sled(dir).unwrap();
        let tree = db.open_tree("raft").unwrap();
        tree.iter().map(|i| i.unwrap().1.to_vec()).collect()
    }

    #[test]
    fn the_log_is_sealed_with_the_stores_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = DataKey::generate().unwrap();
        let raft_dir = dir.path().join("raft");
        {
            let store = Store::open_sealed(&dir.path().join("store"), key.clone()).unwrap();
            let mut storage = RaftStorage::open(&raft_dir, store).unwrap();
            append(&mut storage);
        }
        let values = raw_values(&raft_dir);
        assert_eq!(values.len(), 4, "three entries and the hard state");
        for v in &values {
            assert!(crate::seal::is_sealed(v));
            assert!(!v.windows(SECRET.len()).any(|w| w == SECRET));
        }
        {
            let store = Store::open_sealed(&dir.path().join("store"), key).unwrap();
            let storage = RaftStorage::open(&raft_dir, store).unwrap();
            assert_eq!(storage.hard_state().commit, 3);
            assert_eq!(read_back(&storage), entries());
        }
        let other = Store::open_sealed(
            &dir.path().join("other-store"),
            DataKey::generate().unwrap(),
        )
        .unwrap();
        assert!(RaftStorage::open(&raft_dir, other).is_err());
    }

    #[test]
    fn a_log_in_clear_is_sealed_when_opened_with_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let raft_dir = dir.path().join("raft");
        {
            let store = Store::open(&dir.path().join("store")).unwrap();
            let mut storage = RaftStorage::open(&raft_dir, store).unwrap();
            append(&mut storage);
        }
        assert!(raw_values(&raft_dir)
            .iter()
            .any(|v| v.windows(SECRET.len()).any(|w| w == SECRET)));
        let key = DataKey::generate().unwrap();
        {
            let store = Store::open_sealed(&dir.path().join("store"), key).unwrap();
            let storage = RaftStorage::open(&raft_dir, store).unwrap();
            assert_eq!(storage.last_index(), 3);
            assert_eq!(read_back(&storage), entries());
        }
        for v in raw_values(&raft_dir) {
            assert!(crate::seal::is_sealed(&v), "a value left in clear");
        }
    }

    #[test]
    fn recent_terms_follow_appends_overwrites_and_compaction() {
        use raft::prelude::{Snapshot, SnapshotMetadata};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let mut storage = RaftStorage::open(&dir.path().join("raft"), store).unwrap();
        let entry = |index, term| Entry {
            index,
            term,
            ..Entry::default()
        };
        let batch: Vec<Entry> = (1..=5).map(|i| entry(i, 1)).collect();
        storage.append(&batch, None).unwrap();
        // A new leader overwrites the tail from 4 with term 2.
        storage
            .append(&[entry(4, 2), entry(5, 2), entry(6, 2)], None)
            .unwrap();
        let want = [1, 1, 1, 2, 2, 2];
        for (i, term) in want.iter().enumerate() {
            let index = i as u64 + 1;
            assert_eq!(storage.term(index).unwrap(), *term, "entry {index}");
            assert_eq!(
                storage.entry(index).unwrap().term,
                *term,
                "entry {index} on disk"
            );
        }
        assert!(storage.term(7).is_err());
        let mut snap = Snapshot::default();
        snap.set_metadata(SnapshotMetadata {
            index: 4,
            term: 2,
            ..SnapshotMetadata::default()
        });
        storage.compact(&snap).unwrap();
        assert_eq!(storage.term(4).unwrap(), 2, "the snapshot's own term");
        assert!(storage.term(3).is_err(), "compacted");
        assert_eq!(storage.term(6).unwrap(), 2);
        // More than the cache holds: the oldest come from disk again.
        let many: Vec<Entry> = (7..=7 + super::RECENT_TERMS as u64)
            .map(|i| entry(i, 3))
            .collect();
        storage.append(&many, None).unwrap();
        assert_eq!(storage.term(5).unwrap(), 2);
        assert_eq!(storage.term(7 + super::RECENT_TERMS as u64).unwrap(), 3);
        // A restart starts with nothing cached and reads the same terms.
        drop(storage);
        let store = Store::open(&dir.path().join("store2")).unwrap();
        let storage = RaftStorage::open(&dir.path().join("raft"), store).unwrap();
        assert_eq!(storage.term(5).unwrap(), 2);
        assert_eq!(storage.term(8).unwrap(), 3);
    }

    #[test]
    fn a_snapshot_in_the_log_tree_moves_to_its_own_tree() {
        use protobuf::Message as _;
        use raft::prelude::{Snapshot, SnapshotMetadata};
        let dir = tempfile::tempdir().unwrap();
        let raft_dir = dir.path().join("raft");
        let mut snap = Snapshot {
            data: SECRET.to_vec().into(),
            ..Snapshot::default()
        };
        snap.set_metadata(SnapshotMetadata {
            index: 7,
            term: 2,
            ..SnapshotMetadata::default()
        });
        {
            // As an older version left it: the snapshot beside the log.
            let db = crate::store::open_sled(&raft_dir).unwrap();
            let tree = db.open_tree("raft").unwrap();
            tree.insert(super::SNAPSHOT, snap.write_to_bytes().unwrap())
                .unwrap();
            db.flush().unwrap();
        }
        let store = Store::open(&dir.path().join("store")).unwrap();
        let storage = RaftStorage::open(&raft_dir, store).unwrap();
        assert_eq!(storage.snapshot_index(), 7);
        assert_eq!(storage.load_snapshot().unwrap(), Some(snap));
        assert!(storage.tree.get(super::SNAPSHOT).unwrap().is_none());
    }

    /// Every entry key still on disk, as indexes.
    fn entry_indexes(storage: &RaftStorage) -> Vec<u64> {
        storage
            .tree
            .scan_prefix([super::ENTRY_PREFIX])
            .keys()
            .map(|k| super::index_of(&k.unwrap()).unwrap())
            .collect()
    }

    /// Waits (at most 10 s) until no entry at or below `index` is left on disk.
    fn wait_pruned(storage: &RaftStorage, index: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while entry_indexes(storage)
            .first()
            .is_some_and(|first| *first <= index)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "compacted entries still on disk: {:?}",
                entry_indexes(storage)
            );
            std::thread::yield_now();
        }
    }

    fn snapshot_at(index: u64, term: u64) -> raft::prelude::Snapshot {
        let mut snap = raft::prelude::Snapshot {
            data: SECRET.to_vec().into(),
            ..raft::prelude::Snapshot::default()
        };
        snap.set_metadata(raft::prelude::SnapshotMetadata {
            index,
            term,
            ..raft::prelude::SnapshotMetadata::default()
        });
        snap
    }

    #[test]
    fn compaction_deletes_the_covered_entries_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let mut storage = RaftStorage::open(&dir.path().join("raft"), store).unwrap();
        let n = 3 * super::PRUNE_BATCH as u64 + 5;
        let batch: Vec<Entry> = (1..=n)
            .map(|index| Entry {
                index,
                term: 1,
                ..Entry::default()
            })
            .collect();
        storage.append(&batch, None).unwrap();
        storage.compact(&snapshot_at(n - 2, 1)).unwrap();
        assert_eq!(storage.first_index(), n - 1);
        wait_pruned(&storage, n - 2);
        assert_eq!(entry_indexes(&storage), vec![n - 1, n]);
        assert_eq!(
            storage
                .entries(n - 1, n + 1, None, GetEntriesContext::empty(false))
                .unwrap(),
            batch[(n - 2) as usize..].to_vec()
        );
    }

    /// A crash after the snapshot is saved and before (or while) the entries it covers are
    /// deleted: the reopened log starts after the snapshot, reads and appends as usual, and
    /// the leftovers are deleted.
    #[test]
    fn a_crash_between_snapshot_and_pruning_leaves_a_consistent_log() {
        let dir = tempfile::tempdir().unwrap();
        let raft_dir = dir.path().join("raft");
        let key = DataKey::generate().unwrap();
        let entry = |index| Entry {
            index,
            term: if index <= 6 { 1 } else { 2 },
            data: SECRET.to_vec().into(),
            ..Entry::default()
        };
        {
            let store = Store::open_sealed(&dir.path().join("store"), key.clone()).unwrap();
            let mut storage = RaftStorage::open(&raft_dir, store).unwrap();
            let batch: Vec<Entry> = (1..=10).map(entry).collect();
            storage.append(&batch, None).unwrap();
            // The durable half of `compact` only, as a kill -9 right after it leaves the disk.
            storage.save_snapshot(&snapshot_at(7, 2)).unwrap();
            assert_eq!(entry_indexes(&storage), (1..=10).collect::<Vec<_>>());
        }
        let store = Store::open_sealed(&dir.path().join("store"), key.clone()).unwrap();
        let mut storage = RaftStorage::open(&raft_dir, store).unwrap();
        assert_eq!(storage.snapshot_index(), 7);
        assert_eq!(storage.first_index(), 8);
        assert_eq!(storage.last_index(), 10);
        assert_eq!(storage.term(7).unwrap(), 2);
        assert!(matches!(
            storage.term(6),
            Err(raft::Error::Store(raft::StorageError::Compacted))
        ));
        assert!(matches!(
            storage.entries(5, 9, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(raft::StorageError::Compacted))
        ));
        assert_eq!(
            storage
                .entries(8, 11, None, GetEntriesContext::empty(false))
                .unwrap(),
            (8..=10).map(entry).collect::<Vec<_>>()
        );
        assert_eq!(
            storage.load_snapshot().unwrap().unwrap().data.as_ref(),
            SECRET
        );
        wait_pruned(&storage, 7);
        assert_eq!(entry_indexes(&storage), vec![8, 9, 10]);
        storage.append(&[entry(11)], None).unwrap();
        assert_eq!(storage.last_index(), 11);

        // Compacted up to the last entry and crashed before pruning: the log is empty after the
        // snapshot, and its last index is the snapshot's (not a leftover's).
        storage.save_snapshot(&snapshot_at(11, 2)).unwrap();
        drop(storage);
        let store = Store::open_sealed(&dir.path().join("store"), key).unwrap();
        let storage = RaftStorage::open(&raft_dir, store).unwrap();
        assert_eq!(storage.first_index(), 12);
        assert_eq!(storage.last_index(), 11);
        assert_eq!(storage.term(11).unwrap(), 2);
        wait_pruned(&storage, 11);
        assert!(entry_indexes(&storage).is_empty());
    }
}
