//! The session against an in-process dispatcher: a tonic `DispatcherServer` on a loopback
//! listener with the cluster's mutual TLS (a CA made here), scripted by the test, and the real
//! session, worker and task actors over the fake executor. Nothing here needs root.

use std::sync::Mutex;

use shoal_proto::pki::{CertRole, Identity};
use shoal_proto::v1::dispatcher_server::{Dispatcher, DispatcherServer};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};

use super::*;
use crate::executor::fake::{task, Call, FakeExecutor};
use crate::join::AgentState;
use crate::manager_proc::ManagerSettings;

/// How long any one expected event may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);

/// The heartbeat period the fake dispatcher announces (the agent beats every half of it).
const PERIOD: Duration = Duration::from_millis(200);

/// The manager's answers on one session.
type Outbound = mpsc::UnboundedSender<Result<ManagerMessage, tonic::Status>>;

/// One session the agent opened, as the test sees it.
struct Opened {
    inbound: tonic::Streaming<AgentMessage>,
    outbound: Outbound,
    /// Fingerprint of the client certificate the agent presented.
    peer: Option<String>,
}

/// One call of `Session` reaching the fake dispatcher.
enum Attempt {
    /// Accepted: the test drives it.
    Opened(Box<Opened>),
    /// Refused with the scripted code, at this instant.
    Refused(Instant),
}

/// A dispatcher handing every session to the test, or refusing it with a scripted code.
struct FakeDispatcher {
    attempts: mpsc::UnboundedSender<Attempt>,
    refuse: Arc<Mutex<Option<tonic::Code>>>,
}

#[tonic::async_trait]
impl Dispatcher for FakeDispatcher {
    type SessionStream = UnboundedReceiverStream<Result<ManagerMessage, tonic::Status>>;

    async fn session(
        &self,
        req: tonic::Request<tonic::Streaming<AgentMessage>>,
    ) -> Result<tonic::Response<Self::SessionStream>, tonic::Status> {
        let refuse = *self.refuse.lock().unwrap();
        if let Some(code) = refuse {
            let _ = self.attempts.send(Attempt::Refused(Instant::now()));
            return Err(tonic::Status::new(code, "refused by the test"));
        }
        let peer = req
            .peer_certs()
            .and_then(|c| c.first().map(|c| pki::fingerprint_der(c.as_ref())));
        let (outbound, rx) = mpsc::unbounded_channel();
        let _ = self.attempts.send(Attempt::Opened(Box::new(Opened {
            inbound: req.into_inner(),
            outbound,
            peer,
        })));
        Ok(tonic::Response::new(UnboundedReceiverStream::new(rx)))
    }
}

/// A running agent session against the fake dispatcher.
struct Harness {
    attempts: mpsc::UnboundedReceiver<Attempt>,
    refuse: Arc<Mutex<Option<tonic::Code>>>,
    fake: Arc<FakeExecutor>,
    certs: Arc<NodeCerts>,
    ca: Identity,
    identity: Identity,
    shutdown: watch::Sender<bool>,
    agent: tokio::task::JoinHandle<Result<(), SessionError>>,
    _server: AbortOnDrop,
    _dir: tempfile::TempDir,
}

fn description() -> NodeDescription {
    NodeDescription {
        hostname: "node-under-test".into(),
        os: "linux".into(),
        agent_version: "test".into(),
        ..Default::default()
    }
}

/// The fingerprint of a certificate chain's leaf, as the dispatcher sees it.
fn leaf_fingerprint(id: &Identity) -> String {
    pki::fingerprint_pem(pki::leaf_pem(&id.cert_pem)).unwrap()
}

/// One fake dispatcher listening on loopback with a manager certificate of `ca`.
struct Served {
    addr: String,
    attempts: mpsc::UnboundedReceiver<Attempt>,
    refuse: Arc<Mutex<Option<tonic::Code>>>,
    server: AbortOnDrop,
}

