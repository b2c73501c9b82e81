use std::collections::HashSet;

use shoal_proto::v1::{
    NetworkAttachmentConfig, NetworkSpec, NodeDescription, ServiceSpec, StoreRequest,
    TaskDesiredUpdate, TaskSpec,
};

use super::*;

const NOW: i64 = 1_000;

/// A state with the predefined networks and the given extra networks (name, driver, subnet).
fn cluster(extra: &[(&str, &str, &str)]) -> State {
    let mut s = State::default();
    let mut actions: Vec<Action> = ipam::predefined_networks(1)
        .into_iter()
        .map(Action::CreateNetwork)
        .collect();
    for (i, (name, driver, subnet)) in extra.iter().enumerate() {
        let gateway = subnet
            .parse::<ipnet::Ipv4Net>()
            .map(|n| ipam::first_host(&n).to_string())
            .unwrap_or_default();
        actions.push(Action::CreateNetwork(Network {
            id: format!("net-{name}"),
            spec: Some(NetworkSpec {
                name: name.to_string(),
                driver: driver.to_string(),
                ..Default::default()
            }),
            subnet: subnet.to_string(),
            gateway,
            vni: if *driver == "overlay" {
                4097 + i as u32
            } else {
                0
            },
            ..Default::default()
        }));
    }
    apply(&mut s, actions);
    s
}

fn apply(s: &mut State, actions: Vec<Action>) {
    let req = StoreRequest {
        request_id: 1,
        actions: actions.into_iter().map(action).collect(),
    };
    if let Err(e) = s.apply_request(1, &req) {
        panic!("apply failed: {e}");
    }
}

fn apply_plan(s: &mut State, plan: Vec<StoreAction>) {
    let req = StoreRequest {
        request_id: 1,
        actions: plan,
    };
    if let Err(e) = s.apply_request(2, &req) {
        panic!("the allocator's plan was refused: {e}");
    }
}

fn port(target: u32, published: u32, mode: &str) -> PortConfig {
    PortConfig {
        protocol: "tcp".into(),
        target_port: target,
        published_port: published,
        publish_mode: mode.into(),
        ..Default::default()
    }
}

fn service(id: &str, networks: &[&str], ports: Vec<PortConfig>, mode: &str) -> Service {
    let endpoint = (!ports.is_empty() || !mode.is_empty()).then(|| EndpointSpec {
        mode: mode.to_string(),
        ports,
    });
    Service {
        id: id.into(),
        spec: Some(ServiceSpec {
            name: format!("{id}-name"),
            replicas: 1,
            task: Some(TaskSpec {
                networks: networks
                    .iter()
                    .map(|n| NetworkAttachmentConfig {
                        target: format!("net-{n}"),
                        aliases: vec![],
                    })
                    .collect(),
                ..Default::default()
            }),
            endpoint,
            ..Default::default()
        }),
        spec_version: 1,
        ..Default::default()
    }
}

/// A NEW task of `svc` carrying the service's task spec, as the orchestrator makes it.
fn new_task(id: &str, svc: &Service) -> Task {
    Task {
        id: id.into(),
        service_id: svc.id.clone(),
        service_name: svc.spec.as_ref().unwrap().name.clone(),
        spec: svc.spec.as_ref().and_then(|s| s.task.clone()),
        spec_version: svc.spec_version,
        status: Some(TaskStatus {
            state: TaskState::TaskNew as i32,
            ..Default::default()
        }),
        desired_state: TaskState::TaskRunning as i32,
        ..Default::default()
    }
}

fn add(s: &mut State, svc: &Service, tasks: &[&str]) {
    let mut actions = vec![Action::CreateService(svc.clone())];
    actions.extend(tasks.iter().map(|t| Action::CreateTask(new_task(t, svc))));
    apply(s, actions);
}

/// Plans and applies one pass; returns the plan's actions.
fn pass(a: &mut Allocator, s: &mut State) -> Vec<Action> {
    let plan = a.plan(s, NOW);
    let actions = plan.iter().filter_map(|x| x.action.clone()).collect();
    apply_plan(s, plan);
    actions
}

fn ingress_id(s: &State) -> String {
    ingress_network(s).unwrap().id.clone()
}

fn addrs(t: &Task) -> Vec<(String, Vec<String>)> {
    t.networks
        .iter()
        .map(|a| (a.network_id.clone(), a.addresses.clone()))
        .collect()
}

