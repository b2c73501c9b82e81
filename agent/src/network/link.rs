//! Links, addresses and routes through rtnetlink, one narrow function per kernel operation.
//!
//! Every function acts on the network namespace the netlink socket was opened in; `block_on`
//! opens that socket on the calling thread, which `netns::on_thread` has already moved.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder};

/// A MAC address.
pub type Mac = [u8; 6];

/// Errors of netlink operations.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The netlink socket or its runtime could not be set up.
    #[error("opening a netlink connection: {source}")]
    Connect {
        /// The I/O error.
        source: std::io::Error,
    },
    /// The kernel refused a request.
    #[error("{op} {target}: {source}")]
    Netlink {
        /// What was asked ("create bridge", "add address", ...).
        op: &'static str,
        /// The link (or address) it was about.
        target: String,
        /// The netlink error.
        source: rtnetlink::Error,
    },
    /// A link that must exist does not.
    #[error("link {name} not found")]
    NotFound {
        /// The link name.
        name: String,
    },
}

/// Opens a netlink connection in the current thread's namespace and runs `f` with it to completion
/// on a current-thread runtime (with I/O and timers). Only call it from a dedicated thread (it
/// blocks).
pub fn block_on<T, E, F, Fut>(f: F) -> Result<T, E>
where
    E: From<LinkError>,
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| LinkError::Connect { source })?;
    rt.block_on(async move {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| LinkError::Connect { source })?;
        let driver = tokio::spawn(connection);
        let result = f(handle).await;
        driver.abort();
        result
    })
}

/// The positive errno of a netlink error, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

fn fail(op: &'static str, target: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let target = target.into();
    move |source| LinkError::Netlink { op, target, source }
}

/// Applies a `RTM_SETLINK` message; `op` and `target` name it in the error.
async fn set(
    h: &Handle,
    msg: LinkMessage,
    op: &'static str,
    target: impl Into<String>,
) -> Result<(), LinkError> {
    h.link().set(msg).execute().await.map_err(fail(op, target))
}

/// The message describing link `name`, or `None` when there is no such link.
async fn get(h: &Handle, name: &str) -> Result<Option<LinkMessage>, LinkError> {
    match h.link().get().match_name(name).execute().try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(fail("look up link", name)(e)),
    }
}

/// The index of link `name`, or `None` when there is no such link.
pub async fn index_of(h: &Handle, name: &str) -> Result<Option<u32>, LinkError> {
    Ok(get(h, name).await?.map(|l| l.header.index))
}

/// The index of link `name`, which must exist.
async fn require(h: &Handle, name: &str) -> Result<u32, LinkError> {
    index_of(h, name).await?.ok_or_else(|| LinkError::NotFound {
        name: name.to_string(),
    })
}

/// Creates bridge `name` unless it exists, brings it up, and returns its index.
pub async fn ensure_bridge(h: &Handle, name: &str) -> Result<u32, LinkError> {
    ensure_bridge_with(h, name, None, None).await
}

/// Creates bridge `name` unless it exists, gives it `mac` and `mtu` when set (also when it
/// existed), brings it up, and returns its index.
pub async fn ensure_bridge_with(
    h: &Handle,
    name: &str,
    mac: Option<Mac>,
    mtu: Option<u32>,
) -> Result<u32, LinkError> {
    if index_of(h, name).await?.is_none() {
        // A fixed MAC: otherwise the bridge takes the lowest MAC among its ports, and the gateway
        // MAC cached by every container changes whenever a task comes or goes.
        let mac = mac.unwrap_or_else(|| {
            let tail: [u8; 5] = rand::random();
            // locally administered, unicast
            [0x02, tail[0], tail[1], tail[2], tail[3], tail[4]]
        });
        let bridge = LinkBridge::new(name).address(mac.to_vec()).build();
        match h.link().add(bridge).execute().await {
            Ok(()) => {}
            // Created concurrently: fine, it is there.
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(fail("create bridge", name)(e)),
        }
    } else if let Some(mac) = mac {
        set_mac(h, require(h, name).await?, name, mac).await?;
    }
    let index = require(h, name).await?;
    if let Some(mtu) = mtu {
        // Set explicitly, the bridge keeps it instead of following its ports' smallest MTU.
        set_mtu(h, index, name, mtu).await?;
    }
    set_up(h, index, name).await?;
    Ok(index)
}

