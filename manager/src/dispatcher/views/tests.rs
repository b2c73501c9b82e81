use super::*;
use shoal_proto::v1::{
    Endpoint, EndpointSpec, Meta, NetworkAttachmentConfig, NetworkSpec, NodeDescription,
    NodeStatus, PortConfig, ServiceSpec, TaskSpec, TaskStatus, VirtualIp,
};

const PLAIN: &str = "net-plain";
const SECRET: &str = "net-secret";
const INGRESS: &str = "net-ingress";

fn network(id: &str, name: &str, subnet: &str, encrypted: bool, ingress: bool) -> Network {
    Network {
        id: id.into(),
        spec: Some(NetworkSpec {
            name: name.into(),
            driver: "overlay".into(),
            encrypted,
            ingress,
            ..Default::default()
        }),
        subnet: subnet.into(),
        ..Default::default()
    }
}

fn networks() -> Vec<Network> {
    vec![
        network(PLAIN, "backend", "10.1.0.0/24", false, false),
        network(SECRET, "vault", "10.1.1.0/24", true, false),
        network(INGRESS, "ingress", "10.0.0.0/16", false, true),
    ]
}

/// A node connected from 192.168.0.N, with mesh address 10.255.0.N and a WireGuard key, and
/// ingress address 10.0.0.N.
fn node(n: u8) -> Node {
    Node {
        id: format!("node-{n}"),
        description: Some(NodeDescription {
            hostname: format!("host-{n}"),
            wg_public_key: format!("key-{n}"),
            wg_port: if n == 3 { 0 } else { 51000 + u32::from(n) },
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addr: format!("192.168.0.{n}"),
            ..Default::default()
        }),
        attachments: vec![NetworkAttachment {
            network_id: INGRESS.into(),
            addresses: vec![format!("10.0.0.{n}/16")],
            ..Default::default()
        }],
        mesh_addr: format!("10.255.0.{n}/16"),
        ..Default::default()
    }
}

