//! The dispatcher: one long-lived bidirectional stream per agent. It registers the node, sends it
//! the complete set of its tasks and the views of their networks whenever they change, turns the
//! agent's status reports into batched Raft writes, watches heartbeats and routes log and volume
//! requests.

pub mod logs;
pub mod promote;
pub mod subset;
pub mod views;
pub mod volumes;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use shoal_proto::v1::dispatcher_server::Dispatcher as DispatcherRpc;
use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::*;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::auth::require_node;
use crate::store::Store;

/// How long a node whose stream closed may take to reconnect before it is marked down, in
/// heartbeat periods. An agent restart takes well under one period.
const DOWN_AFTER_PERIODS: f64 = 1.5;

/// A connected agent's session.
#[derive(Clone)]
pub struct Session {
    id: u64,
    tx: mpsc::Sender<ManagerMessage>,
    /// Set to end the session from the manager's side.
    end: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Session {
    /// Sends a message down the session.
    pub async fn send(&self, msg: ManagerMessage) -> Result<(), ()> {
        self.tx.send(msg).await.map_err(|_| ())
    }
}

#[derive(Default)]
struct SessionTable {
    sessions: HashMap<String, Session>,
    last_seen: HashMap<String, Seen>,
    /// How long this manager could not run its own tasks in time, in all (see [`stall`]).
    stalled: Duration,
}

/// When a node was last heard from, and how much stalled time had been counted then.
#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    stalled: Duration,
}

impl SessionTable {
    /// Records that `node_id` was heard from now.
    fn seen(&mut self, node_id: &str) {
        let seen = Seen {
            at: Instant::now(),
            stalled: self.stalled,
        };
        match self.last_seen.get_mut(node_id) {
            Some(s) => *s = seen,
            None => {
                self.last_seen.insert(node_id.to_string(), seen);
            }
        }
    }

    /// How long `node_id` has gone unheard at `now`, not counting the time this manager was
    /// stalled since: a heartbeat it could not read then is not held against the node.
    /// `floor` stands in for a node never heard from (or heard from before it).
    fn silent_for(&self, node_id: &str, now: Instant, floor: Seen) -> Duration {
        let last = match self.last_seen.get(node_id) {
            Some(s) if s.at > floor.at => *s,
            _ => floor,
        };
        now.saturating_duration_since(last.at)
            .saturating_sub(self.stalled.saturating_sub(last.stalled))
    }
}

/// How late a wake-up may come before the delay counts as a stall.
const STALL_ALLOWANCE: Duration = Duration::from_millis(100);

/// The stall a sleep of `asked` that took `slept` shows: how much later than asked it woke,
/// when that is beyond [`STALL_ALLOWANCE`]. A late wake-up is a sign that this manager's runtime
/// could not run its tasks (the sessions reading heartbeats among them) in time, because the
/// process or the machine is overloaded.
fn stall(slept: Duration, asked: Duration) -> Duration {
    let late = slept.saturating_sub(asked);
    if late > STALL_ALLOWANCE {
        late
    } else {
        Duration::ZERO
    }
}

/// Connected nodes whose heartbeats may all turn late in one judgment and still be marked down:
/// at least this many, or one in [`LATE_AT_ONCE_SHARE`] of the connected ones.
const LATE_AT_ONCE_FLOOR: usize = 10;
/// See [`LATE_AT_ONCE_FLOOR`].
const LATE_AT_ONCE_SHARE: usize = 50;

/// Whether `late` connected nodes turning late at once (of `connected`) says more about this
/// manager than about them: agents whose streams are open do not stop heartbeating together,
/// while a manager too busy to read its streams in time makes them all look silent (as nodes
/// controllers elsewhere stop evicting when most of a zone looks down at once). Those are not
/// marked down; a node really gone loses its stream within the HTTP/2 keep-alive (10 s), and is
/// then judged as disconnected, which this does not hold back.
fn late_at_once(late: usize, connected: usize) -> bool {
    late > LATE_AT_ONCE_FLOOR.max(connected / LATE_AT_ONCE_SHARE)
}

