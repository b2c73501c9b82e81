//! What a node is told besides its tasks: for every network its tasks are on (and `ingress` while
//! a service publishes an ingress-mode port, since every node serves the routing mesh) who is on
//! it where and which services it carries; the node's own addresses; its WireGuard mesh peers.
//!
//! Everything here is a pure function of the store's state. A network's view is the same for
//! every node that receives it, so the dispatcher computes it once and shares it ([`Cache`]); each
//! node's session notes which changes concern it ([`Interest::note`]) and how fresh the shared
//! views it takes must be ([`Need`]).
//!
//! A node also receives the secrets and configs its tasks mount, with their data, and no others.
//! A task needs its files until its observed state has ended (COMPLETE or later): a task told to
//! stop is still running, and may still read them while it shuts down. Once the last such task
//! ends, the next view omits them and the agent forgets them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use shoal_proto::assignments::{keyed_diff, same_for_agent, view_delta, view_delta_is_empty};
use shoal_proto::v1::{
    network_view_change, Assignments, AssignmentsDelta, Config, EndpointSpec, EndpointView,
    MeshPeer, Network, NetworkAttachment, NetworkView, NetworkViewChange, NetworkViewDelta, Node,
    NodeAddresses, Secret, Service, ServiceView, Task, TaskState,
};
use shoal_proto::wire::EndpointMode;

use super::subset;
use crate::store::{ip_of, service_network_ids, task_has_ended, Event, Kind, Object, State};

/// A need for "the state as of now": resolved to the store index the views are computed at.
const NOW: u64 = u64::MAX;

/// WireGuard's usual port, for a node that did not say which it listens on.
const DEFAULT_WG_PORT: u32 = 51820;

/// A node's complete assignment set, computed from scratch.
pub fn assignments(state: &State, node_id: &str) -> Assignments {
    node_view(state, node_id, &mut Fresh).0.to_message()
}

/// A node's assignment set with the network views shared between nodes (cheap to compare).
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    tasks: Vec<Task>,
    networks: Vec<HeldNetwork>,
    node_attachments: Vec<NetworkAttachment>,
    mesh_addr: String,
    mesh_peers: Vec<MeshPeer>,
    secrets: Vec<Secret>,
    configs: Vec<Config>,
}

impl PartialEq for NodeView {
    fn eq(&self, other: &Self) -> bool {
        self.tasks == other.tasks
            && self.networks.len() == other.networks.len()
            && self
                .networks
                .iter()
                .zip(&other.networks)
                .all(|(a, b)| a.same(b))
            && self.node_attachments == other.node_attachments
            && self.mesh_addr == other.mesh_addr
            && self.mesh_peers == other.mesh_peers
            && self.secrets == other.secrets
            && self.configs == other.configs
    }
}

impl NodeView {
    /// The message sent to the agent.
    pub fn to_message(&self) -> Assignments {
        Assignments {
            tasks: self.tasks.clone(),
            networks: self.networks.iter().map(HeldNetwork::to_view).collect(),
            node_attachments: self.node_attachments.clone(),
            mesh_addr: self.mesh_addr.clone(),
            mesh_peers: self.mesh_peers.clone(),
            secrets: self.secrets.clone(),
            configs: self.configs.clone(),
            version: 0,
        }
    }

    /// What changed from `self` (what the agent holds) to `current`, as a delta from version
    /// `base` to `base + 1`, with what the agent holds once it is applied; `None` when nothing
    /// the agent acts on changed. The delta of a network view comes from `cache` (computed
    /// once for every node that moves between the same two versions).
    ///
    /// `current` is taken whole: what the agent holds afterwards is made of its parts, copying
    /// only the tasks the agent holds with another status than the current one.
    pub fn delta(
        &self,
        current: NodeView,
        cache: &Mutex<Cache>,
        base: u64,
    ) -> Option<(AssignmentsDelta, NodeView)> {
        // A task the agent holds is not sent again for a status change (its own report).
        let (tasks, removed_tasks) = keyed_diff(
            &self.tasks,
            &current.tasks,
            |t| t.id.as_str(),
            same_for_agent,
        );
        let before: HashMap<&str, &HeldNetwork> = self
            .networks
            .iter()
            .map(|v| (view_id(&v.view), v))
            .collect();
        let mut networks = Vec::new();
        let mut sent_networks = Vec::with_capacity(current.networks.len());
        let now: HashSet<&str> = current.networks.iter().map(|v| view_id(&v.view)).collect();
        let removed_networks = self
            .networks
            .iter()
            .map(|v| view_id(&v.view))
            .filter(|id| !now.contains(id))
            .map(str::to_string)
            .collect();
        drop(now);
        let NodeView {
            tasks: current_tasks,
            networks: current_networks,
            node_attachments,
            mesh_addr,
            mesh_peers: current_mesh_peers,
            secrets: current_secrets,
            configs: current_configs,
        } = current;
        for held in current_networks {
            let Some(old) = before.get(view_id(&held.view)) else {
                networks.push(NetworkViewChange {
                    change: Some(network_view_change::Change::Full(held.to_view())),
                });
                sent_networks.push(held.clone());
                continue;
            };
            let shared = shared_view_delta(cache, &old.view, &held.view);
            let (reached, unreached) = forwarders_delta(old, &held);
            if shared.is_none() && reached.is_empty() && unreached.is_empty() {
                // Nothing changed: the agent keeps the version it has.
                sent_networks.push((*old).clone());
                continue;
            }
            let mut d = match shared {
                Some(d) => (*d).clone(),
                None => NetworkViewDelta {
                    network_id: view_id(&held.view).to_string(),
                    base: old.view.version,
                    version: held.view.version,
                    ..Default::default()
                },
            };
            d.endpoints.extend(reached);
            d.removed_endpoints.extend(unreached);
            d.endpoint_count = held.endpoint_count();
            networks.push(NetworkViewChange {
                change: Some(network_view_change::Change::Delta(d)),
            });
            sent_networks.push(held);
        }
        let held_tasks: HashMap<&str, &Task> =
            self.tasks.iter().map(|t| (t.id.as_str(), t)).collect();
        let sent_tasks = current_tasks
            .into_iter()
            .map(|t| match held_tasks.get(t.id.as_str()) {
                // Not sent: the agent keeps the status it has (`same_for_agent` compared the rest).
                Some(old)
                    if same_for_agent(old, &t)
                        && (old.status != t.status || old.meta != t.meta) =>
                {
                    (*old).clone()
                }
                _ => t,
            })
            .collect();
        let node =
            (self.node_attachments != node_attachments || self.mesh_addr != mesh_addr).then(|| {
                NodeAddresses {
                    node_attachments: node_attachments.clone(),
                    mesh_addr: mesh_addr.clone(),
                }
            });
        let (mesh_peers, removed_mesh_peers) = keyed_diff(
            &self.mesh_peers,
            &current_mesh_peers,
            |p| p.node_id.as_str(),
            PartialEq::eq,
        );
        let (secrets, removed_secrets) = keyed_diff(
            &self.secrets,
            &current_secrets,
            |s| s.id.as_str(),
            PartialEq::eq,
        );
        let (configs, removed_configs) = keyed_diff(
            &self.configs,
            &current_configs,
            |c| c.id.as_str(),
            PartialEq::eq,
        );
        let delta = AssignmentsDelta {
            base,
            version: base + 1,
            tasks,
            removed_tasks,
            networks,
            removed_networks,
            node,
            mesh_peers,
            removed_mesh_peers,
            secrets,
            removed_secrets,
            configs,
            removed_configs,
        };
        if shoal_proto::assignments::is_empty(&delta) {
            return None;
        }
        let sent = NodeView {
            tasks: sent_tasks,
            networks: sent_networks,
            node_attachments,
            mesh_addr,
            mesh_peers: current_mesh_peers,
            secrets: current_secrets,
            configs: current_configs,
        };
        Some((delta, sent))
    }
}

