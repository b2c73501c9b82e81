//! Serves the manager's log requests: each task's log tail read on the blocking pool, then new
//! lines as they are written, in chunks that stay far below gRPC's message limit.

use std::sync::Arc;

use shoal_proto::v1::*;
use tokio::sync::mpsc;
use tracing::warn;

use crate::executor::Executor;
use crate::runtime::logs;

fn to_line(task_id: &str, e: logs::LogEntry) -> LogLine {
    LogLine {
        task_id: task_id.to_string(),
        task_name: String::new(),
        node_id: String::new(),
        stream: e.stream,
        timestamp: e.timestamp_ns,
        data: e.data,
    }
}

/// Log lines gathered up to [`logs::MAX_CHUNK_BYTES`] of encoded size, so every
/// `AgentLogChunk` (and the manager's response made of it) stays far below gRPC's 4 MiB limit.
#[derive(Debug, Default)]
struct LineBatch {
    lines: Vec<LogLine>,
    bytes: usize,
}

impl LineBatch {
    /// Adds a line; returns the full batch when this line would not fit (it starts the next).
    fn push(&mut self, line: LogLine) -> Option<Vec<LogLine>> {
        // The line's bytes plus its field tag and length prefix in the chunk.
        let size = prost::Message::encoded_len(&line) + 8;
        let full = if !self.lines.is_empty() && self.bytes + size > logs::MAX_CHUNK_BYTES {
            self.bytes = 0;
            Some(std::mem::take(&mut self.lines))
        } else {
            None
        };
        self.bytes += size;
        self.lines.push(line);
        full
    }

    /// What is gathered, if anything.
    fn take(&mut self) -> Option<Vec<LogLine>> {
        self.bytes = 0;
        Some(std::mem::take(&mut self.lines)).filter(|l| !l.is_empty())
    }
}

/// Sends chunks of one log request on the session's log queue. A slow queue holds up this
/// request only: heartbeats and task status go on their own queue.
struct LogSender {
    request_id: u64,
    out: mpsc::Sender<AgentLogChunk>,
}

impl LogSender {
    /// False once the session is gone.
    async fn send(&self, lines: Vec<LogLine>, eof: bool, error: String) -> bool {
        let chunk = AgentLogChunk {
            request_id: self.request_id,
            lines,
            eof,
            error,
        };
        self.out.send(chunk).await.is_ok()
    }
}

/// Serves one log request for the tasks of it this node has: each task's tail (read on the
/// blocking pool, chunk by chunk), then, when following, new lines as they are written.
pub async fn serve_logs(
    executor: Arc<dyn Executor>,
    req: LogsRequest,
    out: mpsc::Sender<AgentLogChunk>,
) {
    let sender = LogSender {
        request_id: req.request_id,
        out,
    };
    let (tx, mut rx) = mpsc::channel::<(String, Vec<logs::LogEntry>)>(16);
    // Dropped (so aborted) with this request, e.g. when the manager cancels it.
    let mut followers = tokio::task::JoinSet::new();
    for task_id in &req.task_ids {
        let path = match executor.log_path(task_id) {
            Ok(path) => path,
            Err(e) => {
                let _ = sender.send(Vec::new(), false, e.to_string()).await;
                continue;
            }
        };
        let (chunk_tx, mut chunk_rx) = mpsc::channel::<Vec<logs::LogEntry>>(2);
        let reader = tokio::task::spawn_blocking({
            let (path, tail) = (path.clone(), req.tail);
            move || logs::read_chunks(&path, tail, |c| chunk_tx.blocking_send(c).is_ok())
        });
        let mut batch = LineBatch::default();
        while let Some(entries) = chunk_rx.recv().await {
            for e in entries {
                if let Some(lines) = batch.push(to_line(task_id, e)) {
                    if !sender.send(lines, false, String::new()).await {
                        return;
                    }
                }
            }
        }
        if let Some(lines) = batch.take() {
            if !sender.send(lines, false, String::new()).await {
                return;
            }
        }
        let from = match reader.await.map_err(logs::LogError::from).and_then(|r| r) {
            Ok(from) => from,
            Err(e) => {
                let _ = sender
                    .send(Vec::new(), false, format!("{task_id}: {e}"))
                    .await;
                continue;
            }
        };
        if req.follow {
            let (entries_tx, mut entries_rx) = mpsc::channel(4);
            let (tx, tid) = (tx.clone(), task_id.clone());
            followers.spawn(async move {
                let forward = async {
                    while let Some(entries) = entries_rx.recv().await {
                        if tx.send((tid.clone(), entries)).await.is_err() {
                            return;
                        }
                    }
                };
                let (followed, ()) = tokio::join!(logs::follow(path, from, entries_tx), forward);
                if let Err(e) = followed {
                    warn!(task.id = %tid, error = %e, "following the log failed");
                }
            });
        }
    }
    drop(tx);
    let mut batch = LineBatch::default();
    while let Some((task_id, entries)) = rx.recv().await {
        let mut full = Vec::new();
        for e in entries {
            full.extend(batch.push(to_line(&task_id, e)));
        }
        // Whatever else is ready goes out together; nothing waits for more.
        while full.is_empty() {
            let Ok((task_id, entries)) = rx.try_recv() else {
                break;
            };
            for e in entries {
                full.extend(batch.push(to_line(&task_id, e)));
            }
        }
        full.extend(batch.take());
        for lines in full {
            if !sender.send(lines, false, String::new()).await {
                return;
            }
        }
    }
    let _ = sender.send(Vec::new(), true, String::new()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_of_500_lines_of_16_kib_stay_under_a_mebibyte() {
        let mut batch = LineBatch::default();
        let mut chunks = Vec::new();
        for i in 0..500 {
            let entry = logs::LogEntry {
                timestamp_ns: i,
                stream: "stdout".into(),
                data: vec![b'x'; logs::MAX_LINE],
            };
            chunks.extend(batch.push(to_line("task1", entry)));
        }
        chunks.extend(batch.take());
        assert!(batch.take().is_none());
        assert!(chunks.len() >= 8, "{} chunks", chunks.len());
        let mut n = 0;
        for lines in chunks {
            n += lines.len();
            let chunk = AgentLogChunk {
                request_id: 1,
                lines,
                eof: false,
                error: String::new(),
            };
            let msg = AgentMessage {
                msg: Some(agent_message::Msg::Logs(chunk)),
            };
            let size = prost::Message::encoded_len(&msg);
            assert!(
                size <= logs::MAX_CHUNK_BYTES + 64,
                "message of {size} bytes"
            );
        }
        assert_eq!(n, 500);
    }
}
