//! Drives the real `shoalctl` binary against an in-process fake manager (the Control service over
//! mutual TLS with a freshly made CA), the way a user would: exit codes, stdout and stderr.

use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use shoal_proto::config::AdminConfig;
use shoal_proto::pki::{self, CertRole};
use shoal_proto::v1::control_server::{Control, ControlServer};
use shoal_proto::v1::*;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

const S: i64 = 1_000_000_000;

#[derive(Default)]
struct State {
    services: Vec<Service>,
    tasks: Vec<Task>,
    networks: Vec<Network>,
    /// Every UpdateService request as received.
    updates: Vec<UpdateServiceRequest>,
}

/// A manager whose tasks advance one state per ListTasks call; tasks of services whose image is
/// "crash" fail instead of running, and services asking for "nofit" never get a node. It starts
/// with init's predefined networks, resolves network names in service specs to IDs, and
/// allocates VIPs and published ports the way the allocator does (roughly).
#[derive(Default, Clone)]
struct Fake {
    state: Arc<Mutex<State>>,
}

impl Fake {
    fn new() -> Self {
        let fake = Fake::default();
        {
            let mut st = fake.lock();
            for (name, driver, subnet, ingress) in [
                ("ingress", "overlay", "10.0.0.0/16", true),
                ("bridge", "bridge", "10.88.0.0/16", false),
                ("host", "host", "", false),
                ("none", "none", "", false),
            ] {
                st.networks.push(Network {
                    id: format!("{name}{}", "0".repeat(25 - name.len())),
                    meta: Some(Meta {
                        created_at: 1_700_000_000 * S,
                        ..Default::default()
                    }),
                    spec: Some(NetworkSpec {
                        name: name.into(),
                        driver: driver.into(),
                        ingress,
                        ..Default::default()
                    }),
                    subnet: subnet.into(),
                    gateway: if subnet.is_empty() {
                        String::new()
                    } else {
                        subnet.replace(".0/16", ".1")
                    },
                    vni: if ingress { 4096 } else { 0 },
                    predefined: true,
                });
            }
        }
        fake
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake state lock")
    }
}

fn net_name(n: &Network) -> &str {
    n.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("")
}

fn find_network<'a>(st: &'a State, name_or_id: &str) -> Result<&'a Network, Status> {
    st.networks
        .iter()
        .find(|n| n.id == name_or_id || net_name(n) == name_or_id)
        .ok_or_else(|| Status::not_found(format!("network {name_or_id} not found")))
}

/// What controlapi does with a spec: network names become IDs.
fn resolve_networks(st: &State, spec: &mut ServiceSpec) -> Result<(), Status> {
    if let Some(t) = spec.task.as_mut() {
        for n in t.networks.iter_mut() {
            n.target = find_network(st, &n.target)?.id.clone();
        }
    }
    Ok(())
}

/// What the allocator does: a VIP on every overlay network (plus ingress for ingress ports),
/// published port 0 filled in from 30000.
fn allocate(st: &State, spec: &ServiceSpec, index: usize) -> Endpoint {
    let ep = spec.endpoint.clone().unwrap_or_default();
    let mut ports = ep.ports.clone();
    for (i, p) in ports.iter_mut().enumerate() {
        if p.published_port == 0 {
            p.published_port = 30000 + i as u32;
        }
    }
    let mut on: Vec<String> = spec
        .task
        .as_ref()
        .map(|t| t.networks.iter().map(|n| n.target.clone()).collect())
        .unwrap_or_default();
    if ports.iter().any(|p| p.publish_mode != "host") {
        on.push(
            find_network(st, "ingress")
                .map(|n| n.id.clone())
                .unwrap_or_default(),
        );
    }
    let virtual_ips = on
        .iter()
        .filter_map(|id| st.networks.iter().find(|n| &n.id == id))
        .filter(|n| n.spec.as_ref().is_some_and(|s| s.driver == "overlay"))
        .map(|n| {
            let base = n.subnet.split('/').next().unwrap_or("").to_string();
            let prefix = base.rsplit_once('.').map(|(p, _)| p).unwrap_or("");
            VirtualIp {
                network_id: n.id.clone(),
                addr: format!("{prefix}.{}/24", 2 + index),
            }
        })
        .collect();
    Endpoint {
        spec: Some(ep),
        ports,
        virtual_ips,
    }
}

fn find<'a>(st: &'a State, name_or_id: &str) -> Result<&'a Service, Status> {
    st.services
        .iter()
        .find(|s| s.id == name_or_id || s.spec.as_ref().is_some_and(|x| x.name == name_or_id))
        .ok_or_else(|| Status::not_found(format!("service {name_or_id} not found")))
}

fn make_tasks(st: &mut State, svc: &Service) {
    let spec = svc.spec.clone().unwrap_or_default();
    for slot in 1..=spec.replicas {
        if st.tasks.iter().any(|t| {
            t.service_id == svc.id
                && t.slot == slot
                && t.desired_state <= TaskState::TaskRunning as i32
        }) {
            continue;
        }
        let id = format!("task{:02}{}", st.tasks.len(), "x".repeat(20));
        st.tasks.push(Task {
            id,
            meta: Some(Meta {
                created_at: shoal_proto::now_ns(),
                ..Default::default()
            }),
            service_id: svc.id.clone(),
            service_name: spec.name.clone(),
            slot,
            spec: spec.task.clone(),
            spec_version: svc.spec_version,
            status: Some(TaskStatus {
                state: TaskState::TaskPending as i32,
                timestamp: shoal_proto::now_ns(),
                ..Default::default()
            }),
            desired_state: TaskState::TaskRunning as i32,
            ..Default::default()
        });
    }
}

