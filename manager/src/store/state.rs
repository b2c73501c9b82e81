//! The in-memory, indexed cluster state and the pure, deterministic apply of one `StoreRequest`.
//!
//! Nothing here does I/O: [`State::apply_request`] (in `apply`) mutates the maps, records an undo log so a
//! failed precondition (or a failed disk write) can put everything back, and returns the events
//! and the keys whose new values the caller must persist.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use shoal_proto::spec::port_protocol;
use shoal_proto::v1::{
    Cluster, Config, Network, NetworkAttachment, Node, Secret, Service, Task, TaskState,
};

mod apply;

/// A store object of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// The cluster object (CA, join token secrets, settings).
    Cluster(Cluster),
    /// A node (worker or manager host).
    Node(Node),
    /// A service.
    Service(Service),
    /// A task (one replica, or one node's instance of a global service).
    Task(Task),
    /// A network.
    Network(Network),
    /// A secret (its data is sealed at rest like every value).
    Secret(Secret),
    /// A config.
    Config(Config),
}

/// One change made by an applied request.
// The variants stay unboxed as the interface fixes them; events are built once per change and
// shared behind an `Arc`, so the size difference costs nothing that matters.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An object that did not exist before.
    Created(Object),
    /// An existing object changed.
    Updated {
        /// The object before the change.
        old: Object,
        /// The object after the change.
        new: Object,
    },
    /// An object was deleted; this is its last value.
    Removed(Object),
}

/// The kind of a store object; also the index of its sled tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// [`Cluster`].
    Cluster = 0,
    /// [`Node`].
    Node = 1,
    /// [`Service`].
    Service = 2,
    /// [`Task`].
    Task = 3,
    /// [`Network`] (tree 5: tree 4 is the store's meta tree).
    Network = 5,
    /// [`Secret`].
    Secret = 6,
    /// [`Config`].
    Config = 7,
}

/// Who holds an address or a published port: the object's kind and id.
pub type Holder = (Kind, String);

/// The pseudo network id under which nodes' WireGuard mesh addresses are held.
pub const MESH_NETWORK: &str = "mesh";

/// Identifies one object: its kind and id.
pub type Key = (Kind, String);

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Cluster(_) => Kind::Cluster,
            Object::Node(_) => Kind::Node,
            Object::Service(_) => Kind::Service,
            Object::Task(_) => Kind::Task,
            Object::Network(_) => Kind::Network,
            Object::Secret(_) => Kind::Secret,
            Object::Config(_) => Kind::Config,
        }
    }

    /// The object's id.
    pub fn id(&self) -> &str {
        match self {
            Object::Cluster(o) => &o.id,
            Object::Node(o) => &o.id,
            Object::Service(o) => &o.id,
            Object::Task(o) => &o.id,
            Object::Network(o) => &o.id,
            Object::Secret(o) => &o.id,
            Object::Config(o) => &o.id,
        }
    }

    /// The object's kind and id.
    pub fn key(&self) -> Key {
        (self.kind(), self.id().to_string())
    }
}

/// What a successful apply changed: events for watchers and keys to persist.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// One event per effective change, in action order.
    pub events: Vec<Event>,
    /// Every key whose value changed; the caller writes the current value (or a delete).
    pub touched: BTreeSet<Key>,
    /// Previous values, oldest first, so [`State::rollback`] can undo the whole request.
    pub undo: Vec<(Key, Option<Object>)>,
}

/// The cluster state: every object, with the indexes the manager's components query.
#[derive(Debug, Clone, Default)]
pub struct State {
    clusters: BTreeMap<String, Cluster>,
    nodes: BTreeMap<String, Node>,
    services: BTreeMap<String, Service>,
    tasks: BTreeMap<String, Task>,
    service_by_name: HashMap<String, String>,
    node_by_fingerprint: HashMap<String, String>,
    tasks_by_service: HashMap<String, BTreeSet<String>>,
    tasks_by_node: HashMap<String, BTreeSet<String>>,
    networks: BTreeMap<String, Network>,
    network_by_name: HashMap<String, String>,
    /// (network id, IP) -> holder, for every address in use (see [`State::address_holder`]).
    addresses: HashMap<(String, String), Holder>,
    /// ("tcp"|"udp", published port) -> service, for ingress-mode published ports.
    ingress_ports: HashMap<(String, u32), String>,
    secrets: BTreeMap<String, Secret>,
    secret_by_name: HashMap<String, String>,
    configs: BTreeMap<String, Config>,
    config_by_name: HashMap<String, String>,
}

