//! The networks of the cluster on this node: what the worker holds (`Networks`).
//!
//! The dispatcher sends, with a node's tasks, a `NetworkView` of every network they use (and of
//! `ingress` while any service publishes an ingress port). [`Networks::apply`] makes the kernel
//! match them, then [`Networks::attach`] plugs a task into its networks:
//!
//! - **overlay**: per network a bridge `sbr<id8>` and a VXLAN device `svx<id8>` (VNI of the
//!   network, UDP 4789, no learning, ARP proxy on, no flooding) in the node's overlay namespace
//!   (the ingress network's in the host namespace: see [`Networks::overlay_netns`]), with an FDB entry
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
use shoal_proto::wire::NetworkDriver;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use super::dns;
use super::guard::{self, Guard, MeshIf};
use super::lb::{self, PortRule};
use super::link::{self, Mac};
use super::mesh::Mesh;
use super::vxlan::{self, Programmed};

mod plane;

use super::{netlink_in, netns, parse_ip, plug_veth, BridgeNetwork, NetworkError, VethPlug};
use plane::{host_ports, Plane};

pub use super::notrack::{notrack_ruleset, Untracked, NOTRACK_TABLE};

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
pub(super) fn ip_of_mac(mac: Mac) -> Option<Ipv4Addr> {
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

/// The driver of a view's network (`None` when the view has no spec or a word this version does
/// not know).
pub(super) fn driver(view: &NetworkView) -> Option<NetworkDriver> {
    view.network
        .as_ref()
        .and_then(|n| n.spec.as_ref())
        .and_then(|s| s.driver_kind().ok())
}

/// Whether a view's network is encrypted (`--opt encrypted`).
pub(super) fn encrypted(view: &NetworkView) -> bool {
    view.network
        .as_ref()
        .and_then(|n| n.spec.as_ref())
        .is_some_and(|s| s.encrypted)
}

/// Whether a view's overlay keeps its devices in the node's overlay namespace: every overlay but
/// `ingress`, whose bridge carries the node's ingress address that the routing mesh's DNAT in
/// the host namespace reaches.
pub(super) fn namespaced(view: &NetworkView) -> bool {
    !is_ingress(view)
}

/// Whether a view's network is the routing mesh's `ingress`.
pub(super) fn is_ingress(view: &NetworkView) -> bool {
    view.network
        .as_ref()
        .and_then(|n| n.spec.as_ref())
        .is_some_and(|s| s.ingress)
}

/// The MTU of a view's overlay: smaller when encrypted, for WireGuard's header.
pub(super) fn overlay_mtu(view: &NetworkView) -> u32 {
    if encrypted(view) {
        ENCRYPTED_MTU
    } else {
        OVERLAY_MTU
    }
}

/// The FDB a node needs for one overlay: remote endpoint address -> its node's address.
pub fn remote_endpoints(view: &NetworkView, node_id: &str) -> BTreeMap<Ipv4Addr, Ipv4Addr> {
    view.endpoints
        .iter()
        .filter(|e| e.node_id != node_id && !e.node_addr.is_empty())
        .filter_map(|e| Some((parse_ip(&e.addr)?, parse_ip(&e.node_addr)?)))
        .collect()
}

/// The overlay namespace's file for task namespaces in `netns_dir`: in a sibling directory.
fn overlay_netns_beside(netns_dir: &Path) -> PathBuf {
    netns_dir.with_file_name("netns-overlay").join("overlays")
}

/// One of a task's networks as [`Networks::attach`] plugs it.
struct Planned {
    att: NetworkAttachment,
    view: NetworkView,
    /// The node-local bridge, for a bridge-driver network with a subnet.
    local: Option<Arc<BridgeNetwork>>,
}

/// A task's interface on an overlay.
struct OverlayPlug<'a> {
    network_id: &'a str,
    /// The namespace of the overlay's bridge (the agent's own when `None`).
    devices_netns: Option<PathBuf>,
    ifname: String,
    addr: (Ipv4Addr, u8),
    mtu: u32,
}

/// Brings up `lo` in a task's namespace: all a task on `none` gets.
async fn loopback_only(ns_path: &Path) -> Result<(), NetworkError> {
    netlink_in(
        Some(ns_path.to_path_buf()),
        "lo-up",
        |h: Handle| async move {
            link::loopback_up(&h).await?;
            Ok::<_, NetworkError>(())
        },
    )
    .await
}

/// The network ids among `ids` that no view names any more.
fn not_in_views<'a>(
    ids: impl Iterator<Item = &'a String>,
    views: &BTreeMap<String, NetworkView>,
) -> Vec<String> {
    ids.filter(|id| !views.contains_key(*id)).cloned().collect()
}