async fn serve(ca: &Identity, refuse: Option<tonic::Code>) -> Served {
    let server_id = pki::issue(ca, "m1", CertRole::Manager, Duration::from_secs(3600)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (attempts_tx, attempts) = mpsc::unbounded_channel();
    let refuse = Arc::new(Mutex::new(refuse));
    let dispatcher = FakeDispatcher {
        attempts: attempts_tx,
        refuse: refuse.clone(),
    };
    let server = tonic::transport::Server::builder()
        .tls_config(pki::server_tls(&ca.cert_pem, &server_id))
        .unwrap()
        .add_service(DispatcherServer::new(dispatcher))
        .serve_with_incoming(TcpListenerStream::new(listener));
    let server = AbortOnDrop(tokio::spawn(async move {
        let _ = server.await;
    }));
    Served {
        addr,
        attempts,
        refuse,
        server,
    }
}

/// Starts the fake dispatcher (refusing every session with `refuse`, if given) and the agent's
/// session loop against it.
async fn start(refuse: Option<tonic::Code>) -> Harness {
    let ca = pki::generate_ca("session-test").unwrap();
    let identity = pki::issue(&ca, "n1", CertRole::Worker, Duration::from_secs(3600)).unwrap();
    let Served {
        addr,
        attempts,
        refuse,
        server,
    } = serve(&ca, refuse).await;
    let dir = tempfile::tempdir().unwrap();
    let joined = Joined {
        state: AgentState {
            node_id: "n1".into(),
            managers: vec![addr],
        },
        ca_pem: ca.cert_pem.clone(),
        identity: identity.clone(),
    };
    let certs = NodeCerts::new(&joined, dir.path()).unwrap();
    let fake = Arc::new(FakeExecutor::default());
    let (worker, status_rx) = Worker::with_executor(fake.clone(), None);
    let manager = ManagerProc::start(ManagerSettings {
        agent_data_dir: dir.path().to_path_buf(),
        advertise_addr: None,
        port: 0,
        exe: None,
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let agent = tokio::spawn(run(
        joined,
        certs.clone(),
        description(),
        worker,
        manager,
        status_rx,
        shutdown_rx,
    ));
    Harness {
        attempts,
        refuse,
        fake,
        certs,
        ca,
        identity,
        shutdown,
        agent,
        _server: server,
        _dir: dir,
    }
}

impl Harness {
    /// The next call of `Session`.
    async fn next_attempt(&mut self) -> Attempt {
        tokio::time::timeout(DEADLINE, self.attempts.recv())
            .await
            .expect("a session attempt within the deadline")
            .expect("the fake dispatcher is gone")
    }

    /// The next session the agent opens (none may be refused before it).
    async fn opened(&mut self) -> Opened {
        match self.next_attempt().await {
            Attempt::Opened(o) => *o,
            Attempt::Refused(_) => panic!("expected an accepted session, got a refused one"),
        }
    }

    /// The next session, its first message read (which must be the registration).
    async fn registered(&mut self) -> Opened {
        let mut s = self.opened().await;
        assert!(matches!(s.first().await, agent_message::Msg::Register(_)));
        s
    }

    /// The next session, registered and established.
    async fn established(&mut self) -> Opened {
        let s = self.registered().await;
        s.establish();
        s
    }

    /// Scripts how the next sessions are answered.
    fn refuse(&self, code: Option<tonic::Code>) {
        *self.refuse.lock().unwrap() = code;
    }

    /// Shuts the agent down and returns what its session loop returned.
    async fn stop(self) -> Result<(), SessionError> {
        let _ = self.shutdown.send(true);
        tokio::time::timeout(DEADLINE, self.agent)
            .await
            .expect("the session loop ends at shutdown")
            .expect("the session loop panicked")
    }
}

impl Opened {
    /// The next message the agent sent, heartbeats included.
    async fn first(&mut self) -> agent_message::Msg {
        let msg = tokio::time::timeout(DEADLINE, self.inbound.message())
            .await
            .expect("a message within the deadline")
            .expect("the agent's stream failed")
            .expect("the agent closed its stream");
        msg.msg.expect("an empty agent message")
    }

    /// The next message the agent sent that is not a heartbeat.
    async fn next(&mut self) -> agent_message::Msg {
        loop {
            match self.first().await {
                agent_message::Msg::Heartbeat(_) => continue,
                m => return m,
            }
        }
    }

    /// Reads status messages until task `id` is reported in `want`; returns every update read.
    async fn until_status(&mut self, id: &str, want: TaskState) -> Vec<TaskStatusUpdate> {
        let mut seen = Vec::new();
        loop {
            if let agent_message::Msg::Status(s) = self.next().await {
                let done = s.updates.iter().any(|u| {
                    u.task_id == id && u.status.as_ref().is_some_and(|st| st.state == want as i32)
                });
                seen.extend(s.updates);
                if done {
                    return seen;
                }
            }
        }
    }

    fn send(&self, msg: manager_message::Msg) {
        self.outbound
            .send(Ok(ManagerMessage { msg: Some(msg) }))
            .expect("the session's response stream is gone");
    }

    /// Answers the registration as the dispatcher does.
    fn establish(&self) {
        self.send(manager_message::Msg::Session(SessionEstablished {
            node_id: "n1".into(),
            heartbeat_period_ns: PERIOD.as_nanos() as i64,
            session_id: "s1".into(),
            managers: Vec::new(),
        }));
    }

    fn assign(&self, tasks: Vec<Task>) {
        self.assign_version(tasks, 1);
    }

    /// A whole assignment set of version `version`.
    fn assign_version(&self, tasks: Vec<Task>, version: u64) {
        self.send(manager_message::Msg::Assignments(Assignments {
            tasks,
            version,
            ..Default::default()
        }));
    }

    /// A delta from `base` adding `tasks` and removing `removed`.
    fn delta(&self, base: u64, tasks: Vec<Task>, removed: &[&str]) {
        self.send(manager_message::Msg::AssignmentsDelta(AssignmentsDelta {
            base,
            version: base + 1,
            tasks,
            removed_tasks: removed.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }));
    }

    /// Waits until the agent has closed its side of this session.
    async fn until_closed(mut self) {
        let end = tokio::time::timeout(DEADLINE, async {
            loop {
                match self.inbound.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => return,
                }
            }
        })
        .await;
        assert!(end.is_ok(), "the agent kept the old session open");
    }
}

#[tokio::test]
async fn registers_with_its_description_then_beats_at_the_announced_period() {
    let mut h = start(None).await;
    let mut s = h.opened().await;
    assert_eq!(s.peer, Some(leaf_fingerprint(&h.identity)));
    // Nothing, not even a heartbeat, before the registration.
    match s.first().await {
        agent_message::Msg::Register(r) => assert_eq!(r.description, Some(description())),
        other => panic!("first message is {other:?}"),
    }
    let established = Instant::now();
    s.establish();
    for _ in 0..3 {
        assert!(matches!(s.first().await, agent_message::Msg::Heartbeat(_)));
    }
    // Three beats at half the period: the first at once, the third one period later (the
    // bound leaves room for a loaded machine, and is still far below any default period).
    assert!(established.elapsed() < PERIOD * 10);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn a_session_not_established_first_is_dropped_and_opened_again() {
    let mut h = start(None).await;
    let s = h.registered().await;
    // Assignments before SessionEstablished: the agent must not act on them.
    s.assign(vec![task("t1")]);
    s.until_closed().await;
    let _again = h.registered().await;
    assert_eq!(h.fake.count(|c| matches!(c, Call::Start(_))), 0);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn assignments_reach_the_worker_and_statuses_come_back() {
    let mut h = start(None).await;
    let mut s = h.established().await;
    s.assign(vec![task("t1")]);
    let seen = s.until_status("t1", TaskState::TaskRunning).await;
    assert!(seen.iter().all(|u| u.task_id == "t1"));
    assert_eq!(h.fake.count(|c| *c == Call::Start("t1".into())), 1);
    // The container exits: that comes back too.
    h.fake.exit("t1", 0);
    s.until_status("t1", TaskState::TaskComplete).await;
    h.stop().await.unwrap();
}

#[tokio::test]
async fn after_a_broken_stream_the_agent_registers_again_and_resends_known_statuses() {
    let mut h = start(None).await;
    let mut s = h.established().await;
    s.assign(vec![task("t1")]);
    s.until_status("t1", TaskState::TaskRunning).await;

    // The manager fails the stream.
    s.outbound
        .send(Err(tonic::Status::unavailable("leader lost")))
        .unwrap();
    drop(s);
    let mut s = h.registered().await;
    s.establish();
    match s.next().await {
        agent_message::Msg::Status(st) => {
            let t1 = st.updates.iter().find(|u| u.task_id == "t1").expect("t1");
            assert_eq!(
                t1.status.as_ref().map(|st| st.state),
                Some(TaskState::TaskRunning as i32)
            );
        }
        other => panic!("expected the known statuses first, got {other:?}"),
    }

    // The manager just ends the stream: the same again.
    drop(s);
    let mut s = h.established().await;
    s.until_status("t1", TaskState::TaskRunning).await;
    // Reconnecting touched no container.
    assert_eq!(h.fake.count(|c| *c == Call::Start("t1".into())), 1);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn permission_denied_ends_the_session_loop_without_retrying() {
    let mut h = start(Some(tonic::Code::PermissionDenied)).await;
    assert!(matches!(h.next_attempt().await, Attempt::Refused(_)));
    let ended = tokio::time::timeout(DEADLINE, &mut h.agent)
        .await
        .expect("the session loop ends on its own")
        .unwrap();
    match ended {
        Err(SessionError::Rpc(s)) => assert_eq!(s.code(), tonic::Code::PermissionDenied),
        other => panic!("the loop returned {other:?}"),
    }
    assert!(h.attempts.try_recv().is_err(), "no second attempt");
}

#[tokio::test]
async fn unauthenticated_is_retried_with_growing_backoff_until_accepted() {
    let mut h = start(Some(tonic::Code::Unauthenticated)).await;
    let mut refused = Vec::new();
    while refused.len() < 3 {
        match h.next_attempt().await {
            Attempt::Refused(at) => refused.push(at),
            Attempt::Opened(_) => panic!("accepted while refusing"),
        }
    }
    // 100 ms after the first refusal, then 200 ms: backing off, not spinning.
    assert!(refused[1] - refused[0] >= Duration::from_millis(100));
    assert!(refused[2] - refused[1] >= Duration::from_millis(200));
    h.refuse(None);
    let s = loop {
        if let Attempt::Opened(s) = h.next_attempt().await {
            break s;
        }
    };
    drop(s);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn a_new_certificate_reopens_the_session_with_it() {
    let mut h = start(None).await;
    let old = h.established().await;
    let renewed = pki::issue(&h.ca, "n1", CertRole::Worker, Duration::from_secs(3600)).unwrap();
    h.certs.live().update(Some(renewed.clone()), None).unwrap();
    let mut s = h.opened().await;
    assert_eq!(s.peer, Some(leaf_fingerprint(&renewed)));
    assert_ne!(s.peer, Some(leaf_fingerprint(&h.identity)));
    assert!(matches!(s.first().await, agent_message::Msg::Register(_)));
    old.until_closed().await;
    h.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_ends_the_loop_while_waiting_for_session_established() {
    let mut h = start(None).await;
    let s = h.registered().await;
    // The dispatcher never answers the registration.
    h.stop().await.unwrap();
    s.until_closed().await;
}

#[tokio::test]
async fn managers_named_by_session_established_are_tried_next_after_a_failure() {
    let mut h = start(None).await;
    let mut other = serve(&h.ca, None).await;
    let first = h.registered().await;
    first.send(manager_message::Msg::Session(SessionEstablished {
        node_id: "n1".into(),
        heartbeat_period_ns: PERIOD.as_nanos() as i64,
        session_id: "s1".into(),
        managers: vec![other.addr.clone()],
    }));
    // The first manager ends the session (a follower now): the agent goes to the one it learnt.
    drop(first);
    let opened = tokio::time::timeout(DEADLINE, other.attempts.recv())
        .await
        .expect("a session with the learnt manager")
        .expect("the second dispatcher is gone");
    let Attempt::Opened(mut s) = opened else {
        panic!("the second dispatcher refused")
    };
    assert!(matches!(s.first().await, agent_message::Msg::Register(_)));
    assert!(
        h.attempts.try_recv().is_err(),
        "the first manager was not tried first"
    );
    drop(other.server);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn deltas_are_applied_onto_the_whole_set() {
    let mut h = start(None).await;
    let mut s = h.established().await;
    s.assign_version(vec![task("t1")], 1);
    s.until_status("t1", TaskState::TaskRunning).await;
    // t2 joins; t1 stays (a delta names only what changed).
    s.delta(1, vec![task("t2")], &[]);
    s.until_status("t2", TaskState::TaskRunning).await;
    // t1 leaves the set: the worker removes it, t2 keeps running.
    s.delta(2, Vec::new(), &["t1"]);
    let deadline = Instant::now() + DEADLINE;
    while h
        .fake
        .count(|c| matches!(c, Call::Remove(id, _) if id == "t1"))
        == 0
    {
        assert!(Instant::now() < deadline, "t1 was not removed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.fake.count(|c| *c == Call::Start("t2".into())), 1);
    assert_eq!(
        h.fake
            .count(|c| matches!(c, Call::Remove(id, _) if id == "t2")),
        0
    );
    h.stop().await.unwrap();
}

#[tokio::test]
async fn a_delta_for_another_version_asks_for_the_whole_set_and_nothing_is_acted_on_until_then() {
    let mut h = start(None).await;
    let mut s = h.established().await;
    s.assign_version(vec![task("t1")], 1);
    s.until_status("t1", TaskState::TaskRunning).await;
    // A delta made for version 5: the agent holds 1.
    s.delta(5, vec![task("t2")], &[]);
    loop {
        if let agent_message::Msg::Resync(r) = s.next().await {
            assert_eq!(r.have, 1);
            break;
        }
    }
    // A delta that would fit version 1 is not acted on either: the set was dropped.
    s.delta(1, vec![task("t4")], &[]);
    s.assign_version(vec![task("t1"), task("t3")], 7);
    s.until_status("t3", TaskState::TaskRunning).await;
    assert_eq!(h.fake.count(|c| *c == Call::Start("t2".into())), 0);
    assert_eq!(h.fake.count(|c| *c == Call::Start("t4".into())), 0);
    // And from the new set on, deltas apply again.
    s.delta(7, vec![task("t5")], &[]);
    s.until_status("t5", TaskState::TaskRunning).await;
    h.stop().await.unwrap();
}
