use std::path::Path;

use raft::Storage as _;
use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::{Service, ServiceSpec, StoreAction};

use super::*;
use crate::store::{Event, Object};

fn config(dir: &Path, snapshot_interval: u64) -> RaftConfig {
    RaftConfig {
        tick: Duration::from_millis(20),
        snapshot_interval,
        ..RaftConfig::new(1, dir.to_path_buf())
    }
}

fn create(i: usize) -> Vec<StoreAction> {
    vec![StoreAction {
        action: Some(Action::CreateService(Service {
            id: format!("s{i}"),
            spec: Some(ServiceSpec {
                name: format!("svc{i}"),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        })),
    }]
}

fn start(dir: &Path, snapshot_interval: u64) -> (Store, RaftNode) {
    let store = Store::open(&dir.join("store")).expect("open store");
    let node = RaftNode::start(config(dir, snapshot_interval), store.clone()).expect("start raft");
    (store, node)
}

/// Asserts services `s0..s{n}` each exist exactly once, under their own name.
fn assert_services(store: &Store, n: usize) {
    store.read(|s| {
        assert_eq!(s.services().count(), n);
        for i in 0..n {
            let svc = s
                .service_by_name(&format!("svc{i}"))
                .expect("service present");
            assert_eq!(svc.id, format!("s{i}"));
        }
    });
}

#[tokio::test]
async fn single_node_leads_at_once_and_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let applied;
    {
        let (store, node) = start(dir.path(), DEFAULT_SNAPSHOT_INTERVAL);
        assert!(
            node.status().is_leader,
            "a lone voter elects itself in start()"
        );
        assert!(*node.leadership().borrow());

        // Concurrent proposals: they are drained and persisted in batches.
        let results = futures::future::join_all((0..100).map(|i| store.propose(create(i)))).await;
        for r in results {
            r.expect("proposal applied");
        }
        assert_services(&store, 100);
        let status = node.status();
        assert!(status.commit >= 101, "{status:?}");
        applied = store.applied_index();
        assert_eq!(status.applied, applied);
        node.shutdown().await;
        assert!(!*node.leadership().borrow());
        let err = store.propose(create(999)).await.expect_err("stopped");
        assert!(
            matches!(err, StoreError::NotLeader { .. } | StoreError::Stopped),
            "{err}"
        );
    }

    let (store, node) = start(dir.path(), DEFAULT_SNAPSHOT_INTERVAL);
    assert!(
        node.status().is_leader,
        "a lone voter re-elects itself at once"
    );
    assert_eq!(store.applied_index(), applied);
    assert_services(&store, 100);

    store.propose(create(100)).await.expect("new write");
    assert_services(&store, 101);
    let err = store.propose(create(5)).await.expect_err("duplicate");
    assert_eq!(err.to_string(), r#"service id "s5" already exists"#);
    node.shutdown().await;
}

#[tokio::test]
async fn lost_store_is_rebuilt_from_the_log_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, node) = start(dir.path(), DEFAULT_SNAPSHOT_INTERVAL);
        for i in 0..20 {
            store.propose(create(i)).await.expect("proposal applied");
        }
        node.shutdown().await;
    }
    std::fs::remove_dir_all(dir.path().join("store")).expect("wipe store");
    let (store, node) = start(dir.path(), DEFAULT_SNAPSHOT_INTERVAL);
    // The replay runs in the task; wait for it to catch up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.read(|s| s.services().count()) < 20 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_services(&store, 20);
    node.shutdown().await;
}

