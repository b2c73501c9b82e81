//! The executor of a real node: today's runtime (containers under shims), image store and
//! networks. Whatever reads files, walks /proc or /dev, forks or deletes runs on the blocking
//! pool, so a slow disk or a dying container never holds up an async worker (and with it the
//! session's heartbeats).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_proto::v1::{RegistryAuth, Task};
use tracing::{debug, info, warn};

use super::config::{
    container_config, expand_templates, node_config, resolve_mounts, template_context,
};
use super::health::{limit_output, MAX_OUTPUT_BYTES};
use super::{ContainerConfig, ContainerStatus, Executor, ExecutorError, HealthProbe, ProbeResult};
use crate::image::{Image, ImageStore};
use crate::network::Networks;
use crate::runtime::{self, MountSpec, Runtime};
use crate::secrets::{self, Payloads, TaskFileDirs};
use crate::volumes::VolumeStore;

/// How long a pulled image is used without asking the registry again.
const PULL_FRESHNESS: Duration = Duration::from_secs(30);

/// The last pull of one image reference, shared by the tasks that need it.
type PullSlot = Arc<tokio::sync::Mutex<Option<(Instant, Image)>>>;

/// How long starts and removals must have been quiet before the heap is trimmed.
const TRIM_AFTER: Duration = Duration::from_secs(1);

/// Hands the memory a burst of starts or removals freed back to the kernel once the burst is
/// over. Hundreds of blocking threads each allocate from one of glibc's arenas during a burst;
/// what they free stays resident in those arenas (glibc only gives back the top of an arena), so
/// without a trim an agent that started 1,000 containers keeps the burst's peak for good.
#[derive(Default)]
struct BurstTrim {
    /// Starts and removals in progress.
    busy: AtomicUsize,
    /// Bumped whenever the count falls to zero, so only the latest quiet moment trims.
    quiet: AtomicU64,
}

/// One start or removal in progress; its drop may schedule the trim.
struct Busy(Arc<BurstTrim>);

impl BurstTrim {
    fn enter(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let quiet = self.0.quiet.fetch_add(1, Ordering::SeqCst) + 1;
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let trim = self.0.clone();
        rt.spawn(async move {
            tokio::time::sleep(TRIM_AFTER).await;
            if trim.busy.load(Ordering::SeqCst) == 0 && trim.quiet.load(Ordering::SeqCst) == quiet {
                let _ = tokio::task::spawn_blocking(|| {
                    let began = Instant::now();
                    // SAFETY: malloc_trim only releases memory the allocator holds free; no
                    // pointer is touched.
                    unsafe { libc::malloc_trim(0) };
                    debug!(
                        ms = began.elapsed().as_millis() as u64,
                        "heap trimmed after a burst"
                    );
                })
                .await;
            }
        });
    }
}

/// Runs tasks with the node's runtime, image store and networks.
pub struct RuntimeExecutor {
    runtime: Arc<Runtime>,
    images: ImageStore,
    network: Option<Arc<Networks>>,
    insecure_registries: Vec<String>,
    pulls: Mutex<HashMap<String, PullSlot>>,
    volumes: VolumeStore,
    payloads: Payloads,
    task_files: TaskFileDirs,
    trim: Arc<BurstTrim>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning only means a panic elsewhere; the map stays valid entry by entry.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `f` on the blocking pool; `op` names it in the error if it panics.
async fn blocking<T, F>(op: &'static str, f: F) -> Result<T, ExecutorError>
where
    F: FnOnce() -> Result<T, ExecutorError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| ExecutorError::Blocking { op, source })?
}

