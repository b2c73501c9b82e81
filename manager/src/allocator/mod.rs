//! The allocator: gives services their endpoint (VIPs, published ports), new tasks their network
//! addresses (moving them NEW -> PENDING), and nodes their ingress and mesh addresses.
//!
//! [`Allocator::plan`] is pure: it reads a consistent [`State`] and returns the store actions to
//! write. Which addresses are in use comes from the store's own address index (built from the
//! store on load and kept by apply), plus what this pass handed out already; the allocator keeps
//! only a cursor per network so a freed address is not handed out again at once. [`run`] is the
//! leader-only driver: one full pass on start, then one per burst of store events.

pub mod ipam;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use shoal_proto::spec::port_protocol;
use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::{
    Endpoint, EndpointSpec, Network, NetworkAttachment, Node, NodeAllocation, PortConfig, Service,
    ServiceEndpointUpdate, StoreAction, Task, TaskAllocation, TaskState, TaskStatus,
    TaskStatusUpdate, VirtualIp,
};
use shoal_proto::wire::{EndpointMode, NetworkDriver};
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};

use crate::store::{ip_of, State, Store, StoreError, MESH_NETWORK};
use ipam::Range;

/// Most actions in one Raft write.
pub const MAX_ACTIONS_PER_WRITE: usize = 500;

/// The message of a task waiting for its addresses.
const ALLOCATING: &str = "waiting for network addresses";

/// The port's protocol as spelt on the wire, the default filled in (an unknown word kept as is).
fn protocol(p: &PortConfig) -> &str {
    port_protocol(&p.protocol)
}

/// Whether an endpoint spec publishes a port in ingress mode (its tasks join `ingress`).
pub fn publishes_ingress(spec: Option<&EndpointSpec>) -> bool {
    spec.is_some_and(|e| e.ports.iter().any(PortConfig::is_ingress))
}

/// The network holding the routing mesh, if it exists.
pub fn ingress_network(s: &State) -> Option<&Network> {
    s.networks()
        .find(|n| n.spec.as_ref().is_some_and(|sp| sp.ingress))
}

fn network_name(n: &Network) -> &str {
    n.spec.as_ref().map_or(n.id.as_str(), |s| s.name.as_str())
}

fn is_overlay(n: &Network) -> bool {
    n.spec
        .as_ref()
        .is_some_and(|s| s.driver_kind() == Ok(NetworkDriver::Overlay))
}

fn exhausted(n: &Network, range: &Range) -> String {
    format!(
        "no free address on network {} ({})",
        network_name(n),
        range.subnet()
    )
}

/// Decides allocations; holds only the search cursors between passes.
#[derive(Debug, Default)]
pub struct Allocator {
    /// Network id (or [`MESH_NETWORK`]) -> offset of the last address handed out.
    cursors: HashMap<String, u64>,
    /// The last dynamic published port handed out.
    port_cursor: u32,
}

/// One pass: the state read, and what the pass handed out so far (not in the store yet).
struct Pass<'a> {
    s: &'a State,
    cursors: &'a mut HashMap<String, u64>,
    port_cursor: &'a mut u32,
    taken: HashSet<(String, Ipv4Addr)>,
    taken_ports: HashSet<(String, u32)>,
    /// Networks found full during this pass: no need to search them again.
    full: HashSet<String>,
}

