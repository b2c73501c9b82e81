//! One overlay's devices on this node: its bridge `sbr<id8>`, its VXLAN device `svx<id8>` and the
//! FDB and neighbour entries that send every remote endpoint's frames to that endpoint's node
//! (see [`super::overlay`] for how overlays fit together).
//!
//! The devices of an overlay live either in the host namespace (the ingress network, whose bridge
//! carries the node's ingress address) or in the node's overlay namespace, where bridged frames
//! skip the IP netfilter hooks (see [`bridge_nf_off`]). The VXLAN device of a namespaced overlay
//! is created from the host namespace straight into the overlay namespace, so its UDP socket
//! stays in the host namespace, behind the same guard and notrack rules as before.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use rtnetlink::{Handle, LinkVxlan};
use shoal_proto::v1::NetworkView;
use tracing::{debug, info, warn};

use super::link::{self, Vxlan};
use super::overlay::{
    bridge_name, ip_of_mac, is_ingress, mac_of, overlay_mtu, remote_endpoints, vxlan_name,
    VXLAN_PORT,
};
use super::{netlink_in, netlink_pair, LinkError, NetnsError, NetworkError};

/// The br_netfilter switches of a namespace (present while the module is loaded).
const BRIDGE_NF_SYSCTLS: [&str; 3] = [
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
    "/proc/sys/net/bridge/bridge-nf-call-arptables",
];

/// An overlay as programmed in the kernel.
#[derive(Debug, Default)]
pub(super) struct Programmed {
    /// Remote endpoint address -> node address, as in the VXLAN device's FDB.
    fdb: BTreeMap<Ipv4Addr, Ipv4Addr>,
    /// The overlay namespace its devices live in; `None`: the host namespace.
    devices_netns: Option<PathBuf>,
}

impl Programmed {
    /// The overlay namespace the devices live in (`None`: the host namespace).
    pub(super) fn devices_netns(&self) -> Option<&Path> {
        self.devices_netns.as_deref()
    }
}

/// Turns off, in the calling thread's namespace, what br_netfilter does to bridged frames: the
/// IP, IPv6 and ARP hooks (and conntrack) on every frame a bridge forwards. Since Linux 5.3 these
/// switches are per namespace and a new namespace starts with them on wherever the module is
/// loaded (Debian loads it); the host's own are left as they are. Measured on the overlay bench,
/// the hooks cost about a tenth of the overlay's throughput even with the frames untracked.
/// Nothing to do when the module is not loaded (no such files); a switch that cannot be written
/// costs speed only, so it is logged and the overlay goes on.
fn bridge_nf_off() {
    for path in BRIDGE_NF_SYSCTLS {
        match std::fs::write(path, b"0\n") {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(path, error = %e, "br_netfilter left on in the overlay namespace"),
        }
    }
}

/// Builds or updates one overlay's bridge, VXLAN device and FDB, in `devices_netns` when set
/// (the node's overlay namespace, which must exist) or else in `host_netns` (the agent's own when
/// `None`). `own` is this node's address on the overlay, `programmed` what an earlier call left.
pub(super) async fn program(
    host_netns: Option<PathBuf>,
    devices_netns: Option<PathBuf>,
    node_id: &str,
    view: &NetworkView,
    own: Option<(Ipv4Addr, u8)>,
    programmed: Option<Programmed>,
) -> Result<Programmed, NetworkError> {
    let net = view.network.clone().unwrap_or_default();
    let mtu = overlay_mtu(view);
    let vxlan = Vxlan {
        vni: net.vni,
        port: VXLAN_PORT,
        mtu,
    };
    let wanted = remote_endpoints(view, node_id);
    // The ingress bridge answers for this node's ingress address: same MAC rule as tasks.
    let ingress_addr = own.filter(|_| is_ingress(view));
    let known = programmed
        .filter(|p| p.devices_netns == devices_netns)
        .map(|p| p.fdb);
    let sync = move |h: Handle, host: Option<(Handle, File)>| async move {
        let (vx_index, existed) = ensure_devices(&h, host, &net.id, vxlan, ingress_addr).await?;
        // What the kernel has: what we programmed, or (new to this process) what it lists.
        let current = match known {
            Some(k) if existed => k,
            _ => listed_fdb(&h, vx_index).await?,
        };
        sync_fdb(&h, vx_index, &current, &wanted).await?;
        if current != wanted {
            debug!(network.id = %net.id, endpoints = wanted.len(), "overlay FDB synced");
        }
        Ok::<_, NetworkError>(wanted)
    };
    let fdb = match &devices_netns {
        None => netlink_in(host_netns, "overlay", move |h: Handle| sync(h, None)).await?,
        Some(ns) => {
            let ns_file = File::open(ns).map_err(|source| NetnsError::Open {
                path: ns.clone(),
                source,
            })?;
            netlink_pair(
                host_netns,
                ns.clone(),
                "overlay",
                move |host: Handle, inside: Handle| async move {
                    // This thread is in the overlay namespace now (a new one, or one a later
                    // br_netfilter load switched back on).
                    bridge_nf_off();
                    sync(inside, Some((host, ns_file))).await
                },
            )
            .await?
        }
    };
    Ok(Programmed { fdb, devices_netns })
}

