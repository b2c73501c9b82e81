//! What the dispatcher tells an agent about a manager on its host (`node promote` / `node demote`)
//! and about the cluster's managers. Driven by the node's record: a node whose spec asks for the
//! manager role but which is not a Raft member yet is told to start a manager; a worker is told
//! to stop any manager it runs. The agent's session also gets the manager list again whenever it
//! changes, so agents can fail over to managers promoted after they connected.

use shoal_proto::token::JoinToken;
use shoal_proto::v1::*;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{Dispatcher, Sessions};
use crate::store::Store;

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
        let mut events = self.store.watch();
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
            loop {
                match events.recv().await {
                    // The batch's notes, summed up once for every session (not every event
                    // looked at by each of thousands of sessions).
                    Ok(batch)
                        if {
                            let notes = self.notes(&batch);
                            notes.touches_record(&node_id) || notes.managers_or_cluster()
                        } =>
                    {
                        break
                    }
                    Ok(_) => {
                        if tx.is_closed() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
            if tx.is_closed() {
                return;
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
}