fn advance(t: &mut Task) {
    let image = t
        .spec
        .as_ref()
        .and_then(|s| s.container.as_ref())
        .map(|c| c.image.clone())
        .unwrap_or_default();
    let Some(st) = t.status.as_mut() else { return };
    let state = TaskState::try_from(st.state).unwrap_or(TaskState::TaskNew);
    if image == "nofit" {
        st.err = "no suitable node (insufficient resources on 1 node)".into();
        return;
    }
    let next = match state {
        TaskState::TaskPending => TaskState::TaskAssigned,
        TaskState::TaskAssigned => TaskState::TaskPreparing,
        TaskState::TaskPreparing => TaskState::TaskStarting,
        TaskState::TaskStarting if image == "crash" => {
            st.exit_code = 1;
            st.err = "task: non-zero exit (1)".into();
            t.desired_state = TaskState::TaskShutdown as i32;
            TaskState::TaskFailed
        }
        TaskState::TaskStarting => TaskState::TaskRunning,
        s => s,
    };
    st.state = next as i32;
    t.node_id = "node1node1node1node1node1".into();
}

type LogStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<ServiceLogsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Control for Fake {
    async fn create_service(
        &self,
        req: Request<CreateServiceRequest>,
    ) -> Result<Response<CreateServiceResponse>, Status> {
        let mut spec = req.into_inner().spec.unwrap_or_default();
        shoal_proto::spec::validate_service(&spec)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut st = self.lock();
        resolve_networks(&st, &mut spec)?;
        if find(&st, &spec.name).is_ok() {
            return Err(Status::already_exists(format!(
                "name: service {} already exists",
                spec.name
            )));
        }
        let endpoint = allocate(&st, &spec, st.services.len());
        let svc = Service {
            id: format!("svc{:02}abcdefghijklmnopqrstu", st.services.len()),
            meta: Some(Meta {
                version: 1,
                created_at: 1_700_000_000 * S,
                updated_at: 1_700_000_000 * S,
            }),
            spec: Some(spec),
            spec_version: 1,
            endpoint: Some(endpoint),
            ..Default::default()
        };
        st.services.push(svc.clone());
        make_tasks(&mut st, &svc);
        Ok(Response::new(CreateServiceResponse { service: Some(svc) }))
    }

    async fn get_service(
        &self,
        req: Request<GetServiceRequest>,
    ) -> Result<Response<GetServiceResponse>, Status> {
        let st = self.lock();
        let svc = find(&st, &req.into_inner().name_or_id)?.clone();
        Ok(Response::new(GetServiceResponse { service: Some(svc) }))
    }

    async fn list_services(
        &self,
        _req: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        let st = self.lock();
        let services = st
            .services
            .iter()
            .map(|s| ServiceSummary {
                service: Some(s.clone()),
                running_tasks: st
                    .tasks
                    .iter()
                    .filter(|t| {
                        t.service_id == s.id
                            && t.status.as_ref().map(|x| x.state)
                                == Some(TaskState::TaskRunning as i32)
                    })
                    .count() as u64,
                desired_tasks: s.spec.as_ref().map(|x| x.replicas).unwrap_or(0),
            })
            .collect();
        Ok(Response::new(ListServicesResponse { services }))
    }

    async fn update_service(
        &self,
        req: Request<UpdateServiceRequest>,
    ) -> Result<Response<UpdateServiceResponse>, Status> {
        let req = req.into_inner();
        let mut st = self.lock();
        st.updates.push(req.clone());
        let mut spec = req.spec.unwrap_or_default();
        shoal_proto::spec::validate_service(&spec)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        resolve_networks(&st, &mut spec)?;
        let index = st
            .services
            .iter()
            .position(|s| s.id == req.name_or_id)
            .ok_or_else(|| Status::not_found(format!("service {} not found", req.name_or_id)))?;
        let endpoint = allocate(&st, &spec, index);
        let svc = &mut st.services[index];
        // Like the manager: a changed task template makes a new spec version and new tasks.
        let task_changed = svc.spec.as_ref().and_then(|s| s.task.clone()) != spec.task;
        if task_changed {
            svc.spec_version += 1;
        }
        svc.spec = Some(spec);
        svc.endpoint = Some(endpoint);
        let svc = svc.clone();
        if task_changed {
            for t in st.tasks.iter_mut().filter(|t| t.service_id == svc.id) {
                t.desired_state = TaskState::TaskShutdown as i32;
                if let Some(status) = t.status.as_mut() {
                    status.state = TaskState::TaskShutdown as i32;
                }
            }
        }
        make_tasks(&mut st, &svc);
        Ok(Response::new(UpdateServiceResponse { service: Some(svc) }))
    }

    async fn scale_service(
        &self,
        req: Request<ScaleServiceRequest>,
    ) -> Result<Response<ScaleServiceResponse>, Status> {
        let req = req.into_inner();
        let mut st = self.lock();
        let id = find(&st, &req.name_or_id)?.id.clone();
        let svc = {
            let svc = st
                .services
                .iter_mut()
                .find(|s| s.id == id)
                .ok_or_else(|| Status::internal("vanished"))?;
            if let Some(spec) = svc.spec.as_mut() {
                spec.replicas = req.replicas;
            }
            svc.clone()
        };
        make_tasks(&mut st, &svc);
        Ok(Response::new(ScaleServiceResponse { service: Some(svc) }))
    }

    async fn remove_service(
        &self,
        req: Request<RemoveServiceRequest>,
    ) -> Result<Response<RemoveServiceResponse>, Status> {
        let mut st = self.lock();
        let id = find(&st, &req.into_inner().name_or_id)?.id.clone();
        st.services.retain(|s| s.id != id);
        st.tasks.retain(|t| t.service_id != id);
        Ok(Response::new(RemoveServiceResponse { id }))
    }

    async fn list_tasks(
        &self,
        req: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let req = req.into_inner();
        let mut st = self.lock();
        let id = find(&st, &req.service)?.id.clone();
        let mut tasks = Vec::new();
        for t in st.tasks.iter_mut().filter(|t| t.service_id == id) {
            advance(t);
            tasks.push(t.clone());
        }
        let node_names: HashMap<String, String> =
            [("node1node1node1node1node1".to_string(), "host1".to_string())].into();
        Ok(Response::new(ListTasksResponse { tasks, node_names }))
    }

    async fn list_nodes(
        &self,
        _req: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        Ok(Response::new(ListNodesResponse {
            nodes: vec![Node {
                id: "node1node1node1node1node1".into(),
                spec: Some(NodeSpec {
                    role: NodeRole::RoleManager as i32,
                    ..Default::default()
                }),
                description: Some(NodeDescription {
                    hostname: "host1".into(),
                    ..Default::default()
                }),
                status: Some(NodeStatus {
                    state: NodeState::NodeReady as i32,
                    ..Default::default()
                }),
                manager_status: Some(ManagerStatus {
                    leader: true,
                    reachability: "reachable".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
        }))
    }

    async fn get_node(
        &self,
        req: Request<GetNodeRequest>,
    ) -> Result<Response<GetNodeResponse>, Status> {
        let req = req.into_inner();
        if req.name_or_id != "host1" {
            return Err(Status::not_found(format!(
                "node {} not found",
                req.name_or_id
            )));
        }
        // A worker: `node rm` goes straight to RemoveNode (a manager would be demoted first).
        Ok(Response::new(GetNodeResponse {
            node: Some(Node {
                id: "node1node1node1node1node1".into(),
                ..Default::default()
            }),
        }))
    }

    async fn update_node(
        &self,
        req: Request<UpdateNodeRequest>,
    ) -> Result<Response<UpdateNodeResponse>, Status> {
        let req = req.into_inner();
        if req.name_or_id != "host1" {
            return Err(Status::not_found(format!(
                "node {} not found",
                req.name_or_id
            )));
        }
        let mut labels: HashMap<String, String> = req.labels_add;
        for k in &req.labels_rm {
            labels.remove(k);
        }
        Ok(Response::new(UpdateNodeResponse {
            node: Some(Node {
                id: "node1node1node1node1node1".into(),
                spec: Some(NodeSpec {
                    availability: req.availability.unwrap_or_default(),
                    labels,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }))
    }

    async fn remove_node(
        &self,
        req: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        let req = req.into_inner();
        if !req.force {
            return Err(Status::failed_precondition(format!(
                "node {:?} is up: stop its agent first, or use --force",
                req.name_or_id
            )));
        }
        Ok(Response::new(RemoveNodeResponse {
            id: "node1node1node1node1node1".into(),
        }))
    }

    async fn join_token(
        &self,
        req: Request<JoinTokenRequest>,
    ) -> Result<Response<JoinTokenResponse>, Status> {
        let role = req.into_inner().role;
        Ok(Response::new(JoinTokenResponse {
            token: format!("SHOAL-TOKEN-{role}"),
        }))
    }

    type ServiceLogsStream = LogStream;

    async fn create_network(
        &self,
        req: Request<CreateNetworkRequest>,
    ) -> Result<Response<CreateNetworkResponse>, Status> {
        let spec = req.into_inner().spec.unwrap_or_default();
        shoal_proto::spec::validate_network(&spec)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut st = self.lock();
        if find_network(&st, &spec.name).is_ok() {
            return Err(Status::already_exists(format!(
                "name: network {} already exists",
                spec.name
            )));
        }
        let n = st.networks.len();
        let overlay = spec.driver == "overlay";
        let subnet = if spec.subnet.is_empty() && overlay {
            format!("10.1.{n}.0/24")
        } else {
            spec.subnet.clone()
        };
        let gateway = match (&spec.gateway, subnet.rsplit_once(".0/")) {
            (g, _) if !g.is_empty() => g.clone(),
            (_, Some((prefix, _))) => format!("{prefix}.1"),
            _ => String::new(),
        };
        let net = Network {
            id: format!("net{n:02}{}", "n".repeat(20)),
            meta: Some(Meta {
                created_at: 1_700_000_000 * S,
                ..Default::default()
            }),
            spec: Some(spec),
            subnet,
            gateway,
            vni: if overlay { 4096 + n as u32 } else { 0 },
            predefined: false,
        };
        st.networks.push(net.clone());
        Ok(Response::new(CreateNetworkResponse { network: Some(net) }))
    }

    async fn get_network(
        &self,
        req: Request<GetNetworkRequest>,
    ) -> Result<Response<GetNetworkResponse>, Status> {
        let st = self.lock();
        let net = find_network(&st, &req.into_inner().name_or_id)?.clone();
        let services = st
            .services
            .iter()
            .filter(|s| {
                s.spec
                    .as_ref()
                    .and_then(|x| x.task.as_ref())
                    .is_some_and(|t| t.networks.iter().any(|a| a.target == net.id))
            })
            .filter_map(|s| s.spec.as_ref().map(|x| x.name.clone()))
            .collect();
        Ok(Response::new(GetNetworkResponse {
            network: Some(net),
            services,
        }))
    }

    async fn list_networks(
        &self,
        _req: Request<ListNetworksRequest>,
    ) -> Result<Response<ListNetworksResponse>, Status> {
        let st = self.lock();
        Ok(Response::new(ListNetworksResponse {
            networks: st.networks.clone(),
        }))
    }

    async fn remove_network(
        &self,
        req: Request<RemoveNetworkRequest>,
    ) -> Result<Response<RemoveNetworkResponse>, Status> {
        let mut st = self.lock();
        let net = find_network(&st, &req.into_inner().name_or_id)?.clone();
        let name = net_name(&net).to_string();
        if net.predefined && name != "ingress" {
            return Err(Status::failed_precondition(format!(
                "network {name} is predefined and cannot be removed"
            )));
        }
        let users: Vec<String> = st
            .services
            .iter()
            .filter(|s| {
                s.spec
                    .as_ref()
                    .and_then(|x| x.task.as_ref())
                    .is_some_and(|t| t.networks.iter().any(|a| a.target == net.id))
            })
            .filter_map(|s| s.spec.as_ref().map(|x| x.name.clone()))
            .collect();
        if !users.is_empty() {
            return Err(Status::failed_precondition(format!(
                "network {name} is in use by service {}",
                users.join(", ")
            )));
        }
        st.networks.retain(|n| n.id != net.id);
        Ok(Response::new(RemoveNetworkResponse { id: net.id }))
    }

    async fn service_logs(
        &self,
        req: Request<ServiceLogsRequest>,
    ) -> Result<Response<LogStream>, Status> {
        let req = req.into_inner();
        let st = self.lock();
        let svc = find(&st, &req.service)?;
        let t = st
            .tasks
            .iter()
            .find(|t| t.service_id == svc.id)
            .ok_or_else(|| Status::not_found("no task"))?;
        let line = |stream: &str, data: &str| LogLine {
            task_id: t.id.clone(),
            task_name: format!("{}.{}.{}", t.service_name, t.slot, t.id),
            node_id: t.node_id.clone(),
            stream: stream.into(),
            timestamp: 1_700_000_000 * S,
            data: data.as_bytes().to_vec(),
        };
        let resp = ServiceLogsResponse {
            lines: vec![line("stdout", "hello\n"), line("stderr", "oops\n")],
        };
        Ok(Response::new(Box::pin(tokio_stream::iter(vec![Ok(resp)]))))
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn shoalctl(config: &Path, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_shoalctl"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .await
        .expect("run shoalctl");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A fake manager serving over mutual TLS, and an admin.conf that reaches it.
struct Served {
    fake: Fake,
    conf: std::path::PathBuf,
    dir: std::path::PathBuf,
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Served {
    async fn stop(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}

async fn serve(test: &str) -> Served {
    let fake = Fake::new();
    let ca = pki::generate_ca("test-cluster").expect("ca");
    let server_id = pki::issue(
        &ca,
        "manager-1",
        CertRole::Manager,
        std::time::Duration::from_secs(86_400),
    )
    .expect("manager cert");
    let admin = pki::issue(
        &ca,
        "admin",
        CertRole::Admin,
        std::time::Duration::from_secs(86_400),
    )
    .expect("admin cert");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(pki::server_tls(&ca.cert_pem, &server_id))
            .expect("tls")
            .add_service(ControlServer::new(fake.clone()))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stop_rx.await;
            }),
    );

    let dir = std::env::temp_dir().join(format!("shoalctl-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let conf = dir.join("admin.conf");
    AdminConfig {
        // The first manager is down: shoalctl must fail over to the second.
        managers: vec!["127.0.0.1:1".into(), addr.to_string()],
        ca_cert: ca.cert_pem.clone(),
        cert: admin.cert_pem,
        key: admin.key_pem,
    }
    .save(&conf)
    .expect("save admin.conf");
    Served {
        fake,
        conf,
        dir,
        addr,
        stop: stop_tx,
        server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoalctl_against_a_fake_manager() {
    let served = serve("services").await;
    let conf = served.conf.clone();
    let dir = served.dir.clone();
    let addr = served.addr;

    // create waits for convergence and prints plain progress (stdout is a pipe)
    let r = shoalctl(
        &conf,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "busybox",
            "sleep",
            "3600",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    let first = r.stdout.lines().next().unwrap_or_default();
    assert!(first.starts_with("svc00"), "{}", r.stdout);
    assert!(
        r.stdout.contains("overall progress: 2 out of 2 tasks"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("1/2: running   [=="), "{}", r.stdout);
    assert!(
        r.stdout.ends_with("verify: Service converged\n"),
        "{}",
        r.stdout
    );

    // listings
    let r = shoalctl(&conf, &["service", "ls", "--format", "json"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let row: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("json line");
    assert_eq!(row["Name"], "web");
    assert_eq!(row["Replicas"], "2/2");
    assert_eq!(row["Mode"], "replicated");
    let r = shoalctl(&conf, &["service", "ps", "web"]).await;
    assert!(r.stdout.starts_with("ID "), "{}", r.stdout);
    assert!(r.stdout.contains("web.2"), "{}", r.stdout);
    assert!(r.stdout.contains("host1"), "{}", r.stdout);
    let r = shoalctl(&conf, &["service", "ps", "web", "--format", "json"]).await;
    let row: serde_json::Value =
        serde_json::from_str(r.stdout.lines().next().unwrap_or_default()).expect("ps json");
    assert_eq!(row["Name"], "web.1");
    assert_eq!(row["Node"], "host1");
    assert_eq!(row["DesiredState"], "Running");
    let r = shoalctl(&conf, &["service", "inspect", "web"]).await;
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).expect("inspect json");
    assert_eq!(
        doc[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Args"],
        serde_json::json!(["sleep", "3600"])
    );
    let r = shoalctl(&conf, &["node", "ls"]).await;
    assert!(
        r.stdout.contains("host1") && r.stdout.contains("Leader"),
        "{}",
        r.stdout
    );

    // node update prints the node id; node rm refuses an up node unless forced
    let r = shoalctl(
        &conf,
        &[
            "node",
            "update",
            "--availability",
            "drain",
            "--label-add",
            "zone=a",
            "host1",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "node1node1node1node1node1\n");
    let r = shoalctl(&conf, &["node", "update", "host1"]).await;
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        "Error: --availability, --label-add or --label-rm: nothing to update\n"
    );
    let r = shoalctl(&conf, &["node", "update", "--label-add", "zone=a", "nope"]).await;
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr, "Error: node nope not found\n");
    let r = shoalctl(&conf, &["node", "rm", "host1"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.starts_with("Error: host1: node \"host1\" is up"),
        "{}",
        r.stderr
    );
    let r = shoalctl(&conf, &["node", "rm", "--force", "host1"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "host1\n");

    // the manager's error message comes through as one line
    let r = shoalctl(
        &conf,
        &["service", "create", "--name", "web", "-d", "busybox"],
    )
    .await;
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr, "Error: name: service web already exists\n");

    // a task that fails with restart condition none cannot converge
    let r = shoalctl(
        &conf,
        &[
            "service",
            "create",
            "--name",
            "bad",
            "--restart-condition",
            "none",
            "crash",
        ],
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(
        r.stderr,
        "Error: service bad cannot converge: 1/1: failed: task: non-zero exit (1) (restart condition is none)\n"
    );

    // scale waits too
    let r = shoalctl(&conf, &["service", "scale", "web=3"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("web scaled to 3\n"), "{}", r.stdout);
    assert!(
        r.stdout.contains("overall progress: 3 out of 3 tasks"),
        "{}",
        r.stdout
    );

    // logs: stdout and stderr lines, docker's prefix
    let r = shoalctl(&conf, &["service", "logs", "web"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "web.1.task00xxxxxx@host1    | hello\n");
    assert_eq!(r.stderr, "web.1.task00xxxxxx@host1    | oops\n");

    let r = shoalctl(&conf, &["cluster", "join-token", "worker", "-q"]).await;
    assert_eq!(r.stdout, "SHOAL-TOKEN-0\n");
    let r = shoalctl(&conf, &["cluster", "join-token", "worker"]).await;
    // The token goes through a root-only file, never onto the join command line.
    assert!(
        r.stdout
            .contains("echo SHOAL-TOKEN-0 > /etc/shoal/join-token")
            && r.stdout
                .contains(&format!("--token-file /etc/shoal/join-token {addr}"))
            && !r.stdout.contains("--token SHOAL"),
        "{}",
        r.stdout
    );

    // rm keeps going past an unknown name, then fails
    let r = shoalctl(&conf, &["service", "rm", "nope", "web"]).await;
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "web\n");
    assert_eq!(r.stderr, "Error: nope: service nope not found\n");

    // no manager answers: one line naming the addresses tried
    let dead = dir.join("dead.conf");
    let mut cfg = AdminConfig::load(&conf).expect("reload admin.conf");
    cfg.managers = vec!["127.0.0.1:1".into()];
    cfg.save(&dead).expect("save dead.conf");
    let r = shoalctl(&dead, &["service", "ls"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .starts_with("Error: no manager reachable: cannot connect to manager at 127.0.0.1:1"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);

    served.stop().await;
}

fn sent_spec(fake: &Fake) -> ServiceSpec {
    fake.lock()
        .updates
        .last()
        .and_then(|u| u.spec.clone())
        .expect("an UpdateService request")
}

fn targets(spec: &ServiceSpec) -> Vec<String> {
    spec.task
        .as_ref()
        .map(|t| t.networks.iter().map(|n| n.target.clone()).collect())
        .unwrap_or_default()
}

fn ports(spec: &ServiceSpec) -> Vec<(u32, u32, String, String)> {
    spec.endpoint
        .as_ref()
        .map(|e| {
            e.ports
                .iter()
                .map(|p| {
                    (
                        p.published_port,
                        p.target_port,
                        p.protocol.clone(),
                        p.publish_mode.clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn port(published: u32, target: u32, protocol: &str, mode: &str) -> (u32, u32, String, String) {
    (published, target, protocol.into(), mode.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_against_a_fake_manager() {
    let served = serve("networks").await;
    let conf = served.conf.clone();
    let fake = served.fake.clone();

    // create prints the id; the spec sent carries every flag
    let r = shoalctl(
        &conf,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.5.0.0/24",
            "--gateway",
            "10.5.0.254",
            "--opt",
            "encrypted",
            "-o",
            "mtu=1400",
            "--attachable",
            "--label",
            "team=a",
            "front",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let front_id = r.stdout.trim().to_string();
    assert!(front_id.starts_with("net04"), "{}", r.stdout);
    {
        let st = fake.lock();
        let spec = st.networks[4].spec.clone().expect("spec");
        assert_eq!(spec.name, "front");
        assert_eq!(spec.driver, "overlay");
        assert_eq!(spec.subnet, "10.5.0.0/24");
        assert_eq!(spec.gateway, "10.5.0.254");
        assert!(spec.encrypted && spec.attachable);
        assert_eq!(spec.options.get("mtu").map(String::as_str), Some("1400"));
        assert_eq!(spec.labels.get("team").map(String::as_str), Some("a"));
    }
    let r = shoalctl(&conf, &["network", "create", "back"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let back_id = r.stdout.trim().to_string();
    let r = shoalctl(&conf, &["network", "create", "-d", "bridge", "extra"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);

    // client-side checks fail before anything is sent, naming the field
    for (args, err) in [
        (
            &[
                "network",
                "create",
                "--subnet",
                "10.6.0.0/24",
                "--gateway",
                "10.7.0.1",
                "x",
            ][..],
            "Error: --gateway: 10.7.0.1 is outside the subnet 10.6.0.0/24\n",
        ),
        (
            &["network", "create", "--subnet", "10.6.0.0/33", "x"],
            "Error: --subnet: \"10.6.0.0/33\" has an invalid prefix length \"33\" (0-32)\n",
        ),
        (
            &[
                "network",
                "create",
                "-d",
                "bridge",
                "--opt",
                "encrypted",
                "x",
            ],
            "Error: --opt: encrypted is only for overlay networks, not bridge\n",
        ),
    ] {
        let r = shoalctl(&conf, args).await;
        assert_eq!((r.code, r.stderr.as_str()), (1, err), "{args:?}");
    }
    let r = shoalctl(&conf, &["network", "create", "-d", "macvlan", "x"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .starts_with("Error: --driver: invalid value \"macvlan\""),
        "{}",
        r.stderr
    );
    assert_eq!(fake.lock().networks.len(), 7, "nothing was created");
    let r = shoalctl(&conf, &["network", "create", "front"]).await;
    assert_eq!(r.stderr, "Error: name: network front already exists\n");

    // ls: docker's columns, sorted by name; -q; json rows
    let r = shoalctl(&conf, &["network", "ls"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "NETWORK ID     NAME      DRIVER    SCOPE");
    let names: Vec<&str> = lines[1..]
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        names,
        vec!["back", "bridge", "extra", "front", "host", "ingress", "none"]
    );
    assert_eq!(
        lines[4],
        format!("{}   front     overlay   swarm", &front_id[..12])
    );
    assert!(lines[2].ends_with("bridge    local"), "{}", lines[2]);
    let r = shoalctl(&conf, &["network", "ls", "-q", "--no-trunc"]).await;
    assert_eq!(r.stdout.lines().nth(3), Some(front_id.as_str()));
    let r = shoalctl(&conf, &["network", "ls", "--format", "json"]).await;
    let row: serde_json::Value =
        serde_json::from_str(r.stdout.lines().nth(3).unwrap_or_default()).expect("json row");
    assert_eq!(row["Name"], "front");
    assert_eq!(row["Scope"], "swarm");
    assert_eq!(row["Labels"], "team=a");

    // service create with networks and published ports: names go out, the manager stores ids
    let r = shoalctl(
        &conf,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "--network",
            "front",
            "--network",
            "name=back,alias=api",
            "-p",
            "8080:80",
            "--publish",
            "published=5353,target=53,protocol=udp,mode=host",
            "busybox",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.ends_with("verify: Service converged\n"),
        "{}",
        r.stdout
    );
    let stored = fake.lock().services[0].spec.clone().expect("spec");
    assert_eq!(targets(&stored), vec![front_id.clone(), back_id.clone()]);
    assert_eq!(
        stored.task.as_ref().map(|t| t.networks[1].aliases.clone()),
        Some(vec!["api".to_string()])
    );
    assert_eq!(
        ports(&stored),
        vec![
            port(8080, 80, "tcp", "ingress"),
            port(5353, 53, "udp", "host")
        ]
    );
    let r = shoalctl(
        &conf,
        &[
            "service", "create", "--name", "x", "-p", "8080:80", "-p", "8080:81", "busybox",
        ],
    )
    .await;
    assert_eq!(
        r.stderr,
        "Error: --publish: published port 8080/tcp is given twice\n"
    );
    let r = shoalctl(
        &conf,
        &[
            "service",
            "create",
            "--name",
            "x",
            "-d",
            "--network",
            "nope",
            "busybox",
        ],
    )
    .await;
    assert_eq!(r.stderr, "Error: network nope not found\n");

    // ls shows the ingress ports; inspect the networks and the endpoint with docker's names
    let r = shoalctl(&conf, &["service", "ls"]).await;
    assert!(
        r.stdout
            .lines()
            .next()
            .unwrap_or_default()
            .ends_with("IMAGE     PORTS"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .lines()
            .nth(1)
            .unwrap_or_default()
            .ends_with("busybox   *:8080->80/tcp"),
        "{}",
        r.stdout
    );
    let r = shoalctl(&conf, &["service", "ls", "--format", "json"]).await;
    let row: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("json row");
    assert_eq!(row["Ports"], "*:8080->80/tcp");
    let r = shoalctl(&conf, &["service", "inspect", "web"]).await;
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).expect("inspect json");
    let svc = &doc[0];
    assert_eq!(
        svc["Spec"]["TaskTemplate"]["Networks"],
        serde_json::json!([{"Target": front_id}, {"Target": back_id, "Aliases": ["api"]}])
    );
    assert_eq!(svc["Spec"]["EndpointSpec"]["Mode"], "vip");
    assert_eq!(
        svc["Spec"]["EndpointSpec"]["Ports"][0],
        serde_json::json!({"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"})
    );
    assert_eq!(svc["Endpoint"]["Ports"][1]["PublishMode"], "host");
    assert_eq!(
        svc["Endpoint"]["VirtualIPs"][0],
        serde_json::json!({"NetworkID": front_id, "Addr": "10.5.0.2/24"})
    );
    assert_eq!(
        svc["Endpoint"]["VirtualIPs"][2]["NetworkID"],
        "ingress000000000000000000"
    );

    let r = shoalctl(&conf, &["network", "inspect", "front", "--format", "json"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).expect("network json");
    let n = &doc[0];
    assert_eq!(n["Name"], "front");
    assert_eq!(n["Id"], front_id.as_str());
    assert_eq!(n["Scope"], "swarm");
    assert_eq!(n["Driver"], "overlay");
    assert_eq!(n["Attachable"], true);
    assert_eq!(n["Ingress"], false);
    assert_eq!(
        n["IPAM"],
        serde_json::json!({"Driver": "default", "Options": {}, "Config": [{"Subnet": "10.5.0.0/24", "Gateway": "10.5.0.254"}]})
    );
    assert_eq!(n["Options"]["encrypted"], "");
    assert_eq!(n["Options"]["mtu"], "1400");
    assert_eq!(n["Labels"], serde_json::json!({"team": "a"}));
    assert_eq!(
        n["Services"],
        serde_json::json!({"web": {"VIP": "10.5.0.2"}})
    );
    let r = shoalctl(&conf, &["network", "inspect", "ingress", "nope"]).await;
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr, "Error: network nope not found\n");
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).expect("partial json");
    assert_eq!(doc[0]["Ingress"], true);

    // rm of a network in use: the manager's error, naming the service
    let r = shoalctl(&conf, &["network", "rm", "front"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "Error: front: network front is in use by service web\n")
    );

    // update: publish and network changes go out as a whole spec; waits for the new tasks
    let r = shoalctl(
        &conf,
        &[
            "service",
            "update",
            "--publish-add",
            "9090:90",
            "--publish-rm",
            "5353",
            "--network-add",
            "extra",
            "web",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("web\n"), "{}", r.stdout);
    assert!(
        r.stdout.contains("overall progress: 2 out of 2 tasks"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.ends_with("verify: Service converged\n"),
        "{}",
        r.stdout
    );
    let sent = sent_spec(&fake);
    assert_eq!(
        fake.lock().updates[0].name_or_id,
        "svc00abcdefghijklmnopqrstu"
    );
    assert_eq!(
        targets(&sent),
        vec![front_id.clone(), back_id.clone(), "extra".to_string()]
    );
    assert_eq!(
        ports(&sent),
        vec![
            port(8080, 80, "tcp", "ingress"),
            port(9090, 90, "tcp", "ingress")
        ]
    );
    {
        let st = fake.lock();
        assert_eq!(st.services[0].spec_version, 2);
        let running_v2 = st
            .tasks
            .iter()
            .filter(|t| {
                t.spec_version == 2
                    && t.status.as_ref().map(|s| s.state) == Some(TaskState::TaskRunning as i32)
            })
            .count();
        assert_eq!(running_v2, 2, "the wait ended once the new tasks ran");
    }
    let r = shoalctl(&conf, &["service", "ls"]).await;
    assert!(
        r.stdout.contains("*:8080->80/tcp, *:9090->90/tcp"),
        "{}",
        r.stdout
    );

    let r = shoalctl(
        &conf,
        &[
            "service",
            "update",
            "-d",
            "--network-rm",
            "back",
            "--endpoint-mode",
            "dnsrr",
            "--publish-rm",
            "published=8080,protocol=tcp",
            "--publish-rm",
            "9090",
            "web",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "web\n");
    let sent = sent_spec(&fake);
    assert_eq!(
        targets(&sent),
        vec![front_id.clone(), fake.lock().networks[6].id.clone()]
    );
    assert!(ports(&sent).is_empty());
    assert_eq!(
        sent.endpoint.as_ref().map(|e| e.mode.as_str()),
        Some("dnsrr")
    );

    // refusals: named fields, nothing sent
    let updates = fake.lock().updates.len();
    for (args, err) in [
        (&["service", "update", "--network-add", "front", "web"][..], "Error: --network-add: service web is already attached to network front\n"),
        (&["service", "update", "--publish-add", "8080:80", "web"], "Error: --endpoint-mode: dnsrr cannot serve the ingress-mode port 8080/tcp (publish it with mode=host, or use vip)\n"),
        (&["service", "update", "web"], "Error: nothing to update: give at least one flag (see shoalctl service update --help)\n"),
        (&["service", "update", "--network-add", "nope", "web"], "Error: network nope: network nope not found\n"),
    ] {
        let r = shoalctl(&conf, args).await;
        assert_eq!((r.code, r.stderr.as_str()), (1, err), "{args:?}");
    }
    assert_eq!(fake.lock().updates.len(), updates);

    // once the service is gone its networks go too; predefined ones stay
    let r = shoalctl(&conf, &["service", "rm", "web"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = shoalctl(
        &conf,
        &["network", "rm", "front", "bridge", "back", "extra"],
    )
    .await;
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "front\nback\nextra\n");
    assert_eq!(
        r.stderr,
        "Error: bridge: network bridge is predefined and cannot be removed\n"
    );
    assert_eq!(fake.lock().networks.len(), 4);

    served.stop().await;
}

fn container_of(spec: &ServiceSpec) -> ContainerSpec {
    spec.task
        .as_ref()
        .and_then(|t| t.container.clone())
        .expect("a container spec")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confinement_against_a_fake_manager() {
    let served = serve("confinement").await;
    let conf = served.conf.clone();
    let fake = served.fake.clone();
    let profile = served.dir.join("profile.json");
    std::fs::write(&profile, br#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).expect("profile");
    let seccomp = format!("seccomp={}", profile.display());

    // create sends every knob in the spec
    let r = shoalctl(
        &conf,
        &[
            "service",
            "create",
            "--name",
            "locked",
            "-d",
            "--cap-drop",
            "ALL",
            "--cap-add",
            "net_bind_service",
            "--device",
            "/dev/fuse:/dev/fuse:rw",
            "--security-opt",
            "no-new-privileges",
            "--security-opt",
            &seccomp,
            "--read-only",
            "-u",
            "1000:1000",
            "--group-add",
            "audio",
            "--ulimit",
            "nofile=1024:2048",
            "--sysctl",
            "net.core.somaxconn=1024",
            "--init",
            "--hostname",
            "locked",
            "-w",
            "/srv",
            "--entrypoint",
            "/bin/sh -c",
            "--stop-signal",
            "SIGQUIT",
            "--log-driver",
            "json-file",
            "--log-opt",
            "max-size=1m",
            "--log-opt",
            "max-file=2",
            "busybox",
            "echo hi",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let spec = fake.lock().services[0].spec.clone().expect("spec");
    let c = container_of(&spec);
    assert_eq!(c.capability_add, vec!["CAP_NET_BIND_SERVICE"]);
    assert_eq!(c.capability_drop, vec!["ALL"]);
    assert_eq!(
        c.devices,
        vec![DeviceMapping {
            path_on_host: "/dev/fuse".into(),
            path_in_container: "/dev/fuse".into(),
            cgroup_permissions: "rw".into(),
        }]
    );
    let p = c.privileges.clone().expect("privileges");
    assert!(p.no_new_privileges);
    assert_eq!(
        p.seccomp,
        Some(SeccompOpts {
            mode: "custom".into(),
            profile: br#"{"defaultAction":"SCMP_ACT_ALLOW"}"#.to_vec(),
        })
    );
    assert!(c.read_only && c.init && !c.privileged);
    assert_eq!((c.user.as_str(), c.dir.as_str()), ("1000:1000", "/srv"));
    assert_eq!(c.groups, vec!["audio"]);
    assert_eq!(c.ulimits.len(), 1);
    assert_eq!(c.sysctls.len(), 1);
    assert_eq!(c.command, vec!["/bin/sh", "-c"]);
    assert_eq!(c.args, vec!["echo hi"]);
    assert_eq!(c.stop_signal, "SIGQUIT");
    let log = spec
        .task
        .as_ref()
        .and_then(|t| t.log_driver.clone())
        .expect("log");
    assert_eq!(log.name, "json-file");
    assert_eq!(log.options.len(), 2);

    // inspect shows them with docker's names
    let r = shoalctl(&conf, &["service", "inspect", "locked"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).expect("inspect json");
    let cs = &doc[0]["Spec"]["TaskTemplate"]["ContainerSpec"];
    assert_eq!(cs["CapabilityDrop"], serde_json::json!(["ALL"]));
    assert_eq!(cs["Privileges"]["NoNewPrivileges"], true);
    assert_eq!(cs["Privileges"]["Seccomp"]["Mode"], "custom");
    assert_eq!(cs["Ulimits"][0]["Name"], "nofile");
    assert_eq!(cs["StopSignal"], "SIGQUIT");
    assert_eq!(
        doc[0]["Spec"]["TaskTemplate"]["LogDriver"]["Options"]["max-file"],
        "2"
    );

    // update sends the changed spec, and the changed template makes new tasks
    let version = fake.lock().services[0].spec_version;
    let r = shoalctl(
        &conf,
        &[
            "service",
            "update",
            "-d",
            "--cap-add",
            "NET_RAW",
            "--cap-drop",
            "NET_BIND_SERVICE",
            "--privileged",
            "--read-only=false",
            "--device-rm",
            "/dev/fuse",
            "--security-opt",
            "seccomp=unconfined",
            "--group-rm",
            "audio",
            "--ulimit-add",
            "nproc=64",
            "--sysctl-rm",
            "net.core.somaxconn",
            "--user",
            "",
            "--entrypoint",
            "",
            "--stop-signal",
            "",
            "--log-opt",
            "max-file=4",
            "locked",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "locked\n");
    let sent = sent_spec(&fake);
    let c = container_of(&sent);
    assert_eq!(c.capability_add, vec!["CAP_NET_RAW"]);
    assert_eq!(c.capability_drop, vec!["ALL"]);
    assert!(c.privileged && !c.read_only && c.init);
    assert!(c.devices.is_empty() && c.groups.is_empty() && c.sysctls.is_empty());
    let p = c.privileges.clone().expect("privileges");
    assert!(p.no_new_privileges, "options not named keep their value");
    assert_eq!(
        p.seccomp,
        Some(SeccompOpts {
            mode: "unconfined".into(),
            profile: Vec::new(),
        })
    );
    assert_eq!(c.ulimits.len(), 2);
    assert!(c.user.is_empty() && c.command.is_empty() && c.stop_signal.is_empty());
    let log = sent
        .task
        .as_ref()
        .and_then(|t| t.log_driver.clone())
        .expect("log");
    assert_eq!(log.options.get("max-file").map(String::as_str), Some("4"));
    assert_eq!(log.options.get("max-size").map(String::as_str), Some("1m"));
    assert_eq!(fake.lock().services[0].spec_version, version + 1);

    // bad values: one line naming the flag, nothing sent
    let updates = fake.lock().updates.len();
    let missing = served.dir.join("missing.json");
    let missing_opt = format!("seccomp={}", missing.display());
    for (args, want) in [
        (
            vec!["service", "create", "--name", "x", "--security-opt", &missing_opt, "busybox"],
            format!(
                "Error: --security-opt: cannot read seccomp profile {}: No such file or directory (os error 2)\n",
                missing.display()
            ),
        ),
        (
            vec!["service", "create", "--name", "x", "--security-opt", "apparmor=unconfined", "busybox"],
            "Error: --security-opt: unsupported security option \"apparmor\": only no-new-privileges and seccomp are supported\n".into(),
        ),
        (
            vec!["service", "create", "--name", "x", "--cap-add", "FLY", "busybox"],
            "Error: --cap-add: unknown capability \"FLY\" (use names like NET_ADMIN or CAP_NET_ADMIN, or ALL)\n".into(),
        ),
        (
            vec!["service", "create", "--name", "x", "--sysctl", "kernel.panic=1", "busybox"],
            "Error: --sysctl: kernel.panic is not a namespaced sysctl: it would change the whole node, not just the container (allowed: net.*, fs.mqueue.*, kernel.msg*, kernel.sem, kernel.shm*)\n".into(),
        ),
        (
            vec!["service", "update", "--log-driver", "syslog", "locked"],
            "Error: --log-driver: unsupported log driver \"syslog\" (only json-file is supported)\n".into(),
        ),
        (
            vec!["service", "update", "--device-rm", "/dev/sda", "locked"],
            "Error: --device-rm: service locked has no device /dev/sda\n".into(),
        ),
    ] {
        let r = shoalctl(&conf, &args).await;
        assert_eq!((r.code, r.stderr.as_str()), (1, want.as_str()), "{args:?}");
    }
    assert_eq!(fake.lock().updates.len(), updates);
    assert_eq!(fake.lock().services.len(), 1);

    // a client that bypasses shoalctl is refused by the manager's validation
    let mut bad = sent.clone();
    if let Some(c) = bad.task.as_mut().and_then(|t| t.container.as_mut()) {
        c.capability_add = vec!["RESET".into()];
    }
    let e = shoal_proto::spec::validate_service(&bad).expect_err("refused");
    assert_eq!(
        e.to_string(),
        "--cap-add: unknown capability \"RESET\" (use names like NET_ADMIN or CAP_NET_ADMIN, or ALL)"
    );

    served.stop().await;
}
