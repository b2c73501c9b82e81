//! The task that owns the `RawNode`: ticks, proposals, incoming messages and the ready cycle.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use prost::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Snapshot,
};
use raft::{RawNode, StateRole};
use shoal_proto::v1::StoreRequest;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;

use super::{Msg, RaftError, RaftStorage, Shared, Transport};
use crate::store::{Store, StoreError};

/// Most messages taken off the queue before the next ready cycle (bounds one batch).
const MAX_BATCH: usize = 4096;

/// Everything the driver is built from.
pub(super) struct DriverParts {
    pub raw: RawNode<RaftStorage>,
    pub store: Store,
    pub transport: Arc<dyn Transport>,
    pub rx: mpsc::Receiver<Msg>,
    pub shared: Arc<Shared>,
    pub leadership: watch::Sender<bool>,
    pub tick: Duration,
    pub snapshot_interval: u64,
    /// Applied index covered by the last snapshot (or where counting starts).
    pub last_snapshot: u64,
}

/// The Raft task's state.
pub(super) struct Driver {
    parts: DriverParts,
    /// Callers waiting for their request, by request id.
    pending: HashMap<u64, oneshot::Sender<Result<(), StoreError>>>,
    /// Callers waiting for a membership change, by the id carried in the entry's context.
    pending_conf: HashMap<u64, oneshot::Sender<Result<(), StoreError>>>,
    /// Callers waiting for a read index, by the id carried in the request's context.
    reads: HashMap<u64, oneshot::Sender<Result<u64, StoreError>>>,
    next_ctx: u64,
    /// After the leader's process was reported gone, on the voter that campaigns first: ticks
    /// left during which it campaigns again while no leader is known (a survivor that had not
    /// noticed yet ignored the first pre-vote).
    leader_gone: Option<usize>,
    /// A read index was asked for, or a leader became known while some were unanswered, at a
    /// time no leader served reads: ask for them again once one does ([`Self::ask_reads_again`]).
    reask_reads: bool,
}

impl Driver {
    pub(super) fn new(parts: DriverParts) -> Driver {
        Driver {
            parts,
            pending: HashMap::new(),
            pending_conf: HashMap::new(),
            reads: HashMap::new(),
            next_ctx: 1,
            leader_gone: None,
            reask_reads: false,
        }
    }