impl Pass<'_> {
    fn free(&self, net_id: &str, ip: Ipv4Addr) -> bool {
        !self.taken.contains(&(net_id.to_string(), ip))
            && self.s.address_holder(net_id, &ip.to_string()).is_none()
    }

    /// A free address on `net_id` in `range`, taken for the rest of the pass.
    fn address(&mut self, net_id: &str, range: &Range) -> Option<String> {
        if self.full.contains(net_id) {
            return None;
        }
        let cursor = self.cursors.get(net_id).copied().unwrap_or(0);
        let found = range.find(cursor, |ip| self.free(net_id, ip));
        let Some((ip, off)) = found else {
            self.full.insert(net_id.to_string());
            return None;
        };
        self.cursors.insert(net_id.to_string(), off);
        self.taken.insert((net_id.to_string(), ip));
        Some(range.with_prefix(ip))
    }

    /// Gives back an address taken earlier in this pass (its holder could not be completed).
    fn untake(&mut self, net_id: &str, addr: &str) {
        if let Ok(ip) = ip_of(addr).parse() {
            if self.taken.remove(&(net_id.to_string(), ip)) {
                self.full.remove(net_id);
            }
        }
    }

    /// Keeps `addr` for its holder when it is still a valid address of `range`.
    fn keep(&mut self, net_id: &str, range: &Range, addr: &str) -> bool {
        let Ok(ip) = ip_of(addr).parse::<Ipv4Addr>() else {
            return false;
        };
        if !range.usable(ip) || self.taken.contains(&(net_id.to_string(), ip)) {
            return false;
        }
        self.taken.insert((net_id.to_string(), ip));
        true
    }

    /// A free ingress published port for `proto`.
    fn port(&mut self, proto: &str, service_id: &str) -> Option<u32> {
        let (lo, hi) = (*ipam::DYNAMIC_PORTS.start(), *ipam::DYNAMIC_PORTS.end());
        let span = hi - lo + 1;
        // Right after the last port handed out (from the bottom on a fresh allocator).
        let start = if *self.port_cursor < lo {
            0
        } else {
            *self.port_cursor - lo + 1
        };
        let found = (0..span).map(|i| lo + (start + i) % span).find(|&p| {
            !self.taken_ports.contains(&(proto.to_string(), p))
                && self
                    .s
                    .ingress_port_holder(proto, p)
                    .is_none_or(|h| h == service_id)
        })?;
        *self.port_cursor = found;
        self.taken_ports.insert((proto.to_string(), found));
        Some(found)
    }

    /// The endpoint `svc` should have, keeping what it has where still wanted; `None` when the
    /// service needs none (no endpoint spec, no overlay network).
    fn endpoint(&mut self, svc: &Service) -> Result<Option<Endpoint>, String> {
        let spec = svc.spec.as_ref();
        let ep_spec = spec.and_then(|s| s.endpoint.clone());
        let nets: Vec<&Network> = spec
            .and_then(|s| s.task.as_ref())
            .map(|t| t.networks.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|c| self.s.network(&c.target))
            .filter(|n| is_overlay(n))
            .collect();
        let vip_mode = ep_spec
            .as_ref()
            .is_none_or(|e| e.mode_kind() != Ok(EndpointMode::Dnsrr));
        let mut vip_nets: Vec<&Network> = if vip_mode { nets } else { Vec::new() };
        if publishes_ingress(ep_spec.as_ref()) {
            if let Some(ingress) = ingress_network(self.s) {
                if vip_mode && !vip_nets.iter().any(|n| n.id == ingress.id) {
                    vip_nets.push(ingress);
                }
            }
        }
        vip_nets.dedup_by(|a, b| a.id == b.id);
        if ep_spec.is_none() && vip_nets.is_empty() {
            return Ok(None);
        }
        let current = svc.endpoint.clone().unwrap_or_default();
        let ports = self.ports(svc, ep_spec.as_ref(), &current)?;
        let mut virtual_ips = Vec::new();
        for n in vip_nets {
            let Some(range) = Range::of_network(n) else {
                continue;
            };
            let kept = current
                .virtual_ips
                .iter()
                .find(|v| v.network_id == n.id && self.keep(&n.id, &range, &v.addr));
            let addr = match kept {
                Some(v) => v.addr.clone(),
                None => match self.address(&n.id, &range) {
                    Some(a) => a,
                    None => {
                        for v in &virtual_ips {
                            let v: &VirtualIp = v;
                            self.untake(&v.network_id, &v.addr);
                        }
                        return Err(exhausted(n, &range));
                    }
                },
            };
            virtual_ips.push(VirtualIp {
                network_id: n.id.clone(),
                addr,
            });
        }
        Ok(Some(Endpoint {
            spec: ep_spec,
            ports,
            virtual_ips,
        }))
    }

    /// The spec's ports with every ingress port 0 filled in, reusing the ports the service got
    /// for the same (name, protocol, target) before.
    fn ports(
        &mut self,
        svc: &Service,
        spec: Option<&EndpointSpec>,
        current: &Endpoint,
    ) -> Result<Vec<PortConfig>, String> {
        let Some(spec) = spec else {
            return Ok(Vec::new());
        };
        let explicit: HashSet<(&str, u32)> = spec
            .ports
            .iter()
            .filter(|p| p.is_ingress() && p.published_port != 0)
            .map(|p| (protocol(p), p.published_port))
            .collect();
        for (proto, port) in &explicit {
            if let Some(holder) = self.s.ingress_port_holder(proto, *port) {
                if holder != svc.id {
                    let name = self
                        .s
                        .service(holder)
                        .and_then(|s| s.spec.as_ref())
                        .map_or(holder, |s| s.name.as_str());
                    return Err(format!(
                        "published port {port}/{proto} is already in use by service {name}"
                    ));
                }
            }
            self.taken_ports.insert((proto.to_string(), *port));
        }
        let mut reused: HashSet<usize> = HashSet::new();
        let mut out = Vec::new();
        for p in &spec.ports {
            let mut q = p.clone();
            if p.is_ingress() && p.published_port == 0 {
                let old = current.ports.iter().enumerate().find(|(i, o)| {
                    !reused.contains(i)
                        && o.is_ingress()
                        && o.name == p.name
                        && protocol(o) == protocol(p)
                        && o.target_port == p.target_port
                        && o.published_port != 0
                        && !explicit.contains(&(protocol(o), o.published_port))
                        && self
                            .s
                            .ingress_port_holder(protocol(o), o.published_port)
                            .is_none_or(|h| h == svc.id)
                });
                q.published_port = match old {
                    Some((i, o)) => {
                        reused.insert(i);
                        self.taken_ports
                            .insert((protocol(o).to_string(), o.published_port));
                        o.published_port
                    }
                    None => self.port(protocol(p), &svc.id).ok_or_else(|| {
                        format!(
                            "no free published port in {}-{}",
                            ipam::DYNAMIC_PORTS.start(),
                            ipam::DYNAMIC_PORTS.end()
                        )
                    })?,
                };
            }
            out.push(q);
        }
        Ok(out)
    }

    /// A NEW task's addresses: one per overlay network of its spec (in order; other drivers get
    /// an attachment without address: they are node-local), then ingress when its service
    /// publishes ingress ports.
    fn task(&mut self, t: &Task, endpoint: Option<&Endpoint>) -> Result<TaskAllocation, String> {
        let mut networks: Vec<NetworkAttachment> = Vec::new();
        let configs = t
            .spec
            .as_ref()
            .map(|s| s.networks.as_slice())
            .unwrap_or_default();
        let mut wanted: Vec<(&Network, Vec<String>)> = Vec::new();
        for c in configs {
            let n = self
                .s
                .network(&c.target)
                .ok_or_else(|| format!("network {} not found", c.target))?;
            wanted.push((n, c.aliases.clone()));
        }
        let ingress = endpoint
            .is_some_and(|e| publishes_ingress(e.spec.as_ref()))
            .then(|| ingress_network(self.s))
            .flatten();
        if let Some(ingress) = ingress {
            if !wanted.iter().any(|(n, _)| n.id == ingress.id) {
                wanted.push((ingress, Vec::new()));
            }
        }
        for (n, aliases) in wanted {
            let mut addresses = Vec::new();
            if is_overlay(n) {
                let range = Range::of_network(n)
                    .ok_or_else(|| format!("network {} has no subnet", network_name(n)))?;
                match self.address(&n.id, &range) {
                    Some(a) => addresses.push(a),
                    None => {
                        for a in &networks {
                            for addr in &a.addresses {
                                self.untake(&a.network_id, addr);
                            }
                        }
                        return Err(exhausted(n, &range));
                    }
                }
            }
            networks.push(NetworkAttachment {
                network_id: n.id.clone(),
                addresses,
                aliases,
            });
        }
        Ok(TaskAllocation {
            task_id: t.id.clone(),
            networks,
            endpoint: endpoint.cloned(),
        })
    }

    /// A node's ingress address and (once it has a WireGuard key) mesh address; `None` when it
    /// has what it needs.
    fn node(&mut self, node: &Node) -> Result<Option<NodeAllocation>, String> {
        let mut attachments = Vec::new();
        if let Some(ingress) = ingress_network(self.s) {
            if let Some(range) = Range::of_network(ingress) {
                let kept = node
                    .attachments
                    .iter()
                    .filter(|a| a.network_id == ingress.id)
                    .flat_map(|a| a.addresses.iter())
                    .find(|addr| self.keep(&ingress.id, &range, addr))
                    .cloned();
                let addr = match kept {
                    Some(a) => a,
                    None => self
                        .address(&ingress.id, &range)
                        .ok_or_else(|| exhausted(ingress, &range))?,
                };
                attachments.push(NetworkAttachment {
                    network_id: ingress.id.clone(),
                    addresses: vec![addr],
                    aliases: Vec::new(),
                });
            }
        }
        let has_key = node
            .description
            .as_ref()
            .is_some_and(|d| !d.wg_public_key.is_empty());
        let mesh = ipam::mesh_range();
        let mesh_addr = if !has_key {
            String::new()
        } else if !node.mesh_addr.is_empty() && self.keep(MESH_NETWORK, &mesh, &node.mesh_addr) {
            node.mesh_addr.clone()
        } else {
            self.address(MESH_NETWORK, &mesh)
                .ok_or_else(|| format!("no free mesh address ({})", mesh.subnet()))?
        };
        if attachments == node.attachments && mesh_addr == node.mesh_addr {
            return Ok(None);
        }
        Ok(Some(NodeAllocation {
            node_id: node.id.clone(),
            attachments,
            mesh_addr,
        }))
    }
}

