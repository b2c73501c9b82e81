//! One veth pair between a bridge in the host namespace and a task's namespace: what both the
//! bridge driver and overlays plug tasks in with.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd;

use futures::StreamExt;
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
    // The task end gets its MAC here too: one request fewer inside the task's namespace, which
    // would wait for the kernel's network lock again. (It cannot be made up here: a veth end
    // refuses to open, ENOTCONN, before its peer is registered.)
    let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(plug.ifname.clone())
        .setns_by_fd(ns_file.as_raw_fd());
    if let Some(mac) = plug.mac {
        peer = peer.address(mac.to_vec());
    }
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

/// Inside the task's namespace: gives the task end (created with its MAC) its address, brings it
/// and `lo` up, and adds the default route when this interface carries it.
async fn configure_inside(h: &Handle, plug: &VethPlug) -> Result<(), NetworkError> {
    let index = link::index_of(h, &plug.ifname)
        .await?
        .ok_or_else(|| LinkError::NotFound {
            name: plug.ifname.clone(),
        })?;
    link::ensure_address(h, index, &plug.ifname, plug.addr, plug.prefix).await?;
    link::set_up(h, index, &plug.ifname).await?;
    link::set_up(h, link::LOOPBACK_INDEX, "lo").await?;
    if let Some(gateway) = plug.gateway {
        link::ensure_default_route(h, index, gateway).await?;
    }
    Ok(())
}

/// The link group host veths are moved into just before they are deleted ("SHOL"): one
/// `RTM_DELLINK` naming this group then removes every veth of a batch (and their task ends) with
/// one `unregister_netdevice_many`, so one round of RCU grace periods under the kernel's network
/// lock instead of one per veth. Nothing but a veth being deleted ever carries it.
pub(crate) const REAP_GROUP: u32 = 0x5348_4f4c;

/// Deletions of host veths queued for the next batch of one namespace, and whether a thread is
/// deleting them.
#[derive(Default)]
struct ReaperState {
    queue: Vec<ReapJob>,
    running: bool,
}

/// One caller's veths and where to say the batch holding them is done (`true`) or failed.
struct ReapJob {
    names: Vec<String>,
    done: tokio::sync::oneshot::Sender<bool>,
}

/// The veth reapers, one per host namespace (`None`: the agent's own).
type Reapers = HashMap<Option<PathBuf>, Arc<Mutex<ReaperState>>>;
static REAPERS: LazyLock<Mutex<Reapers>> = LazyLock::new(Default::default);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state stays consistent across a panic (a queue and a flag), so a poisoned lock is fine.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Deletes the host veths `names` (with their task ends) in `host_netns` (the agent's own when
/// `None`); a missing one is fine. Deletions queued while a batch runs go together in the next
/// one (a group commit), so a `service rm` of 1,000 tasks pays the kernel's per-deletion wait a
/// few times, not 1,000 times. Returns once every veth named is gone.
pub(crate) async fn unplug_veths(
    host_netns: Option<PathBuf>,
    names: Vec<String>,
) -> Result<(), NetworkError> {
    if names.is_empty() {
        return Ok(());
    }
    let reaper = lock(&REAPERS)
        .entry(host_netns.clone())
        .or_default()
        .clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let start = {
        let mut state = lock(&reaper);
        state.queue.push(ReapJob {
            names: names.clone(),
            done: tx,
        });
        !std::mem::replace(&mut state.running, true)
    };
    if start {
        tokio::spawn(run_reaper(reaper, host_netns.clone()));
    }
    // A failed batch (or a reaper that could not start) is retried veth by veth here, so the
    // error the caller sees is about its own veth.
    if rx.await == Ok(true) {
        return Ok(());
    }
    super::netlink_in(host_netns, "unplug-veth", move |h| async move {
        for name in names {
            link::delete(&h, &name).await?;
        }
        Ok(())
    })
    .await
}

/// Runs batches on a thread in the namespace until the queue is empty.
async fn run_reaper(reaper: Arc<Mutex<ReaperState>>, host_netns: Option<PathBuf>) {
    let queue = reaper.clone();
    let outcome = super::netlink_in(host_netns, "veth-reaper", move |h| async move {
        loop {
            let jobs = {
                let mut state = lock(&queue);
                if state.queue.is_empty() {
                    state.running = false;
                    return Ok(());
                }
                std::mem::take(&mut state.queue)
            };
            let started = Instant::now();
            let count: usize = jobs.iter().map(|j| j.names.len()).sum();
            let ok = match reap(&h, jobs.iter().flat_map(|j| j.names.iter())).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, count, "deleting a batch of veths; retrying one by one");
                    false
                }
            };
            debug!(count, ms = ms(started.elapsed()), "veth batch deleted");
            for job in jobs {
                // A caller that stopped waiting needs no answer.
                let _ = job.done.send(ok);
            }
        }
    })
    .await;
    if let Err(e) = outcome {
        // The thread never ran its loop to the end: fail what is queued (its callers retry one
        // by one) and let the next caller start a reaper afresh.
        tracing::warn!(error = %e, "veth reaper");
        let mut state = lock(&reaper);
        state.queue.clear();
        state.running = false;
    }
}

/// How many group changes of one batch are in flight on the netlink socket at once.
const REAP_IN_FLIGHT: usize = 256;

