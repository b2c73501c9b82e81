//! The control API shoalctl speaks: validates what users ask for, writes it through Raft and
//! answers reads from the store.

pub mod config;
mod data_update;
pub mod linearized;
mod named_data;
pub mod network;
pub mod secret;
pub mod service;
pub mod volume;

pub use linearized::Linearized;

use std::collections::HashMap;
use std::pin::Pin;

use futures::Stream;
use shoal_proto::spec::{
    check_label, check_label_count, check_label_key, check_replicas, validate_service,
};
use shoal_proto::token::JoinToken;
use shoal_proto::v1::control_server::Control;
use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::*;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::auth::require_admin;
use crate::dispatcher::logs::LogBroker;
use crate::store::{State, Store, StoreError};
use network::{check_endpoint, check_removable, find_network, network_name, resolve_networks};

/// How many times `network create` re-plans after racing another create (same subnet or VNI).
const CREATE_NETWORK_ATTEMPTS: usize = 3;

/// The gRPC control service.
pub struct ControlApi {
    store: Store,
    logs: LogBroker,
    /// This manager's advertised address, printed in join instructions.
    advertise_addr: String,
}

impl ControlApi {
    /// Makes the service over the store and the dispatcher's log broker.
    pub fn new(store: Store, logs: LogBroker, advertise_addr: String) -> Self {
        ControlApi {
            store,
            logs,
            advertise_addr,
        }
    }
}

impl ControlApi {
    /// Writes one action through Raft, mapping a store error to the status the client sees.
    async fn write(&self, action: Action) -> Result<(), Status> {
        self.store
            .propose(vec![StoreAction {
                action: Some(action),
            }])
            .await
            .map_err(Status::from)
    }
}

impl ControlApi {
    /// Writes a removal the store refuses while something still uses the object; the store's
    /// message names the user ("secret db_pw is in use by service app_db").
    async fn write_removal(&self, action: Action) -> Result<(), Status> {
        match self.store.propose(vec![store_action(action)]).await {
            Ok(()) => Ok(()),
            Err(StoreError::Conflict(msg)) => Err(Status::failed_precondition(msg)),
            Err(e) => Err(e.into()),
        }
    }
}

/// Wraps one action for a request.
fn store_action(action: Action) -> StoreAction {
    StoreAction {
        action: Some(action),
    }
}

/// Finds a service by id, name, or unique id prefix.
pub fn find_service(s: &State, name_or_id: &str) -> Result<Service, Status> {
    if let Some(svc) = s.service(name_or_id) {
        return Ok(svc.clone());
    }
    if let Some(svc) = s.service_by_name(name_or_id) {
        return Ok(svc.clone());
    }
    let mut matches = s.services().filter(|svc| svc.id.starts_with(name_or_id));
    match (matches.next(), matches.next()) {
        (Some(svc), None) if !name_or_id.is_empty() => Ok(svc.clone()),
        (Some(_), Some(_)) => Err(Status::invalid_argument(format!(
            "service {name_or_id:?} is ambiguous: several service ids start with it"
        ))),
        _ => Err(Status::not_found(format!(
            "service {name_or_id:?} not found"
        ))),
    }
}

/// Finds a node by id, hostname, or unique id prefix.
pub fn find_node(s: &State, name_or_id: &str) -> Result<Node, Status> {
    if let Some(n) = s.node(name_or_id) {
        return Ok(n.clone());
    }
    let by_name: Vec<&Node> = s
        .nodes()
        .filter(|n| {
            n.description
                .as_ref()
                .is_some_and(|d| d.hostname == name_or_id)
        })
        .collect();
    if by_name.len() == 1 {
        return Ok(by_name[0].clone());
    }
    if by_name.len() > 1 {
        return Err(Status::invalid_argument(format!(
            "node {name_or_id:?} is ambiguous: several nodes have this hostname; use the node id"
        )));
    }
    let mut matches = s.nodes().filter(|n| n.id.starts_with(name_or_id));
    match (matches.next(), matches.next()) {
        (Some(n), None) if !name_or_id.is_empty() => Ok(n.clone()),
        (Some(_), Some(_)) => Err(Status::invalid_argument(format!(
            "node {name_or_id:?} is ambiguous: several node ids start with it"
        ))),
        _ => Err(Status::not_found(format!("node {name_or_id:?} not found"))),
    }
}