/// Makes the overlay's bridge (with `ingress_addr` and its MAC when it is the ingress bridge)
/// and its VXLAN device in the namespace of `h`; `host` (a session in the host namespace and
/// the overlay namespace's file) when that is the overlay namespace, where the VXLAN device is
/// created from the host. Returns the VXLAN device's index and whether it existed already.
async fn ensure_devices(
    h: &Handle,
    host: Option<(Handle, File)>,
    network_id: &str,
    vxlan: Vxlan,
    ingress_addr: Option<(Ipv4Addr, u8)>,
) -> Result<(u32, bool), NetworkError> {
    let (br, vx) = (bridge_name(network_id), vxlan_name(network_id));
    let mac = ingress_addr.map(|(ip, _)| mac_of(ip));
    let br_index = link::ensure_bridge_with(h, &br, mac, Some(vxlan.mtu)).await?;
    let existed = link::index_of(h, &vx).await?.is_some();
    if let (false, Some((host, ns_file))) = (existed, host) {
        let moved = move_old_ports(&host, &ns_file, &br, &vx).await?;
        create_vxlan_into(&host, &ns_file, &vx, &br, vxlan).await?;
        for port in &moved {
            link::attach_to_bridge(h, port, br_index).await?;
        }
        if !moved.is_empty() {
            info!(
                network.id = %network_id,
                ports = moved.len(),
                "task links of the old layout moved into the overlay namespace"
            );
        }
    }
    let (vx_index, _) = link::ensure_vxlan(h, &vx, vxlan, br_index).await?;
    if let Some((ip, prefix)) = ingress_addr {
        link::ensure_address(h, br_index, &br, ip, prefix).await?;
    }
    Ok((vx_index, existed))
}

/// The migration from the layout of agents before the overlay namespace, where an overlay's
/// bridge `bridge` and the host ends of its tasks' veths sat in the host namespace: moves every
/// port of that bridge but its VXLAN device `vxlan` into the namespace open as `ns_file` (a veth
/// keeps its peer, so the task keeps its interface, address and connections) and returns their
/// names, to be enslaved to the overlay's new bridge there. Nothing to move when the host has no
/// such bridge.
async fn move_old_ports(
    host: &Handle,
    ns_file: &File,
    bridge: &str,
    vxlan: &str,
) -> Result<Vec<String>, NetworkError> {
    let Some(old_bridge) = link::index_of(host, bridge).await? else {
        return Ok(Vec::new());
    };
    let mut moved = Vec::new();
    for port in link::ports_of(host, old_bridge).await? {
        if port == vxlan {
            continue;
        }
        link::move_to_netns(host, &port, ns_file).await?;
        debug!(link = %port, "old-layout overlay port moved into the overlay namespace");
        moved.push(port);
    }
    Ok(moved)
}

/// Creates VXLAN device `name` from the host session `host` directly inside the namespace open
/// as `ns_file`: its UDP socket belongs to the host namespace, the device to the other. Devices
/// of the same names left in the host namespace (the layout of agents before the overlay
/// namespace) are deleted first: the VXLAN one would hold the VNI's socket.
async fn create_vxlan_into(
    host: &Handle,
    ns_file: &File,
    name: &str,
    bridge: &str,
    vxlan: Vxlan,
) -> Result<(), NetworkError> {
    link::delete(host, name).await?;
    link::delete(host, bridge).await?;
    let msg = LinkVxlan::new(name, vxlan.vni)
        .port(vxlan.port)
        .learning(false)
        .proxy(true)
        .mtu(vxlan.mtu)
        .setns_by_fd(ns_file.as_raw_fd())
        .build();
    host.link()
        .add(msg)
        .execute()
        .await
        .map_err(|source| LinkError::Netlink {
            op: "create vxlan",
            target: format!("{name} (vni {})", vxlan.vni),
            source,
        })?;
    info!(
        vxlan = name,
        vni = vxlan.vni,
        "overlay VXLAN device created in the overlay namespace"
    );
    Ok(())
}

/// The overlay endpoints the VXLAN device's FDB lists (entries of MACs not derived from an
/// address are not ours and left out).
async fn listed_fdb(
    h: &Handle,
    vx_index: u32,
) -> Result<BTreeMap<Ipv4Addr, Ipv4Addr>, NetworkError> {
    Ok(link::fdb_list(h, vx_index)
        .await?
        .into_iter()
        .filter_map(|(mac, dst)| Some((ip_of_mac(mac)?, dst)))
        .collect())
}

/// Adds or corrects the FDB and neighbour entries of `wanted` and deletes those of endpoints
/// in `current` that are no longer wanted.
async fn sync_fdb(
    h: &Handle,
    vx_index: u32,
    current: &BTreeMap<Ipv4Addr, Ipv4Addr>,
    wanted: &BTreeMap<Ipv4Addr, Ipv4Addr>,
) -> Result<(), NetworkError> {
    for (ip, node) in wanted {
        if current.get(ip) != Some(node) {
            link::fdb_set(h, vx_index, mac_of(*ip), *node).await?;
            link::neigh_set(h, vx_index, *ip, mac_of(*ip)).await?;
        }
    }
    for ip in current.keys().filter(|ip| !wanted.contains_key(ip)) {
        link::fdb_del(h, vx_index, mac_of(*ip)).await?;
        link::neigh_del(h, vx_index, *ip).await?;
    }
    Ok(())
}

/// Deletes an overlay's VXLAN device and bridge (ports included) in the namespace at
/// `devices_netns` (the agent's own when `None`).
pub(super) async fn remove(
    devices_netns: Option<PathBuf>,
    network_id: &str,
) -> Result<(), NetworkError> {
    let (br, vx) = (bridge_name(network_id), vxlan_name(network_id));
    netlink_in(devices_netns, "overlay-rm", move |h: Handle| async move {
        link::delete(&h, &vx).await?;
        if let Some(index) = link::index_of(&h, &br).await? {
            for port in link::ports_of(&h, index).await? {
                link::delete(&h, &port).await?;
            }
            link::delete(&h, &br).await?;
        }
        Ok::<_, NetworkError>(())
    })
    .await?;
    info!(network.id = %network_id, "overlay removed from this node");
    Ok(())
}

#[cfg(test)]
#[path = "vxlan_tests.rs"]
mod tests;