/// The node addresses of a split routing mesh, by class (see [`subset::Split::forwarders`]),
/// each class shared while it does not change.
pub type Classes = Arc<Vec<Arc<Vec<EndpointView>>>>;

/// One network's view as a node holds it: the view it shares with other nodes (on a split
/// routing mesh, its group's, without node addresses) and, on a split routing mesh, the node
/// addresses it reaches (see [`subset::reach`]).
#[derive(Debug, Clone)]
pub struct HeldNetwork {
    view: Arc<NetworkView>,
    forwarders: Option<(subset::Reach, Classes)>,
}

impl HeldNetwork {
    /// Whether `self` and `other` hold the same (cheap when they share their parts).
    fn same(&self, other: &HeldNetwork) -> bool {
        (Arc::ptr_eq(&self.view, &other.view) || self.view == other.view)
            && match (&self.forwarders, &other.forwarders) {
                (None, None) => true,
                (Some((ra, ca)), Some((rb, cb))) => {
                    ra == rb && (Arc::ptr_eq(ca, cb) || reached(ra, ca).eq(reached(rb, cb)))
                }
                _ => false,
            }
    }

    /// How many endpoints the view sent holds.
    fn endpoint_count(&self) -> u64 {
        let nodes = self
            .forwarders
            .as_ref()
            .map_or(0, |(r, c)| reached(r, c).count());
        (self.view.endpoints.len() + nodes) as u64
    }

    /// The view as sent: the node addresses reached (their task id is empty: they come first in
    /// the endpoints' order) before the shared view's endpoints.
    fn to_view(&self) -> NetworkView {
        let Some((reach, classes)) = &self.forwarders else {
            return (*self.view).clone();
        };
        let mut endpoints: Vec<EndpointView> = reached(reach, classes).cloned().collect();
        endpoints.sort_by(|a, b| (&a.node_id, &a.addr).cmp(&(&b.node_id, &b.addr)));
        endpoints.extend(self.view.endpoints.iter().cloned());
        NetworkView {
            network: self.view.network.clone(),
            endpoints,
            services: self.view.services.clone(),
            version: self.view.version,
        }
    }
}

/// The node addresses of the classes `reach` takes from `classes`.
fn reached<'a>(
    reach: &'a subset::Reach,
    classes: &'a Classes,
) -> impl Iterator<Item = &'a EndpointView> + 'a {
    classes
        .iter()
        .enumerate()
        .filter(|(c, _)| u32::try_from(*c).is_ok_and(|c| reach.contains(c)))
        .flat_map(|(_, list)| list.iter())
}

/// The node addresses `new` holds that `old` does not (or holds otherwise), and those `old`
/// holds that `new` does not; class by class, skipping the classes both share unchanged.
fn forwarders_delta(old: &HeldNetwork, new: &HeldNetwork) -> (Vec<EndpointView>, Vec<String>) {
    match (&old.forwarders, &new.forwarders) {
        (None, None) => (Vec::new(), Vec::new()),
        (Some((ro, co)), Some((rn, cn))) if co.len() == cn.len() => {
            let (mut upserts, mut removed) = (Vec::new(), Vec::new());
            for (c, (lo, ln)) in co.iter().zip(cn.iter()).enumerate() {
                let c = u32::try_from(c).unwrap_or(u32::MAX);
                let (was, is) = (ro.contains(c), rn.contains(c));
                let empty: &[EndpointView] = &[];
                let before = if was { lo.as_slice() } else { empty };
                let after = if is { ln.as_slice() } else { empty };
                if (was && is && Arc::ptr_eq(lo, ln)) || (before.is_empty() && after.is_empty()) {
                    continue;
                }
                let (u, r) = keyed_diff(before, after, endpoint_addr, PartialEq::eq);
                upserts.extend(u);
                removed.extend(r);
            }
            (upserts, removed)
        }
        // Split differently (or only one is split): compared whole.
        (o, n) => {
            let all = |f: &Option<(subset::Reach, Classes)>| -> Vec<EndpointView> {
                f.as_ref()
                    .map(|(r, c)| reached(r, c).cloned().collect())
                    .unwrap_or_default()
            };
            keyed_diff(&all(o), &all(n), endpoint_addr, PartialEq::eq)
        }
    }
}

fn endpoint_addr(e: &EndpointView) -> &str {
    &e.addr
}

fn view_id(v: &NetworkView) -> &str {
    v.network.as_ref().map_or("", |n| n.id.as_str())
}

/// The delta from `old` to `new`, two versions of one network's view; `None` when they hold the
/// same. Taken from `cache` when another node's session asked for the same pair of versions.
fn shared_view_delta(
    cache: &Mutex<Cache>,
    old: &Arc<NetworkView>,
    new: &Arc<NetworkView>,
) -> Option<Arc<NetworkViewDelta>> {
    if Arc::ptr_eq(old, new) {
        return None;
    }
    // Version 0: a view computed outside the cache, whose version names no contents.
    let untracked = old.version == 0 || new.version == 0;
    if !untracked && old.version == new.version {
        return None;
    }
    let compute = || {
        let d = view_delta(old, new);
        (!view_delta_is_empty(&d)).then(|| Arc::new(d))
    };
    if untracked {
        return compute();
    }
    let key = DeltaKey {
        network: view_id(new).to_string(),
        from: (old.version, subset::view_group(old)),
        to: (new.version, subset::view_group(new)),
    };
    // Poisoning only means a panic mid-insert; every entry is whole.
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(d) = cache.deltas.get(&key) {
        return d.clone();
    }
    let d = compute();
    if cache.deltas.len() >= MAX_CACHED_DELTAS {
        // Deltas towards a view that is no longer the newest are asked for rarely (a session
        // that fell behind); drop those first, everything if that is not enough.
        let newest: HashMap<&str, u64> = cache
            .networks
            .iter()
            .map(|(id, (at, _))| (id.as_str(), *at))
            .collect();
        let keep: HashSet<DeltaKey> = cache
            .deltas
            .keys()
            .filter(|k| newest.get(k.network.as_str()) == Some(&k.to.0))
            .cloned()
            .collect();
        cache.deltas.retain(|k, _| keep.contains(k));
        if cache.deltas.len() >= MAX_CACHED_DELTAS {
            cache.deltas.clear();
        }
    }
    cache.deltas.insert(key, d.clone());
    d
}