impl RuntimeExecutor {
    /// An executor over `runtime`, pulling into `images` (plain HTTP to `insecure_registries`)
    /// and plugging tasks into `network` when the node has networks.
    pub fn new(
        runtime: Runtime,
        images: ImageStore,
        network: Option<Arc<Networks>>,
        insecure_registries: Vec<String>,
    ) -> RuntimeExecutor {
        // The runtime's root is `<data-dir>/runtime`: volumes go beside it.
        let data_dir = runtime
            .root()
            .parent()
            .unwrap_or(runtime.root())
            .to_path_buf();
        let volumes = VolumeStore::open(&data_dir);
        RuntimeExecutor {
            runtime: Arc::new(runtime),
            images,
            network,
            insecure_registries,
            pulls: Mutex::new(HashMap::new()),
            volumes,
            payloads: Payloads::default(),
            // Under the data dir (0700), so whoever removes a node's data dir unmounts them too;
            // each task's directory is a tmpfs: the files are in memory, never on the disk.
            task_files: TaskFileDirs::new(&data_dir.join("secrets")),
            trim: Arc::default(),
        }
    }

    /// Takes secret and config data from `payloads` (the worker's, filled from assignments).
    pub fn with_payloads(mut self, payloads: Payloads) -> RuntimeExecutor {
        self.payloads = payloads;
        self
    }

    /// Writes tasks' secrets and configs into tmpfs mounts under other directories.
    pub fn with_task_file_dirs(mut self, dirs: TaskFileDirs) -> RuntimeExecutor {
        self.task_files = dirs;
        self
    }

    /// The node's volumes.
    pub fn volumes(&self) -> VolumeStore {
        self.volumes.clone()
    }

    /// Everything of the task's mounts on the host: volume uses (and its anonymous volumes) and
    /// its secrets' tmpfs. Blocking.
    fn release_mounts(volumes: &VolumeStore, files: &TaskFileDirs, task_id: &str) {
        if let Err(e) = volumes.release_task(task_id) {
            warn!(task.id = %task_id, error = %e, "releasing volumes failed");
        }
        if let Err(e) = files.remove(task_id) {
            warn!(task.id = %task_id, error = %e, "removing secrets and configs failed");
        }
    }

    /// Resolves the task's mounts and writes its secrets and configs, on the blocking pool;
    /// on an error nothing of them is left.
    async fn mounts(&self, task: &Task) -> Result<Vec<MountSpec>, ExecutorError> {
        let (volumes, files, payloads) = (
            self.volumes.clone(),
            self.task_files.clone(),
            self.payloads.clone(),
        );
        let ctx = template_context(task, self.runtime.node_name());
        let task = task.clone();
        blocking("mounts", move || {
            let spec = task
                .spec
                .as_ref()
                .and_then(|s| s.container.clone())
                .unwrap_or_default();
            let made = resolve_mounts(&task, &ctx, &volumes).and_then(|mut mounts| {
                let wanted = secrets::task_files(&spec, &payloads).map_err(|e| e.to_string())?;
                mounts.extend(files.write(&task.id, &wanted).map_err(|e| e.to_string())?);
                Ok(mounts)
            });
            match made {
                Ok(mut mounts) => {
                    // Parents before children, as docker orders them (stable otherwise).
                    mounts.sort_by_key(|m| m.target.components().count());
                    Ok(mounts)
                }
                Err(reason) => {
                    Self::release_mounts(&volumes, &files, &task.id);
                    Err(ExecutorError::Mounts { reason })
                }
            }
        })
        .await
    }

    /// Forgets the task's mounts on the blocking pool.
    async fn release(&self, task_id: &str) {
        let (volumes, files, id) = (
            self.volumes.clone(),
            self.task_files.clone(),
            task_id.to_string(),
        );
        let _ = blocking("release mounts", move || {
            Self::release_mounts(&volumes, &files, &id);
            Ok(())
        })
        .await;
    }
}

#[async_trait::async_trait]
impl Executor for RuntimeExecutor {
    async fn inspect(&self, task_id: &str) -> Result<ContainerStatus, ExecutorError> {
        let (runtime, id) = (self.runtime.clone(), task_id.to_string());
        blocking("container status", move || Ok(runtime.status(&id)?)).await
    }

