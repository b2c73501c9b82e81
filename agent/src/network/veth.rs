//! One veth pair between a bridge in the host namespace and a task's namespace: what both the
//! bridge driver and overlays plug tasks in with.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd;

use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth};
use tracing::debug;

use super::{link, netlink_pair, LinkError, NetnsError, NetworkError};

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
/// agent's own when `None`) and the task namespace at `ns_path`, which must exist. All of it runs
/// on one thread with one netlink session in each namespace.
pub(crate) async fn plug_veth(
    host_netns: Option<PathBuf>,
    ns_path: &Path,
    plug: VethPlug,
) -> Result<(), NetworkError> {
    let ns_file = File::open(ns_path).map_err(|source| NetnsError::Open {
        path: ns_path.to_path_buf(),
        source,
    })?;
    let queued = Instant::now();
    netlink_pair(
        host_netns,
        ns_path.to_path_buf(),
        "plug-veth",
        move |host: Handle, inside: Handle| async move {
            let started = Instant::now();
            if is_plugged(&host, &inside, &plug).await? {
                debug!(veth = %plug.host, "veth already plugged");
                return Ok(());
            }
            let checked = Instant::now();
            remove_leftovers(&host, &inside, &plug).await?;
            let cleaned = Instant::now();
            create_pair(&host, &ns_file, &plug).await?;
            let created = Instant::now();
            configure_inside(&inside, &plug).await?;
            debug!(
                veth = %plug.host,
                thread_ms = ms(started - queued),
                check_ms = ms(checked - started),
                clean_ms = ms(cleaned - checked),
                create_ms = ms(created - cleaned),
                configure_ms = ms(created.elapsed()),
                "veth plugged"
            );
            Ok(())
        },
    )
    .await
}

/// A duration in milliseconds, for the timing logs.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Whether both ends are in place: the host end a port of the bridge, the task end renamed
/// inside the namespace. A task end left unrenamed (an attach cut short) is deleted, as it
/// would block the rename of a new one.
async fn is_plugged(host: &Handle, inside: &Handle, plug: &VethPlug) -> Result<bool, NetworkError> {
    let index = bridge_index(host, &plug.bridge).await?;
    let outside = link::is_port_of(host, &plug.host, index).await?;
    let present = link::index_of(inside, &plug.ifname).await?.is_some();
    if !present {
        link::delete(inside, &plug.peer).await?;
    }
    Ok(outside && present)
}

/// Deletes whatever half of the pair is left, so it can be built afresh.
async fn remove_leftovers(
    host: &Handle,
    inside: &Handle,
    plug: &VethPlug,
) -> Result<(), NetworkError> {
    link::delete(host, &plug.host).await?;
    link::delete(inside, &plug.ifname).await?;
    Ok(())
}

/// Creates the pair in one request: the host end a port of the bridge and up, the task end made
/// directly inside the task's namespace (open as `ns_file`) under its final name. Creating the
/// task end there, rather than moving it in and renaming it, spares a namespace move per plug,
/// which waits for an RCU grace period under the kernel's global netlink lock.
async fn create_pair(h: &Handle, ns_file: &File, plug: &VethPlug) -> Result<(), NetworkError> {
    let index = bridge_index(h, &plug.bridge).await?;
    let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(plug.ifname.clone())
        .setns_by_fd(ns_file.as_raw_fd());
    let mut host = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(plug.host.clone())
        .controller(index)
        .up();
    if let Some(mtu) = plug.mtu {
        peer = peer.mtu(mtu);
        host = host.mtu(mtu);
    }
    let msg = host
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
        .build();
    h.link()
        .add(msg)
        .execute()
        .await
        .map_err(|source| LinkError::Netlink {
            op: "create veth",
            target: plug.host.clone(),
            source,
        })?;
    Ok(())
}

/// Inside the task's namespace: sets the task end's MAC and address, brings it and `lo` up, and
/// adds the default route when this interface carries it.
async fn configure_inside(h: &Handle, plug: &VethPlug) -> Result<(), NetworkError> {
    let index = link::index_of(h, &plug.ifname)
        .await?
        .ok_or_else(|| LinkError::NotFound {
            name: plug.ifname.clone(),
        })?;
    if let Some(mac) = plug.mac {
        link::set_mac(h, index, &plug.ifname, mac).await?;
    }
    link::ensure_address(h, index, &plug.ifname, plug.addr, plug.prefix).await?;
    link::set_up(h, index, &plug.ifname).await?;
    link::loopback_up(h).await?;
    if let Some(gateway) = plug.gateway {
        link::ensure_default_route(h, index, gateway).await?;
    }
    Ok(())
}