/// How many network view deltas the cache keeps.
const MAX_CACHED_DELTAS: usize = 4096;

/// Names a delta between two views of a network, each by (version, group of the routing mesh's
/// split): one version of a network names one full view, and its groups one view each.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DeltaKey {
    network: String,
    from: (u64, u32),
    to: (u64, u32),
}

/// The parts of a node's view that several nodes share; [`Fresh`] computes them every time,
/// [`Cached`] reuses what another node's session computed when it is recent enough.
pub trait Shared {
    /// The view of one network as node `node_id` receives it: on a split ingress network, its
    /// group's without node addresses, and every node's address by class (see [`subset`]).
    fn network(
        &mut self,
        state: &State,
        network: &Network,
        node_id: &str,
    ) -> (Arc<NetworkView>, Option<Classes>);
    /// The ingress network's id while a service publishes an ingress-mode port.
    fn routing_mesh(&mut self, state: &State) -> Option<String>;
    /// Every node of the WireGuard mesh (with a public key and a mesh address).
    fn mesh_nodes(&mut self, state: &State) -> Arc<Vec<MeshPeer>>;
}

/// Computes every shared part from the state.
pub struct Fresh;

impl Shared for Fresh {
    fn network(
        &mut self,
        state: &State,
        network: &Network,
        node_id: &str,
    ) -> (Arc<NetworkView>, Option<Classes>) {
        let full = network_view(state, network);
        let group = subset::group_of_node(&full, node_id) as usize;
        let split = subset::split(&full);
        match split.groups.into_iter().nth(group) {
            Some(view) => {
                let classes = split.forwarders.into_iter().map(Arc::new).collect();
                (Arc::new(view), Some(Arc::new(classes)))
            }
            None => (Arc::new(full), None),
        }
    }

    fn routing_mesh(&mut self, state: &State) -> Option<String> {
        routing_mesh(state)
    }

    fn mesh_nodes(&mut self, state: &State) -> Arc<Vec<MeshPeer>> {
        Arc::new(mesh_nodes(state))
    }
}

/// A node's view and what it depends on, from `state`.
pub fn node_view(state: &State, node_id: &str, shared: &mut dyn Shared) -> (NodeView, Interest) {
    // Only tasks the scheduler has confirmed (ASSIGNED or later): a global task carries its node
    // from creation, but must not start before the allocator has given it its addresses.
    let mut tasks: Vec<Task> = state
        .tasks_of_node(node_id)
        .filter(|t| {
            t.status
                .as_ref()
                .is_some_and(|s| s.state >= shoal_proto::v1::TaskState::TaskAssigned as i32)
        })
        .cloned()
        .collect();
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    let mut ids: BTreeSet<String> = BTreeSet::new();
    let mut interest = Interest::default();
    for t in tasks.iter().filter(|t| !task_has_ended(t)) {
        let container = t.spec.as_ref().and_then(|s| s.container.as_ref());
        if let Some(c) = container {
            let secrets = c.secrets.iter().map(|r| r.secret_id.clone());
            interest.secrets.extend(secrets);
            let configs = c.configs.iter().map(|r| r.config_id.clone());
            interest.configs.extend(configs);
        }
        ids.extend(t.networks.iter().map(|a| a.network_id.clone()));
        // Networks without manager-allocated addresses (bridge, host, none) too: the agent needs
        // their driver and subnet.
        let spec_networks = t.spec.iter().flat_map(|s| s.networks.iter());
        ids.extend(spec_networks.map(|n| n.target.clone()));
    }
    ids.extend(shared.routing_mesh(state));
    // Ordered by id (the sets are); one that does not exist (any more) is left out.
    let secrets: BTreeSet<&String> = interest.secrets.iter().collect();
    let secrets = secrets
        .into_iter()
        .filter_map(|id| state.secret(id))
        .cloned()
        .collect();
    let configs: BTreeSet<&String> = interest.configs.iter().collect();
    let configs = configs
        .into_iter()
        .filter_map(|id| state.config(id))
        .cloned()
        .collect();
    let mut networks = Vec::with_capacity(ids.len());
    for id in &ids {
        let Some(network) = state.network(id) else {
            continue;
        };
        let spec = network.spec.as_ref();
        interest.mesh |= spec.is_some_and(|s| s.encrypted);
        if spec.is_some_and(|s| s.ingress) {
            interest.ingress = Some(id.clone());
        }
        let (view, classes) = shared.network(state, network, node_id);
        if classes.is_some() && spec.is_some_and(|s| s.ingress) {
            interest.ingress_groups = view
                .services
                .iter()
                .filter(|s| s.subset_groups > 1)
                .map(|s| (s.service_id.clone(), (s.subset_groups, s.subset)))
                .collect();
        }
        let forwarders = classes.map(|classes| {
            // The node's live backends on this network: who may forward to them decides which
            // node addresses it needs.
            let backends = tasks
                .iter()
                .filter(|t| !task_has_ended(t))
                .filter(|t| t.networks.iter().any(|a| a.network_id == network.id))
                .map(|t| (t.service_id.as_str(), t.slot));
            let reach = if subset::all_nodes_reached() {
                subset::Reach::All
            } else {
                subset::reach(&view, node_id, backends)
            };
            (reach, classes)
        });
        networks.push(HeldNetwork { view, forwarders });
    }
    let mesh_peers = if interest.mesh {
        let all = shared.mesh_nodes(state);
        all.iter()
            .filter(|p| p.node_id != node_id)
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    // Networks that do not exist (yet) stay of interest: their creation must reach the node.
    interest.networks = ids.into_iter().collect();
    let node = state.node(node_id);
    let view = NodeView {
        tasks,
        networks,
        node_attachments: node.map(|n| n.attachments.clone()).unwrap_or_default(),
        mesh_addr: node.map(|n| n.mesh_addr.clone()).unwrap_or_default(),
        mesh_peers,
        secrets,
        configs,
    };
    (view, interest)
}

/// Who is on a network where, and which services it carries.
pub fn network_view(state: &State, network: &Network) -> NetworkView {
    network_view_split(state, network, subset::subset_size())
}

/// [`network_view`] with the routing mesh split in subsets of at least `k` backends (0: never).
fn network_view_split<'a>(state: &'a State, network: &Network, k: u64) -> NetworkView {
    let spec = network.spec.clone().unwrap_or_default();
    let mut endpoints = Vec::new();
    // Each node's address looked up once, not once per endpoint (110,000 endpoints on 10,000
    // nodes: in a profile, the lookups were over a quarter of a rebuild).
    let mut node_addrs: HashMap<&str, String> = HashMap::new();
    let mut node_addr_of = |id: &'a str| {
        node_addrs
            .entry(id)
            .or_insert_with(|| node_addr(state, id, spec.encrypted))
            .clone()
    };
    // The address index holds exactly the live (not ended) tasks' addresses, the nodes' own
    // attachments and the services' VIPs of the network.
    for ip in state.addresses_in_use(&network.id) {
        match state.address_holder(&network.id, ip) {
            Some((Kind::Task, id)) => {
                let Some(t) = state.task(id) else { continue };
                if t.node_id.is_empty() || task_has_ended(t) {
                    continue;
                }
                // The routing mesh only forwards to running backends and carries no other
                // traffic between tasks: a backend enters its view once it runs (half the view
                // changes a start costs), and stays until it has ended, marked not running
                // while it stops or is unhealthy, so connections in flight to it keep their path.
                if spec.ingress && !has_run(t) {
                    continue;
                }
                endpoints.push(EndpointView {
                    task_id: t.id.clone(),
                    service_id: t.service_id.clone(),
                    node_id: t.node_id.clone(),
                    node_addr: node_addr_of(&t.node_id),
                    addr: ip.to_string(),
                    running: is_running(t),
                    slot: t.slot,
                });
            }
            Some((Kind::Node, id)) => endpoints.push(EndpointView {
                node_id: id.clone(),
                node_addr: node_addr_of(id),
                addr: ip.to_string(),
                ..Default::default()
            }),
            _ => {}
        }
    }
    endpoints
        .sort_by(|a, b| (&a.task_id, &a.node_id, &a.addr).cmp(&(&b.task_id, &b.node_id, &b.addr)));
    let services = state
        .services()
        .filter(|s| {
            service_network_ids(s).any(|n| n == network.id)
                || (spec.ingress && publishes_ingress(s))
        })
        .map(|s| {
            let mut view = service_view(s, &network.id);
            if spec.ingress && publishes_ingress(s) {
                // Left 0 when not split: the view is then exactly what it was before splitting.
                let groups = subset::groups_for(backends_wanted(state, s), k);
                if groups > 1 {
                    view.subset_groups = groups;
                }
            }
            view
        })
        .collect();
    NetworkView {
        network: Some(network.clone()),
        endpoints,
        services,
        version: 0,
    }
}