fn state_of(s: &State, id: &str) -> TaskState {
    s.task(id).unwrap().observed_state()
}

#[test]
fn vips_then_task_addresses_in_spec_order_then_ingress() {
    let mut s = cluster(&[
        ("front", "overlay", "10.1.0.0/24"),
        ("back", "overlay", "10.1.1.0/24"),
    ]);
    let svc = service("web", &["back", "front"], vec![port(80, 0, "")], "");
    add(&mut s, &svc, &["t1", "t2"]);
    let mut a = Allocator::new();
    pass(&mut a, &mut s);

    let ep = s.service("web").unwrap().endpoint.clone().unwrap();
    let ingress = ingress_id(&s);
    let vips: Vec<(&str, &str)> = ep
        .virtual_ips
        .iter()
        .map(|v| (v.network_id.as_str(), v.addr.as_str()))
        .collect();
    assert_eq!(
        vips,
        [
            ("net-back", "10.1.1.2/24"),
            ("net-front", "10.1.0.2/24"),
            (ingress.as_str(), "10.0.0.2/16"),
        ]
    );
    assert_eq!(ep.ports[0].published_port, 30000);
    assert_eq!(ep.spec, svc.spec.as_ref().unwrap().endpoint);

    let t1 = s.task("t1").unwrap();
    assert_eq!(state_of(&s, "t1"), TaskState::TaskPending);
    assert_eq!(
        addrs(t1),
        [
            ("net-back".to_string(), vec!["10.1.1.3/24".to_string()]),
            ("net-front".to_string(), vec!["10.1.0.3/24".to_string()]),
            (ingress.clone(), vec!["10.0.0.3/16".to_string()]),
        ]
    );
    assert_eq!(
        t1.endpoint.as_ref(),
        Some(&ep),
        "the task carries the endpoint"
    );
    assert_eq!(
        addrs(s.task("t2").unwrap())[0].1,
        ["10.1.1.4/24"],
        "no address is handed out twice"
    );
    assert!(
        a.plan(&s, NOW).is_empty(),
        "a second pass has nothing to do"
    );
}

#[test]
fn tasks_without_networks_move_to_pending_in_one_batch() {
    let mut s = cluster(&[]);
    let svc = service("plain", &[], vec![], "");
    add(&mut s, &svc, &["a", "b", "c"]);
    let mut a = Allocator::new();
    let actions = pass(&mut a, &mut s);
    assert_eq!(
        actions.len(),
        3,
        "one allocation per task, no endpoint write"
    );
    for id in ["a", "b", "c"] {
        assert_eq!(state_of(&s, id), TaskState::TaskPending);
        let t = s.task(id).unwrap();
        assert!(t.networks.is_empty() && t.endpoint.is_none());
    }
    assert!(s.service("plain").unwrap().endpoint.is_none());
}

#[test]
fn node_local_networks_get_no_manager_address() {
    let mut s = cluster(&[
        ("lan", "bridge", "172.18.0.0/24"),
        ("ov", "overlay", "10.1.0.0/24"),
    ]);
    let svc = service("mixed", &["lan", "ov"], vec![], "");
    add(&mut s, &svc, &["t"]);
    pass(&mut Allocator::new(), &mut s);
    assert_eq!(
        addrs(s.task("t").unwrap()),
        [
            ("net-lan".to_string(), vec![]),
            ("net-ov".to_string(), vec!["10.1.0.3/24".to_string()]),
        ]
    );
    let ep = s.service("mixed").unwrap().endpoint.clone().unwrap();
    assert_eq!(ep.virtual_ips.len(), 1, "a VIP on the overlay only");
}

#[test]
fn dnsrr_services_get_no_vip() {
    let mut s = cluster(&[("ov", "overlay", "10.1.0.0/24")]);
    let svc = service("rr", &["ov"], vec![port(53, 0, "host")], "dnsrr");
    add(&mut s, &svc, &["t"]);
    pass(&mut Allocator::new(), &mut s);
    let ep = s.service("rr").unwrap().endpoint.clone().unwrap();
    assert!(ep.virtual_ips.is_empty());
    assert_eq!(ep.ports[0].published_port, 0, "host-mode port 0 stays 0");
    assert_eq!(
        addrs(s.task("t").unwrap()).len(),
        1,
        "no ingress for host-mode ports"
    );
}

