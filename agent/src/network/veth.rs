//! One veth pair between a bridge in the host namespace and a task's namespace: what both the
//! bridge driver and overlays plug tasks in with.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use rtnetlink::Handle;

use super::{link, netlink_in, NetnsError, NetworkError};

/// The index of the bridge, which `ensure` must have created.
async fn bridge_index(h: &Handle, bridge: &str) -> Result<u32, NetworkError> {
    link::index_of(h, bridge)
        .await?
        .ok_or_else(|| NetworkError::BridgeMissing {
            bridge: bridge.to_string(),
        })
}

/// One veth pair between a bridge in the host namespace and a task namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VethPlug {
    /// The host end, a port of `bridge`.
    pub host: String,
    /// The task end's name until it is renamed `ifname` inside the task namespace.
    pub peer: String,
    /// The task end's name inside the task namespace.
    pub ifname: String,
    /// The bridge in the host namespace.
    pub bridge: String,
    /// The task's address on `ifname`.
    pub addr: Ipv4Addr,
    /// The prefix length of the network.
    pub prefix: u8,
    /// The MTU of both ends, if not the default.
    pub mtu: Option<u32>,
    /// The task end's MAC, if not a random one.
    pub mac: Option<link::Mac>,
    /// The default route's gateway, when this interface carries it.
    pub gateway: Option<Ipv4Addr>,
}

/// Builds (or finds already built) the veth pair `plug` between its bridge in `host_netns` (the
/// agent's own when `None`) and the task namespace at `ns_path`, which must exist.
pub(crate) async fn plug_veth(
    host_netns: Option<PathBuf>,
    ns_path: &Path,
    plug: VethPlug,
) -> Result<(), NetworkError> {
    if is_plugged(host_netns.clone(), ns_path, &plug).await? {
        return Ok(());
    }
    remove_leftovers(host_netns.clone(), ns_path, &plug).await?;
    create_pair(host_netns, ns_path, plug.clone()).await?;
    configure_inside(ns_path, plug).await
}

/// Whether both ends are in place: the host end a port of the bridge, the task end renamed
/// inside the namespace. A task end left unrenamed (an attach cut short) is deleted, as it
/// would block the rename of a new one.
async fn is_plugged(
    host_netns: Option<PathBuf>,
    ns_path: &Path,
    plug: &VethPlug,
) -> Result<bool, NetworkError> {
    let (bridge, host) = (plug.bridge.clone(), plug.host.clone());
    let outside = netlink_in(host_netns, "plug-check", move |h: Handle| async move {
        let index = bridge_index(&h, &bridge).await?;
        Ok::<_, NetworkError>(link::is_port_of(&h, &host, index).await?)
    })
    .await?;
    let (ifname, peer) = (plug.ifname.clone(), plug.peer.clone());
    let inside = netlink_in(
        Some(ns_path.to_path_buf()),
        "plug-check",
        move |h| async move {
            let present = link::index_of(&h, &ifname).await?.is_some();
            if !present {
                link::delete(&h, &peer).await?;
            }
            Ok(present)
        },
    )
    .await?;
    Ok(outside && inside)
}

/// Deletes whatever half of the pair is left, so it can be built afresh.
async fn remove_leftovers(
    host_netns: Option<PathBuf>,
    ns_path: &Path,
    plug: &VethPlug,
) -> Result<(), NetworkError> {
    let host = plug.host.clone();
    netlink_in(host_netns, "plug-clean", move |h: Handle| async move {
        link::delete(&h, &host).await?;
        Ok::<_, NetworkError>(())
    })
    .await?;
    let ifname = plug.ifname.clone();
    netlink_in(
        Some(ns_path.to_path_buf()),
        "plug-clean",
        move |h| async move {
            link::delete(&h, &ifname).await?;
            Ok(())
        },
    )
    .await
}

/// Creates the pair in the host namespace, moves the task end into the task's namespace and
/// makes the host end a port of the bridge.
async fn create_pair(
    host_netns: Option<PathBuf>,
    ns_path: &Path,
    plug: VethPlug,
) -> Result<(), NetworkError> {
    let ns_file = File::open(ns_path).map_err(|source| NetnsError::Open {
        path: ns_path.to_path_buf(),
        source,
    })?;
    netlink_in(host_netns, "plug-veth", move |h: Handle| async move {
        let index = bridge_index(&h, &plug.bridge).await?;
        link::create_veth(&h, &plug.host, &plug.peer).await?;
        if let Some(mtu) = plug.mtu {
            let host_index = link::index_of(&h, &plug.host).await?.unwrap_or_default();
            link::set_mtu(&h, host_index, &plug.host, mtu).await?;
        }
        link::move_to_netns(&h, &plug.peer, &ns_file).await?;
        link::attach_to_bridge(&h, &plug.host, index).await?;
        Ok::<_, NetworkError>(())
    })
    .await
}

/// Inside the task's namespace: renames the task end, sets its MAC, MTU and address, brings it
/// and `lo` up, and adds the default route when this interface carries it.
async fn configure_inside(ns_path: &Path, plug: VethPlug) -> Result<(), NetworkError> {
    netlink_in(
        Some(ns_path.to_path_buf()),
        "plug-inside",
        move |h| async move {
            let index = link::rename(&h, &plug.peer, &plug.ifname).await?;
            if let Some(mac) = plug.mac {
                link::set_mac(&h, index, &plug.ifname, mac).await?;
            }
            if let Some(mtu) = plug.mtu {
                link::set_mtu(&h, index, &plug.ifname, mtu).await?;
            }
            link::ensure_address(&h, index, &plug.ifname, plug.addr, plug.prefix).await?;
            link::set_up(&h, index, &plug.ifname).await?;
            link::loopback_up(&h).await?;
            if let Some(gateway) = plug.gateway {
                link::ensure_default_route(&h, index, gateway).await?;
            }
            Ok(())
        },
    )
    .await
}
