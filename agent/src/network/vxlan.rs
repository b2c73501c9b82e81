//! One overlay's devices on this node: its bridge `sbr<id8>`, its VXLAN device `svx<id8>` and the
//! FDB and neighbour entries that send every remote endpoint's frames to that endpoint's node
//! (see [`super::overlay`] for how overlays fit together).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use rtnetlink::Handle;
use shoal_proto::v1::NetworkView;
use tracing::{debug, info};

use super::link::{self, Vxlan};
use super::overlay::{
    bridge_name, ip_of_mac, is_ingress, mac_of, overlay_mtu, remote_endpoints, vxlan_name,
    VXLAN_PORT,
};
use super::{netlink_in, NetworkError};

/// An overlay as programmed in the kernel.
#[derive(Debug, Default)]
pub(super) struct Programmed {
    /// Remote endpoint address -> node address, as in the VXLAN device's FDB.
    fdb: BTreeMap<Ipv4Addr, Ipv4Addr>,
}

/// Builds or updates one overlay's bridge, VXLAN device and FDB in `host_netns` (the agent's
/// own when `None`). `own` is this node's address on the overlay, `programmed` what an earlier
/// call left.
pub(super) async fn program(
    host_netns: Option<PathBuf>,
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
    let known = programmed.map(|p| p.fdb);
    let fdb = netlink_in(host_netns, "overlay", move |h: Handle| async move {
        let (vx_index, existed) = ensure_devices(&h, &net.id, vxlan, ingress_addr).await?;
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
    })
    .await?;
    Ok(Programmed { fdb })
}

/// Makes the overlay's bridge (with `ingress_addr` and its MAC when it is the ingress bridge)
/// and its VXLAN device; returns the VXLAN device's index and whether it existed already.
async fn ensure_devices(
    h: &Handle,
    network_id: &str,
    vxlan: Vxlan,
    ingress_addr: Option<(Ipv4Addr, u8)>,
) -> Result<(u32, bool), NetworkError> {
    let (br, vx) = (bridge_name(network_id), vxlan_name(network_id));
    let mac = ingress_addr.map(|(ip, _)| mac_of(ip));
    let br_index = link::ensure_bridge_with(h, &br, mac, Some(vxlan.mtu)).await?;
    let (vx_index, existed) = link::ensure_vxlan(h, &vx, vxlan, br_index).await?;
    if let Some((ip, prefix)) = ingress_addr {
        link::ensure_address(h, br_index, &br, ip, prefix).await?;
    }
    Ok((vx_index, existed))
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

/// Deletes an overlay's VXLAN device and bridge (ports included).
pub(super) async fn remove(
    host_netns: Option<PathBuf>,
    network_id: &str,
) -> Result<(), NetworkError> {
    let (br, vx) = (bridge_name(network_id), vxlan_name(network_id));
    netlink_in(host_netns, "overlay-rm", move |h: Handle| async move {
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
