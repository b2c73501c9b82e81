//! The fake manager: the Control service over in-memory state, roughly as the real one answers.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use shoal_proto::v1::control_server::Control;
use shoal_proto::v1::*;
use tonic::{Request, Response, Status};

pub(crate) const S: i64 = 1_000_000_000;

#[derive(Default)]
pub(crate) struct State {
    pub(crate) services: Vec<Service>,
    pub(crate) tasks: Vec<Task>,
    pub(crate) networks: Vec<Network>,
    /// Every UpdateService request as received.
    pub(crate) updates: Vec<UpdateServiceRequest>,
    pub(crate) secrets: Vec<Secret>,
    pub(crate) configs: Vec<Config>,
    /// The volumes of every node, as the nodes would report them.
    pub(crate) volumes: Vec<Volume>,
    /// node id -> hostname, for ListVolumes.
    pub(crate) volume_nodes: HashMap<String, String>,
    /// Nodes ListVolumes reports as not answering.
    pub(crate) unreachable: Vec<String>,
    /// What ClusterAdmin.ClusterStatus answers.
    pub(crate) managers: Vec<ManagerInfo>,
}

/// A manager whose tasks advance one state per ListTasks call; tasks of services whose image is
/// "crash" fail instead of running, and services asking for "nofit" never get a node. It starts
/// with init's predefined networks, resolves network names in service specs to IDs, and
/// allocates VIPs and published ports the way the allocator does (roughly).
#[derive(Default, Clone)]
pub(crate) struct Fake {
    pub(crate) state: Arc<Mutex<State>>,
}

impl Fake {
    pub(crate) fn new() -> Self {
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

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake state lock")
    }
}

pub(crate) fn net_name(n: &Network) -> &str {
    n.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("")
}

pub(crate) fn find_network<'a>(st: &'a State, name_or_id: &str) -> Result<&'a Network, Status> {
    st.networks
        .iter()
        .find(|n| n.id == name_or_id || net_name(n) == name_or_id)
        .ok_or_else(|| Status::not_found(format!("network {name_or_id} not found")))
}

/// What controlapi does with a spec: network names become IDs.
pub(crate) fn resolve_networks(st: &State, spec: &mut ServiceSpec) -> Result<(), Status> {
    if let Some(t) = spec.task.as_mut() {
        for n in t.networks.iter_mut() {
            n.target = find_network(st, &n.target)?.id.clone();
        }
    }
    Ok(())
}

/// What the allocator does: a VIP on every overlay network (plus ingress for ingress ports),
/// published port 0 filled in from 30000.
pub(crate) fn allocate(st: &State, spec: &ServiceSpec, index: usize) -> Endpoint {
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

pub(crate) fn find<'a>(st: &'a State, name_or_id: &str) -> Result<&'a Service, Status> {
    st.services
        .iter()
        .find(|s| s.id == name_or_id || s.spec.as_ref().is_some_and(|x| x.name == name_or_id))
        .ok_or_else(|| Status::not_found(format!("service {name_or_id} not found")))
}

