//! Container networking on the agent: for now the local `bridge` driver every task gets.
//!
//! A task is attached by giving it a named network namespace (`/run/netns/shoal-<task>`) whose `eth0`
//! is one end of a veth pair; the other end is a port of the host bridge (`shoal0`), which holds the
//! gateway address and is NATed to the outside by nftables. Addresses come from a host-local IPAM
//! persisted in the agent's data dir, so containers re-adopted after an agent restart keep theirs.
//!
//! Kernel work happens on dedicated threads (`netns::on_thread`), never on tokio workers: entering a
//! namespace changes the calling thread. The "host" namespace the bridge lives in is the agent's own
//! unless `with_host_netns` names another one, which is how the tests stay off the real host.

pub mod ipam;
pub mod link;
pub mod mesh;
pub mod netns;
pub mod nft;
pub mod resolv;

use std::fs::File;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use ipnet::Ipv4Net;
use rtnetlink::Handle;
use sha2::{Digest, Sha256};

pub use ipam::{Ipam, IpamError, IpamStore};
pub use link::LinkError;
pub use netns::NetnsError;
pub use nft::NftError;
pub use resolv::resolv_conf;

/// The name of the default bridge.
pub const DEFAULT_BRIDGE: &str = "shoal0";
/// The default subnet of the default bridge.
pub const DEFAULT_SUBNET: &str = "10.88.0.0/16";
/// The name a task's interface gets inside its namespace.
pub const CONTAINER_IFNAME: &str = "eth0";

/// Errors of the bridge network.
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

/// Where an attached task's network lives: the runtime joins `netns` instead of creating one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The named network namespace to setns() into.
    pub netns: PathBuf,
    /// The task's address on `eth0`.
    pub ip: Ipv4Addr,
    /// The bridge address, the task's default route.
    pub gateway: Ipv4Addr,
}

/// The kernel object names derived from a task id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Names {
    netns: String,
    /// Host end of the veth pair, a port of the bridge.
    veth: String,
    /// The other end's name until it is renamed `eth0` inside the task namespace.
    peer: String,
}

impl Names {
    fn of(task_id: &str) -> Names {
        // Task ids are validated ASCII, so byte slicing is on char boundaries.
        let short = &task_id[..task_id.len().min(12)];
        let digest = hex::encode(Sha256::digest(task_id.as_bytes()));
        let tag = &digest[..8];
        Names {
            netns: format!("shoal-{short}"),
            veth: format!("veth{tag}"),
            peer: format!("vp{tag}"),
        }
    }
}

/// The local bridge network of this host: the bridge, its NAT, its IPAM and its task attachments.
#[derive(Debug)]
pub struct BridgeNetwork {
    bridge: String,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    host_netns: Option<PathBuf>,
    /// Where task namespaces are bind-mounted (`/run/netns` unless the agent keeps them in its
    /// data dir, which keeps several agents on one machine apart).
    netns_dir: PathBuf,
    ipam: Mutex<IpamStore>,
}

impl BridgeNetwork {
    /// Opens the bridge network `bridge_name` on `subnet`, with its IPAM state under `data_dir`.
    /// Touches no kernel state; `ensure` does.
    pub fn new(
        data_dir: &Path,
        bridge_name: &str,
        subnet: Ipv4Net,
    ) -> Result<BridgeNetwork, NetworkError> {
        validate_ifname(bridge_name)?;
        let path = data_dir
            .join("network")
            .join(format!("{bridge_name}.ipam.json"));
        let store = IpamStore::open(&path, subnet)?;
        Ok(BridgeNetwork {
            bridge: bridge_name.to_string(),
            subnet: store.ipam().subnet(),
            gateway: store.ipam().gateway(),
            host_netns: None,
            netns_dir: PathBuf::from(netns::NETNS_DIR),
            ipam: Mutex::new(store),
        })
    }

    /// The default network: bridge `shoal0` on 10.88.0.0/16.
    pub fn default_for(data_dir: &Path) -> Result<BridgeNetwork, NetworkError> {
        let subnet = DEFAULT_SUBNET
            .parse()
            .expect("DEFAULT_SUBNET is a valid CIDR literal");
        BridgeNetwork::new(data_dir, DEFAULT_BRIDGE, subnet)
    }