impl State {
    /// The cluster object, once `init` has written it.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.clusters.values().next()
    }

    /// Every cluster object (there is one), for the snapshot encoder.
    pub(crate) fn clusters(&self) -> impl Iterator<Item = &Cluster> {
        self.clusters.values()
    }

    /// A node by id.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// All nodes, ordered by id.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// The node whose current certificate (or the one it replaced at its last renewal) has this
    /// SHA-256 fingerprint.
    pub fn node_by_fingerprint(&self, fp: &str) -> Option<&Node> {
        self.node_by_fingerprint
            .get(fp)
            .and_then(|id| self.nodes.get(id))
    }

    /// A service by id.
    pub fn service(&self, id: &str) -> Option<&Service> {
        self.services.get(id)
    }

    /// A service by its (unique) name.
    pub fn service_by_name(&self, name: &str) -> Option<&Service> {
        self.service_by_name
            .get(name)
            .and_then(|id| self.services.get(id))
    }

    /// All services, ordered by id.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    /// A task by id.
    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    /// All tasks, ordered by id.
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    /// The tasks of one service (any state), ordered by id.
    pub fn tasks_of_service(&self, service_id: &str) -> impl Iterator<Item = &Task> {
        self.tasks_by_service
            .get(service_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
    }

    /// The tasks assigned to one node (any state), ordered by id.
    pub fn tasks_of_node(&self, node_id: &str) -> impl Iterator<Item = &Task> {
        self.tasks_by_node
            .get(node_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
    }

    /// A network by id.
    pub fn network(&self, id: &str) -> Option<&Network> {
        self.networks.get(id)
    }

    /// A network by its (unique) name.
    pub fn network_by_name(&self, name: &str) -> Option<&Network> {
        self.network_by_name
            .get(name)
            .and_then(|id| self.networks.get(id))
    }

    /// All networks, ordered by id.
    pub fn networks(&self) -> impl Iterator<Item = &Network> {
        self.networks.values()
    }

    /// A secret by id.
    pub fn secret(&self, id: &str) -> Option<&Secret> {
        self.secrets.get(id)
    }

    /// A secret by its (unique) name.
    pub fn secret_by_name(&self, name: &str) -> Option<&Secret> {
        self.secret_by_name
            .get(name)
            .and_then(|id| self.secrets.get(id))
    }

    /// A secret by id, name or unique id prefix (in that order, as docker resolves them);
    /// `Err` lists how many secrets an ambiguous prefix matched.
    pub fn find_secret(&self, name_or_id: &str) -> Result<Option<&Secret>, usize> {
        if let Some(s) = self.secret(name_or_id).or(self.secret_by_name(name_or_id)) {
            return Ok(Some(s));
        }
        unique_prefix(&self.secrets, name_or_id)
    }

    /// All secrets, ordered by id.
    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        self.secrets.values()
    }

    /// A config by id.
    pub fn config(&self, id: &str) -> Option<&Config> {
        self.configs.get(id)
    }

    /// A config by its (unique) name.
    pub fn config_by_name(&self, name: &str) -> Option<&Config> {
        self.config_by_name
            .get(name)
            .and_then(|id| self.configs.get(id))
    }

    /// A config by id, name or unique id prefix; `Err` as [`State::find_secret`].
    pub fn find_config(&self, name_or_id: &str) -> Result<Option<&Config>, usize> {
        if let Some(c) = self.config(name_or_id).or(self.config_by_name(name_or_id)) {
            return Ok(Some(c));
        }
        unique_prefix(&self.configs, name_or_id)
    }

    /// All configs, ordered by id.
    pub fn configs(&self) -> impl Iterator<Item = &Config> {
        self.configs.values()
    }

    /// The services whose spec mounts secret `id`, ordered by id.
    pub fn services_using_secret<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Service> {
        self.services.values().filter(move |s| {
            container_of(s).is_some_and(|c| c.secrets.iter().any(|r| r.secret_id == id))
        })
    }

    /// The services whose spec mounts config `id`, ordered by id.
    pub fn services_using_config<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Service> {
        self.services.values().filter(move |s| {
            container_of(s).is_some_and(|c| c.configs.iter().any(|r| r.config_id == id))
        })
    }

    /// The holder of `ip` (no prefix) on `network_id`: a live task, a service's VIP or a node's
    /// attachment (mesh addresses are held on [`MESH_NETWORK`]). A task holds its addresses until
    /// its observed state is terminal.
    pub fn address_holder(&self, network_id: &str, ip: &str) -> Option<&Holder> {
        self.addresses
            .get(&(network_id.to_string(), ip.to_string()))
    }

    /// Every address in use on `network_id` (IPs without prefix).
    pub fn addresses_in_use<'a>(&'a self, network_id: &'a str) -> impl Iterator<Item = &'a str> {
        self.addresses
            .keys()
            .filter(move |(n, _)| n == network_id)
            .map(|(_, ip)| ip.as_str())
    }

    /// The service publishing `port`/`protocol` in ingress mode, if any.
    pub fn ingress_port_holder(&self, protocol: &str, port: u32) -> Option<&str> {
        self.ingress_ports
            .get(&(protocol.to_string(), port))
            .map(String::as_str)
    }

    /// The services whose spec attaches them to `network_id`, ordered by id.
    pub fn services_on_network<'a>(
        &'a self,
        network_id: &'a str,
    ) -> impl Iterator<Item = &'a Service> {
        self.services
            .values()
            .filter(move |s| service_network_ids(s).any(|n| n == network_id))
    }

    /// Every object, clusters first, then nodes, networks, secrets, configs, services and tasks.
    pub fn objects(&self) -> impl Iterator<Item = Object> + '_ {
        let clusters = self.clusters.values().cloned().map(Object::Cluster);
        let nodes = self.nodes.values().cloned().map(Object::Node);
        let networks = self.networks.values().cloned().map(Object::Network);
        let secrets = self.secrets.values().cloned().map(Object::Secret);
        let configs = self.configs.values().cloned().map(Object::Config);
        let services = self.services.values().cloned().map(Object::Service);
        let tasks = self.tasks.values().cloned().map(Object::Task);
        clusters
            .chain(nodes)
            .chain(networks)
            .chain(secrets)
            .chain(configs)
            .chain(services)
            .chain(tasks)
    }

    /// The current value of an object.
    pub fn get(&self, key: &Key) -> Option<Object> {
        let (kind, id) = key;
        match kind {
            Kind::Cluster => self.clusters.get(id).cloned().map(Object::Cluster),
            Kind::Node => self.nodes.get(id).cloned().map(Object::Node),
            Kind::Service => self.services.get(id).cloned().map(Object::Service),
            Kind::Task => self.tasks.get(id).cloned().map(Object::Task),
            Kind::Network => self.networks.get(id).cloned().map(Object::Network),
            Kind::Secret => self.secrets.get(id).cloned().map(Object::Secret),
            Kind::Config => self.configs.get(id).cloned().map(Object::Config),
        }
    }

    /// Inserts or replaces an object, keeping every index right; returns the previous value.
    pub(crate) fn put(&mut self, obj: Object) -> Option<Object> {
        let old = self.remove(&obj.key());
        match obj {
            Object::Cluster(mut c) => {
                // On load and on apply alike: a store or entry written before admin credentials
                // had holders still grants exactly the admins it did.
                super::admin_credentials::migrate_admin_credentials(&mut c);
                self.clusters.insert(c.id.clone(), c);
            }
            Object::Node(n) => {
                // The current certificate, and the one it replaced at the last renewal.
                for fp in [&n.cert_fingerprint, &n.previous_cert_fingerprint] {
                    if !fp.is_empty() {
                        self.node_by_fingerprint.insert(fp.clone(), n.id.clone());
                    }
                }
                let holder = (Kind::Node, n.id.clone());
                for (net, ip) in node_addresses(&n) {
                    self.addresses.insert((net, ip), holder.clone());
                }
                self.nodes.insert(n.id.clone(), n);
            }
            Object::Network(n) => {
                let name = n.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
                self.network_by_name.insert(name, n.id.clone());
                self.networks.insert(n.id.clone(), n);
            }
            Object::Secret(s) => {
                let name = s
                    .spec
                    .as_ref()
                    .map(|sp| sp.name.clone())
                    .unwrap_or_default();
                self.secret_by_name.insert(name, s.id.clone());
                self.secrets.insert(s.id.clone(), s);
            }
            Object::Config(c) => {
                let name = c
                    .spec
                    .as_ref()
                    .map(|sp| sp.name.clone())
                    .unwrap_or_default();
                self.config_by_name.insert(name, c.id.clone());
                self.configs.insert(c.id.clone(), c);
            }
            Object::Service(s) => {
                let name = s
                    .spec
                    .as_ref()
                    .map(|sp| sp.name.clone())
                    .unwrap_or_default();
                self.service_by_name.insert(name, s.id.clone());
                let holder = (Kind::Service, s.id.clone());
                for (net, ip) in service_addresses(&s) {
                    self.addresses.insert((net, ip), holder.clone());
                }
                for key in ingress_ports(&s) {
                    self.ingress_ports.insert(key, s.id.clone());
                }
                self.services.insert(s.id.clone(), s);
            }
            Object::Task(t) => {
                self.tasks_by_service
                    .entry(t.service_id.clone())
                    .or_default()
                    .insert(t.id.clone());
                if !t.node_id.is_empty() {
                    self.tasks_by_node
                        .entry(t.node_id.clone())
                        .or_default()
                        .insert(t.id.clone());
                }
                let holder = (Kind::Task, t.id.clone());
                for (net, ip) in task_addresses(&t) {
                    self.addresses.insert((net, ip), holder.clone());
                }
                self.tasks.insert(t.id.clone(), t);
            }
        }
        old
    }

    /// Deletes an object and its index entries; returns its last value.
    pub(crate) fn remove(&mut self, key: &Key) -> Option<Object> {
        let (kind, id) = key;
        match kind {
            Kind::Cluster => self.clusters.remove(id).map(Object::Cluster),
            Kind::Node => {
                let n = self.nodes.remove(id)?;
                for fp in [&n.cert_fingerprint, &n.previous_cert_fingerprint] {
                    if self.node_by_fingerprint.get(fp) == Some(&n.id) {
                        self.node_by_fingerprint.remove(fp);
                    }
                }
                self.release(node_addresses(&n), &(Kind::Node, n.id.clone()));
                Some(Object::Node(n))
            }
            Kind::Service => {
                let s = self.services.remove(id)?;
                let name = service_name(&s);
                if self.service_by_name.get(name) == Some(&s.id) {
                    self.service_by_name.remove(name);
                }
                self.release(service_addresses(&s), &(Kind::Service, s.id.clone()));
                for key in ingress_ports(&s) {
                    if self.ingress_ports.get(&key) == Some(&s.id) {
                        self.ingress_ports.remove(&key);
                    }
                }
                Some(Object::Service(s))
            }
            Kind::Task => {
                let t = self.tasks.remove(id)?;
                remove_from_index(&mut self.tasks_by_service, &t.service_id, &t.id);
                remove_from_index(&mut self.tasks_by_node, &t.node_id, &t.id);
                self.release(task_addresses(&t), &(Kind::Task, t.id.clone()));
                Some(Object::Task(t))
            }
            Kind::Network => {
                let n = self.networks.remove(id)?;
                let name = n.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("");
                if self.network_by_name.get(name) == Some(&n.id) {
                    self.network_by_name.remove(name);
                }
                Some(Object::Network(n))
            }
            Kind::Secret => {
                let s = self.secrets.remove(id)?;
                let name = s.spec.as_ref().map(|sp| sp.name.as_str()).unwrap_or("");
                if self.secret_by_name.get(name) == Some(&s.id) {
                    self.secret_by_name.remove(name);
                }
                Some(Object::Secret(s))
            }
            Kind::Config => {
                let c = self.configs.remove(id)?;
                let name = c.spec.as_ref().map(|sp| sp.name.as_str()).unwrap_or("");
                if self.config_by_name.get(name) == Some(&c.id) {
                    self.config_by_name.remove(name);
                }
                Some(Object::Config(c))
            }
        }
    }

    /// Drops the address index entries `holder` owns among `addrs`.
    fn release(&mut self, addrs: Vec<(String, String)>, holder: &Holder) {
        for key in addrs {
            if self.addresses.get(&key) == Some(holder) {
                self.addresses.remove(&key);
            }
        }
    }

    /// Fails if one of `addrs` is held by someone other than `holder`.
    fn check_free(&self, addrs: &[(String, String)], holder: &Holder) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        for key in addrs {
            if !seen.insert(key) {
                return Err(format!(
                    "address {} on network {} given twice",
                    key.1, key.0
                ));
            }
            if let Some(other) = self.addresses.get(key) {
                if other != holder {
                    return Err(format!(
                        "address {} on network {} is already in use by {:?} {}",
                        key.1, key.0, other.0, other.1
                    ));
                }
            }
        }
        Ok(())
    }

    /// Puts back the values recorded in an undo log (newest change undone first).
    pub(crate) fn rollback(&mut self, undo: Vec<(Key, Option<Object>)>) {
        for (key, old) in undo.into_iter().rev() {
            match old {
                Some(obj) => {
                    self.put(obj);
                }
                None => {
                    self.remove(&key);
                }
            }
        }
    }
}