#[test]
fn updates_keep_vips_and_ports_and_release_the_rest() {
    let mut s = cluster(&[
        ("a", "overlay", "10.1.0.0/24"),
        ("b", "overlay", "10.1.1.0/24"),
    ]);
    let svc = service(
        "web",
        &["a"],
        vec![port(80, 0, ""), port(443, 8443, "")],
        "",
    );
    add(&mut s, &svc, &[]);
    let mut al = Allocator::new();
    pass(&mut al, &mut s);
    let before = s.service("web").unwrap().endpoint.clone().unwrap();
    let vip_a = before.virtual_ips[0].addr.clone();
    let dynamic = before.ports[0].published_port;

    // Add network b and a third port: VIP on a and the dynamic port stay.
    let mut updated = service(
        "web",
        &["a", "b"],
        vec![port(80, 0, ""), port(443, 8443, ""), port(81, 0, "")],
        "",
    );
    updated.spec_version = 2;
    updated.endpoint = s.service("web").unwrap().endpoint.clone();
    updated.meta = s.service("web").unwrap().meta;
    apply(&mut s, vec![Action::UpdateService(updated)]);
    pass(&mut al, &mut s);
    let after = s.service("web").unwrap().endpoint.clone().unwrap();
    assert_eq!(after.virtual_ips[0].addr, vip_a);
    assert_eq!(after.virtual_ips[1].network_id, "net-b");
    assert_eq!(after.ports[0].published_port, dynamic);
    assert_eq!(after.ports[1].published_port, 8443);
    assert_ne!(after.ports[2].published_port, dynamic);
    assert!(ipam::DYNAMIC_PORTS.contains(&after.ports[2].published_port));

    // Drop every port and network a: the ingress VIP, the VIP on a and the ports are released.
    let mut updated = service("web", &["b"], vec![], "");
    updated.spec_version = 3;
    updated.endpoint = s.service("web").unwrap().endpoint.clone();
    updated.meta = s.service("web").unwrap().meta;
    apply(&mut s, vec![Action::UpdateService(updated)]);
    pass(&mut al, &mut s);
    let last = s.service("web").unwrap().endpoint.clone().unwrap();
    assert_eq!(last.virtual_ips.len(), 1);
    assert_eq!(last.virtual_ips[0].network_id, "net-b");
    assert!(s.address_holder("net-a", ip_of(&vip_a)).is_none());
    assert!(s.ingress_port_holder("tcp", dynamic).is_none());
    assert!(s.ingress_port_holder("tcp", 8443).is_none());
}

#[test]
fn a_published_port_of_another_service_is_an_error_on_the_tasks() {
    let mut s = cluster(&[]);
    let first = service("one", &[], vec![port(80, 8080, "")], "");
    add(&mut s, &first, &["t1"]);
    let mut al = Allocator::new();
    pass(&mut al, &mut s);
    let second = service("two", &[], vec![port(80, 8080, "")], "");
    add(&mut s, &second, &["t2"]);
    pass(&mut al, &mut s);
    let t2 = s.task("t2").unwrap();
    assert_eq!(state_of(&s, "t2"), TaskState::TaskNew);
    assert_eq!(
        t2.status.as_ref().unwrap().err,
        "published port 8080/tcp is already in use by service one-name"
    );
    assert!(al.plan(&s, NOW).is_empty(), "the error is written once");
}