pub(crate) fn make_tasks(st: &mut State, svc: &Service) {
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

pub(crate) fn advance(t: &mut Task) {
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

pub(crate) type LogStream =
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

    async fn create_secret(
        &self,
        req: Request<CreateSecretRequest>,
    ) -> Result<Response<CreateSecretResponse>, Status> {
        let spec = req.into_inner().spec.unwrap_or_default();
        let mut st = self.lock();
        if st.secrets.iter().any(|x| data_name(&x.spec) == spec.name) {
            return Err(Status::already_exists(format!(
                "secret {} already exists",
                spec.name
            )));
        }
        let secret = Secret {
            id: format!("sec{:02}abcdefghijklmnopqrstu", st.secrets.len()),
            meta: Some(data_meta()),
            spec: Some(spec),
        };
        st.secrets.push(secret.clone());
        Ok(Response::new(CreateSecretResponse {
            secret: Some(without_data(secret)),
        }))
    }

    async fn get_secret(
        &self,
        req: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        let name = req.into_inner().name_or_id;
        let st = self.lock();
        let secret = st
            .secrets
            .iter()
            .find(|x| x.id == name || data_name(&x.spec) == name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("secret {name} not found")))?;
        Ok(Response::new(GetSecretResponse {
            secret: Some(without_data(secret)),
        }))
    }

    async fn list_secrets(
        &self,
        _req: Request<ListSecretsRequest>,
    ) -> Result<Response<ListSecretsResponse>, Status> {
        let secrets = self
            .lock()
            .secrets
            .iter()
            .cloned()
            .map(without_data)
            .collect();
        Ok(Response::new(ListSecretsResponse { secrets }))
    }

    async fn remove_secret(
        &self,
        req: Request<RemoveSecretRequest>,
    ) -> Result<Response<RemoveSecretResponse>, Status> {
        let name = req.into_inner().name_or_id;
        let mut st = self.lock();
        let i = st
            .secrets
            .iter()
            .position(|x| x.id == name || data_name(&x.spec) == name)
            .ok_or_else(|| Status::not_found(format!("secret {name} not found")))?;
        let secret_name = data_name(&st.secrets[i].spec).to_string();
        let users: Vec<String> = st
            .services
            .iter()
            .filter_map(|s| s.spec.as_ref())
            .filter(|s| {
                s.task
                    .as_ref()
                    .and_then(|t| t.container.as_ref())
                    .is_some_and(|c| c.secrets.iter().any(|r| r.secret_name == secret_name))
            })
            .map(|s| s.name.clone())
            .collect();
        if !users.is_empty() {
            return Err(Status::failed_precondition(format!(
                "secret {secret_name} is in use by the following service(s): {}",
                users.join(", ")
            )));
        }
        let removed = st.secrets.remove(i);
        Ok(Response::new(RemoveSecretResponse { id: removed.id }))
    }

    async fn create_config(
        &self,
        req: Request<CreateConfigRequest>,
    ) -> Result<Response<CreateConfigResponse>, Status> {
        let spec = req.into_inner().spec.unwrap_or_default();
        let mut st = self.lock();
        if st.configs.iter().any(|x| config_name(x) == spec.name) {
            return Err(Status::already_exists(format!(
                "config {} already exists",
                spec.name
            )));
        }
        let config = Config {
            id: format!("cfg{:02}abcdefghijklmnopqrstu", st.configs.len()),
            meta: Some(data_meta()),
            spec: Some(spec),
        };
        st.configs.push(config.clone());
        Ok(Response::new(CreateConfigResponse {
            config: Some(config),
        }))
    }

    async fn get_config(
        &self,
        req: Request<GetConfigRequest>,
    ) -> Result<Response<GetConfigResponse>, Status> {
        let name = req.into_inner().name_or_id;
        let st = self.lock();
        let config = st
            .configs
            .iter()
            .find(|x| x.id == name || config_name(x) == name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("config {name} not found")))?;
        Ok(Response::new(GetConfigResponse {
            config: Some(config),
        }))
    }

    async fn list_configs(
        &self,
        _req: Request<ListConfigsRequest>,
    ) -> Result<Response<ListConfigsResponse>, Status> {
        let configs = self.lock().configs.clone();
        Ok(Response::new(ListConfigsResponse { configs }))
    }

    async fn remove_config(
        &self,
        req: Request<RemoveConfigRequest>,
    ) -> Result<Response<RemoveConfigResponse>, Status> {
        let name = req.into_inner().name_or_id;
        let mut st = self.lock();
        let i = st
            .configs
            .iter()
            .position(|x| x.id == name || config_name(x) == name)
            .ok_or_else(|| Status::not_found(format!("config {name} not found")))?;
        let removed = st.configs.remove(i);
        Ok(Response::new(RemoveConfigResponse { id: removed.id }))
    }

    async fn update_secret(
        &self,
        _req: Request<UpdateSecretRequest>,
    ) -> Result<Response<UpdateSecretResponse>, Status> {
        Err(Status::unimplemented("update_secret"))
    }

    async fn update_config(
        &self,
        _req: Request<UpdateConfigRequest>,
    ) -> Result<Response<UpdateConfigResponse>, Status> {
        Err(Status::unimplemented("update_config"))
    }

    async fn list_volumes(
        &self,
        req: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let r = req.into_inner();
        let st = self.lock();
        let volumes = st
            .volumes
            .iter()
            .filter(|v| r.node.is_empty() || on_node(&st, v, &r.node))
            .filter(|v| r.name.is_empty() || v.name == r.name)
            .cloned()
            .collect();
        Ok(Response::new(ListVolumesResponse {
            volumes,
            node_names: st.volume_nodes.clone(),
            unreachable: st.unreachable.clone(),
        }))
    }

    async fn remove_volume(
        &self,
        req: Request<RemoveVolumeRequest>,
    ) -> Result<Response<RemoveVolumeResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.lock();
        let matching: Vec<usize> = st
            .volumes
            .iter()
            .enumerate()
            .filter(|(_, v)| v.name == r.name && (r.node.is_empty() || on_node(&st, v, &r.node)))
            .map(|(i, _)| i)
            .collect();
        if matching.is_empty() {
            if r.force {
                return Ok(Response::new(RemoveVolumeResponse { nodes: vec![] }));
            }
            return Err(Status::not_found(format!("no such volume: {}", r.name)));
        }
        if let Some(i) = matching
            .iter()
            .find(|i| !st.volumes[**i].in_use_by.is_empty())
        {
            return Err(Status::failed_precondition(format!(
                "volume {} is in use by task {}",
                r.name, st.volumes[*i].in_use_by[0]
            )));
        }
        let mut nodes = Vec::new();
        for i in matching.into_iter().rev() {
            nodes.push(st.volumes.remove(i).node_id);
        }
        Ok(Response::new(RemoveVolumeResponse { nodes }))
    }

    async fn prune_volumes(
        &self,
        req: Request<PruneVolumesRequest>,
    ) -> Result<Response<PruneVolumesResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.lock();
        let (removed, kept): (Vec<Volume>, Vec<Volume>) =
            std::mem::take(&mut st.volumes).into_iter().partition(|v| {
                v.in_use_by.is_empty()
                    && (r.all || v.anonymous)
                    && (r.node.is_empty() || v.node_id == r.node)
            });
        st.volumes = kept;
        let reclaimed_bytes = removed.iter().map(|v| v.size_bytes.max(0) as u64).sum();
        Ok(Response::new(PruneVolumesResponse {
            removed,
            reclaimed_bytes,
        }))
    }
}

fn data_name(spec: &Option<SecretSpec>) -> &str {
    spec.as_ref().map(|s| s.name.as_str()).unwrap_or("")
}

fn config_name(c: &Config) -> &str {
    c.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("")
}

fn data_meta() -> Meta {
    Meta {
        version: 3,
        created_at: 1_700_000_000 * S,
        updated_at: 1_700_000_000 * S,
    }
}

/// The control API never returns a secret's data.
fn without_data(mut s: Secret) -> Secret {
    if let Some(spec) = s.spec.as_mut() {
        spec.data.clear();
    }
    s
}

/// Whether a volume lives on the node named by id or hostname.
fn on_node(st: &State, v: &Volume, node: &str) -> bool {
    v.node_id == node || st.volume_nodes.get(&v.node_id).is_some_and(|h| h == node)
}