/// The table of connected sessions, shared with the log broker.
#[derive(Clone, Default)]
pub struct Sessions(Arc<Mutex<SessionTable>>);

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, SessionTable> {
        // Poisoning only means a panic elsewhere mid-update; the table stays consistent per entry.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A table with one connected node, `n1`, whose session messages come out of the receiver.
    #[cfg(test)]
    pub(crate) fn with_n1() -> (Self, mpsc::Receiver<ManagerMessage>) {
        let sessions = Sessions::default();
        let (tx, rx) = mpsc::channel(16);
        let (end, _) = tokio::sync::watch::channel(false);
        sessions.lock().sessions.insert(
            "n1".into(),
            Session {
                id: 1,
                tx,
                end: Arc::new(end),
            },
        );
        (sessions, rx)
    }

    /// The session of a node, if connected.
    pub fn get(&self, node_id: &str) -> Option<Session> {
        self.lock().sessions.get(node_id).cloned()
    }

    fn seen(&self, node_id: &str) {
        self.lock().seen(node_id);
    }
}

/// The dispatcher service.
#[derive(Clone)]
pub struct Dispatcher {
    store: Store,
    sessions: Sessions,
    logs: logs::LogBroker,
    status_tx: mpsc::Sender<TaskStatusUpdate>,
    next_session: Arc<AtomicU64>,
    /// With several managers: whether this one leads. Only the leader holds sessions and judges
    /// heartbeats; `None` (a lone manager) always serves.
    leadership: Option<tokio::sync::watch::Receiver<bool>>,
    /// Network views shared by every node's session (many nodes receive the same ones).
    views: Arc<Mutex<views::Cache>>,
    /// What the last batches of store changes mean for nodes, summed up once for all sessions.
    notes: Arc<Mutex<views::NotesCache>>,
    /// Turns at computing a node's view and delta, as many at once as there are cores: the
    /// sessions one batch wakes (thousands) wait parked for theirs, instead of queueing on the
    /// runtime ahead of the sessions' pings, heartbeats and Raft for seconds. (One turn fewer
    /// than cores kept the runtime still more responsive but halved the views' throughput.)
    view_turns: Arc<tokio::sync::Semaphore>,
    /// The sessions' directive loops, woken by one watcher of the store (`directive_wakes`).
    directive_wakes: promote::DirectiveWakes,
}

impl Dispatcher {
    /// Starts the dispatcher's background loops (status batching, heartbeat expiry) until
    /// `shutdown` fires.
    pub fn start(store: Store, shutdown: tokio::sync::watch::Receiver<bool>) -> Self {
        Self::start_leader_only(store, shutdown, None)
    }

    /// Like [`Dispatcher::start`], but with several managers: it serves only while `leadership`
    /// says this manager leads. Followers refuse sessions (the agent then tries the next
    /// manager) and never judge heartbeats; the leader ends sessions when it loses leadership.
    pub fn start_leader_only(
        store: Store,
        shutdown: tokio::sync::watch::Receiver<bool>,
        leadership: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> Self {
        let sessions = Sessions::default();
        let logs = logs::LogBroker::new(sessions.clone());
        let (status_tx, status_rx) = mpsc::channel(4096);
        let d = Dispatcher {
            store,
            sessions,
            logs,
            status_tx,
            next_session: Arc::new(AtomicU64::new(1)),
            leadership,
            views: Arc::default(),
            notes: Arc::default(),
            view_turns: Arc::new(tokio::sync::Semaphore::new(view_turns())),
            directive_wakes: promote::DirectiveWakes::default(),
        };
        tokio::spawn(d.clone().status_batcher(status_rx, shutdown.clone()));
        tokio::spawn(d.clone().directive_wakes(shutdown.clone()));
        tokio::spawn(d.clone().heartbeat_monitor(shutdown));
        d
    }

    fn is_leader(&self) -> bool {
        self.leadership.as_ref().is_none_or(|l| *l.borrow())
    }

    /// The log broker, for the control API.
    pub fn logs(&self) -> logs::LogBroker {
        self.logs.clone()
    }

    fn heartbeat_period(&self) -> Duration {
        let ns = self
            .store
            .read(|s| s.cluster().map(|c| c.heartbeat_period_ns))
            .unwrap_or(0);
        if ns > 0 {
            Duration::from_nanos(ns as u64)
        } else {
            Duration::from_secs(5)
        }
    }

    /// Proposes agents' status reports in batches: one Raft write carries every update that
    /// arrived while the previous write was in flight.
    async fn status_batcher(
        self,
        mut rx: mpsc::Receiver<TaskStatusUpdate>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let first = tokio::select! {
                u = rx.recv() => match u { Some(u) => u, None => return },
                _ = shutdown.changed() => return,
            };
            let mut batch = vec![first];
            while batch.len() < 2000 {
                match rx.try_recv() {
                    Ok(u) => batch.push(u),
                    Err(_) => break,
                }
            }
            let n = batch.len();
            let actions = batch
                .into_iter()
                .map(|u| StoreAction {
                    action: Some(Action::TaskStatus(u)),
                })
                .collect();
            if let Err(e) = self.store.propose(actions).await {
                warn!(error = %e, updates = n, "could not record task status updates");
            }
        }
    }