fn action(a: Action) -> StoreAction {
    StoreAction { action: Some(a) }
}

impl Allocator {
    /// A fresh allocator (cursors at the start of every range).
    pub fn new() -> Allocator {
        Allocator::default()
    }

    /// Everything to write now: node allocations, service endpoints, then task allocations (and
    /// the errors of tasks that cannot get their addresses). Idempotent: once written, the next
    /// pass over the new state returns nothing.
    pub fn plan(&mut self, s: &State, now_ns: i64) -> Vec<StoreAction> {
        let mut pass = Pass {
            s,
            cursors: &mut self.cursors,
            port_cursor: &mut self.port_cursor,
            taken: HashSet::new(),
            taken_ports: HashSet::new(),
            full: HashSet::new(),
        };
        let mut out = Vec::new();

        for node in s.nodes() {
            match pass.node(node) {
                Ok(Some(alloc)) => {
                    info!(node.id = %node.id, attachments = ?alloc.attachments, mesh_addr = %alloc.mesh_addr, "node addresses allocated");
                    out.push(action(Action::NodeAllocate(alloc)));
                }
                Ok(None) => {}
                Err(e) => warn!(node.id = %node.id, error = %e, "cannot allocate node addresses"),
            }
        }

        // Which endpoint each service's new tasks get; Err: why they cannot be allocated yet.
        let mut endpoints: HashMap<&str, Result<Option<Endpoint>, String>> = HashMap::new();
        let has_new_tasks: HashSet<&str> = s
            .tasks()
            .filter(|t| t.observed_state() == TaskState::TaskNew)
            .map(|t| t.service_id.as_str())
            .collect();
        for svc in s.services() {
            let planned = pass.endpoint(svc);
            match &planned {
                Ok(ep) if *ep != svc.endpoint => {
                    info!(service.id = %svc.id, endpoint = ?ep, "service endpoint allocated");
                    out.push(action(Action::ServiceEndpoint(ServiceEndpointUpdate {
                        service_id: svc.id.clone(),
                        spec_version: svc.spec_version,
                        endpoint: ep.clone(),
                    })));
                }
                Ok(_) => {}
                // Said once per task below; for a service without new tasks, say it here.
                Err(e) if !has_new_tasks.contains(svc.id.as_str()) => {
                    debug!(service.id = %svc.id, error = %e, "cannot allocate service endpoint")
                }
                Err(_) => {}
            }
            endpoints.insert(svc.id.as_str(), planned);
        }

        for t in s
            .tasks()
            .filter(|t| t.observed_state() == TaskState::TaskNew)
        {
            if t.desired_state > TaskState::TaskRunning as i32 {
                // Shut down before it got its addresses: it ends here.
                out.push(action(Action::TaskStatus(TaskStatusUpdate {
                    task_id: t.id.clone(),
                    status: Some(TaskStatus {
                        state: TaskState::TaskShutdown as i32,
                        timestamp: now_ns,
                        message: "shut down before it was allocated".into(),
                        ..Default::default()
                    }),
                })));
                continue;
            }
            let Some(planned) = endpoints.get(t.service_id.as_str()) else {
                continue; // its service is gone: the orchestrator removes it
            };
            let result = match planned {
                Ok(ep) => pass.task(t, ep.as_ref()),
                Err(e) => Err(e.clone()),
            };
            match result {
                Ok(alloc) => out.push(action(Action::TaskAllocate(alloc))),
                Err(err) => {
                    let known = t.status.as_ref().is_some_and(|st| st.err == err);
                    if !known {
                        warn!(task.id = %t.id, service.name = %t.service_name, %err, "task cannot be allocated");
                        out.push(action(Action::TaskStatus(TaskStatusUpdate {
                            task_id: t.id.clone(),
                            status: Some(TaskStatus {
                                state: TaskState::TaskNew as i32,
                                timestamp: now_ns,
                                message: ALLOCATING.into(),
                                err,
                                ..Default::default()
                            }),
                        })));
                    }
                }
            }
        }
        out
    }
}

