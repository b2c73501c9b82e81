//! The networks of the cluster on this node: what the worker holds (`Networks`).
//!
//! The dispatcher sends, with a node's tasks, a `NetworkView` of every network they use (and of
//! `ingress` while any service publishes an ingress port). [`Networks::apply`] makes the kernel
//! match them, then [`Networks::attach`] plugs a task into its networks:
//!
//! - **overlay**: per network a bridge `sbr<id8>` and a VXLAN device `svx<id8>` (VNI of the
//!   network, UDP 4789, no learning, ARP proxy on, no flooding), with an FDB entry
//!   (`MAC -> node address`) and a permanent neighbour entry (`IP -> MAC`) for every endpoint on
//!   another node. MACs derive from addresses (02:42:a:b:c:d), so nothing but the view is needed.
//!   The ingress bridge carries the node's own ingress address (and the matching MAC). Encrypted
//!   networks use mesh addresses as VXLAN destinations (the view already carries them) and a
//!   smaller MTU; the WireGuard device that carries them is [`super::mesh`]'s.
//! - **bridge** (network objects): a node-local [`BridgeNetwork`] per network (NAT, local IPAM).
//! - **host**: the task shares the agent's namespace. **none**: a namespace with `lo` only.
//!
//! A task gets one interface per network in order (eth0, eth1, ...), then the local bridge
//! `shoal0` with the default route. Tasks on an overlay get the service plane: a DNS server at
//! 127.0.0.11 ([`super::dns`]) and VIP load balancing ([`super::lb`]), both rewritten whenever
//! the views change; host-mode and ingress published ports live in the node's `shoal_ports`.
//! What the node accepts from outside (VXLAN from cluster peers only, nothing to its loopback)
//! is [`super::guard`]'s table, refreshed from the same views; no port is published before it is
//! in place.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rtnetlink::Handle;
use sha2::{Digest, Sha256};
use shoal_proto::v1::{MeshPeer, NetworkAttachment, NetworkView, Task};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use super::dns::{self, Resolver, ResolverHandle};
use super::guard::{self, Guard, MeshIf};
use super::lb::{self, HostPort, PortRule, Protocol, Vip};
use super::link::{self, Mac, Vxlan};
use super::mesh::Mesh;
use super::{netlink_in, netns, parse_ip, plug_veth, BridgeNetwork, NetworkError, VethPlug};

/// VXLAN UDP port (IANA).
pub const VXLAN_PORT: u16 = 4789;
/// MTU of a plain overlay (VXLAN adds 50 bytes to a 1500-byte underlay).
pub const OVERLAY_MTU: u32 = 1450;
/// MTU of an encrypted overlay (VXLAN inside WireGuard's 1420).
pub const ENCRYPTED_MTU: u32 = 1370;
/// What a task on an overlay network finds in its /etc/resolv.conf.
pub const OVERLAY_RESOLV_CONF: &str = "nameserver 127.0.0.11\noptions ndots:0\n";

/// Errors of the cluster networks.
pub type OverlayError = NetworkError;

/// Where a task's networking lives, for the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskNetworking {
    /// The namespace the container joins.
    pub netns: PathBuf,
    /// Content of the container's /etc/resolv.conf.
    pub resolv_conf: String,
}

/// The MAC of an overlay address: 02:42 followed by the address.
pub fn mac_of(ip: Ipv4Addr) -> Mac {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

/// The address an overlay MAC was derived from.
fn ip_of_mac(mac: Mac) -> Option<Ipv4Addr> {
    (mac[0] == 0x02 && mac[1] == 0x42).then(|| Ipv4Addr::new(mac[2], mac[3], mac[4], mac[5]))
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// The bridge of an overlay or bridge-driver network.
pub fn bridge_name(network_id: &str) -> String {
    format!("sbr{}", short(network_id))
}

/// The VXLAN device of an overlay network.
pub fn vxlan_name(network_id: &str) -> String {
    format!("svx{}", short(network_id))
}

/// Host and task-side names of a task's veth on an overlay network.
fn overlay_veth(task_id: &str, network_id: &str) -> (String, String) {
    let digest = hex::encode(Sha256::digest(format!("{task_id}/{network_id}").as_bytes()));
    (format!("vo{}", &digest[..8]), format!("vq{}", &digest[..8]))
}

fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, prefix) = s.split_once('/')?;
    Some((ip.parse().ok()?, prefix.parse().ok()?))
}

