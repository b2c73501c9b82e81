//! Routes `volume ls|rm|prune` questions to the agents that hold the volumes, and their answers
//! back: one request per node down its session, one [`VolumeReply`] with the same request id up.
//!
//! A question waits for its answer at most a deadline; a node whose session ends fails the
//! questions it had not answered at once, so a caller never waits on a node that is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_proto::v1::{manager_message::Msg, ManagerMessage, VolumeReply, VolumeRequest};
use tokio::sync::oneshot;

use super::Sessions;

/// How long a node may take to answer a volume question before it counts as unreachable.
pub const NODE_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a node gave no answer.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum VolumeError {
    /// The node has no session with this manager.
    #[error("node {node_id} is not connected")]
    NotConnected {
        /// The node asked.
        node_id: String,
    },
    /// The session ended before the node answered.
    #[error("node {node_id} went away before answering")]
    NodeGone {
        /// The node asked.
        node_id: String,
    },
    /// The node did not answer in time.
    #[error("node {node_id} did not answer within {after:?}")]
    Timeout {
        /// The node asked.
        node_id: String,
        /// The deadline it missed.
        after: Duration,
    },
}

impl VolumeError {
    /// The node that did not answer.
    pub fn node_id(&self) -> &str {
        match self {
            VolumeError::NotConnected { node_id }
            | VolumeError::NodeGone { node_id }
            | VolumeError::Timeout { node_id, .. } => node_id,
        }
    }
}

struct Waiter {
    node_id: String,
    tx: oneshot::Sender<VolumeReply>,
}

/// The broker shared by the control API (which asks) and the dispatcher (which delivers).
#[derive(Clone)]
pub struct VolumeBroker {
    sessions: Sessions,
    next_id: Arc<AtomicU64>,
    pending: Arc<Mutex<HashMap<u64, Waiter>>>,
}