/// The object of a unique id prefix: `Ok(None)` if none matches, `Err(n)` if `n` > 1 do.
fn unique_prefix<'a, T>(
    map: &'a BTreeMap<String, T>,
    prefix: &str,
) -> Result<Option<&'a T>, usize> {
    if prefix.is_empty() {
        return Ok(None);
    }
    let mut hits = map
        .range(prefix.to_string()..)
        .take_while(|(id, _)| id.starts_with(prefix));
    match (hits.next(), hits.count()) {
        (None, _) => Ok(None),
        (Some((_, v)), 0) => Ok(Some(v)),
        (Some(_), more) => Err(more + 1),
    }
}

/// A service's container spec, if it has one.
fn container_of(s: &Service) -> Option<&shoal_proto::v1::ContainerSpec> {
    s.spec.as_ref()?.task.as_ref()?.container.as_ref()
}

fn service_name(s: &Service) -> &str {
    s.spec.as_ref().map(|sp| sp.name.as_str()).unwrap_or("")
}

/// Whether a task's observed state has ended (its addresses are free again).
pub fn task_has_ended(t: &Task) -> bool {
    t.observed_state() >= TaskState::TaskComplete
}

/// (network id, IP) pairs of a list of attachments.
fn attachment_addresses(atts: &[NetworkAttachment]) -> impl Iterator<Item = (String, String)> + '_ {
    atts.iter().flat_map(|a| {
        a.addresses
            .iter()
            .map(move |addr| (a.network_id.clone(), ip_of(addr).to_string()))
    })
}

