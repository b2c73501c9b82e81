//! One actor per task: prepares the image, starts the container, watches it, and stops and removes
//! it when told. Each transition is reported once and only forward.

use std::sync::Arc;
use std::time::Duration;

use shoal_proto::v1::*;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::image::Image;
use crate::runtime::{logs, ContainerConfig, ContainerStatus};
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
    ContainerConfig {
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
    }
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

/// Stops (if needed) and deletes a task's container and network attachment.
pub async fn destroy(shared: &Shared, id: &str, grace: Duration) {
    if let Ok(ContainerStatus::Running { .. }) = shared.runtime.status(id) {
        if let Err(e) = shared.runtime.stop(id, grace).await {
            warn!(task.id = %id, error = %e, "stop failed");
        }
    }
    if let Err(e) = shared.runtime.delete(id) {
        warn!(task.id = %id, error = %e, "delete failed");
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

/// Serves one log request for the tasks of it this node has.
pub async fn serve_logs(shared: Arc<Shared>, req: LogsRequest, out: mpsc::Sender<AgentMessage>) {
    let send = |lines: Vec<LogLine>, eof: bool, error: String| {
        let out = out.clone();
        async move {
            out.send(AgentMessage {
                msg: Some(agent_message::Msg::Logs(AgentLogChunk {
                    request_id: req.request_id,
                    lines,
                    eof,
                    error,
                })),
            })
            .await
            .is_ok()
        }
    };
    let (tx, mut rx) = mpsc::channel::<(String, logs::LogEntry)>(1024);
    let mut followers = Vec::new();
    for task_id in &req.task_ids {
        let path = shared.runtime.log_path(task_id);
        if !path.exists() {
            continue;
        }
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        match logs::read_tail(&path, req.tail) {
            Ok(entries) => {
                for chunk in entries.chunks(500) {
                    let lines = chunk.iter().cloned().map(|e| to_line(task_id, e)).collect();
                    if !send(lines, false, String::new()).await {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = send(Vec::new(), false, format!("{task_id}: {e}")).await;
            }
        }
        if req.follow {
            let (etx, mut erx) = mpsc::channel(256);
            let tx = tx.clone();
            let tid = task_id.clone();
            followers.push(tokio::spawn(async move {
                let fwd = tokio::spawn(async move {
                    while let Some(e) = erx.recv().await {
                        if tx.send((tid.clone(), e)).await.is_err() {
                            return;
                        }
                    }
                });
                logs::follow(&path, offset, etx).await;
                let _ = fwd.await;
            }));
        }
    }
    drop(tx);
    while let Some((task_id, e)) = rx.recv().await {
        let mut lines = vec![to_line(&task_id, e)];
        while let Ok((t, e)) = rx.try_recv() {
            lines.push(to_line(&t, e));
            if lines.len() >= 500 {
                break;
            }
        }
        if !send(lines, false, String::new()).await {
            for f in followers {
                f.abort();
            }
            return;
        }
    }
    let _ = send(Vec::new(), true, String::new()).await;
}