/// Whether any network object exists that `init` made (false on a store from before networks).
fn has_predefined(s: &State) -> bool {
    s.networks().any(|n| n.predefined)
}

/// Writes `actions` in bounded batches, [`WRITES_IN_FLIGHT`] proposed at a time (one after the
/// other, each waited a commit round trip: 25,000 new tasks are 50 batches); a batch refused
/// as a whole (one stale decision) is retried action by action so the others still land.
/// Returns whether everything was written.
async fn write(store: &Store, actions: Vec<StoreAction>) -> bool {
    use futures::StreamExt as _;
    // Moved into owned batches, not copied: each is copied once more only to be proposed.
    let mut actions = actions.into_iter();
    let batches = std::iter::from_fn(|| {
        let batch: Vec<StoreAction> = actions.by_ref().take(MAX_ACTIONS_PER_WRITE).collect();
        (!batch.is_empty()).then_some(batch)
    });
    futures::stream::iter(batches)
        .map(|chunk| write_batch(store, chunk))
        .buffer_unordered(WRITES_IN_FLIGHT)
        .fold(true, |all, ok| async move { all && ok })
        .await
}

/// How many allocation batches are proposed at once: enough to keep Raft busy between commit
/// round trips, few enough that one apply does not hold up the manager's other work.
const WRITES_IN_FLIGHT: usize = 4;