    /// Marks nodes down when they have not been heard from for too long.
    async fn heartbeat_monitor(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        const TICK: Duration = Duration::from_millis(250);
        // When this manager became leader (with the stalled time counted then): agents had no
        // chance to reach it before.
        let mut leader_since: Option<Seen> = None;
        loop {
            // A sleep, not an interval: only the wait itself is measured, not this loop's own
            // work (a slow write below is not a stall).
            let asleep = Instant::now();
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
            let stall = stall(asleep.elapsed(), TICK);
            let stalled = {
                let mut t = self.sessions.lock();
                t.stalled += stall;
                t.stalled
            };
            if stall >= Duration::from_secs(1) {
                info!(stalled_ms = stall.as_millis() as u64, "this manager could not run its tasks in time (overloaded): heartbeats are judged that much later");
            } else if !stall.is_zero() {
                debug!(
                    stalled_ms = stall.as_millis() as u64,
                    "heartbeat monitor ran late"
                );
            }
            if !self.is_leader() {
                leader_since = None;
                continue;
            }
            let since = *leader_since.get_or_insert_with(|| Seen {
                at: Instant::now(),
                stalled,
            });
            let limit = self.heartbeat_period().mul_f64(DOWN_AFTER_PERIODS);
            let now = Instant::now();
            // Judged on the session table alone first: cloning every ready node's record each
            // tick costs more than everything else here at thousands of nodes.
            let (mut expired, connected): (Vec<(String, bool)>, usize) = {
                let ids: Vec<String> = self.store.read(|s| {
                    s.nodes()
                        // A manager-only node's health comes from Raft, not from an agent
                        // session (a promoted worker's agent is judged like any other).
                        .filter(|n| crate::node_record::runs_agent(n))
                        .filter(|n| crate::node_record::is_ready(n))
                        .map(|n| n.id.clone())
                        .collect()
                });
                let t = self.sessions.lock();
                let expired = ids
                    .into_iter()
                    .filter_map(|id| {
                        // A connected agent that stopped heartbeating is as dead as a
                        // disconnected one.
                        let expired = t.silent_for(&id, now, since) > limit;
                        expired.then(|| {
                            let connected = t.sessions.contains_key(&id);
                            (id, connected)
                        })
                    })
                    .collect();
                (expired, t.sessions.len())
            };
            let late = expired.iter().filter(|(_, connected)| *connected).count();
            if late_at_once(late, connected) {
                info!(
                    late,
                    connected,
                    "heartbeats of many connected nodes are late at once: this manager is behind, \
                     not marking them down (a node really gone loses its stream, and is marked \
                     down then)"
                );
                expired.retain(|(_, connected)| !connected);
            }
            let mut actions = Vec::new();
            for (id, connected) in expired {
                let ready = |n: &&Node| crate::node_record::is_ready(n);
                let Some(mut node) = self.store.read(|s| s.node(&id).filter(ready).cloned()) else {
                    continue;
                };
                info!(node.id = %node.id, connected, "node missed its heartbeats: marking it down");
                // End its session: if the agent is still there (a partition that heals before
                // TCP notices), it must register again, and registering is what marks a node
                // ready. Otherwise it would stay down while its stream carries on.
                let session = self.sessions.lock().sessions.remove(&node.id);
                if let Some(session) = session {
                    let _ = session.end.send(true);
                    self.logs.node_gone(&node.id);
                }
                let st = node.status.get_or_insert_with(Default::default);
                st.state = NodeState::NodeDown as i32;
                st.message = "heartbeat failure".into();
                actions.push(StoreAction {
                    action: Some(Action::PutNode(node)),
                });
            }
            if !actions.is_empty() {
                match self.store.propose(actions).await {
                    Ok(()) => {}
                    // A node changed since the read (a heartbeat, a label edit): nothing was
                    // written, and the next tick reads again and judges it afresh.
                    Err(e) if e.is_out_of_sequence() => {
                        debug!(error = %e, "nodes changed while being marked down; next tick retries");
                    }
                    Err(e) => warn!(error = %e, "could not mark nodes down"),
                }
            }
        }
    }

