//! The WireGuard mesh between hosts that encrypted overlay networks ride on.
//!
//! Every node has one WireGuard device, `swg<first 8 chars of the node id>`, holding the node's
//! mesh address (10.255.0.0/16, allocated by the manager) with one peer per other node: its
//! underlay endpoint and AllowedIPs = its mesh address /32. The VXLAN devices of encrypted overlay
//! networks use mesh addresses as their remotes, so their packets leave the host only encrypted.
//!
//! Where the kernel has WireGuard, the device is a kernel one configured through `wireguard-control`
//! (netlink); otherwise (this machine) it runs in-process ([`userspace`]): boringtun's protocol
//! state machine driven by threads of ours over a TUN device and a UDP socket, configured by direct
//! calls (no UAPI socket, so no file several agents on one machine would share and no signal
//! handling of boringtun's). Which one runs is [`select_engine`]'s choice from what the host
//! offers. The interface name carries the node id so test hosts on one machine do not collide.
//!
//! The private key is generated here and never leaves the data dir (`network/wg.key`, mode 0600);
//! only the public key goes into the node description.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::{Handle, LinkUnspec};
use shoal_proto::v1::MeshPeer;
use wireguard_control::{Backend, DeviceUpdate, InterfaceName, Key, PeerConfigBuilder};

use super::link::{self, LinkError};
use super::netns::{self, NetnsError};

mod userspace;
mod vnet;

/// MTU of the mesh device: 1500 less WireGuard's worst-case overhead (IPv6 outer header).
pub const MESH_MTU: u32 = 1420;
/// The default UDP port of the mesh device (`--wg-port`).
pub const DEFAULT_PORT: u16 = 51820;
/// Keepalive towards every peer, so idle tunnels stay open through stateful firewalls.
const KEEPALIVE_SECS: u16 = 25;
/// Where the private key lives, under the agent's data dir.
const KEY_FILE: &str = "network/wg.key";
/// How long shutdown waits for the userspace device's threads to end.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// Errors of the WireGuard mesh.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The node id cannot name an interface.
    #[error("invalid node id {node_id:?}: the first 8 characters must be ASCII letters or digits")]
    InvalidNodeId {
        /// The id given.
        node_id: String,
    },
    /// The key file could not be read or written.
    #[error("private key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file does not hold a base64 WireGuard key.
    #[error("private key file {path} does not hold a base64 WireGuard key")]
    BadKey {
        /// The file.
        path: PathBuf,
    },
    /// The node's own mesh address is not `IPv4/prefix`.
    #[error("invalid mesh address {addr:?} (want e.g. 10.255.0.3/16)")]
    BadAddress {
        /// The address given.
        addr: String,
    },
    /// The userspace device could not be created (TUN device, UDP socket or threads).
    #[error("creating userspace WireGuard device {ifname}: {source}")]
    Userspace {
        /// The interface.
        ifname: String,
        /// The error.
        source: std::io::Error,
    },
    /// Neither the kernel's WireGuard nor a TUN device is available.
    #[error("no way to run WireGuard device {ifname}: no kernel module and no /dev/net/tun")]
    NoEngine {
        /// The interface.
        ifname: String,
    },
    /// The device refused a configuration (keys, port, peers).
    #[error("configuring WireGuard device {ifname}: {source}")]
    Configure {
        /// The interface.
        ifname: String,
        /// The error from the UAPI socket or netlink.
        source: std::io::Error,
    },
    /// The userspace device did not go away after shutdown.
    #[error("WireGuard device {ifname} still exists {waited:?} after shutdown")]
    ShutdownTimeout {
        /// The interface.
        ifname: String,
        /// How long shutdown waited.
        waited: Duration,
    },
    /// An address operation on the device failed.
    #[error("{op} on {ifname}: {source}")]
    Address {
        /// What was asked.
        op: &'static str,
        /// The interface.
        ifname: String,
        /// The netlink error.
        source: rtnetlink::Error,
    },
    /// A netlink operation failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// A namespace operation failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

