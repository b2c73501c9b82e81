//! Routes `service logs` requests to the agents that hold the tasks and their answers back.
//!
//! One call fans out to one request per node; the call's stream ends when every node has said it
//! is done (or, when following, when the client goes away, which cancels the node requests).
//!
//! Chunks arrive on the agents' session streams, which also carry heartbeats: delivering one never
//! waits for the client. Each call may hold [`CONSUMER_BUFFER_BYTES`] of lines the client has not
//! taken yet; a client that falls further behind gets an error and its node requests are
//! cancelled, while the agents' streams flow on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::Stream;
use prost::Message;
use shoal_proto::v1::{
    manager_message::Msg, AgentLogChunk, CancelLogs, LogLine, LogsRequest, ManagerMessage, Service,
    ServiceLogsResponse, Task,
};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Status;
use tracing::{debug, warn};

use super::volumes::VolumeBroker;
use super::Sessions;

/// Encoded bytes of lines one call may hold for a client that has not read them yet.
pub const CONSUMER_BUFFER_BYTES: usize = 64 * 1024 * 1024;
/// At most this much encoded line data goes into one response (gRPC's default limit is 4 MiB).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// A response on its way to the client, with the share of the call's buffer it holds until the
/// client's stream takes it.
type Queued = (
    Result<ServiceLogsResponse, Status>,
    Option<OwnedSemaphorePermit>,
);

struct Pending {
    node_id: String,
    /// task id -> "name.slot.taskid"
    names: Arc<HashMap<String, String>>,
    tx: mpsc::UnboundedSender<Queued>,
    /// The call's buffer, in bytes, shared by its node requests.
    buffer: Arc<Semaphore>,
}

/// The broker shared by the control API and the dispatcher.
#[derive(Clone)]
pub struct LogBroker {
    sessions: Sessions,
    next_id: Arc<AtomicU64>,
    pending: Arc<Mutex<HashMap<u64, Pending>>>,
    /// Volume questions ride the same sessions; the control API reaches them through here.
    volumes: VolumeBroker,
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
            volumes: VolumeBroker::new(sessions.clone()),
            sessions,
            next_id: Arc::new(AtomicU64::new(1)),
            pending: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The volume broker over the same sessions (`volume ls|rm|prune`).
    pub fn volumes(&self) -> VolumeBroker {
        self.volumes.clone()
    }