/// Writes one batch of [`write`]; whether all of it was written.
async fn write_batch(store: &Store, chunk: Vec<StoreAction>) -> bool {
    match store.propose(chunk.clone()).await {
        Ok(()) => true,
        Err(StoreError::Conflict(e)) if chunk.len() > 1 => {
            debug!(error = %e, "allocation batch refused; writing its actions one by one");
            let mut ok = true;
            for a in chunk {
                if let Err(e) = store.propose(vec![a]).await {
                    warn!(error = %e, "allocation write failed");
                    ok = false;
                }
            }
            ok
        }
        Err(e) => {
            warn!(error = %e, "allocation write failed");
            false
        }
    }
}

/// Makes the predefined networks on a store that has none (a cluster from before networks).
async fn create_predefined(store: &Store) {
    if store.read(|s| s.cluster().is_none() || has_predefined(s)) {
        return;
    }
    let actions: Vec<StoreAction> = ipam::predefined_networks(shoal_proto::now_ns())
        .into_iter()
        .filter(|n| {
            let name = network_name(n).to_string();
            store.read(|s| s.network_by_name(&name).is_none())
        })
        .map(|n| action(Action::CreateNetwork(n)))
        .collect();
    match store.propose(actions).await {
        Ok(()) => info!("created the predefined networks (ingress, bridge, host, none)"),
        Err(e) => warn!(error = %e, "could not create the predefined networks"),
    }
}

/// Allocates until shutdown (leader only): a full pass now, then one per burst of store events.
pub async fn run(store: Store, mut shutdown: watch::Receiver<bool>) {
    let mut events = store.watch();
    create_predefined(&store).await;
    let mut allocator = Allocator::new();
    let mut retry = false;
    loop {
        let now = shoal_proto::now_ns();
        let started = std::time::Instant::now();
        let actions = store.read(|s| allocator.plan(s, now));
        let spent = started.elapsed();
        if !actions.is_empty() {
            // A failed write is retried after a pause, not on every event in between.
            retry = !write(&store, actions).await;
        }
        let pause = if retry {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(3600)
        };
        tokio::select! {
            r = events.recv() => {
                if let Err(broadcast::error::RecvError::Closed) = r { return; }
            }
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => return,
        }
        // Let a burst settle so one pass (and one write) covers it; a pass over a large state
        // waits as long as it took (see `crate::leader::settle_after`).
        tokio::time::sleep(crate::leader::settle_after(spent)).await;
        while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) = events.try_recv() {}
        if *shutdown.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
