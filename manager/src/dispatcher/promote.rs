//! What the dispatcher tells an agent about a manager on its host (`node promote` / `node demote`)
//! and about the cluster's managers. Driven by the node's record: a node whose spec asks for the
//! manager role but which is not a Raft member yet is told to start a manager; a worker is told
//! to stop any manager it runs. The agent's session also gets the manager list again whenever it
//! changes, so agents can fail over to managers promoted after they connected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use shoal_proto::token::JoinToken;
use shoal_proto::v1::*;
use tokio::sync::{mpsc, Notify};
use tracing::{info, warn};

use super::{Dispatcher, Sessions};
use crate::store::Store;

/// The directive loops of the sessions, by node, for one watcher of the store to wake: a batch
/// wakes the loops of the nodes whose records it changed (all of them for a change to the
/// managers or the cluster), not every session's loop for every batch. At 10,000 nodes those
/// wake-ups, each summing up batches the shared notes had let go, kept the leader's runtime
/// from anything else for tens of seconds.
#[derive(Debug, Clone, Default)]
pub(super) struct DirectiveWakes(Arc<Mutex<HashMap<String, Vec<Arc<Notify>>>>>);

/// A loop's place in [`DirectiveWakes`], given up when dropped.
pub(super) struct DirectiveWake {
    wakes: DirectiveWakes,
    node_id: String,
    notify: Arc<Notify>,
}

impl DirectiveWake {
    /// Waits for a change to look at (one that came since the last wait counts too).
    pub(super) async fn changed(&self) {
        self.notify.notified().await
    }
}

impl Drop for DirectiveWake {
    fn drop(&mut self) {
        let mut map = self.wakes.lock();
        if let Some(list) = map.get_mut(&self.node_id) {
            list.retain(|n| !Arc::ptr_eq(n, &self.notify));
            if list.is_empty() {
                map.remove(&self.node_id);
            }
        }
    }
}

impl DirectiveWakes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Arc<Notify>>>> {
        // Poisoning only means a panic mid-edit of a list of handles; each stays whole.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a loop of `node_id` (a node may have two sessions while one ends).
    pub(super) fn register(&self, node_id: &str) -> DirectiveWake {
        let notify = Arc::new(Notify::new());
        self.lock()
            .entry(node_id.to_string())
            .or_default()
            .push(notify.clone());
        DirectiveWake {
            wakes: self.clone(),
            node_id: node_id.to_string(),
            notify,
        }
    }

    /// Wakes the loops of these nodes.
    pub(super) fn wake<'a>(&self, nodes: impl Iterator<Item = &'a str>) {
        let map = self.lock();
        for node in nodes {
            for n in map.get(node).into_iter().flatten() {
                n.notify_one();
            }
        }
    }

    /// Wakes every loop.
    pub(super) fn wake_all(&self) {
        for n in self.lock().values().flatten() {
            n.notify_one();
        }
    }
}

/// What a node's agent should do about a manager process on its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagerDirective {
    /// Start one (`shoal-manager join` as this node): a promotion was asked for.
    Start,
    /// Stop and remove any it runs: the node is a worker.
    Stop,
    /// Keep what runs: the node is a manager already.
    Keep,
}

/// The directive for `node`, from its record alone.
pub fn directive(node: &Node) -> ManagerDirective {
    let wants_manager = node.spec.as_ref().map(|s| s.role) == Some(NodeRole::RoleManager as i32);
    match (&node.manager_status, wants_manager) {
        (Some(_), _) => ManagerDirective::Keep,
        (None, true) => ManagerDirective::Start,
        (None, false) => ManagerDirective::Stop,
    }
}

/// Every manager's address, sorted (what agents dial).
fn manager_addrs(store: &Store) -> Vec<String> {
    let mut addrs: Vec<String> = store.read(|s| {
        s.nodes()
            .filter_map(|n| n.manager_status.as_ref().map(|m| m.addr.clone()))
            .collect()
    });
    addrs.sort();
    addrs
}

/// The message telling an agent to start a manager: the manager join token and the managers.
fn promote_message(store: &Store) -> Option<ManagerMessage> {
    let cluster = store.read(|s| s.cluster().cloned())?;
    let fp = match shoal_proto::pki::fingerprint_pem(&cluster.ca_cert_pem) {
        Ok(fp) => fp,
        Err(e) => {
            warn!(error = %e, "cluster CA unreadable: cannot send a promotion");
            return None;
        }
    };
    Some(ManagerMessage {
        msg: Some(manager_message::Msg::Promote(PromoteToManager {
            token: JoinToken::new(&fp, &cluster.manager_token_secret).to_string(),
            managers: manager_addrs(store),
        })),
    })
}