/// A peer as the device is configured with it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PeerSpec {
    endpoint: SocketAddr,
    mesh_ip: Ipv4Addr,
}

/// What `apply` must change on the device's peers.
#[derive(Debug, Default, PartialEq, Eq)]
struct PeerPlan {
    /// Drop every peer first (the device's peers are unknown).
    replace: bool,
    /// Public keys (base64) to remove.
    remove: Vec<String>,
    /// Peers to add (a changed peer is removed and added again: boringtun cannot modify one).
    add: Vec<(String, PeerSpec)>,
}

/// What the host offers for running the mesh device, as probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Capabilities {
    /// Creating a link of kind `wireguard` succeeded (module built in, loaded or loadable).
    kernel_wireguard: bool,
    /// `/dev/net/tun` exists.
    tun: bool,
}

/// Which implementation runs the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EngineKind {
    /// The kernel's WireGuard module.
    Kernel,
    /// The in-process device over a TUN.
    Userspace,
}

/// The engine for a host: kernel WireGuard wherever it exists (faster, and no thread of ours on
/// the data path), else the userspace device if the host has TUN; `None` when it has neither.
fn select_engine(caps: Capabilities) -> Option<EngineKind> {
    if caps.kernel_wireguard {
        Some(EngineKind::Kernel)
    } else if caps.tun {
        Some(EngineKind::Userspace)
    } else {
        None
    }
}

/// A running device.
enum Engine {
    /// The kernel's WireGuard module.
    Kernel,
    /// The in-process device; dropping it stops its threads and removes its TUN.
    Userspace(userspace::Userspace),
}

/// How a configuration thread reaches the device.
enum Control {
    /// wireguard-control over netlink.
    Kernel,
    /// Direct calls into the in-process device.
    Userspace(userspace::PeerControl),
}

impl Engine {
    fn control(&self) -> Control {
        match self {
            Engine::Kernel => Control::Kernel,
            Engine::Userspace(device) => Control::Userspace(device.control()),
        }
    }
}

/// The live device and what it was last configured with.
struct Device {
    engine: Engine,
    /// The address on the device; `None` when unknown (new device, or a failed apply).
    addr: Option<Ipv4Net>,
    /// The peers by public key; `None` when unknown.
    peers: Option<BTreeMap<String, PeerSpec>>,
}

/// This node's WireGuard mesh device: its key, and the device once `apply` created it.
pub struct Mesh {
    ifname: String,
    port: u16,
    private_key: Key,
    public_key: String,
    host_netns: Option<PathBuf>,
    device: Option<Device>,
}

impl fmt::Debug for Mesh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private key.
        f.debug_struct("Mesh")
            .field("ifname", &self.ifname)
            .field("port", &self.port)
            .field("public_key", &self.public_key)
            .field("host_netns", &self.host_netns)
            .field(
                "engine",
                &self.device.as_ref().map(|d| match d.engine {
                    Engine::Kernel => "kernel",
                    Engine::Userspace(_) => "userspace",
                }),
            )
            .finish()
    }
}

/// The mesh device name of node `node_id`.
pub fn device_name(node_id: &str) -> Result<String, MeshError> {
    let short: String = node_id.chars().take(8).collect();
    if short.is_empty() || !short.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(MeshError::InvalidNodeId {
            node_id: node_id.to_string(),
        });
    }
    Ok(format!("swg{short}"))
}

impl Mesh {
    /// Loads this node's private key from `data_dir` (creating it on first use) and prepares the
    /// device `swg<8 of node_id>` listening on UDP `port`, in the namespace at `host_netns` (the
    /// agent's own when `None`). Touches no kernel state; `apply` creates the device.
    pub fn open(
        data_dir: &Path,
        node_id: &str,
        port: u16,
        host_netns: Option<PathBuf>,
    ) -> Result<Mesh, MeshError> {
        let ifname = device_name(node_id)?;
        let private_key = load_or_create_key(&data_dir.join(KEY_FILE))?;
        let public_key = private_key.get_public().to_base64();
        Ok(Mesh {
            ifname,
            port,
            private_key,
            public_key,
            host_netns,
            device: None,
        })
    }

