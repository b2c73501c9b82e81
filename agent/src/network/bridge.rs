//! The local `bridge` driver: a Linux bridge NATed to the outside, with a host-local IPAM, that
//! every task is plugged into (the default `shoal0`), and each bridge-driver network object too.
//!
//! A task is attached by giving it a named network namespace (`/run/netns/shoal-<task>`) whose `eth0`
//! is one end of a veth pair; the other end is a port of the host bridge (`shoal0`), which holds the
//! gateway address and is NATed to the outside by nftables. Addresses come from a host-local IPAM
//! persisted in the agent's data dir, so containers re-adopted after an agent restart keep theirs.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use ipnet::Ipv4Net;
use rtnetlink::Handle;
use sha2::{Digest, Sha256};

use super::veth::{plug_veth, release_with_netns, unplug_veths, VethPlug};
use super::{ipam, link, netlink_in, netns, nft, IpamError, IpamStore, NetworkError};

/// The name of the default bridge.
pub const DEFAULT_BRIDGE: &str = "shoal0";
/// The default subnet of the default bridge.
pub const DEFAULT_SUBNET: &str = "10.88.0.0/16";
/// The name a task's interface gets inside its namespace.
pub const CONTAINER_IFNAME: &str = "eth0";

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
        Names::salted(task_id, "")
    }

    /// The names of a task's attachment to the bridge network salted with `salt` (empty for the
    /// default bridge): a task on several bridges gets one veth pair per bridge.
    fn salted(task_id: &str, salt: &str) -> Names {
        // Task ids are validated ASCII, so byte slicing is on char boundaries.
        let short = &task_id[..task_id.len().min(12)];
        let digest = if salt.is_empty() {
            hex::encode(Sha256::digest(task_id.as_bytes()))
        } else {
            hex::encode(Sha256::digest(format!("{task_id}/{salt}").as_bytes()))
        };
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
    pub(super) netns_dir: PathBuf,
    /// Salts the veth names (see `Names::salted`); empty for the default bridge.
    salt: String,
    /// The addresses in memory; never held across an await or a write.
    ipam: Mutex<IpamState>,
    /// The version of `ipam` last written to disk, locked while a write is under way: attaches
    /// and detaches that come together share one write (group commit) instead of each rewriting
    /// and syncing the whole file in turn, which made a burst of n attaches cost n fsyncs in series.
    ipam_saved: tokio::sync::Mutex<u64>,
}

