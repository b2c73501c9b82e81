//! Routes `service logs` requests to the agents that hold the tasks and their answers back.
//!
//! One call fans out to one request per node; the call's stream ends when every node has said it
//! is done (or, when following, when the client goes away, which cancels the node requests).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use shoal_proto::v1::{
    manager_message::Msg, AgentLogChunk, CancelLogs, LogsRequest, ManagerMessage, Service,
    ServiceLogsResponse, Task,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::debug;

use super::Sessions;

struct Pending {
    node_id: String,
    /// task id -> "name.slot.taskid"
    names: Arc<HashMap<String, String>>,
    tx: mpsc::Sender<Result<ServiceLogsResponse, Status>>,
}

/// The broker shared by the control API and the dispatcher.
#[derive(Clone)]
pub struct LogBroker {
    sessions: Sessions,
    next_id: Arc<AtomicU64>,
    pending: Arc<Mutex<HashMap<u64, Pending>>>,
}

/// Docker's task name: `service.slot.taskid` (global tasks: `service.nodeid.taskid`).
pub fn task_name(t: &Task) -> String {
    if t.slot > 0 {
        format!("{}.{}.{}", t.service_name, t.slot, t.id)
    } else {
        format!("{}.{}.{}", t.service_name, t.node_id, t.id)
    }
}

impl LogBroker {
    /// A broker over the dispatcher's session table.
    pub fn new(sessions: Sessions) -> Self {
        LogBroker {
            sessions,
            next_id: Arc::new(AtomicU64::new(1)),
            pending: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Opens a log stream over the given tasks.
    pub async fn open(
        &self,
        service: &Service,
        tasks: Vec<Task>,
        follow: bool,
        tail: i64,
    ) -> Result<ReceiverStream<Result<ServiceLogsResponse, Status>>, Status> {
        let (tx, rx) = mpsc::channel(256);
        let names: Arc<HashMap<String, String>> =
            Arc::new(tasks.iter().map(|t| (t.id.clone(), task_name(t))).collect());
        let mut by_node: HashMap<String, Vec<String>> = HashMap::new();
        for t in &tasks {
            by_node
                .entry(t.node_id.clone())
                .or_default()
                .push(t.id.clone());
        }
        for (node_id, task_ids) in by_node {
            let Some(session) = self.sessions.get(&node_id) else {
                debug!(node.id = %node_id, service.id = %service.id, "no session for logs");
                continue;
            };
            let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
            self.lock().insert(
                request_id,
                Pending {
                    node_id: node_id.clone(),
                    names: names.clone(),
                    tx: tx.clone(),
                },
            );
            let msg = ManagerMessage {
                msg: Some(Msg::Logs(LogsRequest {
                    request_id,
                    task_ids,
                    follow,
                    tail,
                })),
            };
            if session.send(msg).await.is_err() {
                self.lock().remove(&request_id);
            }
        }
        // Only the pending requests hold senders now: the stream ends when they are all done.
        drop(tx);
        Ok(ReceiverStream::new(rx))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still usable.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delivers a chunk an agent sent.
    pub async fn deliver(&self, from_node: &str, chunk: AgentLogChunk) {
        let entry = {
            let map = self.lock();
            map.get(&chunk.request_id)
                .filter(|p| p.node_id == from_node)
                .map(|p| (p.tx.clone(), p.names.clone()))
        };
        let Some((tx, names)) = entry else { return };
        let mut lines = chunk.lines;
        for l in &mut lines {
            if let Some(n) = names.get(&l.task_id) {
                l.task_name = n.clone();
            }
            l.node_id = from_node.to_string();
        }
        let mut closed = false;
        if !lines.is_empty() {
            closed = tx.send(Ok(ServiceLogsResponse { lines })).await.is_err();
        }
        if !chunk.error.is_empty() && !closed {
            let _ = tx
                .send(Err(Status::internal(format!("logs: {}", chunk.error))))
                .await;
        }
        if chunk.eof || closed {
            self.lock().remove(&chunk.request_id);
            if closed {
                if let Some(s) = self.sessions.get(from_node) {
                    let _ = s
                        .send(ManagerMessage {
                            msg: Some(Msg::CancelLogs(CancelLogs {
                                request_id: chunk.request_id,
                            })),
                        })
                        .await;
                }
            }
        }
    }

    /// Ends every request routed to a node whose session went away.
    pub fn node_gone(&self, node_id: &str) {
        self.lock().retain(|_, p| p.node_id != node_id);
    }
}