    /// The public key (base64), for `NodeDescription.wg_public_key`.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The UDP port the device listens on, for `NodeDescription.wg_port`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The device's interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Whether the device runs in the kernel (`Some(true)`), in boringtun (`Some(false)`), or does
    /// not exist yet (`None`).
    pub fn is_kernel(&self) -> Option<bool> {
        self.device
            .as_ref()
            .map(|d| matches!(d.engine, Engine::Kernel))
    }

    /// Brings the device to: address `my_mesh_addr` ("10.255.0.3/16"), MTU 1420, up, listening on
    /// the port, with exactly `peers` (endpoint, AllowedIPs = mesh address /32, keepalive 25 s).
    /// Creates the device on first use. Returns at once when nothing changed since the last
    /// apply. Peers without a valid key, endpoint or address, and this node itself, are skipped.
    pub async fn apply(&mut self, my_mesh_addr: &str, peers: &[MeshPeer]) -> Result<(), MeshError> {
        let addr: Ipv4Net = my_mesh_addr.parse().map_err(|_| MeshError::BadAddress {
            addr: my_mesh_addr.to_string(),
        })?;
        let desired = desired_peers(peers, &self.public_key);
        if let Some(dev) = &self.device {
            if dev.addr == Some(addr) && dev.peers.as_ref() == Some(&desired) {
                return Ok(());
            }
        }

        if self.device.is_some() && !self.device_exists().await? {
            tracing::warn!(ifname = %self.ifname, "the mesh device vanished; creating it again");
            self.device = None;
        }
        if self.device.is_none() {
            self.device = Some(self.create().await?);
        }
        let dev = self
            .device
            .as_mut()
            .expect("the device was created just above");

        let plan = plan_peers(dev.peers.as_ref(), &desired);
        let set_addr = (dev.addr != Some(addr)).then_some(addr);
        let ifname = self.ifname.clone();
        let control = dev.engine.control();
        let result = netns::on_thread(self.host_netns.clone(), "wg-apply", move || {
            configure(&ifname, control, set_addr, &plan)
        })
        .await
        .map_err(MeshError::from)
        .and_then(|r| r);
        match result {
            Ok(()) => {
                if dev.addr != Some(addr) {
                    tracing::info!(ifname = %self.ifname, mesh_addr = %addr, "mesh address set");
                }
                log_peer_changes(&self.ifname, dev.peers.as_ref(), &desired);
                dev.addr = Some(addr);
                dev.peers = Some(desired);
                Ok(())
            }
            Err(e) => {
                // What the device holds now is unknown: the next apply sets everything again.
                dev.addr = None;
                dev.peers = None;
                Err(e)
            }
        }
    }

    /// Removes the device (and, for the userspace one, stops its threads and closes its UDP
    /// socket before returning). Idempotent; also removes a device of this name left by an
    /// earlier run.
    pub async fn shutdown(&mut self) -> Result<(), MeshError> {
        let userspace = match self.device.take().map(|d| d.engine) {
            Some(Engine::Userspace(device)) => Some(device),
            Some(Engine::Kernel) | None => None,
        };
        let ifname = self.ifname.clone();
        let stop = netns::on_thread(self.host_netns.clone(), "wg-shutdown", move || {
            stop_device(&ifname, userspace)
        });
        match tokio::time::timeout(SHUTDOWN_DEADLINE, stop).await {
            Ok(result) => result??,
            Err(_) => {
                return Err(MeshError::ShutdownTimeout {
                    ifname: self.ifname.clone(),
                    waited: SHUTDOWN_DEADLINE,
                })
            }
        }
        tracing::info!(ifname = %self.ifname, "mesh device removed");
        Ok(())
    }

    /// Whether the device's link exists in the host namespace.
    async fn device_exists(&self) -> Result<bool, MeshError> {
        let ifname = self.ifname.clone();
        Ok(
            netns::on_thread(self.host_netns.clone(), "wg-check", move || {
                link_index(&ifname).is_some()
            })
            .await?,
        )
    }