/// The IP part of "10.0.1.5/24".
pub fn ip_of(addr: &str) -> &str {
    addr.split('/').next().unwrap_or(addr)
}

fn task_addresses(t: &Task) -> Vec<(String, String)> {
    if task_has_ended(t) {
        return Vec::new();
    }
    attachment_addresses(&t.networks).collect()
}

fn node_addresses(n: &Node) -> Vec<(String, String)> {
    let mut v: Vec<_> = attachment_addresses(&n.attachments).collect();
    if !n.mesh_addr.is_empty() {
        v.push((MESH_NETWORK.to_string(), ip_of(&n.mesh_addr).to_string()));
    }
    v
}

fn service_addresses(s: &Service) -> Vec<(String, String)> {
    s.endpoint
        .iter()
        .flat_map(|e| e.virtual_ips.iter())
        .map(|v| (v.network_id.clone(), ip_of(&v.addr).to_string()))
        .collect()
}

/// ("tcp"|"udp", port) of the service's allocated ingress-mode published ports.
fn ingress_ports(s: &Service) -> Vec<(String, u32)> {
    s.endpoint
        .iter()
        .flat_map(|e| e.ports.iter())
        .filter(|p| p.published_port != 0 && p.is_ingress())
        .map(|p| {
            let proto = port_protocol(&p.protocol);
            (proto.to_string(), p.published_port)
        })
        .collect()
}

/// The network ids a service's spec attaches it to.
pub fn service_network_ids(s: &Service) -> impl Iterator<Item = &str> {
    s.spec
        .iter()
        .flat_map(|sp| sp.task.iter())
        .flat_map(|t| t.networks.iter())
        .map(|n| n.target.as_str())
}

fn remove_from_index(index: &mut HashMap<String, BTreeSet<String>>, owner: &str, id: &str) {
    if let Some(set) = index.get_mut(owner) {
        set.remove(id);
        if set.is_empty() {
            index.remove(owner);
        }
    }
}