/// Checks the labels a `node update` adds and removes, before the node is even looked up; the
/// count is checked once they are applied.
fn check_node_labels(req: &UpdateNodeRequest) -> Result<(), Status> {
    let bad = |flag: &str, reason: String| Status::invalid_argument(format!("{flag}: {reason}"));
    // More than the limit in one request can only end over it; refused before any sorting.
    check_label_count("--label-add", req.labels_add.len()).map_err(invalid)?;
    if req.labels_rm.len() > shoal_proto::limits::MAX_LABELS {
        return Err(bad(
            "--label-rm",
            format!(
                "{} labels are more than the limit of {} per object",
                req.labels_rm.len(),
                shoal_proto::limits::MAX_LABELS
            ),
        ));
    }
    let mut added: Vec<(&String, &String)> = req.labels_add.iter().collect();
    added.sort();
    for (k, v) in added {
        check_label(k, v).map_err(|r| bad("--label-add", r))?;
    }
    for k in &req.labels_rm {
        check_label_key(k).map_err(|r| bad("--label-rm", r))?;
    }
    Ok(())
}

fn invalid(e: shoal_proto::spec::SpecError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// Running and desired task counts of a service.
fn task_counts(s: &State, svc: &Service) -> (u64, u64) {
    let running = s
        .tasks_of_service(&svc.id)
        .filter(|t| {
            t.desired_state <= TaskState::TaskRunning as i32
                && t.status.as_ref().map(|st| st.state) == Some(TaskState::TaskRunning as i32)
        })
        .count() as u64;
    let spec = svc.spec.clone().unwrap_or_default();
    let desired = if spec.mode == ServiceMode::ModeGlobal as i32 {
        s.tasks_of_service(&svc.id)
            .filter(|t| t.desired_state <= TaskState::TaskRunning as i32)
            .count() as u64
    } else {
        spec.replicas
    };
    (running, desired)
}

type LogStream = Pin<Box<dyn Stream<Item = Result<ServiceLogsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Control for ControlApi {
    async fn create_service(
        &self,
        request: Request<CreateServiceRequest>,
    ) -> Result<Response<CreateServiceResponse>, Status> {
        require_admin(&self.store, &request)?;
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: missing"))?;
        let mut spec = spec;
        validate_service(&spec).map_err(invalid)?;
        service::check_update_configs(&spec)?;
        self.store.read(|s| {
            resolve_networks(s, &mut spec)?;
            service::resolve_files(s, &mut spec)?;
            check_endpoint(s, &mut spec, None)
        })?;
        if self.store.read(|s| s.service_by_name(&spec.name).is_some()) {
            return Err(Status::already_exists(format!(
                "--name: service name {:?} is already in use",
                spec.name
            )));
        }
        let service = Service {
            id: shoal_proto::new_id(),
            meta: Some(Meta::new_at(shoal_proto::now_ns())),
            spec: Some(spec),
            spec_version: 1,
            ..Default::default()
        };
        self.write(Action::CreateService(service.clone())).await?;
        let name = service
            .spec
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        info!(service.id = %service.id, service.name = %name, "service created");
        let service = self
            .store
            .read(|s| s.service(&service.id).cloned())
            .unwrap_or(service);
        Ok(Response::new(CreateServiceResponse {
            service: Some(service::without_registry_auth(service)),
        }))
    }

    async fn get_service(
        &self,
        request: Request<GetServiceRequest>,
    ) -> Result<Response<GetServiceResponse>, Status> {
        require_admin(&self.store, &request)?;
        let name = request.into_inner().name_or_id;
        let service = self.store.read(|s| find_service(s, &name))?;
        Ok(Response::new(GetServiceResponse {
            service: Some(service::without_registry_auth(service)),
        }))
    }

    async fn list_services(
        &self,
        request: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        require_admin(&self.store, &request)?;
        let services = self.store.read(|s| {
            let mut v: Vec<ServiceSummary> = s
                .services()
                .map(|svc| {
                    let (running, desired) = task_counts(s, svc);
                    ServiceSummary {
                        service: Some(service::without_registry_auth(svc.clone())),
                        running_tasks: running,
                        desired_tasks: desired,
                    }
                })
                .collect();
            v.sort_by(|a, b| {
                let name = |x: &ServiceSummary| {
                    x.service
                        .as_ref()
                        .and_then(|s| s.spec.as_ref())
                        .map(|s| s.name.clone())
                        .unwrap_or_default()
                };
                name(a).cmp(&name(b))
            });
            v
        });
        Ok(Response::new(ListServicesResponse { services }))
    }

    async fn update_service(
        &self,
        request: Request<UpdateServiceRequest>,
    ) -> Result<Response<UpdateServiceResponse>, Status> {
        require_admin(&self.store, &request)?;
        let req = request.into_inner();
        let rollback = match req.rollback.as_str() {
            "" => false,
            "previous" => true,
            other => {
                return Err(Status::invalid_argument(format!(
                    "rollback: {other:?} is not a rollback target; only \"previous\" is"
                )))
            }
        };
        // A rollback ignores the spec sent with it (docker sends the current one).
        let spec = if rollback {
            None
        } else {
            let spec = req
                .spec
                .ok_or_else(|| Status::invalid_argument("spec: missing"))?;
            validate_service(&spec).map_err(invalid)?;
            service::check_update_configs(&spec)?;
            Some(spec)
        };
        // Without a version (0) the spec applies to the service as it is now, read again if
        // another write (the allocator's endpoint, a scale, the updater's status) lands between
        // this read and the put; with one, a change since is refused ("out of sequence").
        let (svc, name) = self
            .store
            .propose_fresh(|s| {
                let mut service = find_service(s, &req.name_or_id)?;
                service::check_version(&service, req.version)?;
                let name = service
                    .spec
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                let tasks: Vec<&Task> = s.tasks_of_service(&service.id).collect();
                let now = shoal_proto::now_ns();
                match &spec {
                    None => service::apply_rollback(&mut service, &tasks, now)?,
                    Some(spec) => {
                        let mut spec = spec.clone();
                        resolve_networks(s, &mut spec)?;
                        service::resolve_files(s, &mut spec)?;
                        service::keep_registry_auth(service.spec.as_ref(), &mut spec);
                        check_endpoint(s, &mut spec, Some(&service.id))?;
                        if spec.name != name {
                            return Err(Status::invalid_argument(
                                "--name: a service cannot be renamed",
                            ));
                        }
                        service::apply_update(&mut service, spec, &tasks, now);
                    }
                }
                Ok((
                    vec![store_action(Action::UpdateService(service.clone()))],
                    (service, name),
                ))
            })
            .await
            .map_err(|e: Status| {
                // The store's compare-and-set refused a versioned update: the same answer.
                if req.version != 0 && e.message().contains("out of sequence") {
                    Status::failed_precondition(service::OUT_OF_SEQUENCE)
                } else {
                    e
                }
            })?;
        if rollback {
            info!(service.id = %svc.id, service.name = %name, spec_version = svc.spec_version, "service rollback requested");
        } else {
            info!(service.id = %svc.id, service.name = %name, spec_version = svc.spec_version, previous_spec_version = svc.previous_spec_version, "service updated");
        }
        Ok(Response::new(UpdateServiceResponse {
            service: Some(service::without_registry_auth(svc)),
        }))
    }

    async fn scale_service(
        &self,
        request: Request<ScaleServiceRequest>,
    ) -> Result<Response<ScaleServiceResponse>, Status> {
        require_admin(&self.store, &request)?;
        let req = request.into_inner();
        // Refused before anything else: the orchestrator plans one slot per replica.
        check_replicas(req.replicas)
            .map_err(|r| Status::invalid_argument(format!("scale: {r}")))?;
        let (service, name, from) = self
            .store
            .propose_fresh(|s| {
                let mut service = find_service(s, &req.name_or_id)?;
                let spec = service.spec.get_or_insert_with(Default::default);
                if spec.mode == ServiceMode::ModeGlobal as i32 {
                    return Err(Status::failed_precondition(format!(
                        "scale: service {:?} is global; only replicated services can be scaled",
                        spec.name
                    )));
                }
                let name = spec.name.clone();
                let from = spec.replicas;
                spec.replicas = req.replicas;
                if let Some(m) = service.meta.as_mut() {
                    m.updated_at = shoal_proto::now_ns();
                }
                Ok((
                    vec![store_action(Action::UpdateService(service.clone()))],
                    (service, name, from),
                ))
            })
            .await?;
        info!(service.id = %service.id, service.name = %name, from, to = req.replicas, "service scaled");
        Ok(Response::new(ScaleServiceResponse {
            service: Some(service::without_registry_auth(service)),
        }))
    }

    async fn remove_service(
        &self,
        request: Request<RemoveServiceRequest>,
    ) -> Result<Response<RemoveServiceResponse>, Status> {
        require_admin(&self.store, &request)?;
        let name = request.into_inner().name_or_id;
        let service = self.store.read(|s| find_service(s, &name))?;
        self.write(Action::RemoveService(service.id.clone()))
            .await?;
        info!(service.id = %service.id, service.name = %name, "service removed");
        Ok(Response::new(RemoveServiceResponse { id: service.id }))
    }

    async fn list_tasks(
        &self,
        request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        require_admin(&self.store, &request)?;
        let req = request.into_inner();
        let resp = self.store.read(|s| {
            let service_id = if req.service.is_empty() {
                None
            } else {
                Some(find_service(s, &req.service)?.id)
            };
            let node_id = if req.node.is_empty() {
                None
            } else {
                Some(find_node(s, &req.node)?.id)
            };
            let tasks: Vec<Task> = s
                .tasks()
                .filter(|t| service_id.as_ref().is_none_or(|id| &t.service_id == id))
                .filter(|t| node_id.as_ref().is_none_or(|id| &t.node_id == id))
                .cloned()
                .map(service::task_without_registry_auth)
                .collect();
            let node_names: HashMap<String, String> = s
                .nodes()
                .map(|n| {
                    (
                        n.id.clone(),
                        n.description
                            .as_ref()
                            .map(|d| d.hostname.clone())
                            .unwrap_or_default(),
                    )
                })
                .collect();
            Ok::<_, Status>(ListTasksResponse { tasks, node_names })
        })?;
        Ok(Response::new(resp))
    }

    async fn list_nodes(
        &self,
        request: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        require_admin(&self.store, &request)?;
        let mut nodes: Vec<Node> = self.store.read(|s| s.nodes().cloned().collect());
        nodes.sort_by(|a, b| {
            let h = |n: &Node| n.description.as_ref().map(|d| d.hostname.clone());
            h(a).cmp(&h(b)).then(a.id.cmp(&b.id))
        });
        Ok(Response::new(ListNodesResponse { nodes }))
    }

    async fn get_node(
        &self,
        request: Request<GetNodeRequest>,
    ) -> Result<Response<GetNodeResponse>, Status> {
        require_admin(&self.store, &request)?;
        let name = request.into_inner().name_or_id;
        let node = self.store.read(|s| find_node(s, &name))?;
        Ok(Response::new(GetNodeResponse { node: Some(node) }))
    }

    async fn update_node(
        &self,
        request: Request<UpdateNodeRequest>,
    ) -> Result<Response<UpdateNodeResponse>, Status> {
        require_admin(&self.store, &request)?;
        let req = request.into_inner();
        check_node_labels(&req)?;
        let node = self.store.read(|s| find_node(s, &req.name_or_id))?;
        let manager_only = !crate::node_record::runs_agent(&node);
        let spec = node.spec.clone().unwrap_or_default();
        let mut availability = None;
        if let Some(a) = req.availability {
            let a = NodeAvailability::try_from(a).map_err(|_| {
                Status::invalid_argument("--availability: must be active, pause or drain")
            })?;
            if spec.role == NodeRole::RoleManager as i32
                && manager_only
                && a != NodeAvailability::AvailabilityDrain
            {
                return Err(Status::failed_precondition(
                    "--availability: this node is a manager process without an agent; it runs no tasks and stays drained (join an agent on that host instead)",
                ));
            }
            availability = Some(a as i32);
        }
        let mut labels = spec.labels;
        for k in &req.labels_rm {
            labels.remove(k);
        }
        labels.extend(req.labels_add.clone());
        check_label_count("--label-add", labels.len()).map_err(invalid)?;
        // A delta, applied to the node as it is when the write is applied: concurrent label
        // edits, heartbeats and role changes all land instead of one undoing another.
        self.write(Action::NodeSpecUpdate(NodeSpecUpdate {
            node_id: node.id.clone(),
            availability,
            labels_add: req.labels_add,
            labels_rm: req.labels_rm,
        }))
        .await?;
        let node = self
            .store
            .read(|s| s.node(&node.id).cloned())
            .unwrap_or(node);
        info!(node.id = %node.id, availability = ?node.spec.as_ref().map(|s| s.availability), labels = ?node.spec.as_ref().map(|s| &s.labels), "node updated");
        Ok(Response::new(UpdateNodeResponse { node: Some(node) }))
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        require_admin(&self.store, &request)?;
        let req = request.into_inner();
        let node = self.store.read(|s| find_node(s, &req.name_or_id))?;
        if node.manager_status.is_some() {
            return Err(Status::failed_precondition(format!(
                "node {:?} is a manager: demote it first (removing the last manager would destroy the cluster)",
                req.name_or_id
            )));
        }
        let up = crate::node_record::is_ready(&node);
        if up && !req.force {
            return Err(Status::failed_precondition(format!(
                "node {:?} is up: stop its agent first, or use --force (its tasks are rescheduled and its certificate stops working)",
                req.name_or_id
            )));
        }
        self.write(Action::RemoveNode(node.id.clone())).await?;
        info!(node.id = %node.id, force = req.force, "node removed");
        Ok(Response::new(RemoveNodeResponse { id: node.id }))
    }

    async fn join_token(
        &self,
        request: Request<JoinTokenRequest>,
    ) -> Result<Response<JoinTokenResponse>, Status> {
        require_admin(&self.store, &request)?;
        let req = request.into_inner();
        let manager = req.role == NodeRole::RoleManager as i32;
        let cluster = self
            .store
            .propose_fresh(|s| {
                let mut cluster = s
                    .cluster()
                    .cloned()
                    .ok_or_else(|| Status::unavailable("the cluster is not initialised yet"))?;
                if !req.rotate {
                    return Ok::<_, Status>((Vec::new(), cluster));
                }
                let secret = shoal_proto::token::new_secret();
                if manager {
                    cluster.manager_token_secret = secret;
                } else {
                    cluster.worker_token_secret = secret;
                }
                Ok((
                    vec![store_action(Action::PutCluster(cluster.clone()))],
                    cluster,
                ))
            })
            .await?;
        if req.rotate {
            info!(
                role = if manager { "manager" } else { "worker" },
                "join token rotated"
            );
        }
        let fp = shoal_proto::pki::fingerprint_pem(&cluster.ca_cert_pem)
            .map_err(|e| Status::internal(e.to_string()))?;
        let secret = if manager {
            &cluster.manager_token_secret
        } else {
            &cluster.worker_token_secret
        };
        let _ = &self.advertise_addr;
        Ok(Response::new(JoinTokenResponse {
            token: JoinToken::new(&fp, secret).to_string(),
        }))
    }

    type ServiceLogsStream = LogStream;

    async fn create_network(
        &self,
        request: Request<CreateNetworkRequest>,
    ) -> Result<Response<CreateNetworkResponse>, Status> {
        require_admin(&self.store, &request)?;
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: missing"))?;
        let mut attempt = 0;
        let network = loop {
            attempt += 1;
            let now = shoal_proto::now_ns();
            let network = self
                .store
                .read(|s| network::plan_network(s, spec.clone(), now))?;
            let written = self
                .store
                .propose(vec![StoreAction {
                    action: Some(Action::CreateNetwork(network.clone())),
                }])
                .await;
            match written {
                Ok(()) => break network,
                // Another create took the same subnet or VXLAN id meanwhile: plan again.
                Err(StoreError::Conflict(_)) if attempt < CREATE_NETWORK_ATTEMPTS => continue,
                Err(e) => return Err(e.into()),
            }
        };
        info!(
            network.id = %network.id,
            network.name = %network_name(&network),
            driver = %network.spec.as_ref().map(|s| s.driver.as_str()).unwrap_or(""),
            subnet = %network.subnet,
            vni = network.vni,
            "network created"
        );
        let network = self
            .store
            .read(|s| s.network(&network.id).cloned())
            .unwrap_or(network);
        Ok(Response::new(CreateNetworkResponse {
            network: Some(network),
        }))
    }

    async fn get_network(
        &self,
        request: Request<GetNetworkRequest>,
    ) -> Result<Response<GetNetworkResponse>, Status> {
        require_admin(&self.store, &request)?;
        let name = request.into_inner().name_or_id;
        let resp = self.store.read(|s| {
            let network = find_network(s, &name)?;
            let mut services: Vec<String> = s
                .services_on_network(&network.id)
                .filter_map(|svc| svc.spec.as_ref().map(|sp| sp.name.clone()))
                .collect();
            if network.spec.as_ref().is_some_and(|sp| sp.ingress) {
                services.extend(
                    s.services()
                        .filter(|svc| {
                            crate::allocator::publishes_ingress(
                                svc.spec.as_ref().and_then(|sp| sp.endpoint.as_ref()),
                            )
                        })
                        .filter_map(|svc| svc.spec.as_ref().map(|sp| sp.name.clone())),
                );
            }
            services.sort();
            services.dedup();
            Ok::<_, Status>(GetNetworkResponse {
                network: Some(network),
                services,
            })
        })?;
        Ok(Response::new(resp))
    }

    async fn list_networks(
        &self,
        request: Request<ListNetworksRequest>,
    ) -> Result<Response<ListNetworksResponse>, Status> {
        require_admin(&self.store, &request)?;
        let mut networks: Vec<Network> = self.store.read(|s| s.networks().cloned().collect());
        networks.sort_by(|a, b| network_name(a).cmp(network_name(b)).then(a.id.cmp(&b.id)));
        Ok(Response::new(ListNetworksResponse { networks }))
    }

    async fn remove_network(
        &self,
        request: Request<RemoveNetworkRequest>,
    ) -> Result<Response<RemoveNetworkResponse>, Status> {
        require_admin(&self.store, &request)?;
        let name = request.into_inner().name_or_id;
        let network = self.store.read(|s| {
            let n = find_network(s, &name)?;
            check_removable(s, &n)?;
            Ok::<_, Status>(n)
        })?;
        // No service uses it, but tasks of a service just removed hold their addresses until
        // their containers have stopped: give them a moment, so `service rm X && network rm N`
        // works as one expects. The store still refuses if one holds on past that.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        while tokio::time::Instant::now() < deadline
            && self.store.read(|s| {
                s.services_on_network(&network.id).next().is_none()
                    && s.addresses_in_use(&network.id).any(|ip| {
                        matches!(
                            s.address_holder(&network.id, ip),
                            Some((crate::store::Kind::Task, _))
                        )
                    })
            })
        {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // Still used by a service or a task: the store's message names it.
        self.write_removal(Action::RemoveNetwork(network.id.clone()))
            .await?;
        info!(network.id = %network.id, network.name = %network_name(&network), "network removed");
        Ok(Response::new(RemoveNetworkResponse { id: network.id }))
    }

    async fn service_logs(
        &self,
        request: Request<ServiceLogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        require_admin(&self.store, &request)?;
        let req = request.into_inner();
        let (service, tasks) = self.store.read(|s| {
            let svc = find_service(s, &req.service)?;
            let tasks: Vec<Task> = s
                .tasks_of_service(&svc.id)
                .filter(|t| !t.node_id.is_empty())
                .cloned()
                .collect();
            Ok::<_, Status>((svc, tasks))
        })?;
        let stream = self
            .logs
            .open(&service, tasks, req.follow, req.tail)
            .await?;
        Ok(Response::new(Box::pin(stream)))
    }

    async fn create_secret(
        &self,
        request: Request<CreateSecretRequest>,
    ) -> Result<Response<CreateSecretResponse>, Status> {
        secret::create_secret(self, request).await
    }

    async fn get_secret(
        &self,
        request: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        secret::get_secret(self, request).await
    }

    async fn list_secrets(
        &self,
        request: Request<ListSecretsRequest>,
    ) -> Result<Response<ListSecretsResponse>, Status> {
        secret::list_secrets(self, request).await
    }

    async fn remove_secret(
        &self,
        request: Request<RemoveSecretRequest>,
    ) -> Result<Response<RemoveSecretResponse>, Status> {
        secret::remove_secret(self, request).await
    }

    async fn create_config(
        &self,
        request: Request<CreateConfigRequest>,
    ) -> Result<Response<CreateConfigResponse>, Status> {
        config::create_config(self, request).await
    }

    async fn get_config(
        &self,
        request: Request<GetConfigRequest>,
    ) -> Result<Response<GetConfigResponse>, Status> {
        config::get_config(self, request).await
    }

    async fn list_configs(
        &self,
        request: Request<ListConfigsRequest>,
    ) -> Result<Response<ListConfigsResponse>, Status> {
        config::list_configs(self, request).await
    }

    async fn remove_config(
        &self,
        request: Request<RemoveConfigRequest>,
    ) -> Result<Response<RemoveConfigResponse>, Status> {
        config::remove_config(self, request).await
    }

    async fn update_secret(
        &self,
        request: Request<UpdateSecretRequest>,
    ) -> Result<Response<UpdateSecretResponse>, Status> {
        data_update::update_secret(self, request).await
    }

    async fn update_config(
        &self,
        request: Request<UpdateConfigRequest>,
    ) -> Result<Response<UpdateConfigResponse>, Status> {
        data_update::update_config(self, request).await
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        volume::list_volumes(self, request).await
    }

    async fn remove_volume(
        &self,
        request: Request<RemoveVolumeRequest>,
    ) -> Result<Response<RemoveVolumeResponse>, Status> {
        volume::remove_volume(self, request).await
    }

    async fn prune_volumes(
        &self,
        request: Request<PruneVolumesRequest>,
    ) -> Result<Response<PruneVolumesResponse>, Status> {
        volume::prune_volumes(self, request).await
    }
}

#[cfg(test)]
mod tests;