#[tokio::test]
async fn snapshot_compacts_log_and_restart_uses_snapshot_plus_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, node) = start(dir.path(), 10);
        for i in 0..35 {
            store.propose(create(i)).await.expect("proposal applied");
        }
        node.shutdown().await;
    }

    // Inspect the log directly: everything up to the snapshot is gone.
    let snapshot_index;
    {
        let scratch = tempfile::tempdir().expect("tempdir");
        let store = Store::open(scratch.path()).expect("scratch store");
        let storage = RaftStorage::open(&dir.path().join("raft"), store).expect("open log");
        snapshot_index = storage.snapshot_index();
        assert!(snapshot_index >= 30, "snapshot at {snapshot_index}");
        assert_eq!(storage.first_index(), snapshot_index + 1);
        assert!(storage.last_index() >= 36, "1 leader entry + 35 writes");
        assert!(matches!(
            storage.entries(1, 2, None, raft::GetEntriesContext::empty(false)),
            Err(raft::Error::Store(raft::StorageError::Compacted))
        ));
        assert!(matches!(
            storage.term(snapshot_index - 1),
            Err(raft::Error::Store(raft::StorageError::Compacted))
        ));
        let tail = storage
            .entries(
                snapshot_index + 1,
                storage.last_index() + 1,
                None,
                raft::GetEntriesContext::empty(false),
            )
            .expect("tail readable");
        assert_eq!(tail.len() as u64, storage.last_index() - snapshot_index);
        let snap = storage
            .load_snapshot()
            .expect("read")
            .expect("snapshot saved");
        assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1]);
    }

    // Lose the store: the restart restores the snapshot, then replays the tail.
    std::fs::remove_dir_all(dir.path().join("store")).expect("wipe store");
    let (store, node) = start(dir.path(), 10);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.read(|s| s.services().count()) < 35 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_services(&store, 35);
    store.propose(create(35)).await.expect("new write");
    assert_services(&store, 36);
    node.shutdown().await;

    // And a plain restart (store kept) works too.
    drop(store);
    let (store, node) = start(dir.path(), 10);
    assert_services(&store, 36);
    store.propose(create(36)).await.expect("new write");
    node.shutdown().await;
}

#[tokio::test]
async fn watch_delivers_events_of_proposals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, node) = start(dir.path(), DEFAULT_SNAPSHOT_INTERVAL);
    let mut rx = store.watch();
    store.propose(create(1)).await.expect("applied");
    let events = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("in time")
        .expect("event");
    assert!(matches!(&events[..], [Event::Created(Object::Service(s))] if s.id == "s1"));
    node.shutdown().await;
}

/// Env var naming the data dir of [`kill9_child`]; without it that test does nothing.
const KILL9_DIR: &str = "SHOAL_RAFT_KILL9_DIR";

/// Child half of [`acknowledged_writes_survive_kill_9`]: writes until killed, printing each ack.
#[tokio::test]
#[ignore = "run only as the child process of acknowledged_writes_survive_kill_9"]
async fn kill9_child() {
    use std::io::Write as _;
    let Some(dir) = std::env::var_os(KILL9_DIR) else {
        return;
    };
    let (store, _node) = start(Path::new(&dir), 10);
    for i in 0..100_000 {
        store.propose(create(i)).await.expect("proposal applied");
        let mut out = std::io::stdout().lock();
        writeln!(out, "ACK {i}").expect("stdout");
        out.flush().expect("stdout");
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "raft::tests::kill9_child",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL9_DIR, dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut acked: Option<usize> = None;
    for line in lines.by_ref() {
        let line = line.expect("read child");
        if let Some(i) = line.strip_prefix("ACK ") {
            acked = Some(i.parse().expect("ack number"));
            if acked >= Some(60) {
                break;
            }
        }
    }
    // Child::kill is SIGKILL on Unix: no destructor, no flush.
    child.kill().expect("kill -9");
    // Acks printed before the kill landed are acknowledged writes too.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(i) = line.strip_prefix("ACK ") {
            acked = acked.max(i.parse().ok());
        }
    }
    child.wait().expect("reap child");
    let acked = acked.expect("the child acknowledged writes");
    assert!(acked >= 60, "the child stopped early, after {acked}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (store, node) = start(dir.path(), 10);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.read(|s| s.services().count()) <= acked
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        store.read(|s| {
            for i in 0..=acked {
                assert!(
                    s.service(&format!("s{i}")).is_some(),
                    "acked write {i} lost"
                );
            }
        });
        store
            .propose(create(1_000_000))
            .await
            .expect("writes work after the crash");
        node.shutdown().await;
    });
}

/// An in-process network between Raft nodes: messages go straight to `step`, except to or from
/// a node that is cut off. The cut is checked again on delivery: a cable cut (or a process killed)
/// after a message was sent but before it arrived loses it, as a real one would; delivering it
/// later instead would be a message from a dead process arriving after its death was reported.
#[derive(Default)]
struct Net {
    nodes: Mutex<HashMap<u64, RaftNode>>,
    /// Nodes cut off in both directions.
    cut: Mutex<std::collections::HashSet<u64>>,
    /// Links cut in one direction: (from, to).
    cut_links: Mutex<std::collections::HashSet<(u64, u64)>>,
}