    /// Opens a log stream over the given tasks.
    pub async fn open(
        &self,
        service: &Service,
        tasks: Vec<Task>,
        follow: bool,
        tail: i64,
    ) -> Result<impl Stream<Item = Result<ServiceLogsResponse, Status>> + Send + 'static, Status>
    {
        // Unbounded in messages, bounded in bytes by `buffer`: delivering never waits.
        let (tx, rx) = mpsc::unbounded_channel::<Queued>();
        let buffer = Arc::new(Semaphore::new(CONSUMER_BUFFER_BYTES));
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
                    buffer: buffer.clone(),
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
        // A response gives its share of the buffer back once the client's stream has taken it.
        Ok(tokio_stream::StreamExt::map(
            UnboundedReceiverStream::new(rx),
            |(response, _share)| response,
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still usable.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delivers a chunk an agent sent, in responses of at most [`MAX_RESPONSE_BYTES`]. Never
    /// waits for the client: the caller is the agent's session loop, which also takes its
    /// heartbeats. A client whose buffer is full gets an error; its request is cancelled.
    pub async fn deliver(&self, from_node: &str, chunk: AgentLogChunk) {
        let entry = {
            let map = self.lock();
            map.get(&chunk.request_id)
                .filter(|p| p.node_id == from_node)
                .map(|p| (p.tx.clone(), p.names.clone(), p.buffer.clone()))
        };
        let Some((tx, names, buffer)) = entry else {
            return;
        };
        let mut lines = chunk.lines;
        for l in &mut lines {
            if let Some(n) = names.get(&l.task_id) {
                l.task_name = n.clone();
            }
            l.node_id = from_node.to_string();
        }
        let mut closed = false;
        let mut overflow = false;
        for lines in split_by_size(lines) {
            let response = ServiceLogsResponse { lines };
            let size = u32::try_from(response.encoded_len()).unwrap_or(u32::MAX);
            let Ok(share) = buffer.clone().try_acquire_many_owned(size) else {
                overflow = true;
                break;
            };
            if tx.send((Ok(response), Some(share))).is_err() {
                closed = true;
                break;
            }
        }
        if overflow {
            warn!(node.id = %from_node, request = chunk.request_id, "log client does not keep up: cancelling its request");
            let status = Status::resource_exhausted(format!(
                "logs: the client fell more than {} MiB behind; the stream from node {from_node} was cancelled",
                CONSUMER_BUFFER_BYTES >> 20
            ));
            closed |= tx.send((Err(status), None)).is_err();
        } else if !chunk.error.is_empty() && !closed {
            let status = Status::internal(format!("logs: {}", chunk.error));
            closed = tx.send((Err(status), None)).is_err();
        }
        if chunk.eof || closed || overflow {
            self.lock().remove(&chunk.request_id);
        }
        if (closed || overflow) && !chunk.eof {
            self.cancel_on_node(from_node, chunk.request_id);
        }
    }

    /// Tells the agent to stop a request, without waiting for its session's queue.
    fn cancel_on_node(&self, node_id: &str, request_id: u64) {
        let Some(session) = self.sessions.get(node_id) else {
            return;
        };
        tokio::spawn(async move {
            let cancel = ManagerMessage {
                msg: Some(Msg::CancelLogs(CancelLogs { request_id })),
            };
            let _ = session.send(cancel).await;
        });
    }

    /// Ends every request (logs and volume questions) routed to a node whose session went away.
    pub fn node_gone(&self, node_id: &str) {
        self.lock().retain(|_, p| p.node_id != node_id);
        self.volumes.node_gone(node_id);
    }
}

/// Cuts lines into groups of at most [`MAX_RESPONSE_BYTES`] encoded (a larger line alone), so
/// no response exceeds gRPC's message limit whatever an agent sent.
fn split_by_size(lines: Vec<LogLine>) -> Vec<Vec<LogLine>> {
    let mut out: Vec<Vec<LogLine>> = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for line in lines {
        // The line plus its field tag and length prefix.
        let size = line.encoded_len() + 8;
        if !current.is_empty() && bytes + size > MAX_RESPONSE_BYTES {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(line);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio_stream::StreamExt;

    /// A broker with one connected node, `n1`, whose session messages come out of the receiver.
    fn broker() -> (LogBroker, mpsc::Receiver<ManagerMessage>) {
        let (sessions, rx) = Sessions::with_n1();
        (LogBroker::new(sessions), rx)
    }

    fn task() -> Task {
        Task {
            id: "t1".into(),
            node_id: "n1".into(),
            service_name: "web".into(),
            slot: 1,
            ..Default::default()
        }
    }

    fn chunk(request_id: u64, lines: usize, size: usize) -> AgentLogChunk {
        AgentLogChunk {
            request_id,
            lines: (0..lines)
                .map(|i| LogLine {
                    task_id: "t1".into(),
                    stream: "stdout".into(),
                    timestamp: i as i64,
                    data: vec![b'x'; size],
                    ..Default::default()
                })
                .collect(),
            eof: false,
            error: String::new(),
        }
    }

    async fn request_id(rx: &mut mpsc::Receiver<ManagerMessage>) -> u64 {
        match rx.recv().await.and_then(|m| m.msg) {
            Some(Msg::Logs(req)) => req.request_id,
            other => panic!("expected a logs request, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_chunk_of_500_lines_of_16_kib_is_split_into_responses_under_the_limit() {
        let (broker, mut session) = broker();
        let mut stream = Box::pin(
            broker
                .open(&Service::default(), vec![task()], false, -1)
                .await
                .unwrap(),
        );
        let id = request_id(&mut session).await;
        broker.deliver("n1", chunk(id, 500, 16 * 1024)).await;
        broker
            .deliver(
                "n1",
                AgentLogChunk {
                    request_id: id,
                    eof: true,
                    ..Default::default()
                },
            )
            .await;
        let mut lines = 0;
        let mut responses = 0;
        while let Some(r) = stream.next().await {
            let r = r.unwrap();
            assert!(
                r.encoded_len() <= MAX_RESPONSE_BYTES,
                "{} bytes",
                r.encoded_len()
            );
            assert!(r
                .lines
                .iter()
                .all(|l| l.task_name == "web.1.t1" && l.node_id == "n1"));
            lines += r.lines.len();
            responses += 1;
        }
        assert_eq!(lines, 500);
        assert!(responses >= 8, "{responses} responses");
    }

    #[tokio::test]
    async fn a_client_that_never_reads_never_holds_up_delivery() {
        let (broker, mut session) = broker();
        let mut stream = Box::pin(
            broker
                .open(&Service::default(), vec![task()], true, -1)
                .await
                .unwrap(),
        );
        let id = request_id(&mut session).await;
        // Twice the buffer, delivered without the client reading anything.
        let chunks = 2 * CONSUMER_BUFFER_BYTES / MAX_RESPONSE_BYTES;
        let delivered = tokio::time::timeout(Duration::from_secs(10), async {
            for _ in 0..chunks {
                broker.deliver("n1", chunk(id, 60, 16 * 1024)).await;
            }
        })
        .await;
        assert!(delivered.is_ok(), "deliver waited for the client");
        // The agent is told to stop, and the client learns why after what was buffered.
        let cancel = tokio::time::timeout(Duration::from_secs(10), session.recv())
            .await
            .unwrap()
            .and_then(|m| m.msg);
        assert!(
            matches!(cancel, Some(Msg::CancelLogs(CancelLogs { request_id })) if request_id == id)
        );
        let mut ok = 0;
        let err = loop {
            match stream.next().await {
                Some(Ok(_)) => ok += 1,
                Some(Err(e)) => break e,
                None => panic!("the stream ended without an error"),
            }
        };
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(ok > 0 && ok < chunks, "{ok} responses before the error");
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn a_client_that_went_away_cancels_the_node_request() {
        let (broker, mut session) = broker();
        let stream = broker
            .open(&Service::default(), vec![task()], true, -1)
            .await
            .unwrap();
        let id = request_id(&mut session).await;
        drop(stream);
        broker.deliver("n1", chunk(id, 1, 10)).await;
        let cancel = tokio::time::timeout(Duration::from_secs(10), session.recv())
            .await
            .unwrap()
            .and_then(|m| m.msg);
        assert!(matches!(cancel, Some(Msg::CancelLogs(_))));
        assert!(broker.lock().is_empty());
    }
}