/// The IPAM state with a version that counts its changes in memory.
#[derive(Debug)]
struct IpamState {
    store: IpamStore,
    version: u64,
    /// The kernel names of each task holding an address (a SHA-256 each), kept for the clash
    /// check every attach makes against every other task.
    names: HashMap<String, Names>,
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
            salt: String::new(),
            ipam: Mutex::new(IpamState {
                store,
                version: 0,
                names: HashMap::new(),
            }),
            ipam_saved: tokio::sync::Mutex::new(0),
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
            .store
            .ipam()
            .allocations()
            .map(|(t, a)| (t.to_string(), a))
            .collect()
    }

    /// The namespace path a task's attachment uses in the default directory (`/run/netns`).
    pub fn netns_path(task_id: &str) -> PathBuf {
        netns::path_of(&Names::of(task_id).netns)
    }

    /// Names the veths of this network's attachments apart from other bridge networks' ones
    /// (a task on several bridge networks has one veth pair on each).
    pub fn with_veth_salt(mut self, salt: &str) -> Self {
        self.salt = salt.to_string();
        self
    }

    /// The host end of a task's veth on this network (a port of the bridge).
    pub fn veth_name(&self, task_id: &str) -> String {
        self.names(task_id).veth
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

    /// Gives `task_id` an address and a namespace plugged into the bridge (as `eth0`, with the
    /// default route); returns where it is. Idempotent: an attached task (also one attached
    /// before an agent restart) keeps its namespace and address.
    pub async fn attach(&self, task_id: &str) -> Result<Attachment, NetworkError> {
        validate_task_id(task_id)?;
        let ns_path = self.task_netns(task_id);
        if !netns::is_netns(&ns_path) {
            // Leftovers of an attach cut short (agent crash) would make the creations fail.
            self.teardown(task_id).await?;
            netns::create_for_task(&ns_path).await?;
        }
        let ip = self
            .plug(task_id, &ns_path, CONTAINER_IFNAME, true, None)
            .await?;
        Ok(Attachment {
            netns: ns_path,
            ip,
            gateway: self.gateway,
        })
    }

    /// Gives `task_id` an address and plugs it into the bridge as `ifname` inside the existing
    /// namespace `ns_path`, with the default route via the bridge when `default_route`, and MTU
    /// `mtu` when set. Returns the address. Idempotent; on failure nothing is left half-built.
    pub async fn plug(
        &self,
        task_id: &str,
        ns_path: &Path,
        ifname: &str,
        default_route: bool,
        mtu: Option<u32>,
    ) -> Result<Ipv4Addr, NetworkError> {
        validate_task_id(task_id)?;
        let names = self.names(task_id);
        let (ip, fresh) = self.reserve_address(task_id, &names).await?;
        let veth = VethPlug {
            host: names.veth.clone(),
            peer: names.peer.clone(),
            ifname: ifname.to_string(),
            bridge: self.bridge.clone(),
            addr: ip,
            prefix: self.subnet.prefix_len(),
            mtu,
            mac: None,
            gateway: default_route.then_some(self.gateway),
        };
        match plug_veth(self.host_netns.clone(), ns_path, veth).await {
            Ok(()) => Ok(ip),
            Err(e) => {
                // Leave nothing half-built; the original error is the one worth reporting.
                if let Err(undo) = self.delete_veth(&names).await {
                    tracing::warn!(task_id, error = %undo, "undoing a failed attach");
                }
                if fresh {
                    if let Err(undo) = self.release_address(task_id).await {
                        tracing::warn!(task_id, error = %undo, "releasing the address of a failed attach");
                    }
                }
                Err(e)
            }
        }
    }

    /// Removes the task's veth from the bridge and releases its address, leaving its namespace.
    /// Idempotent.
    pub async fn unplug(&self, task_id: &str) -> Result<(), NetworkError> {
        validate_task_id(task_id)?;
        self.delete_veth(&self.names(task_id)).await?;
        self.release_address(task_id).await
    }

    /// Removes the task's veth and namespace and releases its address. Idempotent; an unknown
    /// task is fine.
    pub async fn detach(&self, task_id: &str) -> Result<(), NetworkError> {
        self.detach_with(task_id, BTreeMap::new()).await
    }

    /// [`detach`](Self::detach), and `others`: the host ends (by host namespace) of the task's
    /// other veths, whose task ends live in the same namespace; all gone when it returns. The
    /// namespace goes first: the kernel deletes its veths with it, in batches with the other
    /// namespaces dying at the same time (see `release_with_netns`).
    pub(crate) async fn detach_with(
        &self,
        task_id: &str,
        mut others: BTreeMap<Option<PathBuf>, Vec<String>>,
    ) -> Result<(), NetworkError> {
        validate_task_id(task_id)?;
        let veth = self.names(task_id).veth;
        others
            .entry(self.host_netns.clone())
            .or_default()
            .push(veth.clone());
        let started = std::time::Instant::now();
        release_with_netns(self.task_netns(task_id), others).await?;
        tracing::debug!(
            veth,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "task network torn down"
        );
        self.release_address(task_id).await
    }

    /// The namespace holding the bridge (the agent's own when `None`).
    pub(crate) fn host_netns(&self) -> Option<PathBuf> {
        self.host_netns.clone()
    }

    /// Releases the task's address once its veth is gone (removed with its namespace by
    /// [`detach_with`](Self::detach_with) of another network). Idempotent.
    pub(crate) async fn release(&self, task_id: &str) -> Result<(), NetworkError> {
        validate_task_id(task_id)?;
        self.release_address(task_id).await
    }

    /// Removes everything this network created: every attachment, leftover bridge ports, the
    /// bridge and its nftables chain (and the `ip shoal` table once empty). For tests and uninstall.
    /// IPv4 forwarding stays on: whether it was on before is not known.
    pub async fn cleanup_all(&self) -> Result<(), NetworkError> {
        let tasks: Vec<String> = self.allocations().into_iter().map(|(t, _)| t).collect();
        for task in tasks {
            self.detach(&task).await?;
        }
        self.remove_bridge().await
    }

    /// Removes the bridge (with any ports left) and its nftables chain (and the `ip shoal` table
    /// once empty), releasing every address but leaving task namespaces alone.
    pub async fn remove_bridge(&self) -> Result<(), NetworkError> {
        let tasks: Vec<String> = self.allocations().into_iter().map(|(t, _)| t).collect();
        for task in tasks {
            self.unplug(&task).await?;
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

    /// The veth and namespace names of a task on this network.
    fn names(&self, task_id: &str) -> Names {
        Names::salted(task_id, &self.salt)
    }

    /// Deletes the task's veth (both ends); a missing one is fine. Batched with other
    /// deletions running at the same time (see `unplug_veths`).
    async fn delete_veth(&self, names: &Names) -> Result<(), NetworkError> {
        unplug_veths(self.host_netns.clone(), vec![names.veth.clone()]).await
    }

    /// Deletes the task's veth (both ends) and its namespace file; missing pieces are fine.
    /// The veth goes in a batch with the other deletions of the moment; the unmount on a thread
    /// of its own, as it takes the kernel's mount lock and must not block an async worker.
    async fn teardown(&self, task_id: &str) -> Result<(), NetworkError> {
        let veth = self.names(task_id).veth;
        let ns_path = self.task_netns(task_id);
        let started = std::time::Instant::now();
        unplug_veths(self.host_netns.clone(), vec![veth.clone()]).await?;
        let deleted = std::time::Instant::now();
        netns::on_thread(None, "netns-remove", move || netns::remove(&ns_path)).await??;
        tracing::debug!(
            veth,
            veth_ms = (deleted - started).as_secs_f64() * 1e3,
            netns_ms = deleted.elapsed().as_secs_f64() * 1e3,
            "task network torn down"
        );
        Ok(())
    }

    /// Runs netlink work `f` on a dedicated thread inside the bridge's namespace.
    async fn in_host<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T, NetworkError>
    where
        T: Send + 'static,
        F: FnOnce(Handle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, NetworkError>>,
    {
        netlink_in(self.host_netns.clone(), what, f).await
    }

    /// Gives `task_id` an address (the one it holds, or a free one) unless its kernel names clash
    /// with another task's; returns once that is on disk, and whether the address is new.
    async fn reserve_address(
        &self,
        task_id: &str,
        names: &Names,
    ) -> Result<(Ipv4Addr, bool), NetworkError> {
        let (ip, fresh, version) = {
            let mut guard = self.lock_ipam();
            let st = &mut *guard;
            let clash = st
                .store
                .ipam()
                .allocations()
                .map(|(t, _)| t)
                .filter(|t| *t != task_id)
                .find(|t| {
                    st.names
                        .entry(t.to_string())
                        .or_insert_with(|| self.names(t))
                        .clashes(names)
                });
            if let Some(other) = clash {
                return Err(NetworkError::NameClash {
                    task_id: task_id.to_string(),
                    other: other.to_string(),
                });
            }
            let held = st.store.ipam().get(task_id);
            let ip = st.store.allocate_unsaved(task_id)?;
            if held.is_none() {
                st.version += 1;
                st.names.insert(task_id.to_string(), names.clone());
            }
            (ip, held.is_none(), st.version)
        };
        // Durable before anything uses it: after a crash the address is still this task's.
        if let Err(e) = self.save_ipam(version).await {
            if fresh {
                self.forget_address(task_id);
            }
            return Err(e);
        }
        Ok((ip, fresh))
    }

    fn lock_ipam(&self) -> MutexGuard<'_, IpamState> {
        // A panic while holding the lock cannot leave the state half-updated: each change is one
        // map insert or remove and its version bump.
        self.ipam.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `task_id`'s address back in memory; returns the version to save, `None` if it held
    /// none.
    fn forget_address(&self, task_id: &str) -> Option<u64> {
        let mut st = self.lock_ipam();
        st.names.remove(task_id);
        st.store.release_unsaved(task_id)?;
        st.version += 1;
        Some(st.version)
    }

    /// Releases `task_id`'s address and returns once that is on disk. Releasing an unknown task
    /// is a no-op.
    async fn release_address(&self, task_id: &str) -> Result<(), NetworkError> {
        match self.forget_address(task_id) {
            Some(version) => self.save_ipam(version).await,
            None => Ok(()),
        }
    }

    /// Returns once the IPAM state of `version` (or a later one) is on disk. One writer at a
    /// time, each writing the newest state: callers that queued behind a write find their change
    /// already saved by it or share the next one.
    async fn save_ipam(&self, version: u64) -> Result<(), NetworkError> {
        let mut saved = self.ipam_saved.lock().await;
        if *saved >= version {
            return Ok(());
        }
        let (path, snapshot, at) = {
            let st = self.lock_ipam();
            (
                st.store.path().to_path_buf(),
                st.store.ipam().clone(),
                st.version,
            )
        };
        let file = path.clone();
        tokio::task::spawn_blocking(move || ipam::save(&file, &snapshot))
            .await
            .map_err(|e| IpamError::Write {
                path,
                source: std::io::Error::other(e),
            })??;
        *saved = at;
        Ok(())
    }
}

impl Names {
    fn clashes(&self, other: &Names) -> bool {
        self.netns == other.netns || self.veth == other.veth
    }
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
#[path = "bridge_tests.rs"]
mod tests;