impl Net {
    fn is_cut(&self, m: &Message) -> bool {
        let cut = self.cut.lock().expect("cut lock");
        cut.contains(&m.to)
            || cut.contains(&m.from)
            || self
                .cut_links
                .lock()
                .expect("cut links lock")
                .contains(&(m.from, m.to))
    }
}

struct NetTransport(Arc<Net>);

impl Transport for NetTransport {
    fn send(&self, msgs: Vec<Message>) {
        let nodes = self.0.nodes.lock().expect("nodes lock");
        for m in msgs {
            if let Some(n) = nodes.get(&m.to).cloned() {
                let net = self.0.clone();
                tokio::spawn(async move {
                    if net.is_cut(&m) {
                        return;
                    }
                    let _ = n.step(m).await;
                });
            }
        }
    }
}

/// Starts `n` voters (ids 1..=n) in `dir`, wired through one `Net`.
fn group(dir: &Path, n: u64, snapshot_interval: u64) -> (Arc<Net>, Vec<Store>, Vec<RaftNode>) {
    group_ticking(dir, n, snapshot_interval, Duration::from_millis(20))
}

/// [`group`] with a chosen tick.
fn group_ticking(
    dir: &Path,
    n: u64,
    snapshot_interval: u64,
    tick: Duration,
) -> (Arc<Net>, Vec<Store>, Vec<RaftNode>) {
    let net = Arc::new(Net::default());
    let mut stores = Vec::new();
    let mut nodes = Vec::new();
    for id in 1..=n {
        let d = dir.join(format!("m{id}"));
        let store = Store::open(&d.join("store")).expect("open store");
        let cfg = RaftConfig {
            tick,
            snapshot_interval,
            peers: (1..=n)
                .filter(|p| *p != id)
                .map(|p| (p, format!("m{p}")))
                .collect(),
            ..RaftConfig::new(id, d)
        };
        let node = RaftNode::start_with(cfg, store.clone(), Arc::new(NetTransport(net.clone())))
            .expect("start raft");
        net.nodes
            .lock()
            .expect("nodes lock")
            .insert(id, node.clone());
        stores.push(store);
        nodes.push(node);
    }
    (net, stores, nodes)
}

/// Waits until one of `among` (indexes) leads; returns its index.
async fn leader_of(nodes: &[RaftNode], among: &[usize]) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(i) = among.iter().find(|i| nodes[**i].status().is_leader) {
            return *i;
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_replicate_fail_over_and_refuse_without_quorum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (net, stores, nodes) = group(dir.path(), 3, DEFAULT_SNAPSHOT_INTERVAL);
    let leader = leader_of(&nodes, &[0, 1, 2]).await;
    for i in 0..10 {
        stores[leader].propose(create(i)).await.expect("propose");
    }
    // Every member applies every write, through a read barrier on a follower too.
    let follower = (leader + 1) % 3;
    nodes[follower].read_barrier().await.expect("read barrier");
    assert_services(&stores[follower], 10);

    // The leader is cut off: the other two elect a new one and go on.
    net.cut
        .lock()
        .expect("cut")
        .insert(nodes[leader].status().id);
    let rest: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let new_leader = leader_of(&nodes, &rest).await;
    stores[new_leader]
        .propose(create(10))
        .await
        .expect("propose");
    // The cut-off one cannot commit: it fails with "no quorum" instead of hanging.
    let err = nodes[leader]
        .read_barrier()
        .await
        .expect_err("a cut-off manager has no quorum");
    assert!(matches!(err, StoreError::NoQuorum), "{err}");

    // Healed, it catches up with what it missed.
    net.cut.lock().expect("cut").clear();
    nodes[leader]
        .read_barrier()
        .await
        .expect("read barrier after heal");
    assert_services(&stores[leader], 11);
    for n in &nodes {
        n.shutdown().await;
    }
}

/// 200 ms ticks: the election timeout is 2-4 s after the last heartbeat.
const SLOW_TICK: Duration = Duration::from_millis(200);

