//! One actor per task: prepares the image, starts the container, watches it, and stops and removes
//! it when told. Each transition is reported once and only forward.

use std::sync::Arc;
use std::time::Duration;

use shoal_proto::v1::*;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::image::Image;
use crate::runtime::{
    devices, logs, ContainerConfig, ContainerStatus, LogConfig, Rlimit, SeccompConfig,
};
use crate::worker::Shared;

/// Default time between the stop signal and SIGKILL.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);

fn status(state: TaskState, message: &str) -> TaskStatus {
    TaskStatus {
        state: state as i32,
        timestamp: shoal_proto::now_ns(),
        message: message.to_string(),
        ..Default::default()
    }
}

fn failed(message: &str, err: String) -> TaskStatus {
    TaskStatus {
        err,
        ..status(TaskState::TaskFailed, message)
    }
}

fn grace(task: &Task) -> Duration {
    let ns = task
        .spec
        .as_ref()
        .and_then(|s| s.container.as_ref())
        .map(|c| c.stop_grace_period_ns)
        .unwrap_or(0);
    if ns > 0 {
        Duration::from_nanos(ns as u64)
    } else {
        DEFAULT_GRACE
    }
}

/// The lifecycle phases of a task on this node.
enum Phase {
    /// Not started yet: prepare and start unless told to stop first.
    Start,
    /// The container runs with this pid.
    Running,
    /// Nothing runs: wait to be removed.
    Done,
}

/// Runs a task's lifecycle until the task leaves the assignment set.
pub async fn run(
    task: Task,
    shared: Arc<Shared>,
    mut desired: watch::Receiver<i32>,
    mut remove: watch::Receiver<bool>,
) {
    let id = task.id.clone();
    let known = task.status.as_ref().map(|s| s.state).unwrap_or(0);
    let mut phase = match shared.runtime.status(&id) {
        // Re-adoption after an agent restart: the container kept running under its shim.
        Ok(ContainerStatus::Running { pid }) => {
            info!(task.id = %id, pid, "re-adopted running container");
            // Its interfaces are still there; this brings back its resolver and VIP rules.
            if let Some(net) = &shared.network {
                if let Err(e) = net.attach(&task).await {
                    warn!(task.id = %id, error = %e, "re-attaching the networks of a re-adopted task");
                }
            }
            shared.report(
                &id,
                TaskStatus {
                    pid,
                    container_id: id.clone(),
                    ..status(TaskState::TaskRunning, "started")
                },
            );
            Phase::Running
        }
        Ok(ContainerStatus::Exited { code }) => {
            report_exit(&shared, &id, code);
            Phase::Done
        }
        _ if known >= TaskState::TaskComplete as i32 => Phase::Done,
        _ if known >= TaskState::TaskStarting as i32 => {
            // The manager thinks it was started here, but no container exists (host rebooted, or
            // the data dir was wiped): it is gone.
            shared.report(
                &id,
                failed("container gone", "container not found on node".into()),
            );
            Phase::Done
        }
        _ => Phase::Start,
    };
    loop {
        phase = match phase {
            // Starting: ACCEPTED -> PREPARING (image) -> STARTING (container) -> RUNNING.
            Phase::Start => {
                let stop_first = *desired.borrow() > TaskState::TaskRunning as i32;
                if stop_first {
                    shared.report(
                        &id,
                        status(TaskState::TaskShutdown, "shutdown before start"),
                    );
                    Phase::Done
                } else {
                    tokio::select! {
                        p = start(&task, &shared) => p,
                        _ = removed(&mut remove) => {
                            destroy(&shared, &id, grace(&task)).await;
                            return;
                        }
                    }
                }
            }
            // Running: until it exits, or the manager wants it stopped or removed.
            Phase::Running => {
                tokio::select! {
                    r = shared.runtime.wait(&id) => {
                        // Addresses go back before the end is reported: the manager may hand
                        // them to another task as soon as it hears of it.
                        release_network(&shared, &id).await;
                        match r {
                            Ok(code) => report_exit(&shared, &id, code),
                            Err(e) => shared.report(&id, failed("wait failed", e.to_string())),
                        }
                        Phase::Done
                    }
                    _ = stop_wanted(&mut desired) => {
                        info!(task.id = %id, "stopping task");
                        if let Err(e) = shared.runtime.stop(&id, grace(&task)).await {
                            warn!(task.id = %id, error = %e, "stop failed");
                        }
                        release_network(&shared, &id).await;
                        shared.report(&id, status(TaskState::TaskShutdown, "shutdown"));
                        Phase::Done
                    }
                    _ = removed(&mut remove) => {
                        destroy(&shared, &id, grace(&task)).await;
                        return;
                    }
                }
            }
            // Done: keep the container (and its logs) until the task is removed.
            Phase::Done => {
                removed(&mut remove).await;
                destroy(&shared, &id, grace(&task)).await;
                return;
            }
        };
    }
}

/// Resolves once the task has left the assignment set (or the worker is gone).
async fn removed(remove: &mut watch::Receiver<bool>) {
    // The guard wait_for returns is not Send; drop it before anything else awaits.
    let _ = remove.wait_for(|r| *r).await.map(|_| ());
}