#[test]
fn exhaustion_leaves_the_task_new_until_an_address_frees_up() {
    // A /29 has 6 host addresses; .1 is the gateway and the service's VIP takes one: 4 tasks fit.
    let mut s = cluster(&[("tiny", "overlay", "10.1.0.0/29")]);
    let svc = service("web", &["tiny"], vec![], "");
    add(&mut s, &svc, &["t1", "t2", "t3", "t4", "t5"]);
    let mut al = Allocator::new();
    pass(&mut al, &mut s);
    let pending: Vec<&str> = ["t1", "t2", "t3", "t4", "t5"]
        .into_iter()
        .filter(|id| state_of(&s, id) == TaskState::TaskPending)
        .collect();
    assert_eq!(pending, ["t1", "t2", "t3", "t4"]);
    let t5 = s.task("t5").unwrap();
    assert_eq!(state_of(&s, "t5"), TaskState::TaskNew);
    assert_eq!(
        t5.status.as_ref().unwrap().err,
        "no free address on network tiny (10.1.0.0/29)"
    );
    let mut used: Vec<String> = ["t1", "t2", "t3", "t4"]
        .iter()
        .map(|id| s.task(id).unwrap().networks[0].addresses[0].clone())
        .collect();
    used.push(
        s.service("web")
            .unwrap()
            .endpoint
            .clone()
            .unwrap()
            .virtual_ips[0]
            .addr
            .clone(),
    );
    used.sort();
    assert_eq!(
        used,
        [
            "10.1.0.2/29",
            "10.1.0.3/29",
            "10.1.0.4/29",
            "10.1.0.5/29",
            "10.1.0.6/29"
        ]
    );
    assert!(
        al.plan(&s, NOW).is_empty(),
        "nothing changes while the network is full"
    );

    // t2 ends: its address is free again and t5 gets it.
    let freed = s.task("t2").unwrap().networks[0].addresses[0].clone();
    apply(
        &mut s,
        vec![Action::TaskStatus(TaskStatusUpdate {
            task_id: "t2".into(),
            status: Some(TaskStatus {
                state: TaskState::TaskFailed as i32,
                ..Default::default()
            }),
        })],
    );
    pass(&mut al, &mut s);
    assert_eq!(state_of(&s, "t5"), TaskState::TaskPending);
    let t5 = s.task("t5").unwrap();
    assert_eq!(t5.networks[0].addresses[0], freed);
    assert!(t5.status.as_ref().unwrap().err.is_empty());
}