/// A service as seen on one network.
fn service_view(s: &Service, network_id: &str) -> ServiceView {
    let spec = s.spec.clone().unwrap_or_default();
    let endpoint = s.endpoint.clone().unwrap_or_default();
    let ep = spec.endpoint.as_ref().or(endpoint.spec.as_ref());
    let kind = ep.map_or(Ok(EndpointMode::default()), EndpointSpec::mode_kind);
    // The default filled in; an unknown word goes to the agent as is, which serves it like vip.
    let mode = match kind {
        Ok(m) => m.as_str().to_string(),
        Err(_) => ep.map(|e| e.mode.clone()).unwrap_or_default(),
    };
    let vip = if kind == Ok(EndpointMode::Dnsrr) {
        String::new()
    } else {
        endpoint
            .virtual_ips
            .iter()
            .find(|v| v.network_id == network_id)
            .map(|v| ip_of(&v.addr).to_string())
            .unwrap_or_default()
    };
    let aliases = spec
        .task
        .iter()
        .flat_map(|t| t.networks.iter())
        .filter(|n| n.target == network_id)
        .flat_map(|n| n.aliases.iter().cloned())
        .collect();
    ServiceView {
        service_id: s.id.clone(),
        name: spec.name,
        mode,
        vip,
        ports: endpoint.ports,
        aliases,
        // Filled in by the ingress network's view when the service is split.
        subset_groups: 0,
        subset: 0,
    }
}

/// How many backends a service is meant to have: its replicas, or one per node when global.
fn backends_wanted(state: &State, s: &Service) -> u64 {
    let spec = s.spec.as_ref();
    if spec.is_some_and(|sp| sp.mode == shoal_proto::v1::ServiceMode::ModeGlobal as i32) {
        state.nodes().count() as u64
    } else {
        spec.map_or(0, |sp| sp.replicas)
    }
}

/// Whether a task answers for its service: running, meant to, and not reported unhealthy (an
/// unhealthy task is still RUNNING while its agent stops it: it leaves rotation at once).
fn is_running(t: &Task) -> bool {
    let status = t.status.as_ref();
    status.map(|s| s.state) == Some(TaskState::TaskRunning as i32)
        && t.desired_state == TaskState::TaskRunning as i32
        && status
            .and_then(|s| s.health.as_ref())
            .is_none_or(|h| h.status != "unhealthy")
}

/// Whether a task has reached RUNNING (and, being in a view, not ended since).
fn has_run(t: &Task) -> bool {
    t.status
        .as_ref()
        .is_some_and(|s| s.state >= TaskState::TaskRunning as i32)
}

/// Where a network's VXLAN reaches a node: its underlay IP, or its mesh IP on an encrypted
/// network. Empty while unknown (the node never connected, or has no mesh address yet).
fn node_addr(state: &State, node_id: &str, encrypted: bool) -> String {
    let Some(node) = state.node(node_id) else {
        return String::new();
    };
    if encrypted {
        ip_of(&node.mesh_addr).to_string()
    } else {
        let addr = node.status.as_ref().map_or("", |s| s.addr.as_str());
        ip_of(addr).to_string()
    }
}

/// Whether a service has an ingress-mode published port allocated (the routing mesh carries it).
fn publishes_ingress(s: &Service) -> bool {
    s.endpoint
        .iter()
        .flat_map(|e| e.ports.iter())
        .any(|p| p.published_port != 0 && p.is_ingress())
}

/// The ingress network's id while a service publishes an ingress-mode port.
fn routing_mesh(state: &State) -> Option<String> {
    if !state.services().any(publishes_ingress) {
        return None;
    }
    state
        .networks()
        .find(|n| n.spec.as_ref().is_some_and(|s| s.ingress))
        .map(|n| n.id.clone())
}

