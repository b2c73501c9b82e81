//! Links, addresses and routes through rtnetlink, one narrow function per kernel operation.
//!
//! Every function acts on the network namespace the netlink socket was opened in; `block_on`
//! opens that socket on the calling thread, which `netns::on_thread` has already moved.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

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
/// on a current-thread runtime. Only call it from a dedicated thread (it blocks).
pub fn block_on<T, E, F, Fut>(f: F) -> Result<T, E>
where
    E: From<LinkError>,
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
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
    if index_of(h, name).await?.is_none() {
        // A fixed MAC: otherwise the bridge takes the lowest MAC among its ports, and the gateway
        // MAC cached by every container changes whenever a task comes or goes.
        let tail: [u8; 5] = rand::random();
        let mut mac = vec![0x02]; // locally administered, unicast
        mac.extend_from_slice(&tail);
        let bridge = LinkBridge::new(name).address(mac).build();
        match h.link().add(bridge).execute().await {
            Ok(()) => {}
            // Created concurrently: fine, it is there.
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(fail("create bridge", name)(e)),
        }
    }
    let index = require(h, name).await?;
    set_up(h, index, name).await?;
    Ok(index)
}

/// Brings link `index` up.
pub async fn set_up(h: &Handle, index: u32, name: &str) -> Result<(), LinkError> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(fail("bring up", name))
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
    h.link()
        .set(
            LinkUnspec::new_with_name(name)
                .setns_by_fd(netns.as_raw_fd())
                .build(),
        )
        .execute()
        .await
        .map_err(fail("move to netns", name))
}

/// Enslaves link `name` to the bridge `bridge_index` and brings it up.
pub async fn attach_to_bridge(h: &Handle, name: &str, bridge_index: u32) -> Result<(), LinkError> {
    let index = require(h, name).await?;
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .controller(bridge_index)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(fail("attach to bridge", name))
}

/// Renames link `from` (which must be down) to `to`, returning its index.
pub async fn rename(h: &Handle, from: &str, to: &str) -> Result<u32, LinkError> {
    let index = require(h, from).await?;
    h.link()
        .set(LinkUnspec::new_with_index(index).name(to).build())
        .execute()
        .await
        .map_err(fail("rename", format!("{from} to {to}")))?;
    Ok(index)
}

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