#[test]
fn many_tasks_in_one_pass_never_share_an_address() {
    let mut s = cluster(&[("big", "overlay", "10.2.0.0/16")]);
    let svc = service("web", &["big"], vec![port(80, 0, "")], "");
    let ids: Vec<String> = (0..10000).map(|i| format!("t{i:04}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    add(&mut s, &svc, &refs);
    let mut al = Allocator::new();
    let started = std::time::Instant::now();
    let plan = al.plan(&s, NOW);
    let took = started.elapsed();
    // Well under a second in a release build; generous here for debug builds on a busy machine.
    assert!(
        took < std::time::Duration::from_secs(5),
        "a pass took {took:?}"
    );
    apply_plan(&mut s, plan);
    let mut seen = HashSet::new();
    for id in &ids {
        let t = s.task(id).unwrap();
        assert_eq!(t.observed_state(), TaskState::TaskPending);
        for a in &t.networks {
            for addr in &a.addresses {
                assert!(
                    seen.insert((a.network_id.clone(), addr.clone())),
                    "{addr} twice"
                );
            }
        }
    }
    assert_eq!(
        seen.len(),
        20000,
        "one address on big and one on ingress per task"
    );
}

#[test]
fn cursors_do_not_hand_a_freed_address_out_at_once() {
    let mut s = cluster(&[("ov", "overlay", "10.1.0.0/24")]);
    let svc = service("web", &["ov"], vec![], "dnsrr");
    add(&mut s, &svc, &["t1"]);
    let mut al = Allocator::new();
    pass(&mut al, &mut s);
    let first = s.task("t1").unwrap().networks[0].addresses[0].clone();
    apply(&mut s, vec![Action::RemoveTask("t1".into())]);
    apply(&mut s, vec![Action::CreateTask(new_task("t2", &svc))]);
    pass(&mut al, &mut s);
    assert_ne!(s.task("t2").unwrap().networks[0].addresses[0], first);
}

#[test]
fn new_tasks_shut_down_before_allocation_end() {
    let mut s = cluster(&[]);
    let svc = service("web", &[], vec![], "");
    add(&mut s, &svc, &["t"]);
    apply(
        &mut s,
        vec![Action::TaskDesired(TaskDesiredUpdate {
            task_id: "t".into(),
            desired_state: TaskState::TaskShutdown as i32,
        })],
    );
    pass(&mut Allocator::new(), &mut s);
    assert_eq!(state_of(&s, "t"), TaskState::TaskShutdown);
}

#[test]
fn nodes_get_an_ingress_address_and_a_mesh_address_once_they_have_a_key() {
    let mut s = cluster(&[]);
    let node = |id: &str, key: &str| Node {
        id: id.into(),
        description: Some(NodeDescription {
            wg_public_key: key.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    apply(
        &mut s,
        vec![
            Action::PutNode(node("n1", "")),
            Action::PutNode(node("n2", "KEY2")),
        ],
    );
    let mut al = Allocator::new();
    pass(&mut al, &mut s);
    let ingress = ingress_id(&s);
    let n1 = s.node("n1").unwrap().clone();
    let n2 = s.node("n2").unwrap().clone();
    assert_eq!(n1.attachments[0].network_id, ingress);
    assert_eq!(n1.attachments[0].addresses, ["10.0.0.2/16"]);
    assert_eq!(n2.attachments[0].addresses, ["10.0.0.3/16"]);
    assert_eq!(n1.mesh_addr, "");
    assert_eq!(n2.mesh_addr, "10.255.0.2/16", ".1 is never handed out");
    assert!(al.plan(&s, NOW).is_empty());

    // n1 gets its key: a mesh address, its ingress address unchanged.
    let mut n1 = n1;
    n1.description = Some(NodeDescription {
        wg_public_key: "KEY1".into(),
        ..Default::default()
    });
    apply(&mut s, vec![Action::PutNode(n1)]);
    pass(&mut al, &mut s);
    let n1 = s.node("n1").unwrap();
    assert_eq!(n1.mesh_addr, "10.255.0.3/16");
    assert_eq!(n1.attachments[0].addresses, ["10.0.0.2/16"]);

    // A node's addresses and a task's never collide on ingress.
    let svc = service("web", &[], vec![port(80, 0, "")], "");
    add(&mut s, &svc, &["t"]);
    pass(&mut al, &mut s);
    let t = s.task("t").unwrap();
    assert_eq!(t.networks[0].network_id, ingress);
    let taken: Vec<&str> = vec!["10.0.0.2/16", "10.0.0.3/16"];
    assert!(!taken.contains(&t.networks[0].addresses[0].as_str()));
}

#[test]
fn a_node_allocation_is_dropped_when_ingress_goes() {
    let mut s = cluster(&[]);
    apply(
        &mut s,
        vec![Action::PutNode(Node {
            id: "n".into(),
            ..Default::default()
        })],
    );
    let mut al = Allocator::new();
    pass(&mut al, &mut s);
    assert_eq!(s.node("n").unwrap().attachments.len(), 1);
    let ingress = ingress_id(&s);
    // Ingress cannot go while a node holds an address on it? It can: only tasks and services
    // keep a network. The node's attachment is then dropped.
    apply(&mut s, vec![Action::RemoveNetwork(ingress)]);
    pass(&mut al, &mut s);
    assert!(s.node("n").unwrap().attachments.is_empty());
}

/// Applies proposals straight to the store, as a lone manager's Raft would.
struct Direct {
    store: Store,
    index: std::sync::atomic::AtomicU64,
}

impl crate::store::Proposer for Direct {
    fn propose(
        &self,
        req: StoreRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send>> {
        let index = self.index.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let result = self.store.apply(index, &req);
        Box::pin(async move { result })
    }
}

async fn wait_for(store: &Store, what: &str, f: impl Fn(&State) -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !store.read(&f) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_driver_makes_missing_networks_then_allocates_on_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.set_proposer(std::sync::Arc::new(Direct {
        store: store.clone(),
        index: 1.into(),
    }));
    // A cluster from before networks: no network objects at all.
    store
        .propose(vec![action(Action::PutCluster(shoal_proto::v1::Cluster {
            id: "c".into(),
            ..Default::default()
        }))])
        .await
        .unwrap();
    let (stop, stopped) = watch::channel(false);
    let driver = tokio::spawn(run(store.clone(), stopped));
    wait_for(&store, "the predefined networks", |s| {
        ["ingress", "bridge", "host", "none"]
            .iter()
            .all(|n| s.network_by_name(n).is_some_and(|n| n.predefined))
    })
    .await;

    let ingress = store.read(ingress_id);
    let svc = service("web", &[], vec![port(80, 0, "")], "");
    let task = new_task("t", &svc);
    store
        .propose(vec![
            action(Action::CreateService(svc)),
            action(Action::CreateTask(task)),
        ])
        .await
        .unwrap();
    wait_for(&store, "the task's allocation", |s| {
        s.task("t")
            .is_some_and(|t| t.observed_state() == TaskState::TaskPending)
    })
    .await;
    store.read(|s| {
        let t = s.task("t").unwrap();
        assert_eq!(t.networks[0].network_id, ingress);
        assert!(t
            .endpoint
            .as_ref()
            .is_some_and(|e| e.ports[0].published_port == 30000));
    });
    stop.send(true).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), driver)
        .await
        .expect("the driver stops on shutdown")
        .unwrap();
}