    /// Puts the bridge (and the host ends of the veths) in the namespace at `netns` instead of the
    /// agent's own: for tests and for hosts simulated as namespaces.
    pub fn with_host_netns(mut self, netns: PathBuf) -> BridgeNetwork {
        self.host_netns = Some(netns);
        self
    }

    /// The bridge interface name.
    pub fn bridge_name(&self) -> &str {
        &self.bridge
    }

    /// The subnet tasks get addresses from.
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// The gateway address, held by the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The tasks holding an address, with it (what an agent restart re-adopts).
    pub fn allocations(&self) -> Vec<(String, Ipv4Addr)> {
        self.lock_ipam()
            .ipam()
            .allocations()
            .map(|(t, a)| (t.to_string(), a))
            .collect()
    }

    /// The namespace path a task's attachment uses in the default directory (`/run/netns`).
    pub fn netns_path(task_id: &str) -> PathBuf {
        netns::path_of(&Names::of(task_id).netns)
    }

    /// Keeps task namespaces in `dir` instead of `/run/netns`.
    pub fn with_netns_dir(mut self, dir: PathBuf) -> Self {
        self.netns_dir = dir;
        self
    }

    /// The namespace path a task's attachment uses in this network's directory.
    pub fn task_netns(&self, task_id: &str) -> PathBuf {
        self.netns_dir.join(Names::of(task_id).netns)
    }

    /// Creates the bridge if needed, gives it the gateway address, brings it up, enables IPv4
    /// forwarding and installs the masquerade rule. Idempotent.
    pub async fn ensure(&self) -> Result<(), NetworkError> {
        let bridge = self.bridge.clone();
        let gateway = self.gateway;
        let subnet = self.subnet;
        self.in_host("ensure", move |h| async move {
            let index = link::ensure_bridge(&h, &bridge).await?;
            link::ensure_address(&h, index, &bridge, gateway, subnet.prefix_len()).await?;
            nft::enable_ip_forward().map_err(|source| NetworkError::IpForward { source })?;
            nft::apply(&nft::masquerade_ruleset(&bridge, subnet))?;
            Ok(())
        })
        .await
    }

    /// Gives `task_id` an address and a namespace plugged into the bridge; returns where it is.
    /// Idempotent: an attached task (also one attached before an agent restart) keeps its
    /// namespace and address.
    pub async fn attach(&self, task_id: &str) -> Result<Attachment, NetworkError> {
        validate_task_id(task_id)?;
        let names = Names::of(task_id);
        let (ip, fresh) = {
            let mut store = self.lock_ipam();
            if let Some(other) = store
                .ipam()
                .allocations()
                .map(|(t, _)| t)
                .find(|t| *t != task_id && Names::of(t).clashes(&names))
            {
                return Err(NetworkError::NameClash {
                    task_id: task_id.to_string(),
                    other: other.to_string(),
                });
            }
            let held = store.ipam().get(task_id);
            (store.allocate(task_id)?, held.is_none())
        };
        let attachment = Attachment {
            netns: self.netns_dir.join(&names.netns),
            ip,
            gateway: self.gateway,
        };
        match self.plumb(&names, ip).await {
            Ok(()) => Ok(attachment),
            Err(e) => {
                // Leave nothing half-built; the original error is the one worth reporting.
                if let Err(undo) = self.teardown(&names).await {
                    tracing::warn!(task_id, error = %undo, "undoing a failed attach");
                }
                if fresh {
                    if let Err(undo) = self.lock_ipam().release(task_id) {
                        tracing::warn!(task_id, error = %undo, "releasing the address of a failed attach");
                    }
                }
                Err(e)
            }
        }
    }

    /// Removes the task's veth and namespace and releases its address. Idempotent; an unknown
    /// task is fine.
    pub async fn detach(&self, task_id: &str) -> Result<(), NetworkError> {
        validate_task_id(task_id)?;
        self.teardown(&Names::of(task_id)).await?;
        self.lock_ipam().release(task_id)?;
        Ok(())
    }