/// The driver of a view's network ("" when the view has no spec).
pub(super) fn driver(view: &NetworkView) -> &str {
    view.network
        .as_ref()
        .and_then(|n| n.spec.as_ref())
        .map_or("", |s| s.driver.as_str())
}

/// Whether a view's network is encrypted (`--opt encrypted`).
pub(super) fn encrypted(view: &NetworkView) -> bool {
    view.network
        .as_ref()
        .and_then(|n| n.spec.as_ref())
        .is_some_and(|s| s.encrypted)
}

fn is_ingress(view: &NetworkView) -> bool {
    view.network
        .as_ref()
        .and_then(|n| n.spec.as_ref())
        .is_some_and(|s| s.ingress)
}

/// The FDB a node needs for one overlay: remote endpoint address -> its node's address.
pub fn remote_endpoints(view: &NetworkView, node_id: &str) -> BTreeMap<Ipv4Addr, Ipv4Addr> {
    view.endpoints
        .iter()
        .filter(|e| e.node_id != node_id && !e.node_addr.is_empty())
        .filter_map(|e| Some((parse_ip(&e.addr)?, parse_ip(&e.node_addr)?)))
        .collect()
}

/// An overlay as programmed in the kernel.
#[derive(Debug, Default)]
struct Programmed {
    /// Remote endpoint address -> node address, as in the VXLAN device's FDB.
    fdb: BTreeMap<Ipv4Addr, Ipv4Addr>,
}

/// A task's service plane: its resolver and what was last applied.
struct Plane {
    netns: PathBuf,
    networks: Vec<String>,
    resolver: Option<ResolverHandle>,
    vips: Option<Vec<Vip>>,
    host_ports: Vec<HostPort>,
}

#[derive(Default)]
struct Inner {
    views: BTreeMap<String, NetworkView>,
    overlays: BTreeMap<String, Programmed>,
    locals: HashMap<String, Arc<BridgeNetwork>>,
    planes: HashMap<String, Plane>,
    ports: Option<(Option<String>, Vec<PortRule>)>,
    /// What the `shoal_overlay` notrack rules cover, as last applied.
    untracked: Option<Untracked>,
    /// Tasks detached since they last attached (their containers ended), until forgotten.
    released: std::collections::HashSet<String>,
    /// What the `shoal_guard` table lets in, as last applied; `None` until it is in place.
    guard: Option<Guard>,
}

/// The nftables table that keeps frames bridged across overlay bridges out of conntrack.
pub const NOTRACK_TABLE: &str = "shoal_overlay";

/// What the `shoal_overlay` table keeps out of conntrack (see [`notrack_ruleset`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Untracked {
    /// Overlay bridges, with the node's own address on it (the ingress bridge) if any.
    pub bridges: Vec<(String, Option<Ipv4Addr>)>,
    /// Underlay UDP ports of the overlays: VXLAN, and the WireGuard mesh's when it runs.
    pub udp_ports: Vec<u16>,
}

/// With br_netfilter loaded (Debian's default), every frame a bridge forwards also runs the IP
/// hooks, conntrack included; and the underlay's VXLAN and WireGuard datagrams are tracked too
/// wherever the node has NAT rules. None of it needs tracking: overlay bridges only ever bridge
/// (tasks route through `shoal0`), and the underlay datagrams are never NATed. Measured here,
/// tracking cost a fifth of the overlay's throughput and 18 µs of round trip. Frames addressed to
/// the node itself (its ingress address: the routing mesh's replies) stay tracked.
pub fn notrack_ruleset(u: &Untracked) -> String {
    let mut s = format!("table ip {NOTRACK_TABLE}\ndelete table ip {NOTRACK_TABLE}\n");
    if u.bridges.is_empty() {
        return s;
    }
    let mut pre = Vec::new();
    let plain: Vec<String> = u
        .bridges
        .iter()
        .filter(|(_, own)| own.is_none())
        .map(|(b, _)| format!("\"{b}\""))
        .collect();
    if !plain.is_empty() {
        pre.push(format!("iifname {{ {} }} notrack", plain.join(", ")));
    }
    for (b, own) in &u.bridges {
        if let Some(ip) = own {
            pre.push(format!("iifname \"{b}\" ip daddr != {ip} notrack"));
        }
    }
    let mut out = Vec::new();
    if !u.udp_ports.is_empty() {
        let ports: Vec<String> = u.udp_ports.iter().map(u16::to_string).collect();
        let rule = format!("udp dport {{ {} }} notrack", ports.join(", "));
        pre.push(rule.clone());
        out.push(rule);
    }
    let chain =
        |name: &str, hook: &str, rules: &[String]| {
            format!(
            "  chain {name} {{\n    type filter hook {hook} priority raw; policy accept;\n{}  }}\n",
            rules.iter().map(|r| format!("    {r}\n")).collect::<String>()
        )
        };
    s.push_str(&format!(
        "table ip {NOTRACK_TABLE} {{\n{}{}}}\n",
        chain("prerouting", "prerouting", &pre),
        chain("output", "output", &out)
    ));
    s
}