impl VolumeBroker {
    /// A broker over the dispatcher's session table.
    pub fn new(sessions: Sessions) -> Self {
        VolumeBroker {
            sessions,
            next_id: Arc::new(AtomicU64::new(1)),
            pending: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiter>> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still usable.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a node has a session to ask through.
    pub fn connected(&self, node_id: &str) -> bool {
        self.sessions.get(node_id).is_some()
    }

    /// Asks one node and waits at most `timeout` for its answer. The request id is set here.
    pub async fn ask(
        &self,
        node_id: &str,
        mut request: VolumeRequest,
        timeout: Duration,
    ) -> Result<VolumeReply, VolumeError> {
        let Some(session) = self.sessions.get(node_id) else {
            return Err(VolumeError::NotConnected {
                node_id: node_id.to_string(),
            });
        };
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        request.request_id = request_id;
        let (tx, rx) = oneshot::channel();
        self.lock().insert(
            request_id,
            Waiter {
                node_id: node_id.to_string(),
                tx,
            },
        );
        let msg = ManagerMessage {
            msg: Some(Msg::Volumes(request)),
        };
        let answer = tokio::time::timeout(timeout, async {
            if session.send(msg).await.is_err() {
                return None;
            }
            rx.await.ok()
        })
        .await;
        // Gone already when answered; otherwise a late answer has nobody to go to.
        self.lock().remove(&request_id);
        match answer {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err(VolumeError::NodeGone {
                node_id: node_id.to_string(),
            }),
            Err(_) => Err(VolumeError::Timeout {
                node_id: node_id.to_string(),
                after: timeout,
            }),
        }
    }

    /// Asks every node in `node_ids` at once; the answers come back in the same order.
    pub async fn ask_each(
        &self,
        node_ids: &[String],
        request: &VolumeRequest,
        timeout: Duration,
    ) -> Vec<(String, Result<VolumeReply, VolumeError>)> {
        let asks = node_ids
            .iter()
            .map(|id| async move { (id.clone(), self.ask(id, request.clone(), timeout).await) });
        futures::future::join_all(asks).await
    }

    /// Hands an answer from `from_node` to whoever asked; answers to questions not asked of
    /// that node are dropped.
    pub fn deliver(&self, from_node: &str, reply: VolumeReply) {
        let waiter = {
            let mut map = self.lock();
            match map.get(&reply.request_id) {
                Some(w) if w.node_id == from_node => map.remove(&reply.request_id),
                _ => None,
            }
        };
        if let Some(w) = waiter {
            // The asker may have given up (timeout) meanwhile: nothing left to do then.
            let _ = w.tx.send(reply);
        }
    }

    /// Fails every question waiting on a node whose session went away.
    pub fn node_gone(&self, node_id: &str) {
        // Dropping the senders wakes the askers with "gone".
        self.lock().retain(|_, w| w.node_id != node_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{Volume, VolumeOp};
    use tokio::sync::mpsc;

    /// A broker with one connected node, `n1`, whose session messages come out of the receiver.
    fn broker() -> (VolumeBroker, mpsc::Receiver<ManagerMessage>) {
        let (sessions, rx) = Sessions::with_n1();
        (VolumeBroker::new(sessions), rx)
    }

    async fn next_request(rx: &mut mpsc::Receiver<ManagerMessage>) -> VolumeRequest {
        match rx.recv().await.and_then(|m| m.msg) {
            Some(Msg::Volumes(req)) => req,
            other => panic!("expected a volume request, got {other:?}"),
        }
    }

    fn list() -> VolumeRequest {
        VolumeRequest {
            op: VolumeOp::VolumeList as i32,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn an_answer_reaches_the_asker() {
        let (broker, mut session) = broker();
        let b = broker.clone();
        let agent = tokio::spawn(async move {
            let req = next_request(&mut session).await;
            b.deliver(
                "n1",
                VolumeReply {
                    request_id: req.request_id,
                    volumes: vec![Volume {
                        name: "data".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            );
            session
        });
        let reply = broker
            .ask("n1", list(), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(reply.volumes[0].name, "data");
        agent.await.unwrap();
        assert!(broker.lock().is_empty());
    }

    #[tokio::test]
    async fn an_answer_from_another_node_is_dropped() {
        let (broker, mut session) = broker();
        let b = broker.clone();
        let agent = tokio::spawn(async move {
            let req = next_request(&mut session).await;
            b.deliver(
                "n2",
                VolumeReply {
                    request_id: req.request_id,
                    ..Default::default()
                },
            );
            session
        });
        let err = broker
            .ask("n1", list(), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, VolumeError::Timeout { ref node_id, .. } if node_id == "n1"));
        let _session = agent.await.unwrap();
        assert!(
            broker.lock().is_empty(),
            "the timed-out question is forgotten"
        );
    }

    #[tokio::test]
    async fn a_node_that_goes_away_fails_the_wait_at_once() {
        let (broker, mut session) = broker();
        let b = broker.clone();
        let agent = tokio::spawn(async move {
            next_request(&mut session).await;
            b.node_gone("n1");
            session
        });
        let err = tokio::time::timeout(
            Duration::from_secs(10),
            broker.ask("n1", list(), Duration::from_secs(3600)),
        )
        .await
        .expect("node_gone wakes the asker")
        .unwrap_err();
        assert_eq!(
            err,
            VolumeError::NodeGone {
                node_id: "n1".into()
            }
        );
        agent.await.unwrap();
    }

    #[tokio::test]
    async fn a_node_without_a_session_is_not_connected() {
        let (broker, _session) = broker();
        let answers = broker
            .ask_each(&["n9".to_string()], &list(), Duration::from_secs(1))
            .await;
        assert_eq!(answers.len(), 1);
        assert!(matches!(
            answers[0].1,
            Err(VolumeError::NotConnected { .. })
        ));
        assert!(!broker.connected("n9") && broker.connected("n1"));
    }
}
