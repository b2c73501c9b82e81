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
}

/// A manager whose tasks advance one state per ListTasks call; tasks of services whose image is
/// "crash" fail instead of running, and services asking for "nofit" never get a node.
#[derive(Default, Clone)]
struct Fake {
    state: Arc<Mutex<State>>,
}

impl Fake {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake state lock")
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
        if st
            .tasks
            .iter()
            .any(|t| t.service_id == svc.id && t.slot == slot)
        {
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
        let spec = req.into_inner().spec.unwrap_or_default();
        shoal_proto::spec::validate_service(&spec)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut st = self.lock();
        if find(&st, &spec.name).is_ok() {
            return Err(Status::already_exists(format!(
                "name: service {} already exists",
                spec.name
            )));
        }
        let svc = Service {
            id: format!("svc{:02}abcdefghijklmnopqrstu", st.services.len()),
            meta: Some(Meta {
                version: 1,
                created_at: 1_700_000_000 * S,
                updated_at: 1_700_000_000 * S,
            }),
            spec: Some(spec),
            spec_version: 1,
            endpoint: None,
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
        _req: Request<UpdateServiceRequest>,
    ) -> Result<Response<UpdateServiceResponse>, Status> {
        Err(Status::unimplemented("update"))
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
        _req: Request<CreateNetworkRequest>,
    ) -> Result<Response<CreateNetworkResponse>, Status> {
        Err(Status::unimplemented("networks"))
    }

    async fn get_network(
        &self,
        _req: Request<GetNetworkRequest>,
    ) -> Result<Response<GetNetworkResponse>, Status> {
        Err(Status::unimplemented("networks"))
    }

    async fn list_networks(
        &self,
        _req: Request<ListNetworksRequest>,
    ) -> Result<Response<ListNetworksResponse>, Status> {
        Err(Status::unimplemented("networks"))
    }

    async fn remove_network(
        &self,
        _req: Request<RemoveNetworkRequest>,
    ) -> Result<Response<RemoveNetworkResponse>, Status> {
        Err(Status::unimplemented("networks"))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoalctl_against_a_fake_manager() {
    let ca = pki::generate_ca("test-cluster").expect("ca");
    let server_id = pki::issue(&ca, "manager-1", CertRole::Manager).expect("manager cert");
    let admin = pki::issue(&ca, "admin", CertRole::Admin).expect("admin cert");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(pki::server_tls(&ca.cert_pem, &server_id))
            .expect("tls")
            .add_service(ControlServer::new(Fake::default()))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stop_rx.await;
            }),
    );

    let dir = std::env::temp_dir().join(format!("shoalctl-test-{}", std::process::id()));
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
    assert!(
        r.stdout.contains(&format!("--token SHOAL-TOKEN-0 {addr}")),
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

    let _ = std::fs::remove_dir_all(&dir);
    let _ = stop_tx.send(());
    let _ = server.await;
}