    /// Runs until shutdown (or a storage failure, after which the node cannot go on safely).
    pub(super) async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.parts.tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let mut stop = false;
            tokio::select! {
                _ = ticker.tick() => {
                    self.parts.raw.tick();
                    self.campaign_again_if_leader_gone();
                }
                msg = self.parts.rx.recv() => {
                    let mut next = msg;
                    let mut taken = 0;
                    // Drain what is queued so many proposals share one persist + flush.
                    while let Some(msg) = next {
                        if self.handle(msg) {
                            stop = true;
                            break;
                        }
                        taken += 1;
                        if taken >= MAX_BATCH {
                            break;
                        }
                        next = self.parts.rx.try_recv().ok();
                    }
                    if taken == 0 && !stop {
                        stop = true; // every handle dropped: nobody can use the node any more
                    }
                }
            }
            // Persist and apply what was accepted so far, even when stopping: a proposal raft
            // took must not be half-done.
            if let Err(e) = self.on_ready() {
                tracing::error!("raft node stops: {e}");
                stop = true;
            }
            self.publish_status();
            if stop {
                break;
            }
        }
        self.fail_pending(|| StoreError::Stopped);
        self.parts.leadership.send_replace(false);
        // The store's own sled holds nothing under Raft (the log is its durable copy).
        if let Err(e) = self.parts.raw.store().flush() {
            tracing::error!("flushing the raft log at shutdown: {e}");
        }
    }

    /// Handles one message; true means stop.
    fn handle(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Propose { req, reply } => self.propose(req, reply),
            Msg::Step(m) => {
                let better_candidate = self.outranks_candidate(&m);
                if let Err(e) = self.parts.raw.step(m) {
                    tracing::debug!("raft dropped a message: {e}");
                }
                if better_candidate {
                    self.campaign_as_better_candidate();
                }
            }
            Msg::ReadIndex { reply } => {
                let ctx = self.next_ctx;
                self.next_ctx += 1;
                // Unanswered requests (no leader) are dropped by raft; the caller times out.
                self.reads.retain(|_, r| !r.is_closed());
                self.parts.raw.read_index(ctx.to_be_bytes().to_vec());
                self.reads.insert(ctx, reply);
                // Dropped by raft unless a leader serves reads: ask again once one does.
                self.reask_reads |= !self.leader_serves_reads();
            }
            Msg::TransferLeader { to } => {
                if self.parts.raw.raft.state == StateRole::Leader {
                    tracing::info!(to, "transferring Raft leadership");
                    self.parts.raw.transfer_leader(to);
                }
            }
            Msg::ConfChange { cc, reply } => {
                let raw = &mut self.parts.raw;
                if raw.raft.state != StateRole::Leader {
                    let _ = reply.send(Err(self.parts.shared.not_leader(raw.raft.leader_id)));
                    return false;
                }
                let ctx = self.next_ctx;
                self.next_ctx += 1;
                match raw.propose_conf_change(ctx.to_be_bytes().to_vec(), cc) {
                    Ok(()) => {
                        self.pending_conf.insert(ctx, reply);
                    }
                    Err(e) => {
                        // e.g. a previous change is not applied yet.
                        let _ = reply.send(Err(StoreError::Conflict(format!(
                            "membership change refused: {e}"
                        ))));
                    }
                }
            }
            Msg::PeerGone(id) => self.peer_gone(id),
            Msg::Shutdown => return true,
        }
        false
    }

    /// The leader `id`'s process is gone (its connection closed, a new one refused): no need to
    /// wait out the election timeout. Every survivor stops honouring the dead leader's lease (it
    /// forgets the leader), so it grants votes at once; the first surviving voter (lowest id)
    /// campaigns now. The others keep their election clock as it was, a full randomised timeout
    /// after the last heartbeat, as a fallback: advancing it too would let one of them become a
    /// candidate within a tick, beside the first, and split the vote until the next timeout.
    /// When the first survivor's log is behind another's (the dead leader's last entry reached
    /// only that one), the other refuses its pre-vote and campaigns itself at once
    /// ([`Self::outranks_candidate`]). Pre-vote and check-quorum stay on: if the leader is in
    /// fact alive, its next heartbeat makes it known again, the voters still in its lease ignore
    /// the pre-vote and it keeps its term.
    fn peer_gone(&mut self, id: u64) {
        let raft = &mut self.parts.raw.raft;
        if id == raft.id || id != raft.leader_id || raft.state == StateRole::Leader {
            return;
        }
        let me = raft.id;
        let voters = raft.prs().conf().voters().ids();
        if !voters.contains(me) {
            return;
        }
        let first = voters.iter().filter(|v| *v != id).min();
        // raft-rs' lease: a vote request is ignored while a leader is known and heard from
        // within the election timeout.
        raft.leader_id = raft::INVALID_ID;
        if first == Some(me) {
            raft.election_elapsed = raft.election_elapsed.max(raft.election_timeout());
            tracing::info!(
                leader = id,
                "the Raft leader's process is gone: campaigning now"
            );
            self.leader_gone = Some(self.parts.raw.raft.election_timeout());
            if let Err(e) = self.parts.raw.campaign() {
                tracing::debug!("campaign refused: {e}");
            }
        } else {
            tracing::info!(
                leader = id,
                "the Raft leader's process is gone: its lease no longer holds here"
            );
        }
    }

    /// Whether `m` is a pre-vote request this voter will refuse because the candidate's log is
    /// behind its own, at a time no leader is known here. Such a candidate cannot win without
    /// this vote in a group of three, and the others would only campaign when their election
    /// timeout ends: when the dead leader's last entry reached this voter but not the first
    /// survivor, [`Self::peer_gone`]'s quick election would wait out a full timeout.
    fn outranks_candidate(&self, m: &raft::eraftpb::Message) -> bool {
        let raft = &self.parts.raw.raft;
        m.get_msg_type() == raft::eraftpb::MessageType::MsgRequestPreVote
            && m.from != raft.id
            && raft.state == StateRole::Follower
            && raft.leader_id == raft::INVALID_ID
            && raft.prs().conf().voters().contains(raft.id)
            && !raft.raft_log.is_up_to_date(m.index, m.log_term)
    }

    /// Campaigns (a pre-vote first, which costs no term) after refusing a pre-vote for a log
    /// behind this voter's ([`Self::outranks_candidate`]), unless the refusal changed what is
    /// known meanwhile. The refused candidate grants this voter's pre-vote, since its log is
    /// the more up to date one.
    fn campaign_as_better_candidate(&mut self) {
        let raft = &self.parts.raw.raft;
        if raft.state != StateRole::Follower || raft.leader_id != raft::INVALID_ID {
            return;
        }
        tracing::info!(
            term = raft.term,
            "refused a pre-vote for a log behind this one, no leader known: campaigning now"
        );
        if let Err(e) = self.parts.raw.campaign() {
            tracing::debug!("campaign refused: {e}");
        }
    }

    /// On a tick after [`Self::peer_gone`] campaigned: until a leader is known, campaign again
    /// (a pre-vote costs no term), for at most one election timeout.
    fn campaign_again_if_leader_gone(&mut self) {
        let Some(left) = self.leader_gone else {
            return;
        };
        let raft = &self.parts.raw.raft;
        if raft.leader_id != 0 || left == 0 {
            self.leader_gone = None;
            return;
        }
        self.leader_gone = Some(left - 1);
        if matches!(raft.state, StateRole::Follower | StateRole::PreCandidate) {
            if let Err(e) = self.parts.raw.campaign() {
                tracing::debug!("campaign refused: {e}");
            }
        }
    }

    fn propose(&mut self, req: StoreRequest, reply: oneshot::Sender<Result<(), StoreError>>) {
        let raw = &mut self.parts.raw;
        if raw.raft.state != StateRole::Leader {
            let _ = reply.send(Err(self.parts.shared.not_leader(raw.raft.leader_id)));
            return;
        }
        match raw.propose(Vec::new(), req.encode_to_vec()) {
            Ok(()) => {
                self.pending.insert(req.request_id, reply);
            }
            Err(e) => {
                tracing::debug!("proposal dropped: {e}");
                let _ = reply.send(Err(self.parts.shared.not_leader(raw.raft.leader_id)));
            }
        }
    }

    /// One ready cycle, in the order raft-rs requires (examples/five_mem_node).
    fn on_ready(&mut self) -> Result<(), RaftError> {
        if !self.parts.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.parts.raw.ready();
        if let Some(ss) = ready.ss() {
            self.role_changed(ss.raft_state == StateRole::Leader, ss.leader_id);
            self.reask_reads |= ss.leader_id != raft::INVALID_ID && !self.reads.is_empty();
        }
        let messages = ready.take_messages();
        for rs in ready.take_read_states() {
            let ctx = <[u8; 8]>::try_from(rs.request_ctx.as_slice()).map(u64::from_be_bytes);
            if let Some(reply) = ctx.ok().and_then(|c| self.reads.remove(&c)) {
                let _ = reply.send(Ok(rs.index));
            }
        }

        if !ready.snapshot().is_empty() {
            let snap: Snapshot = ready.snapshot().clone();
            let index = snap.get_metadata().index;
            self.parts.raw.mut_store().apply_snapshot(&snap)?;
            self.parts.store.restore(index, &snap.data)?;
            self.parts.last_snapshot = index;
        }
        // `messages` are the leader's appends and heartbeats: raft-rs lets them go before the
        // leader's own log is on disk (Raft thesis 10.2.1), so followers write theirs in parallel.
        // The leader counts itself towards a commit only in `advance`, after the fsync below.
        self.parts.transport.send(messages);
        // Durable before any vote or append response is sent and before anything is applied:
        // an acknowledged write survives kill -9 on a majority.
        self.parts
            .raw
            .mut_store()
            .append(ready.entries(), ready.hs())?;
        // A follower's append response first: applying must not delay the leader's commit.
        self.parts.transport.send(ready.take_persisted_messages());
        self.apply_committed(ready.take_committed_entries())?;

        let mut light = self.parts.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.parts.raw.mut_store().set_commit(commit)?;
        }
        self.parts.transport.send(light.take_messages());
        self.apply_committed(light.take_committed_entries())?;
        self.parts.raw.advance_apply();
        self.maybe_compact()?;
        if self.reask_reads && self.leader_serves_reads() {
            self.reask_reads = false;
            self.ask_reads_again();
            return self.on_ready();
        }
        Ok(())
    }

    /// Whether a leader is known and has committed an entry of its term, as seen here: only
    /// then does it answer a read index (raft-rs drops one that comes earlier).
    fn leader_serves_reads(&self) -> bool {
        let raft = &self.parts.raw.raft;
        raft.leader_id != raft::INVALID_ID
            && raft.raft_log.term(raft.raft_log.committed).ok() == Some(raft.term)
    }

    /// A new leader serves reads: asks again for every read index still unanswered. Raft drops
    /// a request made while no leader was known, forwarded to a leader that then died, or made
    /// before the new leader committed in its term, and [`super::RaftNode::read_barrier`] would
    /// only ask again after `READ_RETRY`: after a failover that wait was most of the time to
    /// the first acknowledged write. A read answered twice is harmless (the second answer finds
    /// no caller).
    fn ask_reads_again(&mut self) {
        self.reads.retain(|_, r| !r.is_closed());
        tracing::debug!(
            reads = self.reads.len(),
            "a new leader serves reads: asking for read indexes again"
        );
        for ctx in self.reads.keys() {
            self.parts.raw.read_index(ctx.to_be_bytes().to_vec());
        }
    }

    fn apply_committed(&mut self, entries: Vec<Entry>) -> Result<(), RaftError> {
        // Runs of normal entries are applied as one store batch; membership changes in between
        // are applied on their own, in log order.
        let mut run: Vec<(u64, StoreRequest)> = Vec::new();
        for entry in entries {
            match entry.get_entry_type() {
                EntryType::EntryNormal => run.push((entry.index, store_request(&entry))),
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_run(std::mem::take(&mut run))?;
                    self.apply_conf_entry(entry)?;
                }
            }
        }
        self.apply_run(run)
    }

    /// Applies consecutive store requests in one store transaction and answers their callers.
    fn apply_run(&mut self, run: Vec<(u64, StoreRequest)>) -> Result<(), RaftError> {
        if run.is_empty() {
            return Ok(());
        }
        let batch: Vec<(u64, &StoreRequest)> = run.iter().map(|(i, r)| (*i, r)).collect();
        let results = self.parts.store.apply_batch(&batch)?;
        for ((_, req), result) in run.iter().zip(results) {
            if req.request_id == 0 && req.actions.is_empty() {
                continue;
            }
            if let Some(reply) = self.pending.remove(&req.request_id) {
                let _ = reply.send(result);
            }
        }
        Ok(())
    }

    /// Puts the configuration a membership change produced into Raft's storage and records the
    /// change's index in the store.
    fn record_conf(&mut self, index: u64, cs: ConfState) -> Result<(), RaftError> {
        self.parts.raw.mut_store().set_conf_state(cs, index)?;
        self.parts.store.apply(index, &StoreRequest::default())?;
        Ok(())
    }

    /// Applies a membership change (the store only records its index).
    fn apply_conf_entry(&mut self, entry: Entry) -> Result<(), RaftError> {
        let index = entry.index;
        {
            match entry.get_entry_type() {
                EntryType::EntryNormal => {} // never sent here
                EntryType::EntryConfChange => {
                    let cc: ConfChange = decode_change(index, &entry.data)?;
                    let cs = self.parts.raw.apply_conf_change(&cc)?;
                    self.record_conf(index, cs)?;
                    let ctx = <[u8; 8]>::try_from(entry.get_context()).map(u64::from_be_bytes);
                    if let Some(reply) = ctx.ok().and_then(|c| self.pending_conf.remove(&c)) {
                        let _ = reply.send(Ok(()));
                    }
                    if cc.get_change_type() == ConfChangeType::RemoveNode
                        && cc.node_id == self.parts.raw.raft.id
                    {
                        tracing::warn!("this manager was removed from the raft group");
                    }
                }
                EntryType::EntryConfChangeV2 => {
                    let cc: ConfChangeV2 = decode_change(index, &entry.data)?;
                    let cs = self.parts.raw.apply_conf_change(&cc)?;
                    self.record_conf(index, cs)?;
                }
            }
        }
        Ok(())
    }

    /// Every `snapshot_interval` applied entries: snapshot the store, drop the log it covers.
    fn maybe_compact(&mut self) -> Result<(), RaftError> {
        let applied = self.parts.store.applied_index();
        if applied < self.parts.last_snapshot + self.parts.snapshot_interval {
            return Ok(());
        }
        // The snapshot (durable before any entry is dropped) is the store's copy on disk.
        let storage = self.parts.raw.mut_store();
        let snap = storage.snapshot_of_store()?;
        let index = snap.get_metadata().index;
        storage.compact(&snap)?;
        tracing::debug!(index, "raft log compacted");
        self.parts.last_snapshot = index;
        Ok(())
    }

    fn role_changed(&mut self, is_leader: bool, leader_id: u64) {
        if !is_leader && !self.pending.is_empty() {
            // Their entries may still commit under the new leader, but nobody here can tell.
            let shared = self.parts.shared.clone();
            self.fail_pending(|| shared.not_leader(leader_id));
        }
        self.parts.leadership.send_if_modified(|current| {
            let changed = *current != is_leader;
            *current = is_leader;
            changed
        });
    }

    fn fail_pending(&mut self, err: impl Fn() -> StoreError) {
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(err()));
        }
    }

    fn publish_status(&self) {
        let raft = &self.parts.raw.raft;
        let mut status = self
            .parts
            .shared
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        status.leader_id = raft.leader_id;
        status.term = raft.term;
        status.commit = raft.raft_log.committed;
        status.applied = self.parts.store.applied_index();
        status.is_leader = raft.state == StateRole::Leader;
        status.voters = raft.prs().conf().voters().ids().iter().collect();
        status.voters.sort_unstable();
        status.active = if status.is_leader {
            let mut active: Vec<u64> = raft
                .prs()
                .iter()
                .filter(|(id, pr)| **id == raft.id || pr.recent_active)
                .map(|(id, _)| *id)
                .collect();
            active.sort_unstable();
            active
        } else {
            Vec::new()
        };
        let snapshot = status.clone();
        drop(status);
        self.parts.shared.status_tx.send_if_modified(|s| {
            let changed = *s != snapshot;
            *s = snapshot;
            changed
        });
    }
}

