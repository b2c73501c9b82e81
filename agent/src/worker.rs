//! The worker reconciles the dispatcher's assignment set with what runs here: one actor per task,
//! started, told of desired-state changes, and removed when the task leaves the set.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_proto::v1::*;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::executor::{Executor, RuntimeExecutor};
use crate::image::ImageStore;
use crate::network::Networks;
use crate::runtime::{self, Runtime};
use crate::task::{self, Shared, DEFAULT_GRACE};

/// A running task actor's controls.
struct TaskHandle {
    desired: watch::Sender<i32>,
    remove: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning only means a panic elsewhere; the maps stay valid entry by entry.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The worker: a cloneable handle.
#[derive(Clone)]
pub struct Worker {
    shared: Arc<Shared>,
    network: Option<Arc<Networks>>,
    tasks: Arc<Mutex<HashMap<String, TaskHandle>>>,
    first_assignment: Arc<AtomicBool>,
    log_requests: Arc<Mutex<HashMap<u64, tokio::task::JoinHandle<()>>>>,
}

impl Worker {
    /// Makes a worker that runs tasks with the node's runtime, image store and networks; status
    /// updates come out of the returned receiver.
    pub fn new(
        runtime: Runtime,
        images: ImageStore,
        network: Option<Networks>,
        insecure_registries: Vec<String>,
    ) -> (Self, mpsc::UnboundedReceiver<TaskStatusUpdate>) {
        let network = network.map(Arc::new);
        let executor = RuntimeExecutor::new(runtime, images, network.clone(), insecure_registries);
        Worker::with_executor(Arc::new(executor), network)
    }

    /// Makes a worker over any executor (tests use a fake one); `network` is what
    /// [`Worker::networks`] hands to the session.
    ///
    /// The executor is a trait object rather than a type parameter: the worker is cloned into
    /// the session and the agent, which would otherwise all carry the parameter, and one
    /// indirect call is nothing next to the fork, mount or pull behind it.
    pub fn with_executor(
        executor: Arc<dyn Executor>,
        network: Option<Arc<Networks>>,
    ) -> (Self, mpsc::UnboundedReceiver<TaskStatusUpdate>) {
        let (shared, status_rx) = Shared::new(executor);
        (
            Worker {
                shared: Arc::new(shared),
                network,
                tasks: Arc::new(Mutex::new(HashMap::new())),
                first_assignment: Arc::new(AtomicBool::new(true)),
                log_requests: Arc::new(Mutex::new(HashMap::new())),
            },
            status_rx,
        )
    }

    /// The node's networks, if enabled.
    pub fn networks(&self) -> Option<Arc<Networks>> {
        self.network.clone()
    }

    /// Every status reported so far, for resending after a reconnect.
    pub fn current_statuses(&self) -> Vec<TaskStatusUpdate> {
        self.shared.all_reported()
    }

    /// Applies a complete assignment set.
    pub fn assign(&self, tasks: Vec<Task>) {
        let first = self.first_assignment.swap(false, Ordering::SeqCst);
        let mut map = lock(&self.tasks);
        let wanted: HashSet<String> = tasks.iter().map(|t| t.id.clone()).collect();
        for task in tasks {
            match map.get(&task.id) {
                Some(h) => {
                    h.desired.send_if_modified(|d| {
                        let changed = *d != task.desired_state;
                        *d = task.desired_state;
                        changed
                    });
                }
                None => {
                    let (desired_tx, desired_rx) = watch::channel(task.desired_state);
                    let (remove_tx, remove_rx) = watch::channel(false);
                    let id = task.id.clone();
                    let key = id.clone();
                    let shared = self.shared.clone();
                    let tasks = self.tasks.clone();
                    tokio::spawn(async move {
                        task::run(task, shared, desired_rx, remove_rx).await;
                        lock(&tasks).remove(&id);
                    });
                    map.insert(
                        key,
                        TaskHandle {
                            desired: desired_tx,
                            remove: remove_tx,
                        },
                    );
                }
            }
        }
        for (id, h) in map.iter() {
            if !wanted.contains(id) {
                let _ = h.remove.send(true);
            }
        }
        drop(map);
        if first {
            self.collect_orphans(&wanted);
        }
    }

    /// Removes containers left from tasks the cluster no longer has (e.g. removed while we were
    /// down). Runs on its own task: listing reads every container's records and /proc.
    fn collect_orphans(&self, wanted: &HashSet<String>) {
        let shared = self.shared.clone();
        let wanted = wanted.clone();
        tokio::spawn(async move {
            let list = match shared.executor.list().await {
                Ok(l) => l,
                Err(e) => {
                    warn!(error = %e, "cannot list containers");
                    return;
                }
            };
            for (id, _) in list {
                if wanted.contains(&id) {
                    continue;
                }
                let shared = shared.clone();
                tokio::spawn(async move {
                    info!(task.id = %id, "removing container of a task no longer assigned here");
                    shared.executor.remove(&id, DEFAULT_GRACE).await;
                });
            }
        });
    }

    /// Stops and removes every container on this node (the node left the cluster).
    pub async fn remove_all(&self) {
        let handles: Vec<String> = lock(&self.tasks).keys().cloned().collect();
        for (_, h) in lock(&self.tasks).iter() {
            let _ = h.remove.send(true);
        }
        let list = self.shared.executor.list().await.unwrap_or_default();
        for (id, _) in list {
            if !handles.contains(&id) {
                self.shared.executor.remove(&id, DEFAULT_GRACE).await;
            }
        }
        // The actors remove themselves from the map once their container is gone.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !lock(&self.tasks).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Serves a log request: the tail of each task's log, then (when following) new lines, as
    /// chunks on the session's log queue (`out`), never on the queue of heartbeats and status.
    pub fn logs(&self, req: LogsRequest, out: mpsc::Sender<AgentLogChunk>) {
        let shared = self.shared.clone();
        let request_id = req.request_id;
        let requests = self.log_requests.clone();
        // Held while spawning: a request that ends at once must not remove itself before it is
        // inserted (its entry would then stay forever).
        let mut map = lock(&self.log_requests);
        let handle = tokio::spawn(async move {
            task::serve_logs(shared, req, out).await;
            lock(&requests).remove(&request_id);
        });
        map.insert(request_id, handle);
    }

    /// Stops a following log request.
    pub fn cancel_logs(&self, request_id: u64) {
        if let Some(h) = lock(&self.log_requests).remove(&request_id) {
            h.abort();
        }
    }
}

/// Exit code of a runtime status, for reports.
pub fn exit_code(st: &runtime::ContainerStatus) -> Option<i32> {
    match st {
        runtime::ContainerStatus::Exited { code } => Some(*code),
        _ => None,
    }
}