    /// Creates the device (kernel if the module is there, userspace otherwise) with the private
    /// key and listen port, on a thread inside the host namespace: the TUN device and UDP socket
    /// belong to the namespace of the thread that creates them.
    async fn create(&self) -> Result<Device, MeshError> {
        let (ifname, port, key) = (self.ifname.clone(), self.port, self.private_key.clone());
        let device = netns::on_thread(self.host_netns.clone(), "wg-create", move || {
            create_device(&ifname, port, key)
        })
        .await??;
        let engine = match device.engine {
            Engine::Kernel => "kernel",
            Engine::Userspace(_) => "userspace",
        };
        tracing::info!(ifname = %self.ifname, port = self.port, engine, public_key = %self.public_key, "mesh device created");
        Ok(device)
    }
}

/// Reads the base64 private key at `path`, or generates one and writes it there (mode 0600).
fn load_or_create_key(path: &Path) -> Result<Key, MeshError> {
    let key_err = |source: std::io::Error| MeshError::KeyFile {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = Key::from_base64(text.trim()).map_err(|_| MeshError::BadKey {
                path: path.to_path_buf(),
            })?;
            // A key readable by others is not secret any more; at least stop it from staying so.
            shoal_proto::secure_file::tighten(path).map_err(|e| key_err(e.into()))?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(key_err)?;
            }
            let key = Key::generate_private();
            let text = format!("{}\n", key.to_base64());
            shoal_proto::secure_file::write_private(path, text.as_bytes())
                .map_err(|e| key_err(e.into()))?;
            tracing::info!(path = %path.display(), "generated the node's WireGuard key");
            Ok(key)
        }
        Err(e) => Err(key_err(e)),
    }
}

/// The peers the device should have, by public key: valid entries other than this node.
fn desired_peers(peers: &[MeshPeer], own_key: &str) -> BTreeMap<String, PeerSpec> {
    let mut out = BTreeMap::new();
    for p in peers {
        if p.public_key == own_key {
            continue;
        }
        let key_ok = Key::from_base64(&p.public_key).is_ok();
        let endpoint = p.endpoint.parse::<SocketAddr>().ok();
        let mesh_ip = p.mesh_addr.parse::<Ipv4Net>().ok().map(|n| n.addr());
        match (key_ok, endpoint, mesh_ip) {
            (true, Some(endpoint), Some(mesh_ip)) => {
                out.insert(p.public_key.clone(), PeerSpec { endpoint, mesh_ip });
            }
            _ => tracing::warn!(
                node.id = %p.node_id,
                public_key = %p.public_key,
                endpoint = %p.endpoint,
                mesh_addr = %p.mesh_addr,
                "skipping a mesh peer with an invalid key, endpoint or address"
            ),
        }
    }
    out
}

/// The peer changes taking the device from `current` (`None`: unknown) to `desired`.
fn plan_peers(
    current: Option<&BTreeMap<String, PeerSpec>>,
    desired: &BTreeMap<String, PeerSpec>,
) -> PeerPlan {
    let Some(current) = current else {
        return PeerPlan {
            replace: true,
            remove: Vec::new(),
            add: desired
                .iter()
                .map(|(k, s)| (k.clone(), s.clone()))
                .collect(),
        };
    };
    let mut plan = PeerPlan::default();
    for (key, spec) in current {
        if desired.get(key) != Some(spec) {
            plan.remove.push(key.clone());
        }
    }
    for (key, spec) in desired {
        if current.get(key) != Some(spec) {
            plan.add.push((key.clone(), spec.clone()));
        }
    }
    plan
}