    /// What a batch of store changes means for nodes, summed up by the first session to ask.
    fn notes(&self, batch: &Arc<Vec<crate::store::Event>>) -> Arc<views::BatchNotes> {
        views::NotesCache::notes(&self.notes, batch)
    }

    /// The complete assignment set of a node, taking shared network views from the cache when
    /// they are as recent as `need` says; also what the view depends on.
    fn node_view(
        &self,
        node_id: &str,
        need: &views::Need,
        before: &views::Interest,
    ) -> (views::NodeView, views::Interest) {
        // Read before the state: whatever is computed below is at least this recent.
        let index = self.store.applied_index();
        self.store.read(|s| {
            let mut shared = views::Cached::new(&self.views, index, need, before);
            views::node_view(s, node_id, &mut shared)
        })
    }

    async fn register(
        &self,
        node_id: &str,
        peer: Option<std::net::SocketAddr>,
        reg: AgentRegister,
    ) -> Result<(), Status> {
        let description = reg.description.unwrap_or_default();
        // The agent checks its --label flags; a node must not store what a service may not.
        shoal_proto::spec::validate_labels("engine labels", description.engine_labels.iter())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let now = shoal_proto::now_ns();
        self.store
            .propose_fresh(|s| {
                let node = s.node(node_id).cloned().ok_or_else(|| {
                    Status::permission_denied("node was removed from the cluster")
                })?;
                let node = registered(node, description.clone(), peer, now);
                Ok((
                    vec![StoreAction {
                        action: Some(Action::PutNode(node)),
                    }],
                    (),
                ))
            })
            .await
    }