/// Removes the bridge-driver networks no view names any more.
async fn remove_stale_bridges(inner: &mut Inner) {
    for id in not_in_views(inner.locals.keys(), &inner.views) {
        if let Some(b) = inner.locals.remove(&id) {
            if let Err(e) = b.remove_bridge().await {
                warn!(network.id = %id, error = %e, "removing bridge network failed");
            }
        }
    }
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
        let mesh_if = self.sync_mesh(views, mesh_addr, mesh_peers).await?;
        inner.views = views
            .iter()
            .filter_map(|v| Some((v.network.as_ref()?.id.clone(), v.clone())))
            .collect();
        // A failed overlay does not hold up the others, nor the rules: it is reported at the end.
        let programmed = self.program_overlays(&mut inner, attachments).await;
        self.remove_stale_overlays(&mut inner).await;
        remove_stale_bridges(&mut inner).await;
        let wanted = self.untracked_wanted(&inner, attachments).await;
        let unchanged = match &inner.untracked {
            Some(last) => *last == wanted,
            None => wanted == Untracked::default(),
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
        programmed
    }

    /// Runs the WireGuard mesh while an encrypted network is here (and this node has a mesh
    /// address), removes it otherwise; returns the mesh interface the guard must let in.
    async fn sync_mesh(
        &self,
        views: &[NetworkView],
        mesh_addr: &str,
        mesh_peers: &[MeshPeer],
    ) -> Result<Option<MeshIf>, NetworkError> {
        let Some(mesh) = &self.mesh else {
            return Ok(None);
        };
        let mut mesh = mesh.lock().await;
        if views.iter().any(encrypted) && !mesh_addr.is_empty() {
            mesh.apply(mesh_addr, mesh_peers).await?;
        } else if mesh.is_kernel().is_some() {
            info!("no encrypted network left on this node: removing the mesh device");
            mesh.shutdown().await?;
        }
        if mesh.is_kernel().is_none() {
            return Ok(None);
        }
        Ok(parse_ip(mesh_addr).map(|addr| MeshIf {
            ifname: mesh.ifname().to_string(),
            addr,
        }))
    }

    /// Programs the devices and FDB of every overlay in the views; returns the first failure.
    async fn program_overlays(
        &self,
        inner: &mut Inner,
        attachments: &[NetworkAttachment],
    ) -> Result<(), NetworkError> {
        let mut first_error = None;
        let wanted: Vec<NetworkView> = inner
            .views
            .values()
            .filter(|v| driver(v) == Some(NetworkDriver::Overlay))
            .cloned()
            .collect();
        let overlay_ns = self.overlay_netns();
        if wanted.iter().any(namespaced) && !netns::is_netns(&overlay_ns) {
            if let Err(e) = netns::create(&overlay_ns).await {
                warn!(error = %e, "creating the overlay namespace failed");
                return Err(e.into());
            }
            info!(netns = %overlay_ns.display(), "overlay namespace created");
        }
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
            let host_netns = self.host_netns.clone();
            let devices_netns = namespaced(view).then(|| overlay_ns.clone());
            match vxlan::program(
                host_netns,
                devices_netns,
                &self.node_id,
                view,
                own,
                programmed,
            )
            .await
            {
                Ok(p) => {
                    inner.overlays.insert(net.id.clone(), p);
                }
                Err(e) => {
                    warn!(network.id = %net.id, error = %e, "programming overlay failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Removes the overlays no view names any more, and the overlay namespace once none is left
    /// in it.
    async fn remove_stale_overlays(&self, inner: &mut Inner) {
        for id in not_in_views(inner.overlays.keys(), &inner.views) {
            let devices_netns = inner
                .overlays
                .remove(&id)
                .and_then(|p| p.devices_netns().map(Path::to_path_buf));
            let netns = devices_netns.or_else(|| self.host_netns.clone());
            if let Err(e) = vxlan::remove(netns, &id).await {
                warn!(network.id = %id, error = %e, "removing overlay failed");
            }
        }
        let overlay_ns = self.overlay_netns();
        if inner.overlays.values().all(|p| p.devices_netns().is_none())
            && netns::is_netns(&overlay_ns)
        {
            match netns::remove(&overlay_ns) {
                Ok(()) => info!("no overlay left in the overlay namespace: removed it"),
                Err(e) => warn!(error = %e, "removing the overlay namespace failed"),
            }
        }
    }

    /// The node's overlay namespace: the bridges and VXLAN devices of its overlays (all but
    /// `ingress`) with the host ends of their task veths. In a namespace of its own, Shoal turns
    /// off what br_netfilter does to bridged frames (the IP hooks and conntrack on every frame
    /// a bridge forwards) without touching the host's setting; the VXLAN devices' sockets stay
    /// in the host namespace. A sibling of the task namespaces' directory, so that it is never
    /// taken for a task's.
    pub fn overlay_netns(&self) -> PathBuf {
        overlay_netns_beside(&self.default.netns_dir)
    }

    /// The namespace an overlay's devices (and its task veths' host ends) live in.
    fn devices_netns_of(&self, inner: &Inner, network_id: &str) -> Option<PathBuf> {
        match inner.overlays.get(network_id) {
            Some(p) => p.devices_netns().map(Path::to_path_buf),
            None => inner
                .views
                .get(network_id)
                .filter(|v| namespaced(v))
                .map(|_| self.overlay_netns()),
        }
        .or_else(|| self.host_netns.clone())
    }

    /// What the notrack table must cover: every programmed overlay's bridge (the ingress one
    /// with this node's address), and the VXLAN and mesh ports while there is one.
    async fn untracked_wanted(
        &self,
        inner: &Inner,
        attachments: &[NetworkAttachment],
    ) -> Untracked {
        let mut wanted = Untracked::default();
        let overlays = &inner.overlays;
        for (id, programmed) in overlays {
            // Bridges in the overlay namespace run no IP hook at all.
            if programmed.devices_netns().is_some() {
                continue;
            }
            let own = inner
                .views
                .get(id)
                .filter(|v| is_ingress(v))
                .and_then(|_| attachments.iter().find(|a| a.network_id == *id))
                .and_then(|a| a.addresses.first())
                .and_then(|a| parse_ip(a));
            wanted.bridges.push((bridge_name(id), own));
        }
        if !overlays.is_empty() {
            wanted.udp_ports.push(VXLAN_PORT);
            if let Some(mesh) = &self.mesh {
                let mesh = mesh.lock().await;
                if mesh.is_kernel().is_some() {
                    wanted.udp_ports.push(mesh.port());
                }
            }
        }
        wanted
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
        let plan = self.plan_attachments(task).await?;
        if plan
            .iter()
            .any(|p| driver(&p.view) == Some(NetworkDriver::Host))
        {
            info!(task.id = %id, "task uses the host network");
            return Ok(TaskNetworking {
                netns: PathBuf::from("/proc/self/ns/net"),
                resolv_conf: super::resolv_conf(),
            });
        }
        let ns_path = self.default.task_netns(id);
        if !netns::is_netns(&ns_path) {
            netns::create_for_task(&ns_path).await?;
        }
        if !plan.is_empty()
            && plan
                .iter()
                .all(|p| driver(&p.view) == Some(NetworkDriver::None))
        {
            loopback_only(&ns_path).await?;
            return Ok(TaskNetworking {
                netns: ns_path,
                resolv_conf: super::resolv_conf(),
            });
        }
        let (overlays, next_if) = self.plug_networks(id, &ns_path, &plan).await?;
        // The default bridge comes last and carries the default route.
        let local_ip = self
            .default
            .plug(id, &ns_path, &format!("eth{next_if}"), true, None)
            .await?;
        self.hairpin(&self.default.veth_name(id));
        let host_ports = host_ports(task, local_ip);
        let (resolver, resolv_conf) = if overlays.is_empty() {
            (None, super::resolv_conf())
        } else {
            let resolver = self.start_resolver(id, &ns_path).await;
            (resolver, OVERLAY_RESOLV_CONF.to_string())
        };
        let plane = Plane {
            netns: ns_path.clone(),
            networks: overlays,
            resolver,
            vips: None,
            host_ports,
        };
        self.install_plane(id, plane).await;
        info!(task.id = %id, networks = task.networks.len(), "task attached to its networks");
        Ok(TaskNetworking {
            netns: ns_path,
            resolv_conf,
        })
    }

    /// The view of each of `task`'s networks, with the node-local bridge of each bridge-driver
    /// network (made on first use). The lock is held only for this: tasks are plumbed
    /// concurrently.
    async fn plan_attachments(&self, task: &Task) -> Result<Vec<Planned>, NetworkError> {
        let mut inner = self.inner.lock().await;
        let mut plan = Vec::with_capacity(task.networks.len());
        for att in &task.networks {
            let view = inner.views.get(&att.network_id).cloned().ok_or_else(|| {
                NetworkError::UnknownNetwork {
                    network_id: att.network_id.clone(),
                }
            })?;
            let local = if driver(&view) == Some(NetworkDriver::Bridge)
                && !view.network.as_ref().is_some_and(|n| n.subnet.is_empty())
            {
                Some(self.local_bridge(&mut inner, &view).await?)
            } else {
                None
            };
            plan.push(Planned {
                att: att.clone(),
                view,
                local,
            });
        }
        Ok(plan)
    }

    /// Gives the task one interface per overlay or bridge-driver network, in order (eth0,
    /// eth1, ...); returns the overlays it joined and the number of the next interface.
    async fn plug_networks(
        &self,
        task_id: &str,
        ns_path: &Path,
        plan: &[Planned],
    ) -> Result<(Vec<String>, usize), NetworkError> {
        let mut overlays = Vec::new();
        let mut ifindex = 0usize;
        for Planned { att, view, local } in plan {
            let ifname = format!("eth{ifindex}");
            match (driver(view), local) {
                (Some(NetworkDriver::Overlay), _) => {
                    let Some((ip, prefix)) = att.addresses.first().and_then(|a| parse_cidr(a))
                    else {
                        continue;
                    };
                    let devices_netns = namespaced(view)
                        .then(|| self.overlay_netns())
                        .or_else(|| self.host_netns.clone());
                    let plug = OverlayPlug {
                        network_id: &att.network_id,
                        devices_netns,
                        ifname,
                        addr: (ip, prefix),
                        mtu: overlay_mtu(view),
                    };
                    self.plug_overlay(task_id, ns_path, plug).await?;
                    overlays.push(att.network_id.clone());
                }
                (Some(NetworkDriver::Bridge), Some(b)) => {
                    b.plug(task_id, ns_path, &ifname, false, None).await?;
                }
                // The predefined `bridge` is the default bridge every task gets anyway.
                _ => continue,
            }
            ifindex += 1;
        }
        Ok((overlays, ifindex))
    }

    /// Plugs a veth from the task's namespace into an overlay's bridge, with the MAC its address
    /// derives from.
    async fn plug_overlay(
        &self,
        task_id: &str,
        ns_path: &Path,
        plug: OverlayPlug<'_>,
    ) -> Result<(), NetworkError> {
        let (host, peer) = overlay_veth(task_id, plug.network_id);
        let (ip, prefix) = plug.addr;
        let in_host = plug.devices_netns == self.host_netns;
        plug_veth(
            plug.devices_netns,
            ns_path,
            VethPlug {
                host: host.clone(),
                peer,
                ifname: plug.ifname,
                bridge: bridge_name(plug.network_id),
                addr: ip,
                prefix,
                mtu: Some(plug.mtu),
                mac: Some(mac_of(ip)),
                gateway: None,
            },
        )
        .await?;
        if in_host {
            // The ingress bridge, where published ports DNAT back to their own task.
            self.hairpin(&host);
        }
        Ok(())
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
            let mut hosts: BTreeMap<Option<PathBuf>, Vec<String>> = BTreeMap::new();
            for n in inner.overlays.keys() {
                hosts
                    .entry(self.devices_netns_of(&inner, n))
                    .or_default()
                    .push(overlay_veth(task_id, n).0);
            }
            let locals: Vec<Arc<BridgeNetwork>> = inner.locals.values().cloned().collect();
            (plane, hosts, locals)
        };
        let had_ports = plane.as_ref().is_some_and(|p| !p.host_ports.is_empty());
        if let Some(r) = plane.and_then(|p| p.resolver) {
            r.stop().await;
        }
        // Every veth of the task goes with its namespace (the resolver, which had sockets in it,
        // is stopped above so nothing of the agent keeps it alive).
        let mut hosts = hosts;
        for b in &locals {
            hosts
                .entry(b.host_netns())
                .or_default()
                .push(b.veth_name(task_id));
        }
        self.default.detach_with(task_id, hosts).await?;
        for b in locals {
            b.release(task_id).await?;
        }
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
        let overlay_ns = self.overlay_netns();
        if netns::is_netns(&overlay_ns) {
            // Deleted one by one first: the VXLAN sockets in the host namespace go with their
            // devices now, not whenever the kernel gets round to the namespace's teardown.
            delete_overlay_links(Some(overlay_ns.clone()), "overlay-ns-cleanup").await?;
            netns::remove(&overlay_ns)?;
        }
        delete_overlay_links(self.host_netns.clone(), "overlay-cleanup").await?;
        self.default.cleanup_all().await
    }
}

/// Deletes every overlay device (VXLAN `svx*`, bridge `sbr*`, task veth host end `vo*`) in one
/// namespace (`None`: the agent's own).
async fn delete_overlay_links(
    netns: Option<PathBuf>,
    what: &'static str,
) -> Result<(), NetworkError> {
    netlink_in(netns, what, |h: Handle| async move {
        for prefix in ["svx", "sbr", "vo"] {
            for name in link::names_with_prefix(&h, prefix).await? {
                link::delete(&h, &name).await?;
            }
        }
        Ok::<_, NetworkError>(())
    })
    .await
}

#[cfg(test)]
#[path = "overlay_tests.rs"]
mod tests;