/// Resolves once the manager wants the task stopped.
async fn stop_wanted(desired: &mut watch::Receiver<i32>) {
    let _ = desired
        .wait_for(|d| *d > TaskState::TaskRunning as i32)
        .await
        .map(|_| ());
}

fn report_exit(shared: &Shared, id: &str, code: i32) {
    let st = if code == 0 {
        status(TaskState::TaskComplete, "finished")
    } else {
        TaskStatus {
            exit_code: code,
            err: format!("task: non-zero exit ({code})"),
            ..status(TaskState::TaskFailed, "failed")
        }
    };
    shared.report(
        id,
        TaskStatus {
            exit_code: code,
            ..st
        },
    );
}

/// Builds the container configuration from the task and its image, as docker does: the task's
/// command replaces the image's Entrypoint, its args replace Cmd, env is appended by key.
pub fn container_config(task: &Task, image: &Image) -> ContainerConfig {
    let spec = task.spec.clone().unwrap_or_default();
    let c = spec.container.unwrap_or_default();
    let res = spec.resources.unwrap_or_default();
    let limits = res.limits.unwrap_or_default();
    let (entrypoint, cmd) = if !c.command.is_empty() {
        (c.command.clone(), c.args.clone())
    } else if !c.args.is_empty() {
        (image.config.entrypoint.clone(), c.args.clone())
    } else {
        (image.config.entrypoint.clone(), image.config.cmd.clone())
    };
    let mut env: Vec<String> = image.config.env.clone();
    for kv in &c.env {
        let key = kv.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    let hostname = if c.hostname.is_empty() {
        task.id.chars().take(12).collect()
    } else {
        c.hostname.clone()
    };
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.push(format!("HOSTNAME={hostname}"));
    }
    let mut cfg = ContainerConfig {
        id: task.id.clone(),
        layers: image.layers.clone(),
        args: entrypoint.into_iter().chain(cmd).collect(),
        env,
        cwd: if !c.dir.is_empty() {
            c.dir.clone()
        } else if !image.config.working_dir.is_empty() {
            image.config.working_dir.clone()
        } else {
            "/".into()
        },
        user: if c.user.is_empty() {
            image.config.user.clone()
        } else {
            c.user.clone()
        },
        hostname,
        memory_bytes: limits.memory_bytes,
        nano_cpus: limits.nano_cpus,
        pids_limit: res.pids_limit,
        netns: None,
        resolv_conf: None,
        ..Default::default()
    };
    confine(&c, spec.log_driver.as_ref(), &mut cfg);
    cfg
}

/// The spec's confinement knobs, as docker applies them (validated by the manager already:
/// unknown names are ignored here rather than failing a task).
fn confine(c: &ContainerSpec, log_driver: Option<&Driver>, cfg: &mut ContainerConfig) {
    use shoal_proto::security;
    cfg.privileged = c.privileged;
    cfg.capabilities = Some(if c.privileged {
        security::CAPABILITIES.iter().map(|(n, _)| *n).collect()
    } else {
        security::effective_capabilities(&c.capability_add, &c.capability_drop)
    });
    let privileges = c.privileges.clone().unwrap_or_default();
    let seccomp = privileges.seccomp.unwrap_or_default();
    cfg.seccomp = match seccomp.mode.as_str() {
        "unconfined" => SeccompConfig::Unconfined,
        "custom" => SeccompConfig::Custom(String::from_utf8_lossy(&seccomp.profile).into_owned()),
        _ => SeccompConfig::Default,
    };
    cfg.no_new_privileges = privileges.no_new_privileges;
    cfg.read_only = c.read_only;
    cfg.groups = c.groups.clone();
    // -1 is unlimited, RLIM_INFINITY.
    let limit = |v: i64| u64::try_from(v).unwrap_or(u64::MAX);
    cfg.ulimits = c
        .ulimits
        .iter()
        .map(|u| Rlimit {
            name: u.name.clone(),
            soft: limit(u.soft),
            hard: limit(u.hard),
        })
        .collect();
    cfg.sysctls = c
        .sysctls
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    cfg.stop_signal = security::signal_number(&c.stop_signal).unwrap_or(0);
    // Validated by the manager; a value it refused cannot arrive here, so defaults are a safe fallback.
    if let Ok(rotation) = shoal_proto::spec::log_rotation(log_driver) {
        cfg.log = LogConfig {
            max_size_bytes: rotation.max_size,
            max_files: rotation.max_file.max(1),
        };
    }
}