/// Moves each veth of `names` that exists into [`REAP_GROUP`], then deletes the group. The group
/// changes are sent without waiting for each answer in turn (up to [`REAP_IN_FLIGHT`] at once):
/// the kernel still applies them one by one, but the thread no longer waits to be scheduled
/// again between them, which under the load of a mass removal cost more than the change itself.
async fn reap<'a>(h: &Handle, names: impl Iterator<Item = &'a String>) -> Result<(), LinkError> {
    let mut marked = 0usize;
    let mut changes = futures::stream::iter(names)
        .map(|name| link::set_group(h, name, REAP_GROUP))
        .buffer_unordered(REAP_IN_FLIGHT);
    while let Some(existed) = changes.next().await {
        if existed? {
            marked += 1;
        }
    }
    if marked > 0 {
        link::delete_group(h, REAP_GROUP).await?;
    }
    Ok(())
}

/// How long a task's host veths may take to go with its namespace before they are deleted one
/// batch at a time instead (something else still holds the namespace: a process not dead yet,
/// a leaked fd).
pub(crate) const NETNS_VETH_DEADLINE: Duration = Duration::from_secs(5);

/// How often the watcher lists the links of a host namespace while veths are expected to go.
const WATCH_INTERVAL: Duration = Duration::from_millis(10);

/// Removes the task namespace at `ns_path`, then returns once the host veths `veths` (by host
/// namespace, `None` the agent's own) whose task ends live in it are gone. The kernel destroys
/// dying namespaces in batches (one `unregister_netdevice_many` for all of them, each veth pair
/// with both ends), which a `service rm` of 1,000 tasks pays a few times instead of deleting
/// veths under the network lock one group change at a time. A veth still there after
/// [`NETNS_VETH_DEADLINE`] (the namespace is held alive) is deleted the usual way; so is every
/// veth when there was no mounted namespace to remove.
pub(crate) async fn release_with_netns(
    ns_path: PathBuf,
    veths: BTreeMap<Option<PathBuf>, Vec<String>>,
) -> Result<(), NetworkError> {
    let mounted = super::netns::is_netns(&ns_path);
    let path = ns_path.clone();
    super::netns::on_thread(None, "netns-remove", move || super::netns::remove(&path)).await??;
    let waits = veths.into_iter().map(|(host_netns, names)| async move {
        let left = if mounted {
            await_gone(host_netns.clone(), names, NETNS_VETH_DEADLINE).await
        } else {
            names
        };
        if !left.is_empty() && mounted {
            debug!(
                count = left.len(),
                "veths outlived their task namespace; deleting them"
            );
        }
        unplug_veths(host_netns, left).await
    });
    for result in futures::future::join_all(waits).await {
        result?;
    }
    Ok(())
}

/// Veths expected to disappear from one host namespace, and where to say which are still there
/// when they are all gone (an empty list) or the deadline has passed.
struct WatchJob {
    names: Vec<String>,
    deadline: Instant,
    done: tokio::sync::oneshot::Sender<Vec<String>>,
}

/// Watch jobs queued for a namespace's watcher, and whether it runs.
#[derive(Default)]
struct WatcherState {
    queue: Vec<WatchJob>,
    running: bool,
}

/// The veth watchers, one per host namespace (`None`: the agent's own).
type Watchers = HashMap<Option<PathBuf>, Arc<Mutex<WatcherState>>>;
static WATCHERS: LazyLock<Mutex<Watchers>> = LazyLock::new(Default::default);

/// Returns the veths of `names` still in `host_netns` once all are gone or after `within`
/// (then the ones left). One watcher thread per namespace lists its links for every waiter at
/// once. Should the listing fail, every name is returned (the caller deletes them itself).
pub(crate) async fn await_gone(
    host_netns: Option<PathBuf>,
    names: Vec<String>,
    within: Duration,
) -> Vec<String> {
    if names.is_empty() {
        return names;
    }
    let watcher = lock(&WATCHERS)
        .entry(host_netns.clone())
        .or_default()
        .clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let start = {
        let mut state = lock(&watcher);
        state.queue.push(WatchJob {
            names: names.clone(),
            deadline: Instant::now() + within,
            done: tx,
        });
        !std::mem::replace(&mut state.running, true)
    };
    if start {
        tokio::spawn(run_watcher(watcher, host_netns));
    }
    rx.await.unwrap_or(names)
}

/// Lists the links of the namespace every [`WATCH_INTERVAL`] and answers the waiters whose veths
/// are gone or whose deadline passed, until none is left.
async fn run_watcher(watcher: Arc<Mutex<WatcherState>>, host_netns: Option<PathBuf>) {
    let state = watcher.clone();
    let outcome = super::netlink_in(host_netns, "veth-watch", move |h| async move {
        Ok(watch(&h, &state).await?)
    })
    .await;
    if let Err(e) = outcome {
        // Dropping the queued jobs answers their callers, who then delete their veths themselves.
        tracing::warn!(error = %e, "veth watcher");
        let mut st = lock(&watcher);
        st.queue.clear();
        st.running = false;
    }
}

/// The watcher's loop (see [`run_watcher`]). Jobs taken from the queue are answered before it
/// returns, even on an error: dropping their senders tells their callers to delete all.
async fn watch(h: &Handle, state: &Mutex<WatcherState>) -> Result<(), LinkError> {
    let mut pending: Vec<WatchJob> = Vec::new();
    loop {
        {
            let mut st = lock(state);
            pending.append(&mut st.queue);
            if pending.is_empty() {
                st.running = false;
                return Ok(());
            }
        }
        let present: HashSet<String> = link::names_with_prefix(h, "").await?.into_iter().collect();
        let now = Instant::now();
        let mut waiting = Vec::with_capacity(pending.len());
        for mut job in pending {
            job.names.retain(|n| present.contains(n));
            if job.names.is_empty() || now >= job.deadline {
                // A caller that stopped waiting needs no answer.
                let _ = job.done.send(job.names);
            } else {
                waiting.push(job);
            }
        }
        pending = waiting;
        if !pending.is_empty() {
            tokio::time::sleep(WATCH_INTERVAL).await;
        }
    }
}