/// Three voters ticking at [`SLOW_TICK`] in `dir`, once their leader has committed a write:
/// where the leader-gone tests start.
struct Settled {
    net: Arc<Net>,
    stores: Vec<Store>,
    nodes: Vec<RaftNode>,
    /// Index of the leader in `nodes`, its Raft id and its term.
    leader: usize,
    dead: u64,
    term: u64,
    /// The other members' indexes.
    rest: Vec<usize>,
}

async fn settled_three(dir: &Path) -> Settled {
    let (net, stores, nodes) = group_ticking(dir, 3, DEFAULT_SNAPSHOT_INTERVAL, SLOW_TICK);
    let leader = leader_of(&nodes, &[0, 1, 2]).await;
    stores[leader].propose(create(0)).await.expect("propose");
    let dead = nodes[leader].status().id;
    let term = nodes[leader].status().term;
    let rest = (0..3).filter(|i| *i != leader).collect();
    Settled {
        net,
        stores,
        nodes,
        leader,
        dead,
        term,
        rest,
    }
}

/// The member other than `leader` that campaigns first when `leader` is reported gone: the
/// lowest id among the rest.
fn first_survivor(nodes: &[RaftNode], leader: usize) -> usize {
    (0..nodes.len())
        .filter(|i| *i != leader)
        .min_by_key(|i| nodes[*i].status().id)
        .expect("a member besides the leader")
}

/// Kills the leader as `kill -9` would (cut off, then stopped) and reports it gone to every
/// member in `rest`, as their transports would; returns when it died.
async fn kill_and_report_gone(
    net: &Net,
    nodes: &[RaftNode],
    leader: usize,
    rest: &[usize],
) -> std::time::Instant {
    let dead = nodes[leader].status().id;
    net.cut.lock().expect("cut").insert(dead);
    nodes[leader].shutdown().await;
    let killed = std::time::Instant::now();
    for i in rest {
        nodes[*i].peer_gone(dead).await.expect("peer gone");
    }
    killed
}