/// The store request a normal entry carries; an empty one for a new leader's empty entry or
/// for bytes that do not decode (every manager decodes the same bytes the same way, so skipping
/// is consistent); only the applied index moves for those.
fn store_request(entry: &Entry) -> StoreRequest {
    if entry.data.is_empty() {
        return StoreRequest::default();
    }
    StoreRequest::decode(entry.data.as_ref()).unwrap_or_else(|e| {
        tracing::error!(
            "entry {} is not a store request ({e}); skipped",
            entry.index
        );
        StoreRequest::default()
    })
}

/// Entries read from the log per step of [`replay_committed`].
const REPLAY_CHUNK: u64 = 4096;

/// At start, before the node runs: applies to the (log-backed) store every entry after its
/// applied index up to the commit index on disk, so the state reads as it did before the stop
/// (or crash) once `start` returns. A membership entry at or below the storage's conf index is
/// already in the saved configuration (or overridden by `--force-new-cluster`, which must not be
/// undone by applying old changes again): only the store's index moves. It stops before the first
/// one above it (a crash fell between its commit and its apply): raft-rs hands that entry and
/// what follows over as committed entries once the node runs, and they are applied there.
pub(super) fn replay_committed(storage: &RaftStorage, store: &Store) -> Result<(), RaftError> {
    let commit = storage.hard_state().commit.min(storage.last_index());
    let saved_membership = storage.conf_index();
    let mut next = store.applied_index() + 1;
    let from = next;
    'replay: while next <= commit {
        let high = (next + REPLAY_CHUNK).min(commit + 1);
        let entries = raft::Storage::entries(
            storage,
            next,
            high,
            None,
            raft::GetEntriesContext::empty(false),
        )?;
        let mut run: Vec<(u64, StoreRequest)> = Vec::with_capacity(entries.len());
        let mut membership = false;
        for e in &entries {
            if e.get_entry_type() == EntryType::EntryNormal {
                run.push((e.index, store_request(e)));
            } else if e.index <= saved_membership {
                run.push((e.index, StoreRequest::default()));
            } else {
                membership = true;
                break;
            }
        }
        let batch: Vec<(u64, &StoreRequest)> = run.iter().map(|(i, r)| (*i, r)).collect();
        store.apply_batch(&batch)?;
        next += run.len() as u64;
        if membership {
            break 'replay;
        }
    }
    if next > from {
        tracing::debug!(from, to = next - 1, "replayed the committed raft log");
    }
    Ok(())
}

/// Decodes the membership change (either version) of the entry at `index`.
fn decode_change<M: protobuf::Message>(index: u64, data: &[u8]) -> Result<M, RaftError> {
    M::parse_from_bytes(data).map_err(|source| RaftError::Codec {
        what: format!("conf change at {index}"),
        source,
    })
}