/// Every node with a WireGuard key, a mesh address and a known underlay address.
fn mesh_nodes(state: &State) -> Vec<MeshPeer> {
    state
        .nodes()
        .filter_map(|n| {
            let desc = n.description.as_ref()?;
            let addr = n.status.as_ref().map_or("", |s| s.addr.as_str());
            if desc.wg_public_key.is_empty() || n.mesh_addr.is_empty() || addr.is_empty() {
                return None;
            }
            let port = if desc.wg_port == 0 {
                DEFAULT_WG_PORT
            } else {
                desc.wg_port
            };
            Some(MeshPeer {
                node_id: n.id.clone(),
                public_key: desc.wg_public_key.clone(),
                endpoint: format!("{}:{port}", ip_of(addr)),
                mesh_addr: n.mesh_addr.clone(),
            })
        })
        .collect()
}

/// What a node's last view depended on: the changes to look for.
#[derive(Debug, Clone, Default)]
pub struct Interest {
    /// Networks whose views the node receives (or would, once they exist).
    networks: HashSet<String>,
    /// The ingress network's id, when the node receives its view.
    ingress: Option<String>,
    /// On a split routing mesh, the services split and this node's group of each, as
    /// (groups, group): a change of another group's backend does not concern the node.
    ingress_groups: HashMap<String, (u32, u32)>,
    /// Whether the node receives mesh peers.
    mesh: bool,
    /// Secrets and configs the node's live tasks mount (by id).
    secrets: HashSet<String>,
    configs: HashSet<String>,
}

/// What changed for a node since its last view, and how fresh the shared views it takes next
/// must be: each value is the store index of the newest change that touched that part.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Need {
    /// The node's own tasks or its node record changed.
    own: bool,
    /// Everything must be taken anew (the first view, or changes were missed), from shared
    /// views at least as recent as `since`.
    everything: bool,
    /// With `everything`: the store index the shared views must have reached ([`NOW`]: the
    /// index they are computed at).
    since: u64,
    networks: HashMap<String, u64>,
    routing_mesh: u64,
    mesh: u64,
}

impl Need {
    /// A need for everything as of now.
    pub fn everything() -> Self {
        Self::everything_since(NOW)
    }

    /// A need for everything, from shared views at least as recent as store index `index`: the
    /// applied index when the need arose (a session began after subscribing to the store's
    /// changes, or it missed some), since every later change reaches the session anyway.
    /// Thousands of sessions starting (or falling behind) together then share one view of a
    /// network, instead of each computing its own at the index of the moment.
    pub fn everything_since(index: u64) -> Self {
        Need {
            own: true,
            everything: true,
            since: index,
            ..Default::default()
        }
    }

    /// Whether everything must be taken anew.
    pub fn is_everything(&self) -> bool {
        self.everything
    }

    /// The store index a shared part noted at `noted` must have reached: with `everything`,
    /// at least `since` too.
    fn at_least(&self, noted: u64) -> u64 {
        if self.everything {
            noted.max(self.since)
        } else {
            noted
        }
    }

    /// Whether the node's view must be looked at again.
    pub fn any(&self) -> bool {
        self.own
            || self.everything
            || !self.networks.is_empty()
            || self.routing_mesh > 0
            || self.mesh > 0
    }
}

impl Interest {
    /// Notes in `need` what `event` changes for node `node_id` (one event: see
    /// [`Interest::note_batch`] for a batch).
    pub fn note(&self, node_id: &str, event: &Event, need: &mut Need) {
        self.note_batch(node_id, &BatchNotes::of(std::slice::from_ref(event)), need);
    }

    /// Notes in `need` what a batch of events, summed up once for every node in `notes`,
    /// changes for node `node_id`. Costs a lookup or two per network the batch touched, not a
    /// look at every event: with thousands of sessions each noting every event, that look was
    /// most of the leader's CPU while services were created.
    pub fn note_batch(&self, node_id: &str, notes: &BatchNotes, need: &mut Need) {
        if need.everything {
            // The next view is taken anew, so it must be at least as recent as anything the
            // batch changed, whether this node's last view depended on it or not.
            need.since = need.since.max(notes.newest());
        }
        if notes.own_nodes.contains(node_id)
            || notes.secrets.iter().any(|id| self.secrets.contains(id))
            || notes.configs.iter().any(|id| self.configs.contains(id))
        {
            need.own = true;
        }
        need.routing_mesh = need.routing_mesh.max(notes.routing_mesh);
        if self.networks.is_empty() && !self.mesh {
            return;
        }
        for (id, version) in &notes.networks {
            if self.ingress.as_deref() == Some(id.as_str()) && !self.ingress_groups.is_empty() {
                self.note_split_ingress(id, notes, need);
            } else {
                self.bump(need, id, *version);
            }
        }
        if notes.publishing > 0 {
            if let Some(ingress) = &self.ingress {
                self.bump(need, ingress, notes.publishing);
            }
        }
        if notes.nodes > 0 {
            // Any endpoint on the node's networks may live on a node that changed.
            for id in &self.networks {
                self.bump(need, id, notes.nodes);
            }
            if self.mesh {
                need.mesh = need.mesh.max(notes.nodes);
            }
        }
    }

    /// The changes of the split routing mesh's network `id` that concern this node: all but
    /// the changes of another group's backends of a split service.
    fn note_split_ingress(&self, id: &str, notes: &BatchNotes, need: &mut Need) {
        if let Some(v) = notes.unslotted.get(id) {
            self.bump(need, id, *v);
        }
        for (service, slots) in notes.slots.get(id).into_iter().flatten() {
            let v = match self.ingress_groups.get(service) {
                Some((groups, subset)) => notes.newest_in_group(id, service, *groups, *subset),
                // Not split (or new to this node): every backend concerns every node.
                None => slots.newest,
            };
            if v > 0 {
                self.bump(need, id, v);
            }
        }
    }

    fn bump(&self, need: &mut Need, network_id: &str, version: u64) {
        if !self.networks.contains(network_id) {
            return;
        }
        match need.networks.get_mut(network_id) {
            Some(v) => *v = (*v).max(version),
            None => {
                need.networks.insert(network_id.to_string(), version);
            }
        }
    }
}

/// What a batch of store events changes for nodes, whichever node looks: computed once per
/// batch and shared by every session (see [`Interest::note_batch`]). Each version is the store
/// index of the newest change to that part (`NOW` for a removal, which carries none); 0: none.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BatchNotes {
    /// Nodes whose own tasks or node record changed.
    own_nodes: HashSet<String>,
    /// Networks whose views changed.
    networks: HashMap<String, u64>,
    /// A service publishing an ingress port changed what views show: the ingress network's
    /// view changed for whichever node receives it.
    publishing: u64,
    /// A node's addresses or keys changed: any network a node receives, and the mesh peers.
    nodes: u64,
    /// Whether any service publishes an ingress port may have changed.
    routing_mesh: u64,
    /// Secrets and configs that changed (a node that mounts one takes its own view again).
    secrets: HashSet<String>,
    configs: HashSet<String>,
    /// Node records that changed (what a node's manager directive is read from).
    node_records: HashSet<String>,
    /// A manager's node record or the cluster object changed (the manager list, the CA).
    managers_or_cluster: bool,
    /// Per network, the changes that are not a replicated task's (see `slots`), newest.
    unslotted: HashMap<String, u64>,
    /// Per network and service, the slots of the replicated tasks that changed, each with the
    /// newest version: on a split routing mesh such a change concerns one group's nodes only.
    slots: HashMap<String, HashMap<String, ServiceSlots>>,
    /// What the slots mean for the nodes of each group, summed up once per batch.
    by_group: GroupMemo,
}

