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
use crate::secrets::Payloads;
use crate::task::{self, Shared, DEFAULT_GRACE};
use crate::volumes::VolumeStore;

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
    /// The data of the secrets and configs of this node's tasks (memory only).
    payloads: Payloads,
    /// The node's volumes (none with a fake executor).
    volumes: Option<VolumeStore>,
    /// This node's id, for volume replies.
    node_id: Arc<Mutex<String>>,
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
        let payloads = Payloads::default();
        let executor = RuntimeExecutor::new(runtime, images, network.clone(), insecure_registries)
            .with_payloads(payloads.clone());
        let volumes = executor.volumes();
        let (mut worker, status_rx) = Worker::with_executor(Arc::new(executor), network);
        worker.payloads = payloads;
        worker.volumes = Some(volumes);
        (worker, status_rx)
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
                payloads: Payloads::default(),
                volumes: None,
                node_id: Arc::new(Mutex::new(String::new())),
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

    /// Keeps the secrets and configs of an assignment set (in memory only) for the tasks that
    /// start from now on; call before [`Worker::assign`] with the same set.
    pub fn set_payloads(&self, secrets: Vec<Secret>, configs: Vec<Config>) {
        self.payloads.set(secrets, configs);
    }

    /// Learns this node's id (from the session), for volume replies.
    pub fn set_node_id(&self, node_id: &str) {
        *lock(&self.node_id) = node_id.to_string();
    }

    /// Answers a `volume ls|rm|prune` for this node.
    pub async fn volumes(&self, req: VolumeRequest) -> VolumeReply {
        let Some(store) = self.volumes.clone() else {
            return VolumeReply {
                request_id: req.request_id,
                error: "this node has no volume store".into(),
                ..Default::default()
            };
        };
        let node_id = lock(&self.node_id).clone();
        let request_id = req.request_id;
        // Listing walks every volume's directory for its size.
        tokio::task::spawn_blocking(move || store.handle(&req, &node_id))
            .await
            .unwrap_or_else(|e| VolumeReply {
                request_id,
                error: format!("volume request: {e}"),
                ..Default::default()
            })
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
        let executor = self.shared.executor.clone();
        let request_id = req.request_id;
        let requests = self.log_requests.clone();
        // Held while spawning: a request that ends at once must not remove itself before it is
        // inserted (its entry would then stay forever).
        let mut map = lock(&self.log_requests);
        let handle = tokio::spawn(async move {
            crate::logs::serve_logs(executor, req, out).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::fake::{next_update, state, task, Call, FakeExecutor};
    use TaskState::*;

    fn worker(fake: &Arc<FakeExecutor>) -> (Worker, mpsc::UnboundedReceiver<TaskStatusUpdate>) {
        Worker::with_executor(fake.clone(), None)
    }

    /// Reads updates until every task in `ids` has reported `want`.
    async fn until_all(
        rx: &mut mpsc::UnboundedReceiver<TaskStatusUpdate>,
        ids: &[&str],
        want: TaskState,
    ) {
        let mut left: HashSet<String> = ids.iter().map(|s| s.to_string()).collect();
        while !left.is_empty() {
            let (id, st) = next_update(rx).await;
            if state(&st) == want {
                left.remove(&id);
            }
        }
    }

    #[tokio::test]
    async fn a_new_assignment_set_starts_new_tasks_removes_gone_ones_and_leaves_the_rest() {
        let fake = Arc::new(FakeExecutor::default());
        let (w, mut rx) = worker(&fake);
        w.assign(vec![task("a"), task("b")]);
        until_all(&mut rx, &["a", "b"], TaskRunning).await;
        fake.until(Call::List).await;
        w.assign(vec![task("a"), task("c")]);
        until_all(&mut rx, &["c"], TaskRunning).await;
        fake.until(Call::Remove("b".into(), task::DEFAULT_GRACE))
            .await;
        for c in [Call::Inspect("a".into()), Call::Start("a".into())] {
            assert_eq!(fake.count(|x| *x == c), 1, "{c:?}");
        }
        assert_eq!(
            fake.count(|x| matches!(x, Call::Remove(id, _) if id == "a")),
            0
        );
        assert_eq!(fake.count(|x| matches!(x, Call::Stop(..))), 0);
        // The second set did not look for orphans again.
        assert_eq!(fake.count(|x| *x == Call::List), 1);
    }

    #[tokio::test]
    async fn volume_requests_are_answered_with_their_id_and_the_node() {
        let fake = Arc::new(FakeExecutor::default());
        let (mut w, _rx) = worker(&fake);
        let req = VolumeRequest {
            request_id: 9,
            op: VolumeOp::VolumeList as i32,
            ..Default::default()
        };
        // Without a volume store (a fake executor) the reply says so.
        let reply = w.volumes(req.clone()).await;
        assert_eq!(reply.request_id, 9);
        assert!(!reply.error.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(dir.path());
        store
            .ensure("db", &crate::volumes::VolumeCreate::default(), "t1")
            .unwrap();
        w.volumes = Some(store);
        w.set_node_id("node-a");
        let reply = w.volumes(req).await;
        assert_eq!((reply.request_id, reply.error.as_str()), (9, ""));
        assert_eq!(reply.volumes.len(), 1);
        assert_eq!(reply.volumes[0].node_id, "node-a");
        assert_eq!(reply.volumes[0].in_use_by, vec!["t1".to_string()]);
    }

    #[tokio::test]
    async fn a_desired_state_change_in_the_set_reaches_the_task() {
        let fake = Arc::new(FakeExecutor::default());
        let (w, mut rx) = worker(&fake);
        w.assign(vec![task("a")]);
        until_all(&mut rx, &["a"], TaskRunning).await;
        let mut down = task("a");
        down.desired_state = TaskShutdown as i32;
        w.assign(vec![down]);
        until_all(&mut rx, &["a"], TaskShutdown).await;
        assert_eq!(
            fake.count(|x| *x == Call::Stop("a".into(), task::DEFAULT_GRACE)),
            1
        );
    }

    #[tokio::test]
    async fn after_an_agent_restart_running_containers_are_adopted_and_orphans_removed() {
        let fake = Arc::new(FakeExecutor::default());
        fake.found_running("a", 42);
        // Sorted after "a": once its removal is seen, "a" was passed over.
        fake.found_exited("z-orphan", 0);
        let (w, mut rx) = worker(&fake);
        let mut a = task("a");
        a.status = Some(TaskStatus {
            state: TaskRunning as i32,
            ..Default::default()
        });
        w.assign(vec![a]);
        let (id, st) = next_update(&mut rx).await;
        assert_eq!((id.as_str(), state(&st), st.pid), ("a", TaskRunning, 42));
        fake.until(Call::Remove("z-orphan".into(), task::DEFAULT_GRACE))
            .await;
        assert_eq!(
            fake.count(|x| matches!(x, Call::Remove(id, _) if id == "a")),
            0
        );
        assert_eq!(
            fake.count(|x| matches!(x, Call::Start(_) | Call::Pull(_))),
            0
        );
        assert_eq!(fake.count(|x| *x == Call::Reattach("a".into())), 1);
        // What the manager hears again after a reconnect.
        let known = w.current_statuses();
        assert_eq!(known.len(), 1);
        assert_eq!(known[0].task_id, "a");
    }

    #[tokio::test]
    async fn a_failed_listing_leaves_every_container_alone() {
        let fake = Arc::new(FakeExecutor::default());
        fake.found_exited("orphan", 0);
        fake.fail_list();
        let (w, mut rx) = worker(&fake);
        w.assign(vec![task("a")]);
        until_all(&mut rx, &["a"], TaskRunning).await;
        fake.until(Call::List).await;
        assert_eq!(fake.count(|x| matches!(x, Call::Remove(..))), 0);
    }

    #[tokio::test]
    async fn leaving_the_cluster_removes_every_container() {
        let fake = Arc::new(FakeExecutor::default());
        let (w, mut rx) = worker(&fake);
        w.assign(vec![task("a"), task("b")]);
        until_all(&mut rx, &["a", "b"], TaskRunning).await;
        // The first set's look for orphans is over before the stray container appears.
        fake.until(Call::List).await;
        // Left by a task the worker does not know (e.g. from before a wiped data dir).
        fake.found_exited("stray", 1);
        let removing = tokio::time::timeout(Duration::from_secs(10), w.remove_all()).await;
        assert!(removing.is_ok(), "remove_all did not return");
        for id in ["a", "b", "stray"] {
            assert_eq!(
                fake.count(|x| *x == Call::Remove(id.into(), task::DEFAULT_GRACE)),
                1,
                "{id}"
            );
        }
        assert!(lock(&w.tasks).is_empty());
    }
}