/// Asserts that `node` knows a leader other than `dead` within 1.5 s, well under the 2 s minimum
/// election timeout of [`SLOW_TICK`].
async fn assert_elected_well_before_the_timeout(
    node: &RaftNode,
    dead: u64,
    killed: std::time::Instant,
) {
    let mut status = node.watch_status();
    // `wait_for`'s `Ref` holds the status channel's read lock, and that node's Raft loop takes
    // the write lock to publish: keep only the leader id, never the `Ref`, across later awaits.
    let elected = tokio::time::timeout(
        Duration::from_millis(1500),
        status.wait_for(|s| s.leader_id != 0 && s.leader_id != dead),
    )
    .await
    .map(|r| r.map(|s| s.leader_id));
    assert!(
        matches!(elected, Ok(Ok(_))),
        "no new leader {:?} after the old one was reported gone",
        killed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_reported_gone_is_replaced_before_the_election_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Settled {
        net,
        stores,
        nodes,
        leader,
        dead,
        term,
        rest,
    } = settled_three(dir.path()).await;
    let killed = kill_and_report_gone(&net, &nodes, leader, &rest).await;
    assert_elected_well_before_the_timeout(&nodes[rest[0]], dead, killed).await;
    // The first surviving voter won at the next term, in one round.
    let first = first_survivor(&nodes, leader);
    let new_leader = leader_of(&nodes, &rest).await;
    assert_eq!(new_leader, first);
    assert_eq!(nodes[new_leader].status().term, term + 1);
    if let Err(e) = stores[new_leader].propose(create(1)).await {
        let statuses: Vec<RaftStatus> = rest.iter().map(|i| nodes[*i].status()).collect();
        panic!("propose after the failover: {e}; {statuses:?}");
    }
    for i in rest {
        nodes[i].shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_ahead_of_the_first_one_wins_before_the_election_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Settled {
        net,
        stores,
        nodes,
        leader,
        dead,
        term,
        rest,
    } = settled_three(dir.path()).await;
    let first = first_survivor(&nodes, leader);
    let ahead = rest
        .iter()
        .copied()
        .find(|i| *i != first)
        .expect("two survivors");
    // The last write reaches only the other survivor before the leader dies: the first one,
    // which campaigns when the leader is reported gone, cannot win with a shorter log.
    net.cut_links
        .lock()
        .expect("cut links")
        .insert((dead, nodes[first].status().id));
    stores[leader].propose(create(1)).await.expect("propose");
    let killed = kill_and_report_gone(&net, &nodes, leader, &rest).await;
    // Reads asked while no leader serves them are asked again once one does.
    let reads: Vec<_> = rest
        .iter()
        .map(|i| {
            let node = nodes[*i].clone();
            tokio::spawn(async move { node.read_barrier().await })
        })
        .collect();
    assert_elected_well_before_the_timeout(&nodes[ahead], dead, killed).await;
    let new_leader = leader_of(&nodes, &rest).await;
    assert_eq!(
        new_leader, ahead,
        "only the survivor holding every write can win"
    );
    assert_eq!(nodes[new_leader].status().term, term + 1, "one election");
    for r in reads {
        r.await
            .expect("read task")
            .expect("a read barrier asked during the election");
    }
    stores[new_leader]
        .propose(create(2))
        .await
        .expect("propose");
    nodes[first].read_barrier().await.expect("read barrier");
    for i in &rest {
        assert_services(&stores[*i], 3);
    }
    for i in rest {
        nodes[i].shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_leader_reported_gone_by_one_follower_keeps_its_term() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_net, stores, nodes) = group_ticking(dir.path(), 3, DEFAULT_SNAPSHOT_INTERVAL, SLOW_TICK);
    let leader = leader_of(&nodes, &[0, 1, 2]).await;
    let leader_id = nodes[leader].status().id;
    let term = nodes[leader].status().term;
    // The follower that would campaign at once hears (wrongly) that the leader is gone.
    let first = first_survivor(&nodes, leader);
    nodes[first].peer_gone(leader_id).await.expect("peer gone");
    // Its pre-vote is ignored by the leader and the other follower, both in the leader's lease.
    for i in 0..3 {
        stores[leader].propose(create(i)).await.expect("propose");
        nodes[first].read_barrier().await.expect("read barrier");
    }
    for n in &nodes {
        let s = n.status();
        assert_eq!((s.term, s.leader_id), (term, leader_id), "node {}", s.id);
    }
    assert_services(&stores[first], 3);
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_added_after_compaction_catches_up_from_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (net, stores, nodes) = group(dir.path(), 1, 5);
    for i in 0..20 {
        stores[0].propose(create(i)).await.expect("propose");
    }
    assert!(nodes[0].status().applied > 5);
    // Node 2 starts knowing the membership that includes it, as `shoal-manager join` does.
    let d = dir.path().join("m2");
    let store2 = Store::open(&d.join("store")).expect("open store");
    let cfg = RaftConfig {
        tick: Duration::from_millis(20),
        peers: vec![(1, "m1".into())],
        ..RaftConfig::new(2, d)
    };
    let node2 = RaftNode::start_with(cfg, store2.clone(), Arc::new(NetTransport(net.clone())))
        .expect("start raft");
    net.nodes.lock().expect("nodes").insert(2, node2.clone());
    nodes[0]
        .change_membership(2, true)
        .await
        .expect("add voter");
    node2.read_barrier().await.expect("read barrier");
    assert_services(&store2, 20);
    nodes[0].shutdown().await;
    node2.shutdown().await;
}

/// A node write that adds label `k{i}` by putting the whole node as read.
fn label_put(store: &Store, i: usize) -> Vec<StoreAction> {
    let mut n = store.read(|s| s.node("n1").cloned()).expect("node n1");
    n.spec
        .get_or_insert_with(Default::default)
        .labels
        .insert(format!("k{i}"), "v".into());
    vec![StoreAction {
        action: Some(Action::PutNode(n)),
    }]
}

fn labels(store: &Store) -> std::collections::BTreeMap<String, String> {
    store.read(|s| {
        s.node("n1")
            .and_then(|n| n.spec.clone())
            .map(|sp| sp.labels.into_iter().collect())
            .unwrap_or_default()
    })
}

#[tokio::test]
async fn concurrent_writers_never_lose_an_update() {
    use shoal_proto::v1::{Node, NodeSpecUpdate};
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _node) = start(dir.path(), DEFAULT_SNAPSHOT_INTERVAL);
    store
        .propose(vec![StoreAction {
            action: Some(Action::PutNode(Node {
                id: "n1".into(),
                ..Node::default()
            })),
        }])
        .await
        .expect("create node");

    // 20 whole-node read-modify-writes from the same read: the store takes exactly those whose
    // version was still current, refuses the rest out of sequence, and loses none silently.
    let writes: Vec<_> = (0..20).map(|i| label_put(&store, i)).collect();
    let results = futures::future::join_all(writes.into_iter().map(|w| store.propose(w))).await;
    let mut won = std::collections::BTreeSet::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(()) => {
                won.insert(format!("k{i}"));
            }
            Err(e) => assert!(e.is_out_of_sequence(), "write {i}: {e}"),
        }
    }
    assert_eq!(won.len(), 1, "one write per version: {won:?}");
    let present: std::collections::BTreeSet<String> = labels(&store).into_keys().collect();
    assert_eq!(present, won);

    // The same 20 writes through a fresh read on refusal: all land.
    let results = futures::future::join_all((100..120).map(|i| {
        let store = store.clone();
        async move {
            store
                .propose_fresh(|s| {
                    let mut n = s.node("n1").cloned().expect("node n1");
                    n.spec
                        .get_or_insert_with(Default::default)
                        .labels
                        .insert(format!("k{i}"), "v".into());
                    Ok::<_, crate::store::StoreError>((
                        vec![StoreAction {
                            action: Some(Action::PutNode(n)),
                        }],
                        (),
                    ))
                })
                .await
        }
    }))
    .await;
    for r in results {
        r.expect("read-modify-write retried on a fresh read");
    }
    let present = labels(&store);
    for i in 100..120 {
        assert!(
            present.contains_key(&format!("k{i}")),
            "k{i} lost: {present:?}"
        );
    }

    // 20 concurrent label-add deltas: all succeed, all present.
    let results = futures::future::join_all((200..220).map(|i| {
        store.propose(vec![StoreAction {
            action: Some(Action::NodeSpecUpdate(NodeSpecUpdate {
                node_id: "n1".into(),
                labels_add: [(format!("k{i}"), "v".to_string())].into(),
                ..NodeSpecUpdate::default()
            })),
        }])
    }))
    .await;
    for r in results {
        r.expect("a delta is never out of sequence");
    }
    let present = labels(&store);
    for i in (100..120).chain(200..220) {
        assert!(
            present.contains_key(&format!("k{i}")),
            "k{i} lost: {present:?}"
        );
    }
}