/// How a VXLAN device is made (`ip link add NAME type vxlan id VNI dstport PORT nolearning proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vxlan {
    /// The VXLAN network identifier.
    pub vni: u32,
    /// The UDP destination port.
    pub port: u16,
    /// The device MTU.
    pub mtu: u32,
}

/// Creates VXLAN device `name` unless it exists (no learning, ARP proxy on, no default remote:
/// only the FDB entries we program send anything), enslaves it to `bridge_index`, brings it up,
/// and returns its index and whether it already existed.
pub async fn ensure_vxlan(
    h: &Handle,
    name: &str,
    vxlan: Vxlan,
    bridge_index: u32,
) -> Result<(u32, bool), LinkError> {
    let existed = index_of(h, name).await?.is_some();
    if !existed {
        let link = LinkVxlan::new(name, vxlan.vni)
            .port(vxlan.port)
            .learning(false)
            .proxy(true)
            .mtu(vxlan.mtu)
            .build();
        match h.link().add(link).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => {
                return Err(fail("create vxlan", format!("{name} (vni {})", vxlan.vni))(
                    e,
                ))
            }
        }
    }
    let index = require(h, name).await?;
    set_mtu(h, index, name, vxlan.mtu).await?;
    attach_to_bridge(h, name, bridge_index).await?;
    Ok((index, existed))
}

/// Sets the MTU of link `index`.
pub async fn set_mtu(h: &Handle, index: u32, name: &str, mtu: u32) -> Result<(), LinkError> {
    set(
        h,
        LinkUnspec::new_with_index(index).mtu(mtu).build(),
        "set mtu",
        format!("{mtu} on {name}"),
    )
    .await
}

/// Sets the MAC address of link `index`.
pub async fn set_mac(h: &Handle, index: u32, name: &str, mac: Mac) -> Result<(), LinkError> {
    set(
        h,
        LinkUnspec::new_with_index(index)
            .address(mac.to_vec())
            .build(),
        "set mac",
        name,
    )
    .await
}

/// Adds or replaces the FDB entry `mac -> dst` on the VXLAN device `index`
/// (`bridge fdb replace MAC dev VXLAN dst DST self permanent`).
pub async fn fdb_set(h: &Handle, index: u32, mac: Mac, dst: Ipv4Addr) -> Result<(), LinkError> {
    h.neighbours()
        .add_bridge(index, &mac)
        .flags(NeighbourFlags::Own)
        .state(NeighbourState::Permanent)
        .destination(IpAddr::V4(dst))
        .replace()
        .execute()
        .await
        .map_err(fail("add fdb entry", format!("{} dst {dst}", fmt_mac(mac))))
}

/// Deletes every FDB entry for `mac` on the VXLAN device `index`; a missing one is fine.
pub async fn fdb_del(h: &Handle, index: u32, mac: Mac) -> Result<(), LinkError> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    match h.neighbours().del(msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(fail("delete fdb entry", fmt_mac(mac))(e)),
    }
}

/// Adds or replaces the permanent neighbour entry `ip -> mac` on link `index`
/// (`ip neigh replace IP lladdr MAC dev VXLAN nud permanent`).
pub async fn neigh_set(h: &Handle, index: u32, ip: Ipv4Addr, mac: Mac) -> Result<(), LinkError> {
    h.neighbours()
        .add(index, IpAddr::V4(ip))
        .link_layer_address(&mac)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .map_err(fail(
            "add neighbour",
            format!("{ip} lladdr {}", fmt_mac(mac)),
        ))
}

/// Deletes the neighbour entry of `ip` on link `index`; a missing one is fine.
pub async fn neigh_del(h: &Handle, index: u32, ip: Ipv4Addr) -> Result<(), LinkError> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = index;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    match h.neighbours().del(msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(fail("delete neighbour", ip.to_string())(e)),
    }
}