    /// Sends the node its assignment set, whole first, then as deltas whenever a change touches
    /// its tasks, its node or the views of its networks; whole again when the agent asks
    /// (`resync`: it could not apply a delta).
    ///
    /// `tx` holds one message: while the agent's stream has not taken the last one, changes are
    /// not sent one by one but merged into the next delta (back-pressure, and no queue that
    /// grows with the rate of changes).
    async fn push_assignments(
        self,
        node_id: String,
        tx: mpsc::Sender<ManagerMessage>,
        resync: Arc<tokio::sync::Notify>,
    ) {
        let mut events = self.store.watch();
        // Read after subscribing: every change past this index reaches `events`.
        let everything = || views::Need::everything_since(self.store.applied_index());
        // What the agent holds once it has applied everything sent, and its version.
        let mut held: Option<views::NodeView> = None;
        let mut version = 0u64;
        let mut interest = views::Interest::default();
        let mut need = everything();
        loop {
            if self.store.read(|s| s.node(&node_id).is_none()) {
                // The node was removed: end its session; its certificate is refused from now on.
                info!(node.id = %node_id, "node removed: closing its session");
                let mut t = self.sessions.lock();
                t.sessions.remove(&node_id);
                t.last_seen.remove(&node_id);
                drop(t);
                self.logs.node_gone(&node_id);
                return;
            }
            let Ok(permit) = tx.reserve().await else {
                return;
            };
            if let Some(wait) = views::Cache::pace(&self.views, &need) {
                tokio::time::sleep(wait).await;
            }
            // Waiting for a turn parks the session: the runtime's queue never holds thousands
            // of view computations ahead of the heartbeats, pings and Raft.
            let Ok(_turn) = self.view_turns.acquire().await else {
                return;
            };
            // Whatever changed while the stream was busy goes into this message. A session
            // far behind (more batches queued than the shared notes keep) takes everything
            // anew instead: cheaper than summing up each old batch again, which also pushes
            // the batches other sessions need out of the shared notes.
            if views::far_behind(&events) {
                need = everything();
            }
            loop {
                match events.try_recv() {
                    Ok(_) if need.is_everything() => {}
                    Ok(batch) => interest.note_batch(&node_id, &self.notes(&batch), &mut need),
                    Err(TryRecvError::Lagged(_)) => need = everything(),
                    Err(_) => break,
                }
            }
            if need.is_everything() {
                // Every batch taken, noted or not, was applied by now.
                need = everything();
            }
            let (current, depends_on) = self.node_view(&node_id, &need, &interest);
            interest = depends_on;
            let msg = match &held {
                // The benchmarks' reference: the whole set on every change, as before deltas.
                Some(before) if full_sets_only() && *before == current => None,
                Some(before) if !full_sets_only() => before
                    .delta(current, &self.views, version)
                    .map(|(delta, after)| {
                        version = delta.version;
                        held = Some(after);
                        manager_message::Msg::AssignmentsDelta(delta)
                    }),
                // The first set of a session (or after a resync), or every set for the reference.
                _ => {
                    version += 1;
                    let mut full = current.to_message();
                    full.version = version;
                    held = Some(current);
                    Some(manager_message::Msg::Assignments(full))
                }
            };
            drop(_turn);
            match msg {
                Some(msg) => permit.send(ManagerMessage { msg: Some(msg) }),
                None => drop(permit),
            }
            // Wait for a change that concerns this node, then let a burst settle briefly so a
            // service of 100 tasks goes out as one message, not 100.
            need = views::Need::default();
            loop {
                tokio::select! {
                    batch = events.recv() => match batch {
                        // Fell far behind while waiting (the runtime was busy): everything anew.
                        Ok(_) if views::far_behind(&events) => {
                            need = everything();
                            break;
                        }
                        Ok(batch) => {
                            interest.note_batch(&node_id, &self.notes(&batch), &mut need);
                            if need.any() {
                                break;
                            }
                        }
                        Err(RecvError::Lagged(_)) => {
                            need = everything();
                            break;
                        }
                        Err(RecvError::Closed) => return,
                    },
                    _ = resync.notified() => {
                        debug!(node.id = %node_id, "the agent asked for its whole assignment set");
                        held = None;
                        need = everything();
                        break;
                    }
                    _ = tx.closed() => return,
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            if tx.is_closed() {
                return;
            }
        }
    }
}

/// How many sessions compute their views at once: as many as there are cores.
fn view_turns() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Whether `SHOAL_DISPATCHER_FULL_SETS=1` asks for whole assignment sets on every change instead
/// of deltas: only for measuring deltas against what they replace, in the same run.
fn full_sets_only() -> bool {
    static FULL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FULL.get_or_init(|| std::env::var_os("SHOAL_DISPATCHER_FULL_SETS").is_some_and(|v| v == "1"))
}

/// `node` as a registration leaves it: the agent's description (its WireGuard key and port
/// included), ready, reached from `peer`. Everything else, the manager-allocated attachments and
/// mesh address included, stays as it was.
fn registered(
    mut node: Node,
    mut desc: NodeDescription,
    peer: Option<std::net::SocketAddr>,
    now: i64,
) -> Node {
    if desc.hostname.is_empty() {
        desc.hostname = node
            .description
            .as_ref()
            .map(|d| d.hostname.clone())
            .unwrap_or_default();
    }
    node.description = Some(desc);
    node.status = Some(NodeStatus {
        state: NodeState::NodeReady as i32,
        message: String::new(),
        addr: peer.map(|p| p.ip().to_string()).unwrap_or_default(),
        last_heartbeat: now,
    });
    if let Some(m) = node.meta.as_mut() {
        m.updated_at = now;
    }
    node
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<ManagerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl DispatcherRpc for Dispatcher {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let node_id = require_node(&self.store, &request)?;
        if !self.is_leader() {
            return Err(Status::unavailable(
                "this manager is not the leader: agents hold their session with the leader",
            ));
        }
        let peer = request.remote_addr();
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no registration within 10 s"))??;
        let reg = match first.and_then(|m| m.msg) {
            Some(agent_message::Msg::Register(r)) => r,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of a session must be a registration",
                ))
            }
        };
        let (tx, rx) = mpsc::channel(256);
        // Assignments have their own queue of one (see `push_assignments`).
        let (assign_tx, assign_rx) = mpsc::channel(1);
        let resync = Arc::new(tokio::sync::Notify::new());
        let session_id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (end_tx, end_rx) = tokio::sync::watch::channel(false);
        {
            // Seen before it is marked ready, so the heartbeat monitor cannot expire it at once.
            let mut t = self.sessions.lock();
            t.seen(&node_id);
        }
        self.register(&node_id, peer, reg).await?;
        {
            let mut t = self.sessions.lock();
            let old = t.sessions.insert(
                node_id.clone(),
                Session {
                    id: session_id,
                    tx: tx.clone(),
                    end: Arc::new(end_tx),
                },
            );
            // A node has one session: a new one replaces whatever was left of the old.
            if let Some(old) = old {
                let _ = old.end.send(true);
            }
            t.seen(&node_id);
        }
        info!(node.id = %node_id, session = session_id, "agent session established");
        let period = self.heartbeat_period();
        let established = ManagerMessage {
            msg: Some(manager_message::Msg::Session(SessionEstablished {
                node_id: node_id.clone(),
                heartbeat_period_ns: period.as_nanos() as i64,
                session_id: session_id.to_string(),
                managers: self.store.read(|s| {
                    s.nodes()
                        .filter_map(|n| n.manager_status.as_ref().map(|m| m.addr.clone()))
                        .collect()
                }),
            })),
        };
        tokio::spawn(
            self.clone()
                .push_assignments(node_id.clone(), assign_tx, resync.clone()),
        );
        tokio::spawn(self.clone().manager_directives(
            node_id.clone(),
            session_id.to_string(),
            period.as_nanos() as i64,
            tx.clone(),
        ));
        let me = self.clone();
        let mut ended = end_rx.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = inbound.message() => m,
                    _ = ended.wait_for(|e| *e) => break,
                };
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        debug!(node.id = %node_id, error = %e, "agent stream error");
                        break;
                    }
                };
                me.sessions.seen(&node_id);
                match msg.msg {
                    Some(agent_message::Msg::Heartbeat(_)) => {}
                    Some(agent_message::Msg::Status(st)) => {
                        for u in st.updates {
                            // An agent may only report on its own tasks.
                            let own = me
                                .store
                                .read(|s| s.task(&u.task_id).is_some_and(|t| t.node_id == node_id));
                            if own && me.status_tx.send(u).await.is_err() {
                                return;
                            }
                        }
                    }
                    Some(agent_message::Msg::Logs(chunk)) => me.logs.deliver(&node_id, chunk).await,
                    Some(agent_message::Msg::Volumes(reply)) => {
                        me.logs.volumes().deliver(&node_id, reply)
                    }
                    Some(agent_message::Msg::Resync(r)) => {
                        info!(node.id = %node_id, have = r.have, reason = %r.reason, "agent asked for its whole assignment set");
                        resync.notify_one();
                    }
                    Some(agent_message::Msg::Register(_)) | None => {}
                }
            }
            let mut t = me.sessions.lock();
            if t.sessions.get(&node_id).is_some_and(|s| s.id == session_id) {
                t.sessions.remove(&node_id);
                drop(t);
                me.logs.node_gone(&node_id);
            }
            info!(node.id = %node_id, session = session_id, "agent session ended");
        });
        let mut ended = end_rx;
        let end = async move {
            let _ = ended.wait_for(|e| *e).await;
        };
        // SessionEstablished first, whatever the two queues hold: the agent acts on nothing
        // before it.
        let stream = tokio_stream::StreamExt::chain(
            tokio_stream::once(established),
            tokio_stream::StreamExt::merge(ReceiverStream::new(assign_rx), ReceiverStream::new(rx)),
        );
        let stream = tokio_stream::StreamExt::map(stream, Ok);
        // The stream ends when the node is marked down or removed (so its agent re-registers), or
        // when this manager stops leading (so the agent reconnects to whoever leads now).
        let leadership = self.leadership.clone();
        let stop = async move {
            match leadership {
                Some(mut leadership) => {
                    tokio::select! {
                        _ = end => {}
                        _ = leadership.wait_for(|l| !*l) => {}
                    }
                }
                None => end.await,
            }
        };
        Ok(Response::new(Box::pin(futures::StreamExt::take_until(
            stream,
            Box::pin(stop),
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_wake_up_later_than_the_allowance_is_a_stall() {
        let tick = Duration::from_millis(250);
        assert_eq!(stall(Duration::from_millis(300), tick), Duration::ZERO);
        assert_eq!(stall(Duration::from_millis(100), tick), Duration::ZERO);
        assert_eq!(
            stall(Duration::from_millis(1250), tick),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn many_connected_nodes_late_at_once_are_the_managers_lag() {
        // A small cluster: a partitioned host (one of three, still connected) is marked down.
        assert!(!late_at_once(1, 3));
        assert!(!late_at_once(LATE_AT_ONCE_FLOOR, 20));
        assert!(late_at_once(LATE_AT_ONCE_FLOOR + 1, 20));
        // 10,000 nodes: more than 2 % going silent together (a rack of 250, a fifth of the
        // cluster) is held back until their streams end; a few nodes are not.
        assert!(late_at_once(2_000, 10_000));
        assert!(late_at_once(250, 10_000));
        assert!(late_at_once(201, 10_000));
        assert!(!late_at_once(200, 10_000));
        assert!(!late_at_once(5, 10_000));
    }

    #[test]
    fn time_the_manager_was_stalled_is_not_held_against_a_node() {
        let t0 = Instant::now();
        let floor = Seen {
            at: t0,
            stalled: Duration::ZERO,
        };
        let mut t = SessionTable::default();
        t.last_seen.insert(
            "n1".into(),
            Seen {
                at: t0 + Duration::from_secs(1),
                stalled: Duration::ZERO,
            },
        );
        let now = t0 + Duration::from_secs(9);
        assert_eq!(t.silent_for("n1", now, floor), Duration::from_secs(8));
        // Never heard from: silent since the floor (when this manager began to lead).
        assert_eq!(t.silent_for("n2", now, floor), Duration::from_secs(9));
        // 5 s of stalls since n1 was heard from: only 3 s of silence count.
        t.stalled = Duration::from_secs(5);
        assert_eq!(t.silent_for("n1", now, floor), Duration::from_secs(3));
        assert_eq!(t.silent_for("n2", now, floor), Duration::from_secs(4));
        // Heard from again after the stalls: counted from then, the stalls before it do not
        // matter any more.
        t.seen("n1");
        let heard = t.last_seen["n1"];
        assert_eq!(heard.stalled, Duration::from_secs(5));
        assert_eq!(
            t.silent_for("n1", heard.at + Duration::from_secs(2), floor),
            Duration::from_secs(2)
        );
        // A floor later than the last heartbeat (a new leader) counts from the floor.
        let late_floor = Seen {
            at: heard.at + Duration::from_secs(1),
            stalled: Duration::from_secs(5),
        };
        assert_eq!(
            t.silent_for("n1", heard.at + Duration::from_secs(2), late_floor),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn registration_keeps_the_allocators_fields() {
        let attachments = vec![NetworkAttachment {
            network_id: "ingress".into(),
            addresses: vec!["10.0.0.7/16".into()],
            ..Default::default()
        }];
        let before = Node {
            id: "n1".into(),
            description: Some(NodeDescription {
                hostname: "h1".into(),
                ..Default::default()
            }),
            attachments: attachments.clone(),
            mesh_addr: "10.255.0.7/16".into(),
            cert_fingerprint: "fp".into(),
            ..Default::default()
        };
        let desc = NodeDescription {
            wg_public_key: "key".into(),
            wg_port: 51820,
            ..Default::default()
        };
        let peer = "192.168.0.7:40000".parse().ok();
        let after = registered(before, desc, peer, 5);
        assert_eq!(after.attachments, attachments);
        assert_eq!(after.mesh_addr, "10.255.0.7/16");
        assert_eq!(after.cert_fingerprint, "fp");
        let d = after.description.unwrap_or_default();
        // The agent's key and port are taken; a missing hostname keeps the old one.
        assert_eq!((d.wg_public_key.as_str(), d.wg_port), ("key", 51820));
        assert_eq!(d.hostname, "h1");
        let st = after.status.unwrap_or_default();
        assert_eq!(
            (st.state(), st.addr.as_str()),
            (NodeState::NodeReady, "192.168.0.7")
        );
    }
}