    /// Removes everything this network created: every attachment, leftover bridge ports, the
    /// bridge and its nftables chain (and the `ip shoal` table once empty). For tests and uninstall.
    /// IPv4 forwarding stays on: whether it was on before is not known.
    pub async fn cleanup_all(&self) -> Result<(), NetworkError> {
        let tasks: Vec<String> = self.allocations().into_iter().map(|(t, _)| t).collect();
        for task in tasks {
            self.detach(&task).await?;
        }
        let bridge = self.bridge.clone();
        self.in_host("cleanup", move |h| async move {
            if let Some(index) = link::index_of(&h, &bridge).await? {
                for port in link::ports_of(&h, index).await? {
                    link::delete(&h, &port).await?;
                }
                link::delete(&h, &bridge).await?;
            }
            nft::apply(&nft::remove_chain_ruleset(&bridge))?;
            if nft::list_table()?.is_some_and(|t| nft::table_is_empty(&t)) {
                nft::apply(&nft::remove_table_ruleset())?;
            }
            Ok(())
        })
        .await
    }

    /// Builds (or finds already built) the namespace and veth of a task.
    async fn plumb(&self, names: &Names, ip: Ipv4Addr) -> Result<(), NetworkError> {
        let ns_path = self.netns_dir.join(&names.netns);
        let bridge = self.bridge.clone();
        let veth = names.veth.clone();
        let plugged = self
            .in_host("attach-check", move |h| async move {
                let index = bridge_index(&h, &bridge).await?;
                Ok(link::is_port_of(&h, &veth, index).await?)
            })
            .await?;
        if plugged && netns::is_netns(&ns_path) {
            return Ok(());
        }

        // Leftovers of an attach cut short (agent crash) would make the creations below fail.
        self.teardown(names).await?;
        netns::create(&ns_path).await?;
        let ns_file = File::open(&ns_path).map_err(|source| NetnsError::Open {
            path: ns_path.clone(),
            source,
        })?;

        let (bridge, veth, peer) = (self.bridge.clone(), names.veth.clone(), names.peer.clone());
        self.in_host("attach-veth", move |h| async move {
            let index = bridge_index(&h, &bridge).await?;
            link::create_veth(&h, &veth, &peer).await?;
            link::move_to_netns(&h, &peer, &ns_file).await?;
            link::attach_to_bridge(&h, &veth, index).await?;
            Ok(())
        })
        .await?;

        let peer = names.peer.clone();
        let (gateway, prefix) = (self.gateway, self.subnet.prefix_len());
        netns::on_thread(Some(ns_path), "attach-inside", move || {
            link::block_on(move |h| async move {
                let index = link::rename(&h, &peer, CONTAINER_IFNAME).await?;
                link::ensure_address(&h, index, CONTAINER_IFNAME, ip, prefix).await?;
                link::set_up(&h, index, CONTAINER_IFNAME).await?;
                link::loopback_up(&h).await?;
                link::ensure_default_route(&h, index, gateway).await?;
                Ok::<(), NetworkError>(())
            })
        })
        .await?
    }

    /// Deletes the task's veth (both ends) and its namespace file; missing pieces are fine.
    async fn teardown(&self, names: &Names) -> Result<(), NetworkError> {
        let veth = names.veth.clone();
        self.in_host("detach", move |h| async move {
            link::delete(&h, &veth).await?;
            Ok(())
        })
        .await?;
        netns::remove(&self.netns_dir.join(&names.netns))?;
        Ok(())
    }

    /// Runs netlink work `f` on a dedicated thread inside the bridge's namespace.
    async fn in_host<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T, NetworkError>
    where
        T: Send + 'static,
        F: FnOnce(Handle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, NetworkError>>,
    {
        netns::on_thread(self.host_netns.clone(), what, move || link::block_on(f)).await?
    }

    fn lock_ipam(&self) -> MutexGuard<'_, IpamStore> {
        // A panic while holding the lock cannot leave the store half-updated: it swaps in the new
        // state only after saving it.
        self.ipam.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Names {
    fn clashes(&self, other: &Names) -> bool {
        self.netns == other.netns || self.veth == other.veth
    }
}

/// The index of the bridge, which `ensure` must have created.
async fn bridge_index(h: &Handle, bridge: &str) -> Result<u32, NetworkError> {
    link::index_of(h, bridge)
        .await?
        .ok_or_else(|| NetworkError::BridgeMissing {
            bridge: bridge.to_string(),
        })
}

fn validate_task_id(task_id: &str) -> Result<(), NetworkError> {
    let ok = !task_id.is_empty()
        && task_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(NetworkError::InvalidTaskId {
            task_id: task_id.to_string(),
        })
    }
}

fn validate_ifname(name: &str) -> Result<(), NetworkError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > 15 {
        Some("longer than 15 bytes")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Some("only ASCII letters, digits, '-', '_' and '.' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NetworkError::InvalidBridgeName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