impl Dispatcher {
    /// The table of connected sessions (the promotion check asks whether a node's agent is here).
    pub fn sessions(&self) -> Sessions {
        self.sessions.clone()
    }

    /// Runs beside a session: sends the node's manager directive at once and whenever it changes
    /// (`Keep` sends nothing), and the manager list whenever it changes; ends with the session.
    pub(super) async fn manager_directives(
        self,
        node_id: String,
        session_id: String,
        heartbeat_period_ns: i64,
        tx: mpsc::Sender<ManagerMessage>,
    ) {
        let wake = self.directive_wakes.register(&node_id);
        let mut last: Option<ManagerDirective> = None;
        let mut managers = manager_addrs(&self.store);
        let mut trust: Option<TrustUpdate> = None;
        loop {
            // What the node must trust, at once and after every CA change (a rotation).
            let now_trust = self
                .store
                .read(|s| s.cluster().map(crate::certs::trust_update));
            if now_trust.is_some() && now_trust != trust {
                let msg = ManagerMessage {
                    msg: now_trust.clone().map(manager_message::Msg::Trust),
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
                trust = now_trust;
            }
            let Some(node) = self.store.read(|s| s.node(&node_id).cloned()) else {
                return;
            };
            let now = directive(&node);
            if last != Some(now) {
                let msg = match now {
                    ManagerDirective::Start => {
                        info!(node.id = %node_id, "telling the agent to start a manager");
                        promote_message(&self.store)
                    }
                    ManagerDirective::Stop => Some(ManagerMessage {
                        msg: Some(manager_message::Msg::StopManager(StopManager {})),
                    }),
                    ManagerDirective::Keep => None,
                };
                if let Some(msg) = msg {
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
                last = Some(now);
            }
            let current = manager_addrs(&self.store);
            if current != managers {
                let msg = ManagerMessage {
                    msg: Some(manager_message::Msg::Session(SessionEstablished {
                        node_id: node_id.clone(),
                        heartbeat_period_ns,
                        session_id: session_id.clone(),
                        managers: current.clone(),
                    })),
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
                managers = current;
            }
            tokio::select! {
                _ = wake.changed() => {}
                _ = tx.closed() => return,
            }
        }
    }

    /// The one watcher of the store behind every session's directive loop: sums each batch up
    /// (the shared notes, which the sessions then find made) and wakes the loops it concerns.
    /// Runs until the store closes or `shutdown` fires.
    pub(super) async fn directive_wakes(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut events = self.store.watch();
        loop {
            tokio::select! {
                batch = events.recv() => match batch {
                    Ok(batch) => {
                        let notes = self.notes(&batch);
                        if notes.managers_or_cluster() {
                            self.directive_wakes.wake_all();
                        } else {
                            self.directive_wakes.wake(notes.node_records());
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        self.directive_wakes.wake_all();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(role: NodeRole, manager: bool) -> Node {
        Node {
            id: "n1".into(),
            spec: Some(NodeSpec {
                role: role as i32,
                ..Default::default()
            }),
            manager_status: manager.then(|| ManagerStatus {
                raft_id: 2,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn directive_follows_the_record() {
        // A worker runs no manager.
        assert_eq!(
            directive(&node(NodeRole::RoleWorker, false)),
            ManagerDirective::Stop
        );
        // Promotion asked, not a member yet: start one.
        assert_eq!(
            directive(&node(NodeRole::RoleManager, false)),
            ManagerDirective::Start
        );
        // A member: leave it alone.
        assert_eq!(
            directive(&node(NodeRole::RoleManager, true)),
            ManagerDirective::Keep
        );
    }

    /// Whether a wait for `w` ends at once (a wake came since the last wait).
    async fn woken(w: &DirectiveWake) -> bool {
        tokio::time::timeout(std::time::Duration::ZERO, w.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_change_wakes_only_the_directive_loops_of_its_nodes() {
        let wakes = DirectiveWakes::default();
        let a = wakes.register("a");
        let b = wakes.register("b");
        let a_again = wakes.register("a");
        wakes.wake(["a", "nobody"].into_iter());
        assert!(woken(&a).await && woken(&a_again).await);
        assert!(!woken(&b).await, "b's record did not change");
        // A wake is kept until the loop waits: none is lost while it looks at the state.
        assert!(!woken(&a).await, "one wake, one look");
        wakes.wake_all();
        assert!(woken(&a).await && woken(&b).await && woken(&a_again).await);
        drop(a);
        drop(a_again);
        assert!(
            !wakes.lock().contains_key("a"),
            "a node's entry goes with its last loop"
        );
        assert_eq!(wakes.lock().get("b").map(Vec::len), Some(1));
    }
}