#[test]
fn a_timeout_on_a_leader_that_hears_a_quorum_is_an_overload_not_a_lost_quorum() {
    let status = |is_leader, voters: &[u64], active: &[u64]| RaftStatus {
        id: 1,
        leader_id: if is_leader { 1 } else { 2 },
        is_leader,
        voters: voters.to_vec(),
        active: active.to_vec(),
        ..RaftStatus::default()
    };
    let cause = |s: &RaftStatus| super::timeout_cause(s);
    // A single manager always hears itself: only load can keep it from committing.
    assert!(matches!(
        cause(&status(true, &[1], &[1])),
        StoreError::NotCommitted
    ));
    assert!(matches!(
        cause(&status(true, &[1, 2, 3], &[1, 3])),
        StoreError::NotCommitted
    ));
    // A leader cut off from its followers, a follower, a leader whose "active" counts a
    // non-voter: the quorum is what is missing.
    assert!(matches!(
        cause(&status(true, &[1, 2, 3], &[1])),
        StoreError::NoQuorum
    ));
    assert!(matches!(
        cause(&status(false, &[1, 2, 3], &[])),
        StoreError::NoQuorum
    ));
    assert!(matches!(
        cause(&status(true, &[1, 2, 3], &[1, 4])),
        StoreError::NoQuorum
    ));
}