/// The slots of one service's tasks that changed in a batch, with the newest version of all.
#[derive(Debug, Default, Clone, PartialEq)]
struct ServiceSlots {
    newest: u64,
    slots: Vec<(u64, u64)>,
}

/// Per (network, service, number of groups): the newest change for each group (0: none).
/// Computed by the first session that asks, shared by all; not part of what the notes say.
#[derive(Debug, Default)]
struct GroupMemo(Mutex<HashMap<GroupKey, Arc<Vec<u64>>>>);

/// (network, service, number of groups).
type GroupKey = (String, String, u32);

impl Clone for GroupMemo {
    fn clone(&self) -> Self {
        GroupMemo::default()
    }
}

impl PartialEq for GroupMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl BatchNotes {
    /// The nodes whose records changed.
    pub fn node_records(&self) -> impl Iterator<Item = &str> {
        self.node_records.iter().map(String::as_str)
    }

    /// Whether a manager's node record (the membership) or the cluster object changed.
    pub fn managers_or_cluster(&self) -> bool {
        self.managers_or_cluster
    }

    /// The newest change to anything a shared view is computed from ([`NOW`] for a removal).
    fn newest(&self) -> u64 {
        self.networks
            .values()
            .copied()
            .chain([self.publishing, self.nodes, self.routing_mesh])
            .max()
            .unwrap_or(0)
    }

    /// Sums up `events` (one applied write's changes).
    pub fn of(events: &[Event]) -> Self {
        let mut notes = BatchNotes::default();
        for event in events {
            notes.add(event);
        }
        notes
    }

    fn add(&mut self, event: &Event) {
        let (old, new) = match event {
            Event::Created(o) => (None, Some(o)),
            Event::Updated { old, new } => (Some(old), Some(new)),
            Event::Removed(o) => (Some(o), None),
        };
        // The index of the write; a removal carries none, so it asks for "now".
        let version = new.map_or(NOW, |o| match version_of(o) {
            0 => NOW,
            v => v,
        });
        let Some(any) = new.or(old) else { return };
        match any.kind() {
            Kind::Task => {
                let (a, b) = (old.and_then(as_task), new.and_then(as_task));
                for t in [a, b].into_iter().flatten() {
                    if !self.own_nodes.contains(&t.node_id) {
                        self.own_nodes.insert(t.node_id.clone());
                    }
                }
                if task_part(a) == task_part(b) {
                    return;
                }
                for t in [a, b].into_iter().flatten() {
                    for id in t.networks.iter().map(|n| n.network_id.as_str()) {
                        if t.slot >= 1 {
                            self.network_slot(id, &t.service_id, t.slot, version);
                        } else {
                            self.network(id, version);
                        }
                    }
                }
            }
            Kind::Service => {
                let (a, b) = (old.and_then(as_service), new.and_then(as_service));
                let publishes = |s: Option<&Service>| s.is_some_and(publishes_ingress);
                if publishes(a) != publishes(b) {
                    self.routing_mesh = self.routing_mesh.max(version);
                }
                if service_part(a) == service_part(b) {
                    return;
                }
                for s in [a, b].into_iter().flatten() {
                    for id in service_network_ids(s) {
                        self.network(id, version);
                    }
                    if publishes_ingress(s) {
                        self.publishing = self.publishing.max(version);
                    }
                }
            }
            Kind::Network => {
                self.network(any.id(), version);
                let (a, b) = (old.and_then(as_network), new.and_then(as_network));
                let ingress = |n: Option<&Network>| {
                    n.and_then(|n| n.spec.as_ref()).is_some_and(|s| s.ingress)
                };
                if ingress(a) || ingress(b) {
                    self.routing_mesh = self.routing_mesh.max(version);
                }
            }
            Kind::Node => {
                if !self.own_nodes.contains(any.id()) {
                    self.own_nodes.insert(any.id().to_string());
                }
                if !self.node_records.contains(any.id()) {
                    self.node_records.insert(any.id().to_string());
                }
                let (a, b) = (old.and_then(as_node), new.and_then(as_node));
                if [a, b]
                    .into_iter()
                    .flatten()
                    .any(|n| n.manager_status.is_some())
                {
                    self.managers_or_cluster = true;
                }
                if node_part(a) != node_part(b) {
                    self.nodes = self.nodes.max(version);
                }
            }
            Kind::Secret => {
                self.secrets.insert(any.id().to_string());
            }
            Kind::Config => {
                self.configs.insert(any.id().to_string());
            }
            Kind::Cluster => self.managers_or_cluster = true,
        }
    }

    fn network(&mut self, id: &str, version: u64) {
        self.network_changed(id, version);
        match self.unslotted.get_mut(id) {
            Some(v) => *v = (*v).max(version),
            None => {
                self.unslotted.insert(id.to_string(), version);
            }
        }
    }

    /// A replicated task of `service` in `slot` changed on network `id`.
    fn network_slot(&mut self, id: &str, service: &str, slot: u64, version: u64) {
        self.network_changed(id, version);
        let services = match self.slots.get_mut(id) {
            Some(s) => s,
            None => self.slots.entry(id.to_string()).or_default(),
        };
        let slots = match services.get_mut(service) {
            Some(s) => s,
            None => services.entry(service.to_string()).or_default(),
        };
        slots.newest = slots.newest.max(version);
        slots.slots.push((slot, version));
    }

    fn network_changed(&mut self, id: &str, version: u64) {
        match self.networks.get_mut(id) {
            Some(v) => *v = (*v).max(version),
            None => {
                self.networks.insert(id.to_string(), version);
            }
        }
    }