fn log_peer_changes(
    ifname: &str,
    current: Option<&BTreeMap<String, PeerSpec>>,
    desired: &BTreeMap<String, PeerSpec>,
) {
    let empty = BTreeMap::new();
    let current = current.unwrap_or(&empty);
    for (key, spec) in desired {
        if current.get(key) != Some(spec) {
            tracing::info!(ifname, public_key = %key, endpoint = %spec.endpoint, mesh_ip = %spec.mesh_ip, "mesh peer set");
        }
    }
    for key in current.keys().filter(|k| !desired.contains_key(*k)) {
        tracing::info!(ifname, public_key = %key, "mesh peer removed");
    }
}

/// The wireguard-control updates carrying `plan`, to apply in order: removals first, then
/// additions. They must not share one request: boringtun's UAPI parser carries `remove=true` over
/// from one peer section to the next, so a peer added after a removed one would be removed too.
fn peer_updates(plan: &PeerPlan) -> Vec<DeviceUpdate> {
    let mut updates = Vec::new();
    if plan.replace || !plan.remove.is_empty() {
        let mut update = DeviceUpdate::new();
        if plan.replace {
            update = update.replace_peers();
        }
        for key in &plan.remove {
            if let Ok(key) = Key::from_base64(key) {
                update = update.remove_peer_by_key(&key);
            }
        }
        updates.push(update);
    }
    if !plan.add.is_empty() {
        let mut update = DeviceUpdate::new();
        for (key, spec) in &plan.add {
            if let Ok(key) = Key::from_base64(key) {
                update = update.add_peer(
                    PeerConfigBuilder::new(&key)
                        .set_endpoint(spec.endpoint)
                        .set_persistent_keepalive_interval(KEEPALIVE_SECS)
                        .replace_allowed_ips()
                        .add_allowed_ip(spec.mesh_ip.into(), 32),
                );
            }
        }
        updates.push(update);
    }
    updates
}

fn interface_name(ifname: &str) -> Result<InterfaceName, MeshError> {
    ifname.parse().map_err(|_| MeshError::InvalidNodeId {
        node_id: ifname.to_string(),
    })
}

/// On a thread in the host namespace: creates the device with its key and port.
fn create_device(ifname: &str, port: u16, key: Key) -> Result<Device, MeshError> {
    // Creating a link of kind wireguard is the one reliable test for the module (it may be built
    // in, loaded, or loadable on demand).
    let kernel = DeviceUpdate::new()
        .set_private_key(key.clone())
        .set_listen_port(port)
        .apply(&interface_name(ifname)?, Backend::Kernel);
    if let Err(e) = &kernel {
        tracing::debug!(ifname, error = %e, "no kernel WireGuard");
    }
    let caps = Capabilities {
        kernel_wireguard: kernel.is_ok(),
        tun: Path::new("/dev/net/tun").exists(),
    };
    match select_engine(caps) {
        Some(EngineKind::Kernel) => Ok(Device {
            engine: Engine::Kernel,
            addr: None,
            // A kernel device outlives the agent: it may still hold an earlier run's peers.
            peers: None,
        }),
        Some(EngineKind::Userspace) => {
            let private =
                <[u8; 32]>::try_from(key.as_bytes()).map_err(|_| MeshError::Userspace {
                    ifname: ifname.to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the private key is not 32 bytes",
                    ),
                })?;
            let device = userspace::Userspace::start(ifname, port, private).map_err(|source| {
                MeshError::Userspace {
                    ifname: ifname.to_string(),
                    source,
                }
            })?;
            Ok(Device {
                engine: Engine::Userspace(device),
                addr: None,
                // A fresh userspace device has no peers.
                peers: Some(BTreeMap::new()),
            })
        }
        None => Err(MeshError::NoEngine {
            ifname: ifname.to_string(),
        }),
    }
}

/// The userspace device's peer configurations for `plan`'s additions; keys in the plan are valid
/// base64 (`desired_peers` checked them). The userspace device speaks IPv4 on the underlay only.
fn userspace_peers(plan: &PeerPlan) -> Vec<userspace::PeerConfig> {
    plan.add
        .iter()
        .filter_map(|(key, spec)| {
            let public_key = Key::from_base64(key)
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k.as_bytes()).ok())?;
            let SocketAddr::V4(endpoint) = spec.endpoint else {
                tracing::warn!(public_key = %key, endpoint = %spec.endpoint, "skipping a mesh peer with an IPv6 endpoint (the userspace device is IPv4 only)");
                return None;
            };
            Some(userspace::PeerConfig {
                public_key,
                endpoint,
                mesh_ip: spec.mesh_ip,
                keepalive: KEEPALIVE_SECS,
            })
        })
        .collect()
}