/// The cluster networks of this node.
pub struct Networks {
    node_id: String,
    data_dir: PathBuf,
    host_netns: Option<PathBuf>,
    default: BridgeNetwork,
    upstreams: Vec<SocketAddr>,
    /// The WireGuard device encrypted overlays ride on (none with `--no-wg`).
    mesh: Option<Mutex<Mesh>>,
    inner: Mutex<Inner>,
}

impl Networks {
    /// Networks of node `node_id`, around the local default bridge (`ensure`d by the caller).
    pub fn new(node_id: &str, data_dir: &Path, default: BridgeNetwork) -> Networks {
        Networks {
            node_id: node_id.to_string(),
            data_dir: data_dir.to_path_buf(),
            host_netns: None,
            default,
            upstreams: dns::host_upstreams(),
            mesh: None,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Carries encrypted overlays over `mesh`.
    pub fn with_mesh(mut self, mesh: Mesh) -> Networks {
        self.mesh = Some(Mutex::new(mesh));
        self
    }

    /// Puts every device in the namespace at `netns` instead of the agent's own (tests).
    pub fn with_host_netns(mut self, netns: PathBuf) -> Networks {
        self.host_netns = Some(netns.clone());
        self.default = self.default.with_host_netns(netns);
        self
    }

    /// The node-local default bridge.
    pub fn default_bridge(&self) -> &BridgeNetwork {
        &self.default
    }

    /// Makes the kernel match `views` (and this node's own `attachments`, mesh address and mesh
    /// peers): the WireGuard device while an encrypted network is here, overlay devices and FDB
    /// entries, then every task's DNS records and VIPs and the node's published ports.
    pub async fn apply(
        &self,
        views: &[NetworkView],
        attachments: &[NetworkAttachment],
        mesh_addr: &str,
        mesh_peers: &[MeshPeer],
    ) -> Result<(), NetworkError> {
        let mut inner = self.inner.lock().await;
        let mut mesh_if = None;
        if let Some(mesh) = &self.mesh {
            let mut mesh = mesh.lock().await;
            if views.iter().any(encrypted) && !mesh_addr.is_empty() {
                mesh.apply(mesh_addr, mesh_peers).await?;
            } else if mesh.is_kernel().is_some() {
                info!("no encrypted network left on this node: removing the mesh device");
                mesh.shutdown().await?;
            }
            if mesh.is_kernel().is_some() {
                mesh_if = parse_ip(mesh_addr).map(|addr| MeshIf {
                    ifname: mesh.ifname().to_string(),
                    addr,
                });
            }
        }
        inner.views = views
            .iter()
            .filter_map(|v| Some((v.network.as_ref()?.id.clone(), v.clone())))
            .collect();
        let mut first_error = None;
        // Overlays: program the wanted ones, remove the others.
        let wanted: Vec<NetworkView> = inner
            .views
            .values()
            .filter(|v| driver(v) == "overlay")
            .cloned()
            .collect();
        for view in &wanted {
            let Some(net) = view.network.as_ref() else {
                continue;
            };
            let own = attachments
                .iter()
                .find(|a| a.network_id == net.id)
                .and_then(|a| a.addresses.first())
                .and_then(|a| parse_cidr(a));
            let programmed = inner.overlays.remove(&net.id);
            match self.program_overlay(view, own, programmed).await {
                Ok(p) => {
                    inner.overlays.insert(net.id.clone(), p);
                }
                Err(e) => {
                    warn!(network.id = %net.id, error = %e, "programming overlay failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        let gone: Vec<String> = inner
            .overlays
            .keys()
            .filter(|id| !inner.views.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            inner.overlays.remove(&id);
            if let Err(e) = self.remove_overlay(&id).await {
                warn!(network.id = %id, error = %e, "removing overlay failed");
            }
        }
        // Bridge-driver networks nobody uses any more.
        let gone: Vec<String> = inner
            .locals
            .keys()
            .filter(|id| !inner.views.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(b) = inner.locals.remove(&id) {
                if let Err(e) = b.remove_bridge().await {
                    warn!(network.id = %id, error = %e, "removing bridge network failed");
                }
            }
        }
        let mut wanted = Untracked::default();
        for id in inner.overlays.keys() {
            let own = inner
                .views
                .get(id)
                .filter(|v| is_ingress(v))
                .and_then(|_| attachments.iter().find(|a| a.network_id == *id))
                .and_then(|a| a.addresses.first())
                .and_then(|a| parse_ip(a));
            wanted.bridges.push((bridge_name(id), own));
        }
        if !wanted.bridges.is_empty() {
            wanted.udp_ports.push(VXLAN_PORT);
            if let Some(mesh) = &self.mesh {
                let mesh = mesh.lock().await;
                if mesh.is_kernel().is_some() {
                    wanted.udp_ports.push(mesh.port());
                }
            }
        }
        let unchanged = match &inner.untracked {
            Some(last) => *last == wanted,
            None => wanted.bridges.is_empty(),
        };
        if !unchanged {
            self.set_untracked(&mut inner, Some(wanted)).await;
        }
        let views: Vec<NetworkView> = inner.views.values().cloned().collect();
        let wanted = Guard::from_views(&views, &self.node_id, mesh_if);
        if inner.guard.as_ref() != Some(&wanted) {
            self.set_guard(&mut inner, wanted).await;
        }
        self.refresh_planes(&mut inner).await;
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(())
    }

    /// Builds or updates one overlay's bridge, VXLAN device and FDB.
    async fn program_overlay(
        &self,
        view: &NetworkView,
        own: Option<(Ipv4Addr, u8)>,
        programmed: Option<Programmed>,
    ) -> Result<Programmed, NetworkError> {
        let net = view.network.clone().unwrap_or_default();
        let mtu = if encrypted(view) {
            ENCRYPTED_MTU
        } else {
            OVERLAY_MTU
        };
        let (br, vx) = (bridge_name(&net.id), vxlan_name(&net.id));
        let vxlan = Vxlan {
            vni: net.vni,
            port: VXLAN_PORT,
            mtu,
        };
        let wanted = remote_endpoints(view, &self.node_id);
        let ingress = is_ingress(view);
        let known = programmed.map(|p| p.fdb);
        let net_id = net.id.clone();
        let fdb = netlink_in(
            self.host_netns.clone(),
            "overlay",
            move |h: Handle| async move {
                // The ingress bridge answers for this node's ingress address: same MAC rule as tasks.
                let mac = if ingress {
                    own.map(|(ip, _)| mac_of(ip))
                } else {
                    None
                };
                let br_index = link::ensure_bridge_with(&h, &br, mac, Some(mtu)).await?;
                let (vx_index, existed) = link::ensure_vxlan(&h, &vx, vxlan, br_index).await?;
                if let (true, Some((ip, prefix))) = (ingress, own) {
                    link::ensure_address(&h, br_index, &br, ip, prefix).await?;
                }
                // What the kernel has: what we programmed, or (new to this process) what it lists.
                let current: BTreeMap<Ipv4Addr, Ipv4Addr> = match known {
                    Some(k) if existed => k,
                    _ => link::fdb_list(&h, vx_index)
                        .await?
                        .into_iter()
                        .filter_map(|(mac, dst)| Some((ip_of_mac(mac)?, dst)))
                        .collect(),
                };
                for (ip, node) in &wanted {
                    if current.get(ip) != Some(node) {
                        link::fdb_set(&h, vx_index, mac_of(*ip), *node).await?;
                        link::neigh_set(&h, vx_index, *ip, mac_of(*ip)).await?;
                    }
                }
                for ip in current.keys().filter(|ip| !wanted.contains_key(ip)) {
                    link::fdb_del(&h, vx_index, mac_of(*ip)).await?;
                    link::neigh_del(&h, vx_index, *ip).await?;
                }
                if current != wanted {
                    debug!(network.id = %net_id, endpoints = wanted.len(), "overlay FDB synced");
                }
                Ok::<_, NetworkError>(wanted)
            },
        )
        .await?;
        Ok(Programmed { fdb })
    }

    /// Deletes an overlay's VXLAN device and bridge (ports included).
    async fn remove_overlay(&self, network_id: &str) -> Result<(), NetworkError> {
        let (br, vx) = (bridge_name(network_id), vxlan_name(network_id));
        netlink_in(
            self.host_netns.clone(),
            "overlay-rm",
            move |h: Handle| async move {
                link::delete(&h, &vx).await?;
                if let Some(index) = link::index_of(&h, &br).await? {
                    for port in link::ports_of(&h, index).await? {
                        link::delete(&h, &port).await?;
                    }
                    link::delete(&h, &br).await?;
                }
                Ok::<_, NetworkError>(())
            },
        )
        .await?;
        info!(network.id = %network_id, "overlay removed from this node");
        Ok(())
    }

    /// The node-local bridge of a bridge-driver network, created on first use.
    async fn local_bridge(
        &self,
        inner: &mut Inner,
        view: &NetworkView,
    ) -> Result<Arc<BridgeNetwork>, NetworkError> {
        let net = view.network.clone().unwrap_or_default();
        if let Some(b) = inner.locals.get(&net.id) {
            return Ok(b.clone());
        }
        let subnet = net
            .subnet
            .parse()
            .map_err(|_| NetworkError::InvalidBridgeName {
                name: net.id.clone(),
                reason: "the network has no valid subnet",
            })?;
        let mut b = BridgeNetwork::new(&self.data_dir, &bridge_name(&net.id), subnet)?
            .with_netns_dir(self.default.netns_dir.clone())
            .with_veth_salt(&net.id);
        if let Some(ns) = &self.host_netns {
            b = b.with_host_netns(ns.clone());
        }
        b.ensure().await?;
        let b = Arc::new(b);
        inner.locals.insert(net.id.clone(), b.clone());
        Ok(b)
    }

    /// Plugs `task` into its networks (as listed in `Task.networks`, which must be in the views
    /// applied last); returns where the runtime finds them. Idempotent (re-adoption).
    pub async fn attach(&self, task: &Task) -> Result<TaskNetworking, NetworkError> {
        let id = task.id.as_str();
        // The lock is held only to read the views (and make a bridge network's bridge): tasks
        // are plumbed concurrently.
        let mut plan: Vec<(NetworkAttachment, NetworkView, Option<Arc<BridgeNetwork>>)> =
            Vec::new();
        {
            let mut inner = self.inner.lock().await;
            for att in &task.networks {
                let view = inner.views.get(&att.network_id).cloned().ok_or_else(|| {
                    NetworkError::UnknownNetwork {
                        network_id: att.network_id.clone(),
                    }
                })?;
                let local = if driver(&view) == "bridge"
                    && !view.network.as_ref().is_some_and(|n| n.subnet.is_empty())
                {
                    Some(self.local_bridge(&mut inner, &view).await?)
                } else {
                    None
                };
                plan.push((att.clone(), view, local));
            }
        }
        if plan.iter().any(|(_, v, _)| driver(v) == "host") {
            info!(task.id = %id, "task uses the host network");
            return Ok(TaskNetworking {
                netns: PathBuf::from("/proc/self/ns/net"),
                resolv_conf: super::resolv_conf(),
            });
        }
        let ns_path = self.default.task_netns(id);
        if !netns::is_netns(&ns_path) {
            netns::create(&ns_path).await?;
        }
        let none_only = !plan.is_empty() && plan.iter().all(|(_, v, _)| driver(v) == "none");
        if none_only {
            netlink_in(Some(ns_path.clone()), "lo-up", |h: Handle| async move {
                link::loopback_up(&h).await?;
                Ok::<_, NetworkError>(())
            })
            .await?;
            return Ok(TaskNetworking {
                netns: ns_path,
                resolv_conf: super::resolv_conf(),
            });
        }
        let mut overlays = Vec::new();
        let mut ifindex = 0usize;
        for (att, view, local) in &plan {
            let ifname = format!("eth{ifindex}");
            match driver(view) {
                "overlay" => {
                    let Some((ip, prefix)) = att.addresses.first().and_then(|a| parse_cidr(a))
                    else {
                        continue;
                    };
                    let (host, peer) = overlay_veth(id, &att.network_id);
                    let mtu = if encrypted(view) {
                        ENCRYPTED_MTU
                    } else {
                        OVERLAY_MTU
                    };
                    plug_veth(
                        self.host_netns.clone(),
                        &ns_path,
                        VethPlug {
                            host: host.clone(),
                            peer,
                            ifname,
                            bridge: bridge_name(&att.network_id),
                            addr: ip,
                            prefix,
                            mtu: Some(mtu),
                            mac: Some(mac_of(ip)),
                            gateway: None,
                        },
                    )
                    .await?;
                    self.hairpin(&host);
                    overlays.push(att.network_id.clone());
                }
                "bridge" if local.is_some() => {
                    if let Some(b) = local {
                        b.plug(id, &ns_path, &ifname, false, None).await?;
                    }
                }
                // The predefined `bridge` is the default bridge every task gets anyway.
                _ => continue,
            }
            ifindex += 1;
        }
        let local_ip = self
            .default
            .plug(id, &ns_path, &format!("eth{ifindex}"), true, None)
            .await?;
        self.hairpin(&self.default.veth_name(id));

        let host_ports: Vec<HostPort> = task
            .endpoint
            .iter()
            .flat_map(|e| e.ports.iter())
            .filter(|p| p.is_host_mode() && p.published_port != 0)
            .filter_map(|p| {
                Some(HostPort {
                    protocol: Protocol::parse(&p.protocol)?,
                    published_port: u16::try_from(p.published_port).ok()?,
                    addr: local_ip,
                    target_port: u16::try_from(p.target_port).ok()?,
                })
            })
            .collect();
        let resolver = if overlays.is_empty() {
            None
        } else {
            match Resolver::start(id, &ns_path, self.upstreams.clone()).await {
                Ok(r) => Some(r),
                Err(e) => {
                    warn!(task.id = %id, error = %e, "DNS resolver did not start");
                    None
                }
            }
        };
        let resolv_conf = if overlays.is_empty() {
            super::resolv_conf()
        } else {
            OVERLAY_RESOLV_CONF.to_string()
        };
        let mut inner = self.inner.lock().await;
        inner.released.remove(id);
        // A task on no overlay and publishing no host port changes no rule: skip the pass over
        // every task (a 100-replica service attaches 100 of them at once).
        let mut changes_rules = !overlays.is_empty() || !host_ports.is_empty();
        if let Some(old) = inner.planes.insert(
            id.to_string(),
            Plane {
                netns: ns_path.clone(),
                networks: overlays,
                resolver,
                vips: None,
                host_ports,
            },
        ) {
            changes_rules |= !old.networks.is_empty() || !old.host_ports.is_empty();
            if let Some(r) = old.resolver {
                r.stop().await;
            }
        }
        if changes_rules {
            self.refresh_planes(&mut inner).await;
        }
        info!(task.id = %id, networks = task.networks.len(), "task attached to its networks");
        Ok(TaskNetworking {
            netns: ns_path,
            resolv_conf,
        })
    }

    /// Unplugs a task from every network, stops its resolver and removes its namespace; frees its
    /// local addresses. Idempotent; an unknown task is fine.
    pub async fn detach(&self, task_id: &str) -> Result<(), NetworkError> {
        // The lock is held only to take the task's plane and read what to undo: tasks are
        // unplugged concurrently (a `service rm` of 100 tasks is 100 detaches at once).
        let (plane, hosts, locals) = {
            let mut inner = self.inner.lock().await;
            if inner.released.contains(task_id) {
                return Ok(()); // released when its container ended; only `forget` is left
            }
            let plane = inner.planes.remove(task_id);
            let hosts: Vec<String> = inner
                .overlays
                .keys()
                .map(|n| overlay_veth(task_id, n).0)
                .collect();
            let locals: Vec<Arc<BridgeNetwork>> = inner.locals.values().cloned().collect();
            (plane, hosts, locals)
        };
        let had_ports = plane.as_ref().is_some_and(|p| !p.host_ports.is_empty());
        if let Some(r) = plane.and_then(|p| p.resolver) {
            r.stop().await;
        }
        if !hosts.is_empty() {
            netlink_in(
                self.host_netns.clone(),
                "detach-overlay",
                move |h: Handle| async move {
                    for host in hosts {
                        link::delete(&h, &host).await?;
                    }
                    Ok::<_, NetworkError>(())
                },
            )
            .await?;
        }
        for b in locals {
            b.unplug(task_id).await?;
        }
        self.default.detach(task_id).await?;
        let mut inner = self.inner.lock().await;
        inner.released.insert(task_id.to_string());
        if had_ports {
            self.refresh_planes(&mut inner).await;
        }
        Ok(())
    }

    /// Forgets a task that left this node for good (after its last `detach`).
    pub async fn forget(&self, task_id: &str) {
        self.inner.lock().await.released.remove(task_id);
    }

    /// Rewrites every task's DNS records and VIP rules and the node's published ports from the
    /// current views; only what changed is applied. Failures are logged, not fatal.
    async fn refresh_planes(&self, inner: &mut Inner) {
        let views = inner.views.clone();
        for (task_id, plane) in inner.planes.iter_mut() {
            if plane.networks.is_empty() {
                continue;
            }
            let mine: Vec<NetworkView> = plane
                .networks
                .iter()
                .filter_map(|n| views.get(n).cloned())
                .collect();
            if let Some(r) = &plane.resolver {
                r.update(dns::records_for(&mine));
            }
            let vips = lb::vips_for(&mine);
            if plane.vips.as_ref() != Some(&vips) {
                match lb::apply_vip(task_id, &plane.netns, &vips).await {
                    Ok(()) => plane.vips = Some(vips),
                    Err(e) => warn!(task.id = %task_id, error = %e, "VIP rules not applied"),
                }
            }
        }
        let ingress = views.values().find(|v| is_ingress(v));
        let mut rules = ingress.map(lb::ingress_port_rules).unwrap_or_default();
        let host: Vec<HostPort> = inner
            .planes
            .values()
            .flat_map(|p| p.host_ports.iter().cloned())
            .collect();
        rules.extend(lb::host_port_rules(&host));
        let bridge = ingress
            .and_then(|v| v.network.as_ref())
            .map(|n| bridge_name(&n.id));
        let wanted = (bridge.clone(), rules);
        let unchanged = match &inner.ports {
            Some(last) => *last == wanted,
            None => wanted.1.is_empty(),
        };
        if !unchanged && !wanted.1.is_empty() && inner.guard.is_none() {
            // Publishing turns on route_localnet, safe only behind the guard's loopback rule.
            warn!("published ports not applied: the exposure rules are not in place");
        } else if !unchanged {
            match lb::apply_ports(self.host_netns.as_deref(), bridge.as_deref(), &wanted.1).await {
                Ok(()) => inner.ports = Some(wanted),
                Err(e) => warn!(error = %e, "published ports not applied"),
            }
        }
    }

    /// Rewrites the `shoal_overlay` table to cover `wanted` (`None`: remove it); remembers what
    /// was applied, or logs why not.
    async fn set_untracked(&self, inner: &mut Inner, wanted: Option<Untracked>) {
        let ruleset = notrack_ruleset(wanted.as_ref().unwrap_or(&Untracked::default()));
        let applied = netns::on_thread(self.host_netns.clone(), "nft-notrack", move || {
            super::nft::apply(&ruleset)
        })
        .await;
        match applied {
            Ok(Ok(())) => inner.untracked = wanted,
            Ok(Err(e)) => warn!(error = %e, "overlay notrack rules not applied"),
            Err(e) => warn!(error = %e, "overlay notrack rules not applied"),
        }
    }

    /// Makes the `shoal_guard` table let in what `wanted` says (built afresh on the first call
    /// of this process); remembers what was applied, or logs why not.
    async fn set_guard(&self, inner: &mut Inner, wanted: Guard) {
        let ruleset = guard::ruleset(&wanted, inner.guard.is_none());
        match guard::apply(self.host_netns.clone(), ruleset).await {
            Ok(()) => {
                debug!(
                    vxlan_peers = wanted.vxlan_peers.len(),
                    encrypted_vnis = wanted.encrypted_vnis.len(),
                    mesh = ?wanted.mesh.as_ref().map(|m| &m.ifname),
                    "exposure rules applied"
                );
                inner.guard = Some(wanted);
            }
            Err(e) => {
                warn!(error = %e, "exposure rules not applied");
                // What the table holds is unknown: rebuild it whole next time.
                inner.guard = None;
            }
        }
    }

    /// Puts a bridge port in hairpin mode, so a task reaching its own published port through the
    /// host (DNAT back to itself) gets its packets back out of the port they came in on.
    fn hairpin(&self, port: &str) {
        if self.host_netns.is_some() {
            return; // sysfs shows the agent's namespace only
        }
        let path = format!("/sys/class/net/{port}/brport/hairpin_mode");
        if let Err(e) = std::fs::write(&path, "1") {
            warn!(port, error = %e, "hairpin mode not set");
        }
    }

    /// Removes everything the cluster networks made on this node: published ports, overlays,
    /// bridge networks and the default bridge with its tasks. For tests and uninstall.
    pub async fn cleanup_all(&self) -> Result<(), NetworkError> {
        let mut inner = self.inner.lock().await;
        if let Some(mesh) = &self.mesh {
            mesh.lock().await.shutdown().await?;
        }
        for (_, p) in inner.planes.drain() {
            if let Some(r) = p.resolver {
                r.stop().await;
            }
        }
        if let Err(e) = lb::cleanup(self.host_netns.as_deref()).await {
            warn!(error = %e, "removing published ports failed");
        }
        inner.ports = None;
        self.set_untracked(&mut inner, None).await;
        // Only after the ports: route_localnet is on until they are gone, the loopback rule with it.
        if let Err(e) = guard::apply(self.host_netns.clone(), guard::remove_ruleset()).await {
            warn!(error = %e, "removing the exposure rules failed");
        }
        inner.guard = None;
        for (_, b) in inner.locals.drain() {
            b.cleanup_all().await?;
        }
        inner.overlays.clear();
        netlink_in(
            self.host_netns.clone(),
            "overlay-cleanup",
            |h: Handle| async move {
                for prefix in ["svx", "sbr", "vo"] {
                    for name in link::names_with_prefix(&h, prefix).await? {
                        link::delete(&h, &name).await?;
                    }
                }
                Ok::<_, NetworkError>(())
            },
        )
        .await?;
        self.default.cleanup_all().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{EndpointView, Network, NetworkSpec};

    #[test]
    fn macs_derive_from_addresses_and_back() {
        let ip = Ipv4Addr::new(10, 1, 0, 5);
        assert_eq!(mac_of(ip), [0x02, 0x42, 10, 1, 0, 5]);
        assert_eq!(ip_of_mac(mac_of(ip)), Some(ip));
        assert_eq!(ip_of_mac([0x02, 0, 1, 2, 3, 4]), None);
    }

    #[test]
    fn notrack_covers_overlay_bridges_and_underlay_ports_but_not_the_node() {
        let none = notrack_ruleset(&Untracked::default());
        assert!(none.contains("delete table ip shoal_overlay") && !none.contains("chain"));
        let two = notrack_ruleset(&Untracked {
            bridges: vec![
                ("sbra".into(), None),
                ("sbrb".into(), None),
                ("sbri".into(), Some(Ipv4Addr::new(10, 0, 0, 3))),
            ],
            udp_ports: vec![4789, 51820],
        });
        for rule in [
            r#"iifname { "sbra", "sbrb" } notrack"#,
            r#"iifname "sbri" ip daddr != 10.0.0.3 notrack"#,
            "udp dport { 4789, 51820 } notrack",
            "type filter hook output priority raw",
        ] {
            assert!(two.contains(rule), "{rule} missing from:\n{two}");
        }
    }

    #[test]
    fn names_fit_linux_interface_names() {
        let id = "k3j4h5g6f7d8s9a0";
        assert_eq!(bridge_name(id), "sbrk3j4h5g6");
        assert_eq!(vxlan_name(id), "svxk3j4h5g6");
        let (host, peer) = overlay_veth("task0123456789", id);
        assert!(host.len() <= 15 && peer.len() <= 15, "{host} {peer}");
        assert_ne!(overlay_veth("task0123456789", "other").0, host);
    }

    #[test]
    fn remote_endpoints_leave_out_this_node_and_unknown_addresses() {
        let ep = |task: &str, node: &str, node_addr: &str, addr: &str| EndpointView {
            task_id: task.into(),
            node_id: node.into(),
            node_addr: node_addr.into(),
            addr: addr.into(),
            ..Default::default()
        };
        let view = NetworkView {
            network: Some(Network {
                id: "n1".into(),
                spec: Some(NetworkSpec {
                    driver: "overlay".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            endpoints: vec![
                ep("t1", "me", "192.168.1.1", "10.1.0.2"),
                ep("t2", "b", "192.168.1.2", "10.1.0.3"),
                ep("", "c", "192.168.1.3", "10.1.0.4"),
                ep("t4", "d", "", "10.1.0.5"),
            ],
            services: Vec::new(),
        };
        let fdb = remote_endpoints(&view, "me");
        assert_eq!(
            fdb.into_iter().collect::<Vec<_>>(),
            vec![
                (Ipv4Addr::new(10, 1, 0, 3), Ipv4Addr::new(192, 168, 1, 2)),
                (Ipv4Addr::new(10, 1, 0, 4), Ipv4Addr::new(192, 168, 1, 3)),
            ]
        );
    }
}
