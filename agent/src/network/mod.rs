//! Container networking on the agent: the local `bridge` driver every task gets ([`bridge`]) and
//! the networks of the cluster, overlay and others ([`overlay`], whose `Networks` is what the
//! worker holds). This file holds what they share: the error type and the netlink plumbing.
//!
//! Kernel work happens on dedicated threads (`netns::on_thread`), never on tokio workers: entering a
//! namespace changes the calling thread. The "host" namespace the bridge lives in is the agent's own
//! unless `with_host_netns` names another one, which is how the tests stay off the real host.

pub mod bridge;
pub mod dns;
pub mod guard;
pub mod ipam;
pub mod lb;
pub mod link;
pub mod mesh;
pub mod netns;
pub mod nft;
mod notrack;
pub mod overlay;
pub mod resolv;
mod veth;
mod vxlan;

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use rtnetlink::Handle;

pub use bridge::{Attachment, BridgeNetwork, CONTAINER_IFNAME, DEFAULT_BRIDGE, DEFAULT_SUBNET};
pub use ipam::{Ipam, IpamError, IpamStore};
pub use link::LinkError;
pub use netns::NetnsError;
pub use nft::NftError;
pub use overlay::{Networks, OverlayError, TaskNetworking};
pub use resolv::resolv_conf;
pub(crate) use veth::{plug_veth, VethPlug};

/// Errors of the container networks.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The bridge name cannot be a Linux interface name.
    #[error("invalid bridge name {name:?}: {reason}")]
    InvalidBridgeName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The task id cannot name a namespace.
    #[error("invalid task id {task_id:?}: only ASCII letters, digits, '-' and '_' are allowed")]
    InvalidTaskId {
        /// The id given.
        task_id: String,
    },
    /// Two tasks would get the same namespace or veth name.
    #[error("task {task_id} would share its namespace or veth name with task {other}")]
    NameClash {
        /// The task being attached.
        task_id: String,
        /// The attached task it clashes with.
        other: String,
    },
    /// The WireGuard mesh failed.
    #[error(transparent)]
    Mesh(#[from] mesh::MeshError),
    /// A task names a network this node has no view of.
    #[error("network {network_id} is not known on this node (no view of it from the manager)")]
    UnknownNetwork {
        /// The network id.
        network_id: String,
    },
    /// `attach` was called before `ensure` created the bridge.
    #[error("bridge {bridge} does not exist (ensure() creates it)")]
    BridgeMissing {
        /// The bridge name.
        bridge: String,
    },
    /// IPv4 forwarding could not be enabled.
    #[error("enabling net.ipv4.ip_forward: {source}")]
    IpForward {
        /// The I/O error.
        source: std::io::Error,
    },
    /// Address management failed.
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// A netlink operation failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// A namespace operation failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// An nftables operation failed.
    #[error(transparent)]
    Nft(#[from] NftError),
}

/// Runs netlink work `f` on a dedicated thread inside the namespace at `netns` (the agent's own
/// when `None`).
pub(crate) async fn netlink_in<T, F, Fut>(
    netns: Option<PathBuf>,
    what: &'static str,
    f: F,
) -> Result<T, NetworkError>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetworkError>>,
{
    netns::on_thread(netns, what, move || link::block_on(f)).await?
}

/// Runs netlink work `f` on one dedicated thread with two sessions: the first in the namespace
/// at `host_netns` (the agent's own when `None`), the second in the namespace at `inner`. One
/// thread, one runtime and two sockets for work that spans both namespaces (a veth plug), not
/// one of each per step.
pub(crate) async fn netlink_pair<T, F, Fut>(
    host_netns: Option<PathBuf>,
    inner: PathBuf,
    what: &'static str,
    f: F,
) -> Result<T, NetworkError>
where
    T: Send + 'static,
    F: FnOnce(Handle, Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetworkError>>,
{
    netns::on_thread(host_netns, what, move || {
        // A netlink socket stays in the namespace it was opened in: `block_on` opens the host's
        // first, then this (dedicated) thread moves into the inner namespace and opens the other.
        link::block_on(|host| async move {
            netns::enter(&inner)?;
            let (inner_conn, inside, _) =
                rtnetlink::new_connection().map_err(|source| LinkError::Connect { source })?;
            let driver = tokio::spawn(inner_conn);
            let result = f(host, inside).await;
            driver.abort();
            result
        })
    })
    .await?
}

/// An address as the manager's views and attachments carry it: "IP", tolerating a "/prefix".
pub(crate) fn parse_ip(s: &str) -> Option<Ipv4Addr> {
    s.split('/').next().and_then(|ip| ip.trim().parse().ok())
}