/// The FDB entries `mac -> dst` programmed on the VXLAN device `index` (its own table, not the
/// entries its bridge learned about it).
pub async fn fdb_list(h: &Handle, index: u32) -> Result<Vec<(Mac, Ipv4Addr)>, LinkError> {
    let mut dump = h
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Bridge)
        .execute();
    let mut out = Vec::new();
    while let Some(msg) = dump.try_next().await.map_err(fail("list fdb", "all"))? {
        if msg.header.ifindex != index || msg.header.flags.contains(NeighbourFlags::Controller) {
            continue;
        }
        if let (Some(mac), Some(dst)) = (lladdr_of(&msg), dst_of(&msg)) {
            out.push((mac, dst));
        }
    }
    Ok(out)
}

/// The permanent IPv4 neighbour entries `ip -> mac` on link `index`.
pub async fn neigh_list(h: &Handle, index: u32) -> Result<Vec<(Ipv4Addr, Mac)>, LinkError> {
    let mut dump = h
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Inet)
        .execute();
    let mut out = Vec::new();
    while let Some(msg) = dump
        .try_next()
        .await
        .map_err(fail("list neighbours", "all"))?
    {
        if msg.header.ifindex != index || msg.header.state != NeighbourState::Permanent {
            continue;
        }
        if let (Some(ip), Some(mac)) = (dst_of(&msg), lladdr_of(&msg)) {
            out.push((ip, mac));
        }
    }
    Ok(out)
}

fn lladdr_of(msg: &NeighbourMessage) -> Option<Mac> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => Mac::try_from(b.as_slice()).ok(),
        _ => None,
    })
}

fn dst_of(msg: &NeighbourMessage) -> Option<Ipv4Addr> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

/// `02:42:0a:00:01:05`
pub fn fmt_mac(mac: Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The names of the links whose name starts with `prefix`.
pub async fn names_with_prefix(h: &Handle, prefix: &str) -> Result<Vec<String>, LinkError> {
    let mut links = h.link().get().execute();
    let mut out = Vec::new();
    while let Some(link) = links.try_next().await.map_err(fail("list links", "all"))? {
        for attr in &link.attributes {
            if let LinkAttribute::IfName(n) = attr {
                if n.starts_with(prefix) {
                    out.push(n.clone());
                }
            }
        }
    }
    Ok(out)
}

/// Brings link `index` up.
pub async fn set_up(h: &Handle, index: u32, name: &str) -> Result<(), LinkError> {
    set(
        h,
        LinkUnspec::new_with_index(index).up().build(),
        "bring up",
        name,
    )
    .await
}

/// Adds `addr/prefix` to link `index`; already present is fine.
pub async fn ensure_address(
    h: &Handle,
    index: u32,
    name: &str,
    addr: Ipv4Addr,
    prefix: u8,
) -> Result<(), LinkError> {
    match h
        .address()
        .add(index, IpAddr::V4(addr), prefix)
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(fail("add address", format!("{addr}/{prefix} on {name}"))(e)),
    }
}

/// The IPv4 addresses (with prefix length) of link `index`.
pub async fn addresses_of(h: &Handle, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, LinkError> {
    let mut dump = h.address().get().set_link_index_filter(index).execute();
    let mut out = Vec::new();
    while let Some(msg) = dump
        .try_next()
        .await
        .map_err(fail("list addresses", index.to_string()))?
    {
        for attr in &msg.attributes {
            if let AddressAttribute::Address(IpAddr::V4(ip)) = attr {
                out.push((*ip, msg.header.prefix_len));
            }
        }
    }
    Ok(out)
}

/// Removes `addr/prefix` from link `index`; a missing address is fine.
pub async fn remove_address(
    h: &Handle,
    index: u32,
    name: &str,
    addr: Ipv4Addr,
    prefix: u8,
) -> Result<(), LinkError> {
    let mut dump = h
        .address()
        .get()
        .set_link_index_filter(index)
        .set_address_filter(IpAddr::V4(addr))
        .set_prefix_length_filter(prefix)
        .execute();
    while let Some(msg) = dump
        .try_next()
        .await
        .map_err(fail("list addresses", name))?
    {
        match h.address().del(msg).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => {}
            Err(e) => return Err(fail("remove address", format!("{addr}/{prefix} on {name}"))(e)),
        }
    }
    Ok(())
}

