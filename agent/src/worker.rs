//! The worker reconciles the dispatcher's assignment set with what runs here: one actor per task,
//! started, told of desired-state changes, and removed when the task leaves the set.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_proto::v1::*;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::image::{Image, ImageStore};
use crate::network::Networks;
use crate::runtime::{self, Runtime};

/// How long a pulled image is used without asking the registry again.
const PULL_FRESHNESS: Duration = Duration::from_secs(30);

/// The last pull of one image reference, shared by the tasks that need it.
type PullSlot = Arc<tokio::sync::Mutex<Option<(Instant, Image)>>>;

/// A running task actor's controls.
struct TaskHandle {
    desired: watch::Sender<i32>,
    remove: watch::Sender<bool>,
}

/// Everything task actors share.
pub struct Shared {
    /// Container runtime.
    pub runtime: Runtime,
    /// Image store.
    pub images: ImageStore,
    /// The node's networks (local bridge, overlays, service plane), if enabled.
    pub network: Option<Arc<Networks>>,
    /// Registries reachable over plain HTTP.
    pub insecure_registries: Vec<String>,
    status_tx: mpsc::UnboundedSender<TaskStatusUpdate>,
    statuses: Mutex<HashMap<String, TaskStatus>>,
    pulls: Mutex<HashMap<String, PullSlot>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning only means a panic elsewhere; the maps stay valid entry by entry.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Reports a status, forward-only: a state at or behind the last reported one is dropped.
    pub fn report(&self, task_id: &str, status: TaskStatus) {
        {
            let mut map = lock(&self.statuses);
            if let Some(prev) = map.get(task_id) {
                if status.state <= prev.state {
                    return;
                }
            }
            map.insert(task_id.to_string(), status.clone());
        }
        info!(task.id = %task_id, state = ?TaskState::try_from(status.state).unwrap_or(TaskState::TaskNew), msg = %status.message, err = %status.err, "task state");
        let _ = self.status_tx.send(TaskStatusUpdate {
            task_id: task_id.to_string(),
            status: Some(status),
        });
    }

    /// The last state reported for a task.
    pub fn reported(&self, task_id: &str) -> Option<TaskStatus> {
        lock(&self.statuses).get(task_id).cloned()
    }

    /// Pulls an image once for all the tasks that need it at the same time.
    pub async fn image(&self, reference: &str) -> Result<Image, crate::image::ImageError> {
        let slot = lock(&self.pulls)
            .entry(reference.to_string())
            .or_default()
            .clone();
        let mut guard = slot.lock().await;
        if let Some((at, img)) = guard.as_ref() {
            if at.elapsed() < PULL_FRESHNESS {
                return Ok(img.clone());
            }
        }
        match self.images.pull(reference, &self.insecure_registries).await {
            Ok(img) => {
                *guard = Some((Instant::now(), img.clone()));
                Ok(img)
            }
            // A registry that is unreachable does not stop a task whose image we already have.
            Err(e) => match self.images.get(reference) {
                Ok(Some(img)) => {
                    warn!(image = %reference, error = %e, "pull failed; using the local copy");
                    Ok(img)
                }
                _ => Err(e),
            },
        }
    }
}

/// The worker: a cloneable handle.
#[derive(Clone)]
pub struct Worker {
    shared: Arc<Shared>,
    tasks: Arc<Mutex<HashMap<String, TaskHandle>>>,
    first_assignment: Arc<AtomicBool>,
    log_requests: Arc<Mutex<HashMap<u64, tokio::task::JoinHandle<()>>>>,
}

impl Worker {
    /// Makes a worker; status updates come out of the returned receiver.
    pub fn new(
        runtime: Runtime,
        images: ImageStore,
        network: Option<Networks>,
        insecure_registries: Vec<String>,
    ) -> (Self, mpsc::UnboundedReceiver<TaskStatusUpdate>) {
        let (status_tx, status_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            runtime,
            images,
            network: network.map(Arc::new),
            insecure_registries,
            status_tx,
            statuses: Mutex::new(HashMap::new()),
            pulls: Mutex::new(HashMap::new()),
        });
        (
            Worker {
                shared,
                tasks: Arc::new(Mutex::new(HashMap::new())),
                first_assignment: Arc::new(AtomicBool::new(true)),
                log_requests: Arc::new(Mutex::new(HashMap::new())),
            },
            status_rx,
        )
    }

    /// The node's networks, if enabled.
    pub fn networks(&self) -> Option<Arc<Networks>> {
        self.shared.network.clone()
    }

    /// Every status reported so far, for resending after a reconnect.
    pub fn current_statuses(&self) -> Vec<TaskStatusUpdate> {
        lock(&self.shared.statuses)
            .iter()
            .map(|(id, st)| TaskStatusUpdate {
                task_id: id.clone(),
                status: Some(st.clone()),
            })
            .collect()
    }

    /// Applies a complete assignment set.
    pub fn assign(&self, tasks: Vec<Task>) {
        let first = self.first_assignment.swap(false, Ordering::SeqCst);
        let mut map = lock(&self.tasks);
        let wanted: std::collections::HashSet<String> =
            tasks.iter().map(|t| t.id.clone()).collect();
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
                        crate::task::run(task, shared, desired_rx, remove_rx).await;
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
    /// down). Listing reads every container's records and /proc: it runs on the blocking pool.
    fn collect_orphans(&self, wanted: &std::collections::HashSet<String>) {
        let shared = self.shared.clone();
        let wanted = wanted.clone();
        tokio::spawn(async move {
            let listing = {
                let shared = shared.clone();
                tokio::task::spawn_blocking(move || shared.runtime.list()).await
            };
            let list = match listing {
                Ok(Ok(l)) => l,
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot list containers");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "listing containers failed");
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
                    crate::task::destroy(&shared, &id, Duration::from_secs(10)).await;
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
        let list = {
            let shared = self.shared.clone();
            tokio::task::spawn_blocking(move || shared.runtime.list())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
        };
        for (id, _) in list {
            if !handles.contains(&id) {
                crate::task::destroy(&self.shared, &id, Duration::from_secs(10)).await;
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
            crate::task::serve_logs(shared, req, out).await;
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