fn service(id: &str, name: &str, nets: &[(&str, &[&str])], mode: &str) -> Service {
    let vips = if mode == "dnsrr" {
        Vec::new()
    } else {
        nets.iter()
            .enumerate()
            .map(|(i, (net, _))| VirtualIp {
                network_id: net.to_string(),
                addr: format!("10.9.{i}.2/24"),
            })
            .collect()
    };
    Service {
        id: id.into(),
        spec: Some(ServiceSpec {
            name: name.into(),
            task: Some(TaskSpec {
                networks: nets
                    .iter()
                    .map(|(net, aliases)| NetworkAttachmentConfig {
                        target: net.to_string(),
                        aliases: aliases.iter().map(|a| a.to_string()).collect(),
                    })
                    .collect(),
                ..Default::default()
            }),
            endpoint: Some(EndpointSpec {
                mode: mode.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        endpoint: Some(Endpoint {
            virtual_ips: vips,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn publishing(mut s: Service, published: u32) -> Service {
    let endpoint = s.endpoint.get_or_insert_with(Default::default);
    endpoint.ports.push(PortConfig {
        protocol: "tcp".into(),
        target_port: 80,
        published_port: published,
        ..Default::default()
    });
    endpoint.virtual_ips.push(VirtualIp {
        network_id: INGRESS.into(),
        addr: "10.0.255.2/16".into(),
    });
    s
}

/// A task of `service` on `node` (empty: not placed) in `state`, with addresses as
/// (network, "IP/len").
fn task(id: &str, service: &str, node: &str, state: TaskState, addrs: &[(&str, &str)]) -> Task {
    Task {
        id: id.into(),
        service_id: service.into(),
        node_id: node.into(),
        slot: 1,
        status: Some(TaskStatus {
            state: state as i32,
            ..Default::default()
        }),
        desired_state: TaskState::TaskRunning as i32,
        networks: addrs
            .iter()
            .map(|(net, addr)| NetworkAttachment {
                network_id: net.to_string(),
                addresses: vec![addr.to_string()],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn state(objects: Vec<Object>) -> State {
    let mut s = State::default();
    for o in objects {
        s.put(o);
    }
    s
}

/// Three nodes; "web" (aliases "www") on the plain network with a running task on node 2, a
/// starting one on node 3, a failed one on node 3, an unplaced one; a client task on node 1.
fn cluster() -> Vec<Object> {
    let mut objects: Vec<Object> = networks().into_iter().map(Object::Network).collect();
    objects.extend((1..=3).map(|n| Object::Node(node(n))));
    objects.push(Object::Service(service(
        "svc-web",
        "web",
        &[(PLAIN, &["www"])],
        "",
    )));
    objects.push(Object::Service(service(
        "svc-client",
        "client",
        &[(PLAIN, &[])],
        "dnsrr",
    )));
    let tasks = [
        task(
            "t-web-1",
            "svc-web",
            "node-2",
            TaskState::TaskRunning,
            &[(PLAIN, "10.1.0.11/24")],
        ),
        task(
            "t-web-2",
            "svc-web",
            "node-3",
            TaskState::TaskStarting,
            &[(PLAIN, "10.1.0.12/24")],
        ),
        task(
            "t-web-3",
            "svc-web",
            "node-3",
            TaskState::TaskFailed,
            &[(PLAIN, "10.1.0.13/24")],
        ),
        task(
            "t-web-4",
            "svc-web",
            "",
            TaskState::TaskPending,
            &[(PLAIN, "10.1.0.14/24")],
        ),
        task(
            "t-client",
            "svc-client",
            "node-1",
            TaskState::TaskRunning,
            &[(PLAIN, "10.1.0.20/24")],
        ),
    ];
    objects.extend(tasks.into_iter().map(Object::Task));
    objects
}

fn endpoint(
    task: &str,
    service: &str,
    node: &str,
    node_addr: &str,
    addr: &str,
    running: bool,
) -> EndpointView {
    EndpointView {
        task_id: task.into(),
        service_id: service.into(),
        node_id: node.into(),
        node_addr: node_addr.into(),
        addr: addr.into(),
        running,
        slot: if task.is_empty() { 0 } else { 1 },
    }
}

#[test]
fn no_networks_no_views() {
    let s = state(vec![
        Object::Node(node(1)),
        Object::Task(task("t1", "svc", "node-1", TaskState::TaskRunning, &[])),
        Object::Task(task("t2", "svc", "node-2", TaskState::TaskRunning, &[])),
    ]);
    let a = assignments(&s, "node-1");
    assert_eq!(
        a.tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["t1"]
    );
    assert!(a.networks.is_empty());
    assert!(a.mesh_peers.is_empty());
    // The node's own allocations go along whatever it runs.
    assert_eq!(a.mesh_addr, "10.255.0.1/16");
    assert_eq!(a.node_attachments, node(1).attachments);
}

#[test]
fn overlay_network_view() {
    let s = state(cluster());
    let a = assignments(&s, "node-1");
    assert_eq!(a.networks.len(), 1, "only the network of its task");
    let view = &a.networks[0];
    assert_eq!(view.network.as_ref().map(|n| n.id.as_str()), Some(PLAIN));
    // Placed tasks that have not ended, with their node's underlay address; running only when
    // observed and desired running.
    assert_eq!(
        view.endpoints,
        [
            endpoint(
                "t-client",
                "svc-client",
                "node-1",
                "192.168.0.1",
                "10.1.0.20",
                true
            ),
            endpoint(
                "t-web-1",
                "svc-web",
                "node-2",
                "192.168.0.2",
                "10.1.0.11",
                true
            ),
            endpoint(
                "t-web-2",
                "svc-web",
                "node-3",
                "192.168.0.3",
                "10.1.0.12",
                false
            ),
        ]
    );
    assert_eq!(
        view.services,
        [
            ServiceView {
                service_id: "svc-client".into(),
                name: "client".into(),
                mode: "dnsrr".into(),
                vip: String::new(),
                ports: vec![],
                aliases: vec![],
                ..Default::default()
            },
            ServiceView {
                service_id: "svc-web".into(),
                name: "web".into(),
                mode: "vip".into(),
                vip: "10.9.0.2".into(),
                ports: vec![],
                aliases: vec!["www".into()],
                ..Default::default()
            },
        ]
    );
    assert!(a.mesh_peers.is_empty(), "no encrypted network");
    // Node 3 runs a starting task there: same view. A node with nothing there gets none.
    assert_eq!(assignments(&s, "node-3").networks, a.networks);
    let mut empty = cluster();
    empty.push(Object::Node(Node {
        id: "node-4".into(),
        ..Default::default()
    }));
    assert!(assignments(&state(empty), "node-4").networks.is_empty());
}

#[test]
fn a_task_told_to_stop_is_not_running() {
    let mut objects = cluster();
    let mut stopping = task(
        "t-web-5",
        "svc-web",
        "node-2",
        TaskState::TaskRunning,
        &[(PLAIN, "10.1.0.15/24")],
    );
    stopping.desired_state = TaskState::TaskShutdown as i32;
    objects.push(Object::Task(stopping));
    let a = assignments(&state(objects), "node-1");
    let e = a.networks[0]
        .endpoints
        .iter()
        .find(|e| e.task_id == "t-web-5");
    assert_eq!(e.map(|e| e.running), Some(false));
}

#[test]
fn encrypted_network_uses_mesh_addresses_and_peers() {
    let mut objects = cluster();
    objects.push(Object::Service(service(
        "svc-db",
        "db",
        &[(SECRET, &[])],
        "",
    )));
    objects.push(Object::Task(task(
        "t-db-1",
        "svc-db",
        "node-2",
        TaskState::TaskRunning,
        &[(SECRET, "10.1.1.5/24")],
    )));
    objects.push(Object::Task(task(
        "t-db-2",
        "svc-db",
        "node-3",
        TaskState::TaskRunning,
        &[(SECRET, "10.1.1.6/24")],
    )));
    // A node without a key is no peer.
    objects.push(Object::Node(Node {
        id: "node-9".into(),
        status: Some(NodeStatus {
            addr: "192.168.0.9".into(),
            ..Default::default()
        }),
        ..Default::default()
    }));
    let s = state(objects);
    let a = assignments(&s, "node-2");
    let ids: Vec<&str> = a
        .networks
        .iter()
        .filter_map(|n| n.network.as_ref().map(|n| n.id.as_str()))
        .collect();
    assert_eq!(ids, [PLAIN, SECRET]);
    let secret = &a.networks[1];
    assert_eq!(
        secret.endpoints,
        [
            endpoint("t-db-1", "svc-db", "node-2", "10.255.0.2", "10.1.1.5", true),
            endpoint("t-db-2", "svc-db", "node-3", "10.255.0.3", "10.1.1.6", true),
        ]
    );
    assert_eq!(
        a.mesh_peers,
        [
            MeshPeer {
                node_id: "node-1".into(),
                public_key: "key-1".into(),
                endpoint: "192.168.0.1:51001".into(),
                mesh_addr: "10.255.0.1/16".into(),
            },
            MeshPeer {
                node_id: "node-3".into(),
                public_key: "key-3".into(),
                endpoint: "192.168.0.3:51820".into(),
                mesh_addr: "10.255.0.3/16".into(),
            },
        ]
    );
    // Node 1 has nothing on the encrypted network: no peers.
    assert!(assignments(&s, "node-1").mesh_peers.is_empty());
}

/// The backends of the routing mesh in a node's ingress view.
fn ingress_backends(s: &State, node: &str) -> Vec<String> {
    assignments(s, node)
        .networks
        .iter()
        .filter(|v| view_id(v) == INGRESS)
        .flat_map(|v| v.endpoints.iter())
        .filter(|e| !e.task_id.is_empty())
        .map(|e| format!("{} running={}", e.task_id, e.running))
        .collect()
}

#[test]
fn the_routing_mesh_holds_a_backend_from_its_start_until_it_has_ended() {
    let mut objects = cluster();
    objects.push(Object::Service(publishing(
        service("svc-api", "api", &[(PLAIN, &[])], ""),
        30080,
    )));
    let api = |state: TaskState, health: Option<&str>| {
        let mut t = task(
            "t-api-1",
            "svc-api",
            "node-3",
            state,
            &[(PLAIN, "10.1.0.30/24"), (INGRESS, "10.0.1.1/16")],
        );
        if let (Some(h), Some(st)) = (health, t.status.as_mut()) {
            st.health = Some(shoal_proto::v1::HealthStatus {
                status: h.into(),
                ..Default::default()
            });
        }
        Object::Task(t)
    };
    let with = |t: Object| {
        let mut o = objects.clone();
        o.push(t);
        state(o)
    };
    // Starting: not in the routing mesh, but already on its own network (other tasks may reach
    // it the moment it starts).
    let s = with(api(TaskState::TaskStarting, None));
    assert!(ingress_backends(&s, "node-1").is_empty());
    let plain: Vec<String> = assignments(&s, "node-3")
        .networks
        .iter()
        .filter(|v| view_id(v) == PLAIN)
        .flat_map(|v| v.endpoints.iter().map(|e| e.task_id.clone()))
        .collect();
    assert!(plain.contains(&"t-api-1".to_string()), "{plain:?}");
    // Running: in it, on every node.
    let s = with(api(TaskState::TaskRunning, None));
    assert_eq!(ingress_backends(&s, "node-1"), ["t-api-1 running=true"]);
    assert_eq!(ingress_backends(&s, "node-3"), ["t-api-1 running=true"]);
    // Reported unhealthy while still running: still there (connections in flight keep their
    // path), marked not running (no new ones).
    let s = with(api(TaskState::TaskRunning, Some("unhealthy")));
    assert_eq!(ingress_backends(&s, "node-1"), ["t-api-1 running=false"]);
    // Told to stop, still running: the same, until it has ended.
    let mut stopping = objects.clone();
    if let Object::Task(mut t) = api(TaskState::TaskRunning, None) {
        t.desired_state = TaskState::TaskShutdown as i32;
        stopping.push(Object::Task(t));
    }
    assert_eq!(
        ingress_backends(&state(stopping), "node-1"),
        ["t-api-1 running=false"]
    );
    let s = with(api(TaskState::TaskShutdown, None));
    assert!(ingress_backends(&s, "node-1").is_empty());
}

#[test]
fn ingress_view_goes_to_every_node_while_a_port_is_published() {
    let mut objects = cluster();
    objects.push(Object::Node(Node {
        id: "node-4".into(),
        ..Default::default()
    }));
    assert!(assignments(&state(objects.clone()), "node-4")
        .networks
        .is_empty());

    objects.push(Object::Service(publishing(
        service("svc-api", "api", &[(PLAIN, &[])], ""),
        30080,
    )));
    objects.push(Object::Task(task(
        "t-api-1",
        "svc-api",
        "node-3",
        TaskState::TaskRunning,
        &[(PLAIN, "10.1.0.30/24"), (INGRESS, "10.0.1.1/16")],
    )));
    let s = state(objects);
    let a = assignments(&s, "node-4");
    assert_eq!(a.networks.len(), 1);
    let ingress = &a.networks[0];
    assert_eq!(
        ingress.network.as_ref().map(|n| n.id.as_str()),
        Some(INGRESS)
    );
    // Every node's own ingress address (no task), then the publishing service's tasks.
    assert_eq!(
        ingress.endpoints,
        [
            endpoint("", "", "node-1", "192.168.0.1", "10.0.0.1", false),
            endpoint("", "", "node-2", "192.168.0.2", "10.0.0.2", false),
            endpoint("", "", "node-3", "192.168.0.3", "10.0.0.3", false),
            endpoint(
                "t-api-1",
                "svc-api",
                "node-3",
                "192.168.0.3",
                "10.0.1.1",
                true
            ),
        ]
    );
    assert_eq!(ingress.services.len(), 1);
    let api = &ingress.services[0];
    assert_eq!((api.name.as_str(), api.vip.as_str()), ("api", "10.0.255.2"));
    assert_eq!(
        api.ports
            .iter()
            .map(|p| p.published_port)
            .collect::<Vec<_>>(),
        [30080]
    );
    // Node 1 gets it too, beside its own network's.
    let ids: Vec<String> = assignments(&s, "node-1")
        .networks
        .iter()
        .filter_map(|n| n.network.as_ref().map(|n| n.id.clone()))
        .collect();
    assert_eq!(ids, [INGRESS, PLAIN]);
}

#[test]
fn cache_serves_views_as_recent_as_needed() {
    let s = state(cluster());
    let cache = Mutex::new(Cache::default());
    let fresh = |s: &State| assignments(s, "node-1");
    let view = |cache: &Mutex<Cache>, s: &State, index: u64, need: &Need, before: &Interest| {
        node_view(s, "node-1", &mut Cached::new(cache, index, need, before))
    };
    let (first, interest) = view(&cache, &s, 10, &Need::everything(), &Interest::default());
    assert_eq!(unversioned(first.to_message()), fresh(&s));

    // The web task on node 2 stops: a state at index 11.
    let mut objects = cluster();
    for o in objects.iter_mut() {
        if let Object::Task(t) = o {
            if t.id == "t-web-1" {
                t.status = Some(TaskStatus {
                    state: TaskState::TaskFailed as i32,
                    ..Default::default()
                });
            }
        }
    }
    let later = state(objects);
    // Nothing noted for the network: the cached view is taken (the same Arc).
    let (same, _) = view(&cache, &later, 11, &Need::default(), &interest);
    assert!(Arc::ptr_eq(&same.networks[0].view, &first.networks[0].view));
    // The change noted at index 11: recomputed once, then shared.
    let mut need = Need::default();
    need.networks.insert(PLAIN.into(), 11);
    let (next, _) = view(&cache, &later, 11, &need, &interest);
    assert_eq!(unversioned(next.to_message()), fresh(&later));
    assert_ne!(next, first);
    let (again, _) = view(&cache, &later, 12, &need, &interest);
    assert!(Arc::ptr_eq(&again.networks[0].view, &next.networks[0].view));
    // A network new to the node is taken as of now, whatever was noted.
    let (fresh_again, _) = view(&cache, &later, 13, &Need::default(), &Interest::default());
    assert!(!Arc::ptr_eq(
        &fresh_again.networks[0].view,
        &next.networks[0].view
    ));
}

#[test]
fn sessions_taking_everything_share_views_recent_enough_for_them() {
    let s = state(cluster());
    let cache = Mutex::new(Cache::default());
    let view = |index: u64, need: &Need| {
        node_view(
            &s,
            "node-1",
            &mut Cached::new(&cache, index, need, &Interest::default()),
        )
        .0
    };
    // A first session's view, at index 10.
    let first = view(10, &Need::everything_since(10));
    // Sessions that began (or fell behind) at index 10 or before take it, though the store has
    // moved on since: anything after index 10 reaches them as a change.
    let later = view(14, &Need::everything_since(9));
    assert!(Arc::ptr_eq(
        &later.networks[0].view,
        &first.networks[0].view
    ));
    // One that began at 12 needs a newer view: computed at 14, then shared in turn.
    let newer = view(14, &Need::everything_since(12));
    assert!(!Arc::ptr_eq(
        &newer.networks[0].view,
        &first.networks[0].view
    ));
    let shared = view(15, &Need::everything_since(13));
    assert!(Arc::ptr_eq(
        &shared.networks[0].view,
        &newer.networks[0].view
    ));
    // A batch it took since the need arose counts, whatever it touched: here a node's
    // address, noted at index 16 by a session that held no network yet.
    let mut moved = node(2);
    if let Some(st) = moved.status.as_mut() {
        st.addr = "192.168.7.2".into();
    }
    let notes = BatchNotes::of(&[Event::Updated {
        old: Object::Node(node(2)),
        new: versioned(Object::Node(moved), 16),
    }]);
    let mut need = Need::everything_since(13);
    Interest::default().note_batch("node-1", &notes, &mut need);
    let after = view(17, &need);
    assert!(!Arc::ptr_eq(
        &after.networks[0].view,
        &newer.networks[0].view
    ));
    // "As of now" (no index): computed at the index of the moment.
    let now = view(18, &Need::everything());
    assert!(!Arc::ptr_eq(&now.networks[0].view, &after.networks[0].view));
}

#[test]
fn a_large_view_is_computed_again_only_at_its_pace() {
    let s = state(cluster());
    let cache = Mutex::new(Cache::default());
    let plain = s.network(PLAIN).cloned().unwrap_or_default();
    Cached::new(&cache, 10, &Need::everything(), &Interest::default()).full_network(&s, &plain);
    let newer = |index: u64| {
        let mut need = Need::default();
        need.networks.insert(PLAIN.into(), index);
        need
    };
    // Say it took 50 ms, just now: a newer view waits for up to 4 x 50 ms from then.
    let set_built = |ago: Duration| {
        let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
        let at = Instant::now().checked_sub(ago).unwrap_or_else(Instant::now);
        c.built
            .insert(PLAIN.into(), (at, Duration::from_millis(50)));
    };
    set_built(Duration::ZERO);
    let wait = Cache::pace(&cache, &newer(11)).unwrap_or_default();
    assert!(
        wait > Duration::from_millis(150) && wait <= Duration::from_millis(200),
        "{wait:?}"
    );
    // What the cache holds is recent enough: no wait.
    assert_eq!(Cache::pace(&cache, &newer(10)), None);
    assert_eq!(Cache::pace(&cache, &Need::everything_since(10)), None);
    assert!(Cache::pace(&cache, &Need::everything_since(11)).is_some());
    // Computed long enough ago: no wait either.
    set_built(Duration::from_millis(250));
    assert_eq!(Cache::pace(&cache, &newer(11)), None);
}

/// The interest of node 1 in `cluster()`.
fn interest_of_node_1(objects: Vec<Object>) -> Interest {
    node_view(&state(objects), "node-1", &mut Fresh).1
}

fn versioned(mut o: Object, v: u64) -> Object {
    let meta = Some(Meta {
        version: v,
        ..Default::default()
    });
    match &mut o {
        Object::Task(t) => t.meta = meta,
        Object::Service(s) => s.meta = meta,
        Object::Node(n) => n.meta = meta,
        Object::Network(n) => n.meta = meta,
        Object::Cluster(c) => c.meta = meta,
        Object::Secret(x) => x.meta = meta,
        Object::Config(x) => x.meta = meta,
    }
    o
}

fn updated(old: Object, new: Object) -> Event {
    Event::Updated {
        old,
        new: versioned(new, 7),
    }
}

#[test]
fn which_changes_concern_a_node() {
    let interest = interest_of_node_1(cluster());
    let web = |state, node: &str| {
        Object::Task(task(
            "t-web-1",
            "svc-web",
            node,
            state,
            &[(PLAIN, "10.1.0.11/24")],
        ))
    };
    let other = |state| {
        Object::Task(task(
            "t-x",
            "svc-x",
            "node-2",
            state,
            &[("net-other", "10.1.5.2/24")],
        ))
    };
    let plain_task = |state| Object::Task(task("t-y", "svc-y", "node-2", state, &[]));
    let mut moved = node(2);
    if let Some(st) = moved.status.as_mut() {
        st.addr = "192.168.7.2".into();
    }
    let mut heartbeat = node(2);
    if let Some(st) = heartbeat.status.as_mut() {
        st.last_heartbeat = 99;
    }
    let scaled = {
        let mut s = service("svc-web", "web", &[(PLAIN, &["www"])], "");
        s.spec_version = 2;
        s
    };
    use TaskState::*;
    // (event, own, networks bumped to index 7, routing mesh noted)
    #[rustfmt::skip]
    let cases: Vec<(Event, bool, Vec<&str>, bool)> = vec![
        // A task on its network starts or stops running, moves or ends: its view changes.
        (updated(web(TaskStarting, "node-2"), web(TaskRunning, "node-2")), false, vec![PLAIN], false),
        (updated(web(TaskRunning, "node-2"), web(TaskFailed, "node-2")), false, vec![PLAIN], false),
        (updated(web(TaskPending, ""), web(TaskAssigned, "node-2")), false, vec![PLAIN], false),
        // Steps that change nothing a view shows.
        (updated(web(TaskAssigned, "node-2"), web(TaskPreparing, "node-2")), false, vec![], false),
        (updated(web(TaskFailed, "node-2"), web(TaskShutdown, "node-2")), false, vec![], false),
        // Tasks of other networks, or of none.
        (updated(other(TaskStarting), other(TaskRunning)), false, vec![], false),
        (updated(plain_task(TaskStarting), plain_task(TaskRunning)), false, vec![], false),
        // Its own tasks always.
        (updated(web(TaskPreparing, "node-1"), web(TaskStarting, "node-1")), true, vec![], false),
        // A node of the cluster changes address: anything of it may show.
        (updated(Object::Node(node(2)), Object::Node(moved)), false, vec![PLAIN], false),
        (updated(Object::Node(node(2)), Object::Node(heartbeat)), false, vec![], false),
        (updated(Object::Node(node(1)), Object::Node(node(1))), true, vec![], false),
        // Services: a spec change without effect on views (a scale) is not one.
        (updated(Object::Service(service("svc-web", "web", &[(PLAIN, &[])], "")), Object::Service(scaled.clone())), false, vec![PLAIN], false),
        (updated(Object::Service(scaled.clone()), Object::Service(scaled.clone())), false, vec![], false),
        // Publishing an ingress port concerns every node: the routing mesh starts.
        (updated(Object::Service(scaled.clone()), Object::Service(publishing(scaled, 30080))), false, vec![PLAIN], true),
        (updated(Object::Network(networks()[0].clone()), Object::Network(networks()[0].clone())), false, vec![PLAIN], false),
        (updated(Object::Network(networks()[1].clone()), Object::Network(networks()[1].clone())), false, vec![], false),
        (updated(Object::Network(networks()[2].clone()), Object::Network(networks()[2].clone())), false, vec![], true),
    ];
    let batch: Vec<Event> = cases.iter().map(|c| c.0.clone()).collect();
    let mut merged = Need::default();
    for (i, (event, own, nets, routing)) in cases.into_iter().enumerate() {
        let mut need = Need::default();
        interest.note("node-1", &event, &mut need);
        merged.own |= need.own;
        merged.routing_mesh = merged.routing_mesh.max(need.routing_mesh);
        merged.mesh = merged.mesh.max(need.mesh);
        for (k, v) in &need.networks {
            let m = merged.networks.entry(k.clone()).or_default();
            *m = (*m).max(*v);
        }
        assert_eq!(need.own, own, "case {i}: own");
        let mut got: Vec<(&str, u64)> = need
            .networks
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        got.sort();
        let want: Vec<(&str, u64)> = nets.into_iter().map(|n| (n, 7)).collect();
        assert_eq!(got, want, "case {i}: networks");
        assert_eq!(need.routing_mesh > 0, routing, "case {i}: routing mesh");
        assert_eq!(
            need.any(),
            own || !want.is_empty() || routing,
            "case {i}: any"
        );
    }
    // A removal carries no index: it asks for "now".
    let mut need = Need::default();
    interest.note(
        "node-1",
        &Event::Removed(web(TaskRunning, "node-2")),
        &mut need,
    );
    assert_eq!(need.networks.get(PLAIN), Some(&NOW));

    // The whole batch summed up once (as every session takes it) notes what its events noted
    // one by one, for this node and for one on no network.
    let notes = BatchNotes::of(&batch);
    let mut need = Need::default();
    interest.note_batch("node-1", &notes, &mut need);
    assert!(merged.own && merged.routing_mesh > 0 && !merged.networks.is_empty());
    assert_eq!(need, merged);
    let bare = Interest::default();
    let (mut one_by_one, mut at_once) = (Need::default(), Need::default());
    for e in &batch {
        bare.note("node-9", e, &mut one_by_one);
    }
    bare.note_batch("node-9", &notes, &mut at_once);
    assert_eq!(one_by_one, at_once);
    assert!(!at_once.own && at_once.networks.is_empty() && at_once.routing_mesh > 0);
}

#[test]
fn sessions_share_the_notes_of_a_batch() {
    let cache = Mutex::new(NotesCache::default());
    let batch = Arc::new(vec![Event::Created(Object::Node(node(2)))]);
    let first = NotesCache::notes(&cache, &batch);
    let again = NotesCache::notes(&cache, &batch);
    assert!(Arc::ptr_eq(&first, &again), "summed up once");
    assert!(first.own_nodes.contains("node-2"));
    // An equal batch from another write is another batch.
    let other = Arc::new((*batch).clone());
    assert!(!Arc::ptr_eq(&NotesCache::notes(&cache, &other), &first));
    // Only the last batches are kept: an old one is summed up again, to the same notes.
    for _ in 0..NOTES_KEPT {
        NotesCache::notes(&cache, &Arc::new(Vec::new()));
    }
    let late = NotesCache::notes(&cache, &batch);
    assert!(!Arc::ptr_eq(&late, &first));
    assert_eq!(*late, *first);
}

#[test]
fn batch_notes_tell_manager_directives_what_changed() {
    let worker = Event::Created(Object::Node(node(2)));
    let notes = BatchNotes::of(std::slice::from_ref(&worker));
    assert_eq!(notes.node_records().collect::<Vec<_>>(), ["node-2"]);
    assert!(!notes.managers_or_cluster());
    // A task on a node is not its record.
    let t = Object::Task(task(
        "t-1",
        "svc-web",
        "node-1",
        TaskState::TaskRunning,
        &[],
    ));
    assert_eq!(
        BatchNotes::of(&[Event::Created(t)]).node_records().count(),
        0
    );
    // A manager's record (joining or leaving the membership) and the cluster object.
    let mut manager = node(3);
    manager.manager_status = Some(Default::default());
    let left = Event::Updated {
        old: Object::Node(manager),
        new: Object::Node(node(3)),
    };
    assert!(BatchNotes::of(&[worker, left]).managers_or_cluster());
    let cluster = Event::Created(Object::Cluster(Default::default()));
    assert!(BatchNotes::of(&[cluster]).managers_or_cluster());
}

#[test]
fn a_node_on_no_network_ignores_network_changes() {
    let interest = Interest::default();
    let t = |state| {
        Object::Task(task(
            "t-web-1",
            "svc-web",
            "node-2",
            state,
            &[(PLAIN, "10.1.0.11/24")],
        ))
    };
    let events = [
        updated(t(TaskState::TaskStarting), t(TaskState::TaskRunning)),
        updated(Object::Node(node(2)), Object::Node(node(3))),
        updated(
            Object::Network(networks()[0].clone()),
            Object::Network(networks()[0].clone()),
        ),
    ];
    for e in &events {
        let mut need = Need::default();
        interest.note("node-1", e, &mut need);
        assert!(!need.any(), "{e:?}");
    }
}

fn secret(id: &str, name: &str, data: &[u8]) -> Secret {
    Secret {
        id: id.into(),
        spec: Some(shoal_proto::v1::SecretSpec {
            name: name.into(),
            data: data.to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn config(id: &str, name: &str, data: &[u8]) -> Config {
    Config {
        id: id.into(),
        spec: Some(shoal_proto::v1::ConfigSpec {
            name: name.into(),
            data: data.to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A task of "svc-db" on `node` mounting the given secrets and configs (by id).
fn mounting(id: &str, node: &str, state: TaskState, secrets: &[&str], configs: &[&str]) -> Task {
    let mut t = task(id, "svc-db", node, state, &[]);
    t.spec = Some(TaskSpec {
        container: Some(shoal_proto::v1::ContainerSpec {
            secrets: secrets
                .iter()
                .map(|s| shoal_proto::v1::SecretReference {
                    secret_id: s.to_string(),
                    ..Default::default()
                })
                .collect(),
            configs: configs
                .iter()
                .map(|c| shoal_proto::v1::ConfigReference {
                    config_id: c.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    });
    t
}

fn secrets_and_configs() -> Vec<Object> {
    vec![
        Object::Secret(secret("s-pw", "db_pw", b"hunter2")),
        Object::Secret(secret("s-key", "api_key", b"k")),
        Object::Secret(secret("s-unused", "unused", b"u")),
        Object::Config(config("c-conf", "db_conf", b"port=5432")),
        Object::Config(config("c-unused", "other", b"x")),
    ]
}

fn ids<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<&str> {
    items.iter().map(id).collect()
}

#[test]
fn a_node_receives_exactly_the_secrets_and_configs_its_live_tasks_mount() {
    let mut objects = secrets_and_configs();
    objects.push(Object::Node(node(1)));
    objects.push(Object::Node(node(2)));
    let running = mounting(
        "t-1",
        "node-1",
        TaskState::TaskRunning,
        &["s-pw"],
        &["c-conf"],
    );
    // A task told to stop but still running keeps its files until it has ended.
    let mut stopping = mounting("t-2", "node-1", TaskState::TaskRunning, &["s-key"], &[]);
    stopping.desired_state = TaskState::TaskShutdown as i32;
    // An ended task's secrets go; a task not yet assigned gets nothing yet.
    let ended = mounting("t-3", "node-1", TaskState::TaskFailed, &["s-unused"], &[]);
    let pending = mounting(
        "t-4",
        "",
        TaskState::TaskPending,
        &["s-unused"],
        &["c-unused"],
    );
    let elsewhere = mounting("t-5", "node-2", TaskState::TaskRunning, &["s-unused"], &[]);
    for t in [running, stopping, ended, pending, elsewhere] {
        objects.push(Object::Task(t));
    }
    let st = state(objects);
    let msg = assignments(&st, "node-1");
    assert_eq!(ids(&msg.secrets, |s| &s.id), ["s-key", "s-pw"]);
    assert_eq!(
        msg.secrets[1].spec.as_ref().map(|s| s.data.as_slice()),
        Some(&b"hunter2"[..])
    );
    assert_eq!(ids(&msg.configs, |c| &c.id), ["c-conf"]);
    assert_eq!(
        msg.configs[0].spec.as_ref().map(|s| s.data.as_slice()),
        Some(&b"port=5432"[..])
    );
    let other = assignments(&st, "node-2");
    assert_eq!(ids(&other.secrets, |s| &s.id), ["s-unused"]);
    assert!(other.configs.is_empty());
}

#[test]
fn secrets_go_with_the_last_task_that_mounts_them() {
    let mut objects = secrets_and_configs();
    objects.push(Object::Node(node(1)));
    let t = mounting(
        "t-1",
        "node-1",
        TaskState::TaskRunning,
        &["s-pw"],
        &["c-conf"],
    );
    objects.push(Object::Task(t.clone()));
    let mut st = state(objects);
    let (before, interest) = node_view(&st, "node-1", &mut Fresh);
    assert_eq!(before.secrets.len(), 1);

    let mut done = t;
    if let Some(s) = done.status.as_mut() {
        s.state = TaskState::TaskComplete as i32;
    }
    st.put(Object::Task(done));
    let (after, _) = node_view(&st, "node-1", &mut Fresh);
    assert_ne!(before, after, "the view must change so the agent is told");
    let msg = after.to_message();
    assert!(msg.secrets.is_empty() && msg.configs.is_empty());

    // A secret's removal concerns a node that mounts it; another's does not.
    let mut need = Need::default();
    let gone = Event::Removed(Object::Secret(secret("s-unused", "unused", b"u")));
    interest.note("node-1", &gone, &mut need);
    assert!(!need.any());
    let gone = Event::Removed(Object::Secret(secret("s-pw", "db_pw", b"hunter2")));
    interest.note("node-1", &gone, &mut need);
    assert!(need.any());
    let mut need = Need::default();
    let gone = Event::Removed(Object::Config(config("c-conf", "db_conf", b"")));
    interest.note("node-1", &gone, &mut need);
    assert!(need.any());
}

/// `set` with its network views' versions cleared (a view computed outside the cache has none).
fn unversioned(mut set: Assignments) -> Assignments {
    for v in &mut set.networks {
        v.version = 0;
    }
    set
}

/// `cluster()` with service "web" publishing port 8080 (every node gets the ingress view) and a
/// pool of tasks `t-r0`..`t-r11` of "web" on PLAIN and the ingress, each present or not, on one
/// of the three nodes, in one of several states, as `rng` draws them.
fn random_cluster(rng: &mut rand::rngs::StdRng) -> Vec<Object> {
    use rand::Rng;
    let mut objects: Vec<Object> = cluster()
        .into_iter()
        .map(|o| match o {
            Object::Service(s) if s.id == "svc-web" => {
                let mut s = publishing(s, 8080);
                s.spec.get_or_insert_with(Default::default).replicas = 12;
                Object::Service(s)
            }
            o => o,
        })
        .collect();
    for i in 0..12u32 {
        if !rng.random_bool(0.7) {
            continue;
        }
        let states = [
            TaskState::TaskAssigned,
            TaskState::TaskStarting,
            TaskState::TaskRunning,
            TaskState::TaskFailed,
        ];
        let node = format!("node-{}", rng.random_range(1..=3));
        let mut t = task(
            &format!("t-r{i}"),
            "svc-web",
            &node,
            states[rng.random_range(0..states.len())],
            &[
                (PLAIN, &format!("10.1.0.{}/24", 100 + i)),
                (INGRESS, &format!("10.0.1.{}/16", 100 + i)),
            ],
        );
        if rng.random_bool(0.2) {
            t.desired_state = TaskState::TaskShutdown as i32;
        }
        t.slot = u64::from(i) + 1;
        objects.push(Object::Task(t));
    }
    if rng.random_bool(0.2) {
        // Node 2 moves: every endpoint on it changes its node address.
        for o in objects.iter_mut() {
            if let Object::Node(n) = o {
                if n.id == "node-2" {
                    n.status.get_or_insert_with(Default::default).addr = "192.168.7.2".into();
                }
            }
        }
    }
    objects
}

#[test]
fn deltas_applied_by_the_agent_give_the_set_it_would_be_sent_whole() {
    check_deltas(Cache::default(), 15);
}

#[test]
fn deltas_between_views_of_a_split_routing_mesh_give_the_set_sent_whole() {
    // 12 replicas in subsets of at least 2: 4 groups, and the nodes move between them as the
    // service's ingress ports come and go.
    check_deltas(Cache::with_subset_size(2), 16);
}

/// Random clusters one after the other: what an agent holds after each delta is what it would
/// have been sent whole.
fn check_deltas(cache: Cache, seed: u64) {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cache = Mutex::new(cache);
    for (n, node) in ["node-1", "node-2", "node-3"].into_iter().enumerate() {
        let mut held: Option<(NodeView, Assignments)> = None;
        let mut interest = Interest::default();
        let (mut sent, mut skipped) = (0, 0);
        let mut objects = random_cluster(&mut rng);
        for round in 0..300u64 {
            // Every fifth state is the one before: nothing to send.
            if round % 5 != 0 {
                objects = random_cluster(&mut rng);
            }
            let s = state(objects.clone());
            // The store index only grows, across the nodes too (they share the cache).
            let index = 10 + 1000 * n as u64 + round;
            let (current, depends) = node_view(
                &s,
                node,
                &mut Cached::new(&cache, index, &Need::everything(), &interest),
            );
            interest = depends;
            let Some((before, mut agent)) = held.take() else {
                let mut full = current.to_message();
                full.version = 1;
                held = Some((current, full));
                continue;
            };
            let Some((delta, after)) = before.delta(current.clone(), &cache, agent.version) else {
                skipped += 1;
                held = Some((before, agent));
                continue;
            };
            sent += 1;
            shoal_proto::assignments::apply(&mut agent, delta).unwrap();
            // Exactly what the manager says the agent holds...
            let mut expect = after.to_message();
            expect.version = agent.version;
            assert_eq!(agent, expect, "{node}, round {round}");
            // ...which is the whole set but for statuses of tasks the agent already had.
            // A view whose contents did not change keeps the version the agent holds (with a
            // split routing mesh, the node's group may be untouched by what changed elsewhere).
            let whole = current.to_message();
            assert_eq!(
                unversioned(agent.clone()).networks,
                unversioned(whole.clone()).networks
            );
            assert_eq!(agent.tasks.len(), whole.tasks.len());
            for (a, b) in agent.tasks.iter().zip(&whole.tasks) {
                assert!(shoal_proto::assignments::same_for_agent(a, b));
            }
            assert_eq!(
                (&agent.secrets, &agent.configs, &agent.mesh_peers),
                (&whole.secrets, &whole.configs, &whole.mesh_peers)
            );
            held = Some((after, agent));
        }
        assert!(
            sent > 100 && skipped > 0,
            "{node}: {sent} sent, {skipped} skipped"
        );
    }
}

#[test]
fn a_status_the_agent_reported_is_not_sent_back_but_the_view_change_is() {
    let cache = Mutex::new(Cache::default());
    let with_client = |client: TaskState| {
        let mut objects = cluster();
        for o in objects.iter_mut() {
            if let Object::Task(t) = o {
                if t.id == "t-client" {
                    t.status = Some(TaskStatus {
                        state: client as i32,
                        ..Default::default()
                    });
                }
            }
        }
        state(objects)
    };
    let everything = Need::everything();
    let (before, interest) = node_view(
        &with_client(TaskState::TaskStarting),
        "node-1",
        &mut Cached::new(&cache, 10, &everything, &Interest::default()),
    );
    let (after, _) = node_view(
        &with_client(TaskState::TaskRunning),
        "node-1",
        &mut Cached::new(&cache, 11, &everything, &interest),
    );
    let (delta, _) = before
        .delta(after.clone(), &cache, 1)
        .expect("the view changed");
    assert!(delta.tasks.is_empty(), "the status was echoed: {delta:?}");
    assert_eq!(delta.networks.len(), 1);
    match &delta.networks[0].change {
        Some(network_view_change::Change::Delta(d)) => {
            assert_eq!((d.base, d.version), (10, 11));
            let addrs: Vec<&str> = d.endpoints.iter().map(|e| e.addr.as_str()).collect();
            assert_eq!(addrs, ["10.1.0.20"]);
            assert!(d.endpoints[0].running);
        }
        other => panic!("expected a view delta, got {other:?}"),
    }
    // Another node's session moving between the same two versions (it holds the same shared
    // views) gets the very same delta, computed once.
    let d1 = shared_view_delta(&cache, &before.networks[0].view, &after.networks[0].view);
    let d2 = shared_view_delta(&cache, &before.networks[0].view, &after.networks[0].view);
    let cached = cache.lock().unwrap().deltas.len();
    assert_eq!(cached, 1);
    assert!(matches!((d1, d2), (Some(x), Some(y)) if Arc::ptr_eq(&x, &y)));
}

/// A cluster of `nodes` nodes and service "web" publishing port 8080 with `replicas` running
/// tasks, slot i on node (i mod nodes), all on the ingress network.
fn published(nodes: u8, replicas: u32) -> Vec<Object> {
    let mut objects: Vec<Object> = networks().into_iter().map(Object::Network).collect();
    objects.extend((1..=nodes).map(|n| Object::Node(node(n))));
    let mut web = publishing(service("svc-web", "web", &[], ""), 8080);
    web.spec.get_or_insert_with(Default::default).replicas = u64::from(replicas);
    objects.push(Object::Service(web));
    for i in 1..=replicas {
        let node = format!("node-{}", 1 + i % u32::from(nodes));
        let addr = format!("10.0.{}.{}/16", 1 + i / 250, i % 250);
        let mut t = task(
            &format!("t-{i:03}"),
            "svc-web",
            &node,
            TaskState::TaskRunning,
            &[(INGRESS, &addr)],
        );
        t.slot = u64::from(i);
        objects.push(Object::Task(t));
    }
    objects
}

#[test]
fn a_large_published_service_is_split_and_a_small_one_is_not() {
    let s = state(published(6, 300));
    let mut seen = Vec::new();
    for n in 1..=6 {
        let id = format!("node-{n}");
        let a = assignments(&s, &id);
        let ingress = &a.networks[0];
        let web = &ingress.services[0];
        // 300 replicas, K = 128 by default: 2 groups of 150.
        assert_eq!(web.subset_groups, 2);
        assert_eq!(web.subset, subset::node_key(&id) % 2, "{id}");
        let backends: Vec<&EndpointView> = ingress
            .endpoints
            .iter()
            .filter(|e| !e.task_id.is_empty())
            .collect();
        assert_eq!(backends.len(), 150, "{id}");
        assert!(backends
            .iter()
            .all(|e| (e.slot - 1) % 2 == u64::from(web.subset)));
        // The addresses of the nodes that can forward to its backends: node n hosts the slots
        // i = n - 1 (mod 6), all in group n mod 2, which the nodes of that class balance over.
        let nodes: Vec<&str> = ingress
            .endpoints
            .iter()
            .filter(|e| e.task_id.is_empty())
            .map(|e| e.node_id.as_str())
            .collect();
        let forwarders: Vec<String> = (1..=6)
            .map(|m| format!("node-{m}"))
            .filter(|m| subset::node_key(m) % 2 == n % 2)
            .collect();
        assert_eq!(nodes, forwarders, "{id}");
        seen.push(web.subset);
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, [0, 1], "six nodes fall in both groups");

    // 200 replicas: below 2K, every node holds every backend, as before the split existed.
    let s = state(published(6, 200));
    let a = assignments(&s, "node-1");
    let ingress = &a.networks[0];
    assert_eq!(
        (
            ingress.services[0].subset_groups,
            ingress.services[0].subset
        ),
        (0, 0)
    );
    assert_eq!(ingress.endpoints.len(), 206);
}

#[test]
fn a_task_change_reaches_only_the_nodes_of_its_group() {
    let cache = Mutex::new(Cache::with_subset_size(2));
    let everything = Need::everything();
    // 16 replicas in subsets of at least 2: 8 groups; 6 nodes.
    let before_state = state(published(6, 16));
    let mut objects = published(6, 16);
    // The task of slot 3 (group 2) on node 4 stops running.
    for o in objects.iter_mut() {
        if let Object::Task(t) = o {
            if t.slot == 3 {
                t.status = Some(TaskStatus {
                    state: TaskState::TaskFailed as i32,
                    ..Default::default()
                });
            }
        }
    }
    let after_state = state(objects);
    // Every node's view before the change first: the cache serves the newest view it has.
    let before: Vec<(NodeView, Interest)> = (1..=6)
        .map(|n| {
            node_view(
                &before_state,
                &format!("node-{n}"),
                &mut Cached::new(&cache, 10, &everything, &Interest::default()),
            )
        })
        .collect();
    let mut reached = 0;
    for (n, (before, interest)) in (1..=6).zip(before) {
        let id = format!("node-{n}");
        let (after, _) = node_view(
            &after_state,
            &id,
            &mut Cached::new(&cache, 11, &everything, &interest),
        );
        let in_group = subset::node_key(&id) % 8 == 2;
        let delta = before.delta(after.clone(), &cache, 1);
        if id == "node-4" {
            // Its task of group 2 ended: it no longer answers the nodes of class 2 (node 3's
            // key), whose address it drops, and nothing else changes for it.
            let (d, _) = delta.expect("node 4 hosted the task");
            match &d.networks[0].change {
                Some(network_view_change::Change::Delta(v)) => {
                    assert_eq!(v.removed_endpoints, ["10.0.0.3"]);
                    assert!(v.endpoints.is_empty());
                }
                other => panic!("expected a view delta, got {other:?}"),
            }
            continue;
        }
        // Node 4's own task changed only in its status (its own report, not echoed back).
        assert_eq!(delta.is_some(), in_group, "{id}");
        if let Some((d, _)) = delta {
            reached += 1;
            match &d.networks[0].change {
                Some(network_view_change::Change::Delta(v)) => {
                    assert_eq!(v.removed_endpoints, ["10.0.1.3"]);
                }
                other => panic!("expected a view delta, got {other:?}"),
            }
        }
    }
    // One delta per pair of group views, shared by the group's nodes.
    let cached = cache.lock().unwrap().deltas.len();
    assert!(cached <= 8, "{cached} deltas cached");
    // Only node 3 is in group 2 (SHA-256 of "node-3" modulo 8).
    assert_eq!(reached, 1);
}

#[test]
fn a_backend_change_wakes_only_the_sessions_of_its_group() {
    // 64 replicas in subsets of at least 2: 32 groups; 6 nodes.
    let cache = Mutex::new(Cache::with_subset_size(2));
    let before_state = state(published(6, 64));
    // Each node's view and interest before.
    let before: Vec<(String, NodeView, Interest)> = (1..=6)
        .map(|n| {
            let id = format!("node-{n}");
            let (v, i) = node_view(
                &before_state,
                &id,
                &mut Cached::new(&cache, 10, &Need::everything(), &Interest::default()),
            );
            (id, v, i)
        })
        .collect();
    // A batch stopping the tasks of `slots` (a few, then more than the direct look handles).
    for slots in [
        vec![3u64],
        (1..=40).filter(|s| s % 3 == 0).collect::<Vec<u64>>(),
    ] {
        let mut objects = published(6, 64);
        let mut events = Vec::new();
        for o in objects.iter_mut() {
            if let Object::Task(t) = o {
                if slots.contains(&t.slot) {
                    let old = Object::Task(t.clone());
                    t.status = Some(TaskStatus {
                        state: TaskState::TaskFailed as i32,
                        ..Default::default()
                    });
                    events.push(Event::Updated {
                        old,
                        new: versioned(Object::Task(t.clone()), 11),
                    });
                }
            }
        }
        let after_state = state(objects);
        let notes = BatchNotes::of(&events);
        let mut woken = 0;
        for (id, held, interest) in &before {
            let mut need = Need::default();
            interest.note_batch(id, &notes, &mut need);
            let (after, _) = node_view(
                &after_state,
                id,
                &mut Cached::new(&cache, 11, &Need::everything(), interest),
            );
            let changed = held.delta(after, &cache, 1).is_some();
            // Every node whose view changes is woken; a node not woken has nothing to take.
            assert!(!changed || need.any(), "{id} missed a change ({slots:?})");
            let group = subset::node_key(id) % 32;
            let in_group = slots.iter().any(|s| (s - 1) % 32 == u64::from(group));
            let hosts = after_state
                .tasks_of_node(id)
                .any(|t| slots.contains(&t.slot));
            assert_eq!(need.any(), in_group || hosts, "{id} ({slots:?})");
            woken += usize::from(need.any());
        }
        assert!(woken < 6, "every node woken for slots {slots:?}");
    }
}

#[test]
fn a_node_is_told_the_addresses_of_the_nodes_that_can_forward_to_its_backends() {
    let cache = Mutex::new(Cache::with_subset_size(2));
    let everything = Need::everything();
    // 16 replicas in subsets of at least 2: 8 groups; 6 nodes, none on node 2.
    let objects: Vec<Object> = published(6, 16)
        .into_iter()
        .filter(|o| !matches!(o, Object::Task(t) if t.node_id == "node-2"))
        .collect();
    let s = state(objects);
    let views: Vec<(String, NetworkView)> = (1..=6)
        .map(|n| {
            let id = format!("node-{n}");
            let (v, _) = node_view(
                &s,
                &id,
                &mut Cached::new(&cache, 10, &everything, &Interest::default()),
            );
            (id, v.to_message().networks.remove(0))
        })
        .collect();
    let nodes_of = |v: &NetworkView| -> Vec<String> {
        let mut n: Vec<String> = v
            .endpoints
            .iter()
            .filter(|e| e.task_id.is_empty())
            .map(|e| e.node_id.clone())
            .collect();
        n.sort();
        n
    };
    // Node 2 hosts no backend: it needs no node's address.
    let (_, two) = &views[1];
    assert!(nodes_of(two).is_empty());
    // Node 4 hosts slots 3, 9 and 15 (groups 2, 0 and 6): the nodes of those classes only.
    let (_, four) = &views[3];
    let mut want: Vec<String> = (1..=6)
        .map(|n| format!("node-{n}"))
        .filter(|id| [0, 2, 6].contains(&(subset::node_key(id) % 8)))
        .collect();
    want.sort();
    assert_eq!(nodes_of(four), want);
    assert!(want.len() < 6, "{want:?}");
    // Both directions of every connection the routing mesh can make: a node forwarding to a
    // backend holds it with its node's address, and the backend's node holds the forwarding
    // node's address (the reply path, and the VXLAN peer it accepts).
    let mut pairs = 0;
    for (forwarder, view) in &views {
        for b in view.endpoints.iter().filter(|e| !e.task_id.is_empty()) {
            assert_eq!(b.node_addr, format!("192.168.0.{}", &b.node_id[5..]));
            if &b.node_id == forwarder {
                continue;
            }
            let (_, host) = views
                .iter()
                .find(|(id, _)| *id == b.node_id)
                .expect("a node of the cluster");
            assert!(
                nodes_of(host).contains(forwarder),
                "{} does not reach {forwarder}",
                b.node_id
            );
            pairs += 1;
        }
    }
    assert!(pairs > 0);
    // The sent view is in the agent's order.
    for (_, v) in &views {
        let mut sorted = v.endpoints.clone();
        sorted.sort_by(|a, b| {
            (&a.task_id, &a.node_id, &a.addr).cmp(&(&b.task_id, &b.node_id, &b.addr))
        });
        assert_eq!(&sorted, &v.endpoints);
    }
}