/// On a thread in the host namespace: sets the address (when `addr` is given), MTU and up state
/// of the link, then the peer changes.
fn configure(
    ifname: &str,
    control: Control,
    addr: Option<Ipv4Net>,
    plan: &PeerPlan,
) -> Result<(), MeshError> {
    let name = ifname.to_string();
    link::block_on(move |h| async move { configure_link(&h, &name, addr).await })?;
    let configure_err = |source| MeshError::Configure {
        ifname: ifname.to_string(),
        source,
    };
    match control {
        Control::Kernel => {
            let iface = interface_name(ifname)?;
            for update in peer_updates(plan) {
                update
                    .apply(&iface, Backend::Kernel)
                    .map_err(configure_err)?;
            }
        }
        Control::Userspace(device) => {
            if plan.replace {
                device.clear();
            }
            for key in &plan.remove {
                if let Some(key) = Key::from_base64(key)
                    .ok()
                    .and_then(|k| <[u8; 32]>::try_from(k.as_bytes()).ok())
                {
                    device.remove(&key);
                }
            }
            for peer in userspace_peers(plan) {
                device.add(peer);
            }
        }
    }
    Ok(())
}

async fn configure_link(h: &Handle, ifname: &str, addr: Option<Ipv4Net>) -> Result<(), MeshError> {
    let index = link::index_of(h, ifname)
        .await?
        .ok_or_else(|| LinkError::NotFound {
            name: ifname.to_string(),
        })?;
    if let Some(addr) = addr {
        // Only the mesh address belongs on the device: drop any other (an earlier allocation).
        let mut existing = h.address().get().set_link_index_filter(index).execute();
        let mut stale = Vec::new();
        while let Some(msg) = existing
            .try_next()
            .await
            .map_err(|source| MeshError::Address {
                op: "list addresses",
                ifname: ifname.to_string(),
                source,
            })?
        {
            let keep = msg.header.prefix_len == addr.prefix_len()
                && msg
                    .attributes
                    .iter()
                    .any(|a| matches!(a, AddressAttribute::Address(ip) if *ip == addr.addr()));
            if !keep {
                stale.push(msg);
            }
        }
        for msg in stale {
            h.address()
                .del(msg)
                .execute()
                .await
                .map_err(|source| MeshError::Address {
                    op: "remove a stale address",
                    ifname: ifname.to_string(),
                    source,
                })?;
        }
        link::ensure_address(h, index, ifname, addr.addr(), addr.prefix_len()).await?;
    }
    h.link()
        .set(LinkUnspec::new_with_index(index).mtu(MESH_MTU).up().build())
        .execute()
        .await
        .map_err(|source| LinkError::Netlink {
            op: "set MTU and bring up",
            target: ifname.to_string(),
            source,
        })?;
    Ok(())
}

/// The index of link `ifname` in the calling thread's namespace, if it exists.
fn link_index(ifname: &str) -> Option<u32> {
    let name = CString::new(ifname).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call; the function only
    // reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// On a thread in the host namespace: for a userspace device, stops its threads and closes its
/// TUN device and UDP socket (dropping it joins the threads); then deletes the link (a kernel
/// device, or one left by an earlier run).
fn stop_device(ifname: &str, userspace: Option<userspace::Userspace>) -> Result<(), MeshError> {
    drop(userspace);
    let name = ifname.to_string();
    link::block_on(|h| async move { Ok::<_, MeshError>(link::delete(&h, &name).await?) })?;
    Ok(())
}

#[cfg(test)]
#[path = "mesh_tests.rs"]
mod tests;