/// The entries and hard state a manager of the version that wrote the store's sled on every
/// apply left behind: `n` service creates at indexes 1..=n (term 1), all committed, of which the
/// store applied (and wrote to its sled) the first `applied`.
fn write_old_format_dir(dir: &Path, n: usize, applied: usize) {
    use prost::Message as _;
    let store = Store::open(&dir.join("store")).expect("open store");
    assert!(!store.is_log_backed());
    std::fs::create_dir_all(dir.join("raft")).expect("raft dir");
    let mut storage = RaftStorage::open(&dir.join("raft"), store.clone()).expect("open log");
    storage
        .bootstrap(ConfState {
            voters: vec![1],
            ..ConfState::default()
        })
        .expect("bootstrap");
    let requests: Vec<StoreRequest> = (0..n)
        .map(|i| StoreRequest {
            request_id: i as u64 + 1,
            actions: create(i),
        })
        .collect();
    let entries: Vec<raft::prelude::Entry> = requests
        .iter()
        .enumerate()
        .map(|(i, r)| raft::prelude::Entry {
            index: i as u64 + 1,
            term: 1,
            data: r.encode_to_vec().into(),
            ..raft::prelude::Entry::default()
        })
        .collect();
    let hs = raft::prelude::HardState {
        term: 1,
        vote: 1,
        commit: n as u64,
        ..raft::prelude::HardState::default()
    };
    storage.append(&entries, Some(&hs)).expect("append");
    for (i, r) in requests.iter().enumerate().take(applied) {
        store.apply(i as u64 + 1, r).expect("apply");
    }
    store.flush().expect("flush store");
}

/// What the store's own sled holds at `dir` (its applied index and service count).
fn store_on_disk(dir: &Path) -> (u64, usize) {
    let store = Store::open(&dir.join("store")).expect("open store");
    let services = store.read(|s| s.services().count());
    (store.applied_index(), services)
}

#[tokio::test]
async fn the_store_is_rebuilt_from_the_log_not_written_per_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, node) = start(dir.path(), DEFAULT_SNAPSHOT_INTERVAL);
        assert!(store.is_log_backed());
        for i in 0..30 {
            store.propose(create(i)).await.expect("proposal applied");
        }
        node.shutdown().await;
    }
    assert_eq!(
        store_on_disk(dir.path()),
        (0, 0),
        "applies leave the store's sled alone"
    );
    // The start replays the committed log before it returns: reads see every write at once.
    let (store, node) = start(dir.path(), DEFAULT_SNAPSHOT_INTERVAL);
    assert!(store.applied_index() >= 31, "1 leader entry + 30 writes");
    assert_services(&store, 30);
    store.propose(create(30)).await.expect("new write");
    assert_services(&store, 31);
    node.shutdown().await;
}

#[tokio::test]
async fn a_data_dir_whose_store_was_written_per_apply_opens_and_moves_to_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 40 committed entries, the store's sled at 25 (the rest was committed, not yet applied).
    write_old_format_dir(dir.path(), 40, 25);
    assert_eq!(store_on_disk(dir.path()), (25, 25));
    {
        let (store, node) = start(dir.path(), DEFAULT_SNAPSHOT_INTERVAL);
        assert_eq!(store.applied_index(), 40, "sled state + replayed tail");
        assert_services(&store, 40);
        store.propose(create(40)).await.expect("new write");
        assert_services(&store, 41);
        node.shutdown().await;
    }
    // The old sled state became a snapshot, and the sled copy was emptied.
    assert_eq!(store_on_disk(dir.path()), (0, 0));
    {
        let scratch = tempfile::tempdir().expect("tempdir");
        let store = Store::open(scratch.path()).expect("scratch store");
        let storage = RaftStorage::open(&dir.path().join("raft"), store).expect("open log");
        assert_eq!(storage.snapshot_index(), 25);
        assert_eq!(storage.first_index(), 26);
    }
    // And it starts again from snapshot + log.
    let (store, node) = start(dir.path(), DEFAULT_SNAPSHOT_INTERVAL);
    assert_services(&store, 41);
    node.shutdown().await;
}

#[tokio::test]
async fn an_old_store_behind_the_snapshot_is_replaced_and_emptied() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, node) = start(dir.path(), 10);
        for i in 0..25 {
            store.propose(create(i)).await.expect("proposal applied");
        }
        node.shutdown().await;
    }
    // A store sled an older version left behind the snapshot (or a crash mid-emptying left):
    // objects the log has since deleted must not come back.
    {
        let store = Store::open(&dir.path().join("store")).expect("open store");
        let stale = StoreRequest {
            request_id: 7,
            actions: create(999),
        };
        store.apply(3, &stale).expect("stale apply");
        store.flush().expect("flush");
    }
    assert_eq!(store_on_disk(dir.path()), (3, 1));
    let (store, node) = start(dir.path(), 10);
    assert_services(&store, 25);
    assert!(store.read(|s| s.service("s999").is_none()));
    node.shutdown().await;
    drop(store);
    assert_eq!(store_on_disk(dir.path()), (0, 0));
}