    /// The newest change of `service`'s tasks on network `id` in group `subset` of `groups`
    /// (slot S is in group (S - 1) mod `groups`); 0: none.
    fn newest_in_group(&self, id: &str, service: &str, groups: u32, subset: u32) -> u64 {
        let Some(slots) = self.slots.get(id).and_then(|s| s.get(service)) else {
            return 0;
        };
        let groups = groups.max(1);
        if slots.slots.len() <= 16 {
            // A few changes: looked at directly.
            return slots
                .slots
                .iter()
                .filter(|(slot, _)| subset::slot_group(*slot, groups) == subset)
                .map(|(_, v)| *v)
                .max()
                .unwrap_or(0);
        }
        let key = (id.to_string(), service.to_string(), groups);
        // Poisoning only means a panic mid-insert; every entry is whole.
        let mut memo = self.by_group.0.lock().unwrap_or_else(|p| p.into_inner());
        let per_group = memo.entry(key).or_insert_with(|| {
            let mut per = vec![0u64; groups as usize];
            for (slot, v) in &slots.slots {
                if let Some(x) = per.get_mut(subset::slot_group(*slot, groups) as usize) {
                    *x = (*x).max(*v);
                }
            }
            Arc::new(per)
        });
        per_group.get(subset as usize).copied().unwrap_or(0)
    }
}

/// The notes of the last batches of store events, so that the sessions of every node take them
/// from whichever session summed a batch up first.
#[derive(Debug, Default)]
pub struct NotesCache {
    /// Each batch by a weak reference: its events go when the store's watch lets them go, and
    /// the allocation stays, so no later batch can take its address.
    recent: std::collections::VecDeque<(Weak<Vec<Event>>, NotesCell)>,
}

/// A batch's notes, filled in by the first session that asks.
type NotesCell = Arc<OnceLock<Arc<BatchNotes>>>;

/// How many batches [`NotesCache`] remembers: sessions behind by more sum theirs up themselves.
pub const NOTES_KEPT: usize = 64;

/// Whether a watcher of the store has so many batches queued that the shared notes may no longer
/// hold them: then looking at the state anew is cheaper than summing each old batch up again
/// (thousands of sessions doing that at 10,000 nodes kept the runtime from anything else for
/// tens of seconds), and it leaves the notes other sessions need in the cache.
pub fn far_behind<T>(events: &tokio::sync::broadcast::Receiver<T>) -> bool {
    events.len() > NOTES_KEPT / 2
}

impl NotesCache {
    /// The notes of `batch` (a batch received from the store's watch), summed up once.
    pub fn notes(cache: &Mutex<NotesCache>, batch: &Arc<Vec<Event>>) -> Arc<BatchNotes> {
        let cell = {
            // Poisoning only means a panic mid-push; every entry is whole.
            let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
            let here = Arc::as_ptr(batch);
            match c
                .recent
                .iter()
                .rev()
                .find(|(b, _)| std::ptr::eq(b.as_ptr(), here))
            {
                Some((_, cell)) => cell.clone(),
                None => {
                    let cell = Arc::new(OnceLock::new());
                    c.recent.push_back((Arc::downgrade(batch), cell.clone()));
                    if c.recent.len() > NOTES_KEPT {
                        c.recent.pop_front();
                    }
                    cell
                }
            }
        };
        // Outside the lock: sessions of other batches are not held up; those of this one wait.
        cell.get_or_init(|| Arc::new(BatchNotes::of(batch))).clone()
    }
}

fn version_of(o: &Object) -> u64 {
    let meta = match o {
        Object::Cluster(c) => c.meta.as_ref(),
        Object::Node(n) => n.meta.as_ref(),
        Object::Service(s) => s.meta.as_ref(),
        Object::Task(t) => t.meta.as_ref(),
        Object::Network(n) => n.meta.as_ref(),
        Object::Secret(s) => s.meta.as_ref(),
        Object::Config(c) => c.meta.as_ref(),
    };
    meta.map_or(0, |m| m.version)
}

fn as_task(o: &Object) -> Option<&Task> {
    match o {
        Object::Task(t) => Some(t),
        _ => None,
    }
}

fn as_service(o: &Object) -> Option<&Service> {
    match o {
        Object::Service(s) => Some(s),
        _ => None,
    }
}

fn as_network(o: &Object) -> Option<&Network> {
    match o {
        Object::Network(n) => Some(n),
        _ => None,
    }
}

fn as_node(o: &Object) -> Option<&Node> {
    match o {
        Object::Node(n) => Some(n),
        _ => None,
    }
}

/// What of a task shows in network views: nothing until it is placed or once it has ended.
type TaskPart<'a> = Option<(&'a str, &'a [NetworkAttachment], bool, u64)>;

fn task_part(t: Option<&Task>) -> TaskPart<'_> {
    let t = t?;
    if t.node_id.is_empty() || task_has_ended(t) {
        return None;
    }
    Some((&t.node_id, &t.networks, is_running(t), t.slot))
}

/// What of a service shows in network views (its name, mode, networks, aliases, VIPs, ports, and
/// the replica count its routing-mesh split follows).
fn service_part(s: Option<&Service>) -> Option<impl PartialEq + '_> {
    let s = s?;
    let spec = s.spec.as_ref();
    Some((
        spec.map(|sp| (&sp.name, sp.mode, sp.replicas)),
        spec.and_then(|sp| sp.endpoint.as_ref()),
        spec.and_then(|sp| sp.task.as_ref()).map(|t| &t.networks),
        s.endpoint.as_ref(),
    ))
}

/// What of a node shows in network views and mesh peers.
fn node_part(n: Option<&Node>) -> Option<impl PartialEq + '_> {
    let n = n?;
    let desc = n.description.as_ref();
    Some((
        n.status.as_ref().map(|s| &s.addr),
        &n.mesh_addr,
        &n.attachments,
        desc.map(|d| (&d.wg_public_key, d.wg_port)),
    ))
}

/// The shared parts last computed, each with the store index it was computed at (from a state
/// at least that recent).
#[derive(Debug, Default)]
pub struct Cache {
    networks: HashMap<String, (u64, Arc<NetworkView>)>,
    /// When each network's whole view was last computed, and how long that took (see
    /// [`Cache::pace`]).
    built: HashMap<String, (Instant, Duration)>,
    /// The split of a network's view (see [`subset`]).
    groups: HashMap<String, GroupViews>,
    /// Deltas between two views of a network; `None` when the two hold the same.
    deltas: HashMap<DeltaKey, Option<Arc<NetworkViewDelta>>>,
    routing_mesh: Option<(u64, Option<String>)>,
    mesh: Option<(u64, Arc<Vec<MeshPeer>>)>,
    /// K of the routing mesh's split; `None`: [`subset::subset_size`].
    subset_size: Option<u64>,
}

/// A network's whole view is computed again at most once per this many times what computing it
/// took (see [`Cache::pace`]).
const REBUILD_PACE: u32 = 4;

impl Cache {
    /// A cache whose views split the routing mesh in subsets of at least `k` backends.
    pub fn with_subset_size(k: u64) -> Self {
        Cache {
            subset_size: Some(k),
            ..Default::default()
        }
    }