/// Creates the veth pair `host` <-> `peer` in this namespace.
pub async fn create_veth(h: &Handle, host: &str, peer: &str) -> Result<(), LinkError> {
    h.link()
        .add(LinkVeth::new(host, peer).build())
        .execute()
        .await
        .map_err(fail("create veth", host))
}

/// Moves link `name` into the network namespace open at `netns`.
pub async fn move_to_netns(h: &Handle, name: &str, netns: &impl AsRawFd) -> Result<(), LinkError> {
    set(
        h,
        LinkUnspec::new_with_name(name)
            .setns_by_fd(netns.as_raw_fd())
            .build(),
        "move to netns",
        name,
    )
    .await
}

/// Enslaves link `name` to the bridge `bridge_index` and brings it up.
pub async fn attach_to_bridge(h: &Handle, name: &str, bridge_index: u32) -> Result<(), LinkError> {
    let index = require(h, name).await?;
    set(
        h,
        LinkUnspec::new_with_index(index)
            .controller(bridge_index)
            .up()
            .build(),
        "attach to bridge",
        name,
    )
    .await
}

/// Renames link `from` (which must be down) to `to`, returning its index.
pub async fn rename(h: &Handle, from: &str, to: &str) -> Result<u32, LinkError> {
    let index = require(h, from).await?;
    set(
        h,
        LinkUnspec::new_with_index(index).name(to).build(),
        "rename",
        format!("{from} to {to}"),
    )
    .await?;
    Ok(index)
}

/// The index of `lo` in every network namespace (the kernel gives it index 1 when it makes the
/// namespace), so bringing it up needs no lookup.
pub const LOOPBACK_INDEX: u32 = 1;

/// Brings up the loopback link.
pub async fn loopback_up(h: &Handle) -> Result<(), LinkError> {
    let index = require(h, "lo").await?;
    set_up(h, index, "lo").await
}

/// Adds the default route via `gateway` out of link `index`; already present is fine.
pub async fn ensure_default_route(
    h: &Handle,
    index: u32,
    gateway: Ipv4Addr,
) -> Result<(), LinkError> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .output_interface(index)
        .build();
    match h.route().add(route).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(fail("add default route", format!("via {gateway}"))(e)),
    }
}

/// Deletes link `name`; a missing link is fine. Deleting one end of a veth deletes both.
pub async fn delete(h: &Handle, name: &str) -> Result<(), LinkError> {
    let Some(index) = index_of(h, name).await? else {
        return Ok(());
    };
    match h.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(fail("delete link", name)(e)),
    }
}

/// Moves link `name` into link group `group`, naming it in the request instead of looking its
/// index up first (one request, not two); returns whether the link existed.
pub async fn set_group(h: &Handle, name: &str, group: u32) -> Result<bool, LinkError> {
    let mut msg = LinkUnspec::new_with_name(name).build();
    msg.attributes.push(LinkAttribute::Group(group));
    match h.link().set(msg).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(fail("set link group", name)(e)),
    }
}

/// Deletes every link in link group `group` with one request (the kernel unregisters them
/// together); an empty group is fine.
pub async fn delete_group(h: &Handle, group: u32) -> Result<(), LinkError> {
    let mut del = h.link().del(0);
    del.message_mut()
        .attributes
        .push(LinkAttribute::Group(group));
    match del.execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(fail("delete link group", group.to_string())(e)),
    }
}

/// The names of the links enslaved to the bridge `bridge_index`.
pub async fn ports_of(h: &Handle, bridge_index: u32) -> Result<Vec<String>, LinkError> {
    let mut links = h.link().get().execute();
    let mut ports = Vec::new();
    while let Some(link) = links.try_next().await.map_err(fail("list links", "all"))? {
        let mut name = None;
        let mut enslaved = false;
        for attr in &link.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Controller(c) if *c == bridge_index => enslaved = true,
                _ => {}
            }
        }
        if let (true, Some(name)) = (enslaved, name) {
            ports.push(name);
        }
    }
    Ok(ports)
}

/// Whether link `name` exists and is enslaved to `bridge_index`.
pub async fn is_port_of(h: &Handle, name: &str, bridge_index: u32) -> Result<bool, LinkError> {
    Ok(get(h, name).await?.is_some_and(|l| {
        l.attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::Controller(c) if *c == bridge_index))
    }))
}