/// A log of five committed entries whose fourth adds voter 2, Raft's saved configuration as
/// it was before that change (voters `[1]`), as a crash between the change's commit and its
/// apply leaves it; the storage, to mark the change applied or not.
fn log_with_membership_change(dir: &Path) -> RaftStorage {
    use prost::Message as _;
    use raft::prelude::{ConfChange, ConfChangeType, Entry, EntryType, HardState};
    let store = Store::open(&dir.join("store")).expect("open store");
    std::fs::create_dir_all(dir.join("raft")).expect("raft dir");
    let mut storage = RaftStorage::open(&dir.join("raft"), store).expect("open log");
    storage
        .bootstrap(ConfState {
            voters: vec![1],
            ..ConfState::default()
        })
        .expect("bootstrap");
    let normal = |index: u64, i: usize| Entry {
        index,
        term: 1,
        data: StoreRequest {
            request_id: index,
            actions: create(i),
        }
        .encode_to_vec()
        .into(),
        ..Entry::default()
    };
    let mut cc = ConfChange {
        node_id: 2,
        ..ConfChange::default()
    };
    cc.set_change_type(ConfChangeType::AddNode);
    let mut change = Entry {
        index: 4,
        term: 1,
        data: protobuf::Message::write_to_bytes(&cc)
            .expect("encode change")
            .into(),
        ..Entry::default()
    };
    change.set_entry_type(EntryType::EntryConfChange);
    let entries = vec![
        normal(1, 0),
        normal(2, 1),
        normal(3, 2),
        change,
        normal(5, 3),
    ];
    let hs = HardState {
        term: 1,
        vote: 1,
        commit: 5,
        ..HardState::default()
    };
    storage.append(&entries, Some(&hs)).expect("append");
    storage
}

/// Starts node 1 in `dir` and waits until it applied `index`; its voters, sorted.
async fn voters_once_applied(
    dir: &Path,
    force_new_cluster: bool,
    index: u64,
) -> (Store, RaftNode, Vec<u64>) {
    let store = Store::open(&dir.join("store")).expect("open store");
    let cfg = RaftConfig {
        force_new_cluster,
        ..config(dir, DEFAULT_SNAPSHOT_INTERVAL)
    };
    let node = RaftNode::start(cfg, store.clone()).expect("start raft");
    let mut status = node.watch_status();
    let voters = tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.applied >= index),
    )
    .await
    .map(|r| r.map(|s| s.voters.clone()));
    let Ok(Ok(mut voters)) = voters else {
        panic!("entries up to {index} not applied: {:?}", node.status());
    };
    voters.sort_unstable();
    (store, node, voters)
}

#[tokio::test]
async fn a_membership_change_committed_but_not_applied_before_a_crash_is_applied_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(log_with_membership_change(dir.path()));
    let (store, node, voters) = voters_once_applied(dir.path(), false, 5).await;
    assert_eq!(
        voters,
        vec![1, 2],
        "the committed membership change was skipped"
    );
    assert_services(&store, 4);
    node.shutdown().await;
}

#[tokio::test]
async fn an_applied_membership_change_is_not_applied_again_and_force_new_cluster_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // The change at 4 was applied and saved before the stop.
        let mut storage = log_with_membership_change(dir.path());
        let cs = ConfState {
            voters: vec![1, 2],
            ..ConfState::default()
        };
        storage.set_conf_state(cs, 4).expect("save membership");
    }
    let (store, node, voters) = voters_once_applied(dir.path(), false, 5).await;
    assert_eq!(voters, vec![1, 2]);
    assert_services(&store, 4);
    node.shutdown().await;
    drop(store);
    // `--force-new-cluster` makes 1 the only voter; replaying the log must not bring 2 back.
    let (store, node, voters) = voters_once_applied(dir.path(), true, 5).await;
    assert_eq!(
        voters,
        vec![1],
        "an old membership change undid --force-new-cluster"
    );
    assert_services(&store, 4);
    node.shutdown().await;
}