    /// How long a session should wait before taking its next view, so that the whole view of a
    /// large network is not computed again for every change: `Some` when `need` asks for a
    /// newer view of a network than the cache holds, and that view was computed less than
    /// [`REBUILD_PACE`] times its cost ago. Under a stream of changes (thousands of tasks
    /// starting) the computation then takes at most about a fifth of a core whatever the rate
    /// of changes, each computed view serving every change up to its index; a small network's
    /// view costs microseconds, and a network that changed after a quiet spell is never held
    /// back.
    pub fn pace(cache: &Mutex<Cache>, need: &Need) -> Option<Duration> {
        // Poisoning only means a panic mid-insert; every entry is whole.
        let cache = cache.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        cache
            .networks
            .iter()
            .filter(|(id, (at, _))| {
                let noted = need.networks.get(id.as_str()).copied().unwrap_or(0);
                need.at_least(noted) > *at
            })
            .filter_map(|(id, _)| {
                let (built, took) = cache.built.get(id)?;
                let next = *built + *took * REBUILD_PACE;
                (next > now).then(|| next - now)
            })
            .max()
    }
}

/// A network's view cut along the routing mesh's split.
#[derive(Debug)]
struct GroupViews {
    /// The full view they were cut from.
    full: Arc<NetworkView>,
    /// The view of each group.
    views: Vec<Arc<NetworkView>>,
    /// The node addresses by class.
    classes: Classes,
}

/// Takes shared parts from a [`Cache`] when they are at least as recent as a node needs,
/// otherwise computes them and leaves them there for the next node.
pub struct Cached<'a> {
    /// Locked only while a shared part is looked up or computed, so a second node waits for the
    /// first one's computation and takes it rather than doing it again.
    cache: &'a Mutex<Cache>,
    /// The store index read before the state: what is computed now is at least this recent.
    index: u64,
    need: &'a Need,
    /// What the node's previous view depended on: anything new to it must be taken as of now.
    before: &'a Interest,
}

impl<'a> Cached<'a> {
    /// `index` must be read from the store before the state the views are computed from.
    pub fn new(cache: &'a Mutex<Cache>, index: u64, need: &'a Need, before: &'a Interest) -> Self {
        Cached {
            cache,
            index,
            need,
            before,
        }
    }

    fn lock(&self) -> MutexGuard<'a, Cache> {
        // Poisoning only means a panic mid-insert; every entry is whole.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn required(&self, noted: u64, known_before: bool) -> u64 {
        if self.need.everything {
            // `since` covers every batch the session took since the need arose, whatever
            // it touched (see `Interest::note_batch`).
            self.need.at_least(noted).min(self.index)
        } else if !known_before {
            self.index
        } else {
            noted.min(self.index)
        }
    }

    /// The whole view of a network, every endpoint included, as recent as the node needs.
    fn full_network(&self, state: &State, network: &Network) -> Arc<NetworkView> {
        let noted = self.need.networks.get(&network.id).copied().unwrap_or(0);
        let required = self.required(noted, self.before.networks.contains(&network.id));
        let mut cache = self.lock();
        if let Some((at, view)) = cache.networks.get(&network.id) {
            if *at >= required {
                return view.clone();
            }
        }
        // Versions of a network's view in the cache only grow (a recomputation is asked for
        // only by a need newer than the cached view, and the index is at least that need), so
        // one version names one view's contents: what makes deltas shareable by version.
        let k = cache.subset_size.unwrap_or_else(subset::subset_size);
        let started = Instant::now();
        let view = Arc::new(NetworkView {
            version: self.index,
            ..network_view_split(state, network, k)
        });
        cache
            .built
            .insert(network.id.clone(), (started, started.elapsed()));
        let networks = &mut cache.networks;
        networks.insert(network.id.clone(), (self.index, view.clone()));
        if networks.len() > 2 * state.networks().count() + 8 {
            networks.retain(|id, _| state.network(id).is_some());
            let kept: HashSet<String> = networks.keys().cloned().collect();
            cache.built.retain(|id, _| kept.contains(id));
        }
        view
    }
}

impl Shared for Cached<'_> {
    fn network(
        &mut self,
        state: &State,
        network: &Network,
        node_id: &str,
    ) -> (Arc<NetworkView>, Option<Classes>) {
        let full = self.full_network(state, network);
        if subset::max_groups(&full) <= 1 {
            return (full, None);
        }
        let group = subset::group_of_node(&full, node_id) as usize;
        let mut cache = self.lock();
        let previous = cache.groups.get(&network.id);
        if !previous.is_some_and(|g| Arc::ptr_eq(&g.full, &full)) {
            let started = Instant::now();
            let split = subset::split(&full);
            // A class of node addresses that did not change keeps its allocation, so that
            // nodes' deltas skip it by pointer.
            let before = previous
                .map(|g| g.classes.clone())
                .filter(|c| c.len() == split.forwarders.len());
            let classes = split
                .forwarders
                .into_iter()
                .enumerate()
                .map(|(c, list)| match before.as_ref().and_then(|b| b.get(c)) {
                    Some(old) if **old == list => old.clone(),
                    _ => Arc::new(list),
                })
                .collect();
            let entry = GroupViews {
                full: full.clone(),
                views: split.groups.into_iter().map(Arc::new).collect(),
                classes: Arc::new(classes),
            };
            cache.groups.insert(network.id.clone(), entry);
            // Cutting the view costs about as much as computing it: both count for the pace.
            if let Some((_, took)) = cache.built.get_mut(&network.id) {
                *took += started.elapsed();
            }
            if cache.groups.len() > state.networks().count() + 8 {
                cache.groups.retain(|id, _| state.network(id).is_some());
            }
        }
        // The split has as many views as groups and `group` is below that count.
        match cache.groups.get(&network.id) {
            Some(g) => match g.views.get(group) {
                Some(view) => (view.clone(), Some(g.classes.clone())),
                None => (full, None),
            },
            None => (full, None),
        }
    }

    fn routing_mesh(&mut self, state: &State) -> Option<String> {
        let required = self.required(self.need.routing_mesh, true);
        let mut cache = self.lock();
        match &cache.routing_mesh {
            Some((at, id)) if *at >= required => id.clone(),
            _ => {
                let id = routing_mesh(state);
                cache.routing_mesh = Some((self.index, id.clone()));
                id
            }
        }
    }

    fn mesh_nodes(&mut self, state: &State) -> Arc<Vec<MeshPeer>> {
        let required = self.required(self.need.mesh, self.before.mesh);
        let mut cache = self.lock();
        match &cache.mesh {
            Some((at, peers)) if *at >= required => peers.clone(),
            _ => {
                let peers = Arc::new(mesh_nodes(state));
                cache.mesh = Some((self.index, peers.clone()));
                peers
            }
        }
    }
}

#[cfg(test)]
mod tests;