/// The node-specific parts of the configuration: host devices (all of them when privileged)
/// and the init binary. Errors name the node and the path, for `service ps`.
fn node_config(
    c: &ContainerSpec,
    shared: &Shared,
    cfg: &mut ContainerConfig,
) -> Result<(), String> {
    let node = shared.runtime.node_name();
    if c.privileged {
        cfg.devices = devices::host_devices();
    }
    for d in &c.devices {
        let host = std::path::Path::new(&d.path_on_host);
        let inside = if d.path_in_container.is_empty() {
            host
        } else {
            std::path::Path::new(&d.path_in_container)
        };
        let perms = if d.cgroup_permissions.is_empty() {
            "rwm"
        } else {
            d.cgroup_permissions.as_str()
        };
        let dev = devices::device_node(host, inside, perms)
            .map_err(|e| format!("--device on node {node}: {e}"))?;
        cfg.devices.retain(|x| x.path != dev.path);
        cfg.devices.push(dev);
    }
    if c.init {
        let init = shared.runtime.init_path();
        if !init.is_file() {
            return Err(format!(
                "--init: no init binary at {} on node {node} (install Debian's tini package, or start shoal-agent with --init-path)",
                init.display()
            ));
        }
        cfg.init = Some(init.to_path_buf());
    }
    Ok(())
}

async fn start(task: &Task, shared: &Arc<Shared>) -> Phase {
    let id = task.id.clone();
    shared.report(&id, status(TaskState::TaskAccepted, "accepted"));
    let image_ref = task
        .spec
        .as_ref()
        .and_then(|s| s.container.as_ref())
        .map(|c| c.image.clone())
        .unwrap_or_default();
    shared.report(&id, status(TaskState::TaskPreparing, "preparing"));
    let image = match shared.image(&image_ref).await {
        Ok(i) => i,
        Err(e) => {
            shared.report(
                &id,
                TaskStatus {
                    err: format!("pull {image_ref}: {e}"),
                    ..status(TaskState::TaskRejected, "image pull failed")
                },
            );
            return Phase::Done;
        }
    };
    shared.report(&id, status(TaskState::TaskStarting, "starting"));
    let mut cfg = container_config(task, &image);
    let spec = task
        .spec
        .as_ref()
        .and_then(|s| s.container.clone())
        .unwrap_or_default();
    if let Err(e) = node_config(&spec, shared, &mut cfg) {
        shared.report(&id, failed("invalid container spec on this node", e));
        return Phase::Done;
    }
    if let Some(net) = &shared.network {
        match net.attach(task).await {
            Ok(att) => {
                cfg.netns = Some(att.netns);
                cfg.resolv_conf = Some(att.resolv_conf);
            }
            Err(e) => {
                release_network(shared, &id).await;
                shared.report(&id, failed("network attach failed", e.to_string()));
                return Phase::Done;
            }
        }
    }
    let shared2 = shared.clone();
    let started = tokio::task::spawn_blocking(move || shared2.runtime.start(&cfg)).await;
    match started {
        Ok(Ok(pid)) => {
            shared.report(
                &id,
                TaskStatus {
                    pid,
                    container_id: id.clone(),
                    ..status(TaskState::TaskRunning, "started")
                },
            );
            Phase::Running
        }
        Ok(Err(e)) => {
            release_network(shared, &id).await;
            shared.report(&id, failed("starting container failed", e.to_string()));
            Phase::Done
        }
        Err(e) => {
            release_network(shared, &id).await;
            shared.report(&id, failed("starting container failed", e.to_string()));
            Phase::Done
        }
    }
}

/// Unplugs a task from its networks (its container has ended or never started).
async fn release_network(shared: &Shared, id: &str) {
    if let Some(net) = &shared.network {
        if let Err(e) = net.detach(id).await {
            warn!(task.id = %id, error = %e, "network detach failed");
        }
    }
}

/// Stops (if needed) and deletes a task's container and network attachment. Deleting kills,
/// waits for the shim, unmounts and removes cgroups, which can take seconds: it runs on the
/// blocking pool, never on an async worker.
pub async fn destroy(shared: &Arc<Shared>, id: &str, grace: Duration) {
    if let Ok(ContainerStatus::Running { .. }) = shared.runtime.status(id) {
        if let Err(e) = shared.runtime.stop(id, grace).await {
            warn!(task.id = %id, error = %e, "stop failed");
        }
    }
    let deleting = {
        let (shared, id) = (shared.clone(), id.to_string());
        tokio::task::spawn_blocking(move || shared.runtime.delete(&id))
    };
    match deleting.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(task.id = %id, error = %e, "delete failed"),
        Err(e) => warn!(task.id = %id, error = %e, "delete task failed"),
    }
    if let Some(net) = &shared.network {
        if let Err(e) = net.detach(id).await {
            warn!(task.id = %id, error = %e, "network detach failed");
        }
        net.forget(id).await;
    }
    info!(task.id = %id, "task removed from node");
}

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
pub async fn serve_logs(shared: Arc<Shared>, req: LogsRequest, out: mpsc::Sender<AgentLogChunk>) {
    let sender = LogSender {
        request_id: req.request_id,
        out,
    };
    let (tx, mut rx) = mpsc::channel::<(String, Vec<logs::LogEntry>)>(16);
    // Dropped (so aborted) with this request, e.g. when the manager cancels it.
    let mut followers = tokio::task::JoinSet::new();
    for task_id in &req.task_ids {
        if let Err(e) = crate::runtime::validate_id(task_id) {
            let _ = sender.send(Vec::new(), false, e.to_string()).await;
            continue;
        }
        let path = shared.runtime.log_path(task_id);
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
mod logs_tests {
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
