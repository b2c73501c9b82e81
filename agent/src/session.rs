//! The agent's session with the dispatcher: one bidirectional stream, re-established with backoff
//! whenever it breaks. Registration, heartbeats, assignments in, status updates and logs out.

use std::sync::Arc;
use std::time::Duration;

use shoal_proto::pki;
use shoal_proto::v1::dispatcher_client::DispatcherClient;
use shoal_proto::v1::*;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::certs::NodeCerts;
use crate::join::Joined;
use crate::manager_proc::ManagerProc;
use crate::worker::Worker;

/// Errors of one session attempt.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Connecting failed.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// The manager ended or refused the stream.
    #[error("dispatcher: {}", .0.message())]
    Rpc(#[from] tonic::Status),
    /// The manager closed the stream.
    #[error("the manager closed the session")]
    Closed,
    /// The node's certificate or trusted CAs changed: reconnect with the new ones.
    #[error("credentials changed")]
    CredentialsChanged,
}

/// Log chunks waiting for the stream; when full, log requests wait (never heartbeats).
const LOG_QUEUE: usize = 32;

/// Runs sessions until shutdown, reconnecting with backoff.
pub async fn run(
    joined: Joined,
    certs: Arc<NodeCerts>,
    description: NodeDescription,
    worker: Worker,
    manager: ManagerProc,
    mut status_rx: mpsc::UnboundedReceiver<TaskStatusUpdate>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SessionError> {
    let mut backoff = Duration::from_millis(100);
    // Managers to try, in order; after a failure the next one goes first, so an agent whose first
    // manager is a follower (which refuses sessions) or gone reaches the leader.
    let mut managers = joined.state.managers.clone();
    // Connecting and waiting for SessionEstablished happen outside the session's own select:
    // shutdown must end them too (a manager that accepts and never answers held the agent).
    let mut stop = shutdown.clone();
    loop {
        let attempt = session_once(
            &mut managers,
            &certs,
            &description,
            &worker,
            &manager,
            &mut status_rx,
            &mut shutdown,
        );
        let result = tokio::select! {
            r = attempt => r,
            _ = stop.changed() => return Ok(()),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(SessionError::CredentialsChanged) => {
                info!("reconnecting with the node's new credentials");
                backoff = Duration::from_millis(100);
                continue;
            }
            Err(SessionError::Rpc(s)) if s.code() == tonic::Code::PermissionDenied => {
                warn!(error = %s.message(), "the cluster refused this node");
                return Err(SessionError::Rpc(s));
            }
            Err(e) => {
                warn!(error = %e, "session lost; reconnecting");
                if managers.len() > 1 {
                    managers.rotate_left(1);
                    // Another manager answers at once: no need to wait long.
                    backoff = Duration::from_millis(50);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn session_once(
    managers: &mut Vec<String>,
    certs: &NodeCerts,
    description: &NodeDescription,
    worker: &Worker,
    manager: &ManagerProc,
    status_rx: &mut mpsc::UnboundedReceiver<TaskStatusUpdate>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), SessionError> {
    // Subscribed before connecting: a change during the handshake still ends this session.
    let mut credentials = certs.live().subscribe_identity();
    credentials.mark_unchanged();
    // Reads the current certificate and CAs at every handshake (renewal, CA rotation).
    let config = Arc::new(certs.live().client_config()?);
    let channel = pki::connect_any(managers, config).await?;
    // Two queues: control messages (registration, heartbeats, task status) and log chunks. The
    // stream always takes control messages first, so no log consumer can hold up a heartbeat.
    let (out_tx, out_rx) = mpsc::channel::<AgentMessage>(1024);
    let (log_tx, log_rx) = mpsc::channel::<AgentLogChunk>(LOG_QUEUE);
    out_tx
        .send(AgentMessage {
            msg: Some(agent_message::Msg::Register(AgentRegister {
                description: Some(description.clone()),
            })),
        })
        .await
        .map_err(|_| SessionError::Closed)?;
    let mut inbound = DispatcherClient::new(channel)
        .max_encoding_message_size(shoal_proto::limits::MAX_AGENT_MESSAGE_BYTES)
        .max_decoding_message_size(shoal_proto::limits::MAX_ASSIGNMENTS_MESSAGE_BYTES)
        .session(outbound(out_rx, log_rx))
        .await?
        .into_inner();
    let first = inbound.message().await?.ok_or(SessionError::Closed)?;
    let period = match first.msg {
        Some(manager_message::Msg::Session(s)) => {
            info!(node.id = %s.node_id, session = %s.session_id, "session established");
            worker.set_node_id(&s.node_id);
            certs.learn_managers(&s.managers);
            // Learn managers that joined since; keep the one that answered first.
            for m in s.managers {
                if !managers.contains(&m) {
                    managers.push(m);
                }
            }
            Duration::from_nanos(s.heartbeat_period_ns.max(100_000_000) as u64)
        }
        _ => return Err(SessionError::Closed),
    };
    // The manager may have missed updates while we were away: resend what we know.
    let known = worker.current_statuses();
    if !known.is_empty() {
        let _ = out_tx
            .send(AgentMessage {
                msg: Some(agent_message::Msg::Status(AgentTaskStatus {
                    updates: known,
                })),
            })
            .await;
    }
    // Its own task: whatever the loop below awaits (network views, a full status queue) cannot
    // delay a heartbeat.
    let _heartbeats = AbortOnDrop(tokio::spawn(heartbeats(out_tx.clone(), period / 2)));
    // The assignment set as of the last message applied; deltas apply onto it. A new session
    // starts with a whole set.
    let mut held: Option<Assignments> = None;
    loop {
        tokio::select! {
            msg = inbound.message() => {
                let msg = msg?.ok_or(SessionError::Closed)?;
                match msg.msg {
                    Some(manager_message::Msg::Assignments(a)) => {
                        debug!(version = a.version, tasks = a.tasks.len(), networks = a.networks.len(), "assignments");
                        held = Some(a);
                        if let Some(a) = &held {
                            hand_on(worker, a).await;
                        }
                    }
                    Some(manager_message::Msg::AssignmentsDelta(d)) => {
                        // After a failed delta nothing is acted on until the whole set comes.
                        let Some(set) = held.as_mut() else { continue };
                        let (have, base, version) = (set.version, d.base, d.version);
                        match shoal_proto::assignments::apply(set, d) {
                            Ok(()) => {
                                debug!(base, version, "assignments delta");
                                hand_on(worker, set).await;
                            }
                            Err(e) => {
                                warn!(error = %e, "cannot apply an assignments delta: asking for the whole set");
                                held = None;
                                let resync = AgentResync { have, reason: e.to_string() };
                                out_tx
                                    .send(AgentMessage { msg: Some(agent_message::Msg::Resync(resync)) })
                                    .await
                                    .map_err(|_| SessionError::Closed)?;
                            }
                        }
                    }
                    Some(manager_message::Msg::Logs(req)) => {
                        worker.logs(req, log_tx.clone());
                    }
                    Some(manager_message::Msg::CancelLogs(c)) => worker.cancel_logs(c.request_id),
                    Some(manager_message::Msg::Promote(p)) => {
                        info!(managers = ?p.managers, "node promoted: starting a manager on this host");
                        manager.promote(p.token, p.managers);
                    }
                    Some(manager_message::Msg::StopManager(_)) => manager.stop(),
                    // `volume ls|rm|prune`: answered on its own task (it walks directories).
                    Some(manager_message::Msg::Volumes(req)) => {
                        let (worker, out) = (worker.clone(), out_tx.clone());
                        tokio::spawn(async move {
                            let reply = worker.volumes(req).await;
                            let _ = out
                                .send(AgentMessage { msg: Some(agent_message::Msg::Volumes(reply)) })
                                .await;
                        });
                    }
                    Some(manager_message::Msg::Trust(t)) => certs.trust(&t),
                    // Sent again when the managers change: learn the new ones for failover.
                    Some(manager_message::Msg::Session(s)) => {
                        certs.learn_managers(&s.managers);
                        for m in s.managers {
                            if !managers.contains(&m) {
                                debug!(manager = %m, "learnt a new manager");
                                managers.push(m);
                            }
                        }
                    }
                    None => {}
                }
            }
            Some(first) = status_rx.recv() => {
                let mut updates = vec![first];
                while let Ok(u) = status_rx.try_recv() {
                    updates.push(u);
                    if updates.len() >= 500 { break; }
                }
                out_tx
                    .send(AgentMessage { msg: Some(agent_message::Msg::Status(AgentTaskStatus { updates })) })
                    .await
                    .map_err(|_| SessionError::Closed)?;
            }
            _ = shutdown.changed() => return Ok(()),
            _ = credentials.changed() => return Err(SessionError::CredentialsChanged),
        }
    }
}

/// Hands a complete assignment set on: network views first (a task's attach needs the views of
/// its networks), then secrets and configs, then the tasks.
async fn hand_on(worker: &Worker, a: &Assignments) {
    if let Some(net) = worker.networks() {
        if let Err(e) = net
            .apply(
                &a.networks,
                &a.node_attachments,
                &a.mesh_addr,
                &a.mesh_peers,
            )
            .await
        {
            warn!(error = %e, "applying network views");
        }
    }
    worker.set_payloads(a.secrets.clone(), a.configs.clone());
    worker.assign(a.tasks.clone());
}

/// Aborts a task when dropped (the session it belongs to has ended).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends a heartbeat every `every` until the session's control queue closes.
async fn heartbeats(out: mpsc::Sender<AgentMessage>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let beat = AgentMessage {
            msg: Some(agent_message::Msg::Heartbeat(AgentHeartbeat {})),
        };
        if out.send(beat).await.is_err() {
            return;
        }
    }
}

/// The session's outgoing stream: every control message that is ready goes before any log
/// chunk. It ends when the control queue closes (the session is over); log chunks still queued
/// then are dropped, which ends their requests.
fn outbound(
    control: mpsc::Receiver<AgentMessage>,
    logs: mpsc::Receiver<AgentLogChunk>,
) -> impl futures::Stream<Item = AgentMessage> + Send + 'static {
    futures::stream::unfold(
        (control, Some(logs)),
        |(mut control, mut logs)| async move {
            loop {
                let msg = match logs.as_mut() {
                    Some(l) => tokio::select! {
                        biased;
                        m = control.recv() => m?,
                        c = l.recv() => match c {
                            Some(c) => AgentMessage { msg: Some(agent_message::Msg::Logs(c)) },
                            None => {
                                logs = None;
                                continue;
                            }
                        },
                    },
                    None => control.recv().await?,
                };
                return Some((msg, (control, logs)));
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn is_heartbeat(m: &AgentMessage) -> bool {
        matches!(m.msg, Some(agent_message::Msg::Heartbeat(_)))
    }

    #[tokio::test]
    async fn control_messages_go_before_queued_log_chunks() {
        let (ctl_tx, ctl_rx) = mpsc::channel(4);
        let (log_tx, log_rx) = mpsc::channel(2);
        for id in [1, 2] {
            log_tx
                .try_send(AgentLogChunk {
                    request_id: id,
                    ..Default::default()
                })
                .unwrap();
        }
        // The log queue is full: a log request trying to send more waits, nothing else does.
        assert!(log_tx.try_send(AgentLogChunk::default()).is_err());
        ctl_tx
            .try_send(AgentMessage {
                msg: Some(agent_message::Msg::Heartbeat(AgentHeartbeat {})),
            })
            .unwrap();
        let mut out = Box::pin(outbound(ctl_rx, log_rx));
        assert!(is_heartbeat(&out.next().await.unwrap()));
        assert!(matches!(
            out.next().await.unwrap().msg,
            Some(agent_message::Msg::Logs(AgentLogChunk {
                request_id: 1,
                ..
            }))
        ));
        // Closing the control queue ends the stream even with log chunks left.
        drop(ctl_tx);
        assert!(out.next().await.is_none());
    }

    #[tokio::test]
    async fn heartbeats_keep_their_period_while_a_log_request_is_stuck() {
        let (ctl_tx, ctl_rx) = mpsc::channel(16);
        let (log_tx, log_rx) = mpsc::channel(1);
        let _beats = AbortOnDrop(tokio::spawn(heartbeats(ctl_tx, Duration::from_millis(50))));
        // A log request producing without end: the queue stays full the whole time.
        let _producer = AbortOnDrop(tokio::spawn(async move {
            while log_tx.send(AgentLogChunk::default()).await.is_ok() {}
        }));
        let mut out = Box::pin(outbound(ctl_rx, log_rx));
        let started = tokio::time::Instant::now();
        let mut beats = 0;
        let mut chunks = 0;
        let deadline = Duration::from_secs(5);
        while beats < 5 {
            let msg = tokio::time::timeout_at(started + deadline, out.next())
                .await
                .expect("five heartbeats within the deadline")
                .unwrap();
            if is_heartbeat(&msg) {
                beats += 1;
            } else {
                chunks += 1;
            }
        }
        assert!(chunks > 0, "logs flow too");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "heartbeats were held up"
        );
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod dispatcher_tests;