    async fn list(&self) -> Result<Vec<(String, ContainerStatus)>, ExecutorError> {
        let runtime = self.runtime.clone();
        blocking("list containers", move || Ok(runtime.list()?)).await
    }

    /// Pulls an image once for all the tasks that need it at the same time.
    async fn pull(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<Image, ExecutorError> {
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
        match self
            .images
            .pull_with_auth(reference, &self.insecure_registries, auth)
            .await
        {
            Ok(img) => {
                *guard = Some((Instant::now(), img.clone()));
                Ok(img)
            }
            // A registry that is unreachable does not stop a task whose image we already have.
            Err(source) => match self.local_image(reference).await {
                Some(img) => {
                    warn!(image = %reference, error = %source, "pull failed; using the local copy");
                    Ok(img)
                }
                None => Err(ExecutorError::Pull {
                    reference: reference.to_string(),
                    source,
                }),
            },
        }
    }

    /// Reads the image record on the blocking pool.
    async fn local_image(&self, reference: &str) -> Option<Image> {
        let (images, reference) = (self.images.clone(), reference.to_string());
        blocking("read image record", move || {
            Ok(images.get(&reference).ok().flatten())
        })
        .await
        .ok()
        .flatten()
    }

    async fn prepare(&self, task: &Task, image: &Image) -> Result<ContainerConfig, ExecutorError> {
        let mut cfg = container_config(task, image);
        let spec = task
            .spec
            .as_ref()
            .and_then(|s| s.container.clone())
            .unwrap_or_default();
        // Stats device nodes (all of /dev when privileged) and the init binary.
        let began = Instant::now();
        let runtime = self.runtime.clone();
        let mut cfg = blocking("node config", move || {
            node_config(&spec, runtime.node_name(), runtime.init_path(), &mut cfg)
                .map_err(|reason| ExecutorError::NodeConfig { reason })?;
            Ok(cfg)
        })
        .await?;
        expand_templates(&template_context(task, self.runtime.node_name()), &mut cfg).map_err(
            |e| ExecutorError::NodeConfig {
                reason: e.to_string(),
            },
        )?;
        cfg.mounts = self.mounts(task).await?;
        let configured = began.elapsed();
        if let Some(net) = &self.network {
            match net.attach(task).await {
                Ok(att) => {
                    cfg.netns = Some(att.netns);
                    cfg.resolv_conf = Some(att.resolv_conf);
                }
                Err(e) => {
                    // A partial attach holds addresses the manager may hand out again.
                    if let Err(d) = net.detach(&task.id).await {
                        warn!(task.id = %task.id, error = %d, "network detach failed");
                    }
                    self.release(&task.id).await;
                    return Err(e.into());
                }
            }
        }
        // Where a start waits, per task (issue 15's density profile).
        debug!(
            task.id = %task.id,
            config_ms = configured.as_millis() as u64,
            attach_ms = (began.elapsed() - configured).as_millis() as u64,
            "task prepared"
        );
        Ok(cfg)
    }

    async fn reattach(&self, task: &Task) -> Result<(), ExecutorError> {
        // The volume uses are in memory only: a restarted agent learns them again.
        let (volumes, t) = (self.volumes.clone(), task.clone());
        let ctx = template_context(task, self.runtime.node_name());
        if let Err(e) = blocking("volume uses", move || {
            resolve_mounts(&t, &ctx, &volumes).map_err(|reason| ExecutorError::Mounts { reason })
        })
        .await
        {
            warn!(task.id = %task.id, error = %e, "volumes of a running task");
        }
        if let Some(net) = &self.network {
            net.attach(task).await?;
        }
        Ok(())
    }

    async fn start(&self, config: ContainerConfig) -> Result<i32, ExecutorError> {
        let _busy = self.trim.enter();
        let runtime = self.runtime.clone();
        let (id, queued) = (config.id.clone(), Instant::now());
        let started = blocking("start container", move || {
            let began = queued.elapsed();
            let pid = runtime.start(&config)?;
            Ok((pid, began))
        })
        .await;
        if let Ok((_, waited)) = &started {
            debug!(
                task.id = %id,
                queued_ms = waited.as_millis() as u64,
                start_ms = (queued.elapsed() - *waited).as_millis() as u64,
                "container started"
            );
        }
        started.map(|(pid, _)| pid)
    }

    // `wait` and `stop` stay on the async worker: they read a few small records and otherwise
    // wait on a pidfd through the reactor, which blocks nothing.
    async fn wait(&self, task_id: &str) -> Result<i32, ExecutorError> {
        Ok(self.runtime.wait(task_id).await?)
    }

    async fn stop(&self, task_id: &str, grace: Duration) -> Result<(), ExecutorError> {
        Ok(self.runtime.stop(task_id, grace).await?)
    }

    async fn detach(&self, task_id: &str) -> Result<(), ExecutorError> {
        if let Some(net) = &self.network {
            net.detach(task_id).await?;
        }
        Ok(())
    }

    /// Deleting kills, waits for the shim, unmounts and removes cgroups, which can take seconds:
    /// it runs on the blocking pool.
    async fn remove(&self, task_id: &str, grace: Duration) {
        let _busy = self.trim.enter();
        let began = Instant::now();
        if let Ok(ContainerStatus::Running { .. }) = self.inspect(task_id).await {
            if let Err(e) = self.stop(task_id, grace).await {
                warn!(task.id = %task_id, error = %e, "stop failed");
            }
        }
        let stopped = Instant::now();
        let (runtime, id) = (self.runtime.clone(), task_id.to_string());
        let deleted = blocking("delete container", move || {
            let queued = stopped.elapsed();
            runtime.delete(&id)?;
            Ok(queued)
        })
        .await;
        match deleted {
            Ok(queued) => debug!(
                task.id = %task_id,
                stop_ms = (stopped - began).as_millis() as u64,
                queued_ms = queued.as_millis() as u64,
                delete_ms = (stopped.elapsed() - queued).as_millis() as u64,
                "container removed"
            ),
            Err(e) => warn!(task.id = %task_id, error = %e, "delete failed"),
        }
        if let Some(net) = &self.network {
            if let Err(e) = net.detach(task_id).await {
                warn!(task.id = %task_id, error = %e, "network detach failed");
            }
            net.forget(task_id).await;
        }
        // After the delete: the container no longer holds its volumes or its secrets' files.
        self.release(task_id).await;
        info!(task.id = %task_id, "task removed from node");
    }

    /// Forks, joins and waits on the blocking pool: a probe may take its whole timeout.
    async fn probe(&self, task_id: &str, probe: &HealthProbe) -> ProbeResult {
        let (runtime, id, probe) = (self.runtime.clone(), task_id.to_string(), probe.clone());
        let start_ns = shoal_proto::now_ns();
        let ran = blocking("healthcheck probe", move || {
            Ok(runtime.exec(&id, &probe.args, probe.timeout, MAX_OUTPUT_BYTES)?)
                .map(|outcome| (outcome, probe.timeout))
        })
        .await;
        let (exit_code, output) = match ran {
            // docker's words for a probe killed at its timeout.
            Ok((o, timeout)) if o.timed_out => (
                -1,
                format!(
                    "Health check exceeded timeout ({})",
                    humantime::format_duration(timeout)
                ),
            ),
            Ok((o, _)) => (o.exit_code, limit_output(&o.output)),
            Err(e) => (-1, e.to_string()),
        };
        ProbeResult {
            start_ns,
            end_ns: shoal_proto::now_ns(),
            exit_code,
            output,
        }
    }

    fn log_path(&self, task_id: &str) -> Result<PathBuf, ExecutorError> {
        runtime::validate_id(task_id)?;
        Ok(self.runtime.log_path(task_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{
        ContainerSpec, Mount, MountType, Secret, SecretReference, SecretSpec, TaskSpec,
    };

    struct Node {
        _dir: tempfile::TempDir,
        exec: RuntimeExecutor,
        files: TaskFileDirs,
    }

    /// An executor over a data dir in a temporary directory; `None` where this host cannot make
    /// a runtime (no cgroups).
    fn node() -> Option<Node> {
        let dir = tempfile::tempdir().unwrap();
        let runtime = match Runtime::new(&dir.path().join("runtime"), "shoal-test-exec") {
            Ok(r) => r,
            Err(e) => {
                eprintln!("skipped: no runtime on this host: {e}");
                return None;
            }
        };
        let images = ImageStore::open(&dir.path().join("images")).unwrap();
        let mut files = TaskFileDirs::new(&dir.path().join("secrets"));
        if !nix::unistd::geteuid().is_root() {
            eprintln!("not root: secrets go into a plain directory instead of a tmpfs");
            files = files.without_tmpfs();
        }
        let payloads = Payloads::default();
        payloads.set(
            vec![Secret {
                id: "s1".into(),
                spec: Some(SecretSpec {
                    name: "pw".into(),
                    data: b"hunter2".to_vec(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            vec![],
        );
        let exec = RuntimeExecutor::new(runtime, images, None, vec![])
            .with_payloads(payloads)
            .with_task_file_dirs(files.clone());
        Some(Node {
            _dir: dir,
            exec,
            files,
        })
    }

    fn task(secret_id: &str) -> Task {
        Task {
            id: "task1".into(),
            service_name: "db".into(),
            slot: 1,
            spec: Some(TaskSpec {
                container: Some(ContainerSpec {
                    secrets: vec![SecretReference {
                        secret_id: secret_id.into(),
                        secret_name: "pw".into(),
                        file: None,
                    }],
                    mounts: vec![Mount {
                        r#type: MountType::MountVolume as i32,
                        target: "/var/lib/db".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn only_the_last_of_overlapping_starts_and_removals_marks_a_quiet_moment() {
        let trim = Arc::new(BurstTrim::default());
        let (a, b) = (trim.enter(), trim.enter());
        drop(a);
        assert_eq!(trim.busy.load(Ordering::SeqCst), 1);
        assert_eq!(
            trim.quiet.load(Ordering::SeqCst),
            0,
            "still busy: no trim due"
        );
        drop(b);
        assert_eq!(trim.busy.load(Ordering::SeqCst), 0);
        assert_eq!(trim.quiet.load(Ordering::SeqCst), 1);
        // A new burst before the delay is over supersedes the pending trim.
        let c = trim.enter();
        drop(c);
        assert_eq!(trim.quiet.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_task_s_mounts_are_set_up_and_leave_nothing_once_released() {
        let Some(n) = node() else { return };
        let t = task("s1");
        let mounts = n.exec.mounts(&t).await.unwrap();
        let targets: Vec<_> = mounts.iter().map(|m| m.target.clone()).collect();
        assert_eq!(
            targets,
            vec![
                PathBuf::from("/var/lib/db"),
                PathBuf::from("/run/secrets/pw")
            ]
        );
        let dir = n.files.dir("task1");
        assert_eq!(std::fs::read(dir.join("secret-0")).unwrap(), b"hunter2");
        let volumes = n.exec.volumes().list("").unwrap();
        assert_eq!(volumes.len(), 1);
        assert!(volumes[0].anonymous);
        n.exec.release("task1").await;
        assert!(!dir.exists());
        assert!(!runtime::rootfs::is_mounted(&dir));
        assert!(n.exec.volumes().list("").unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_secret_without_data_rejects_the_task_and_leaves_nothing() {
        let Some(n) = node() else { return };
        let err = n.exec.mounts(&task("unknown")).await.unwrap_err();
        assert!(matches!(err, ExecutorError::Mounts { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "secret pw (unknown) is not available on this node"
        );
        assert!(!n.files.dir("task1").exists());
        assert!(n.exec.volumes().list("").unwrap().is_empty());
    }
}
