//! Deterministic subsetting of the routing mesh: every node serves every published port, but a
//! service with many backends is balanced by each node over a bounded group of them only, so a
//! node's ingress view holds O(services × K) backends instead of every published task, and a
//! task change reaches the nodes of one group instead of every node.
//!
//! Nodes fall into groups by a hash of their id; a service of n backends (its desired replica
//! count, or the node count for a global service) is split in G = [`groups_for`]`(n)` groups, a
//! power of two, so that each holds between K and 2K backends (all of them, G = 1, below 2K). A
//! replicated task of slot S is in group (S - 1) mod G: every backend is in exactly one group,
//! the groups are as even as the slots, and a task replaced in its slot stays in its group. A
//! global task is in its node's group. A node in group h (its hash modulo the largest G of the
//! view) balances service s over group h mod G_s: with G a power of two, the groups of a larger
//! G nest in those of a smaller one, so one view per group of the largest G serves every node.
//!
//! G follows the desired replica count, which only the user changes, not the number of tasks
//! alive at the moment: tasks starting, failing or being replaced never move a backend from one
//! group to another, so the split needs no further hysteresis.
//!
//! The nodes' own ingress addresses are the reply path: a backend answers whichever node
//! forwarded the connection (the reply goes to that node's ingress address, which the backend's
//! node must resolve, and whose VXLAN it must accept). Once a service is split, a node is told
//! the addresses of the nodes that can forward to a backend it hosts and no others ([`reach`]):
//! for a backend of group g of a split service, the nodes of group g (the same hash rule); for a
//! backend of a service that is not split (at most 2K - 1 of them), every node; for no backend,
//! none. The forwarding direction needs nothing more: a node's view holds its group's backends
//! with their nodes' addresses. Node addresses fall in classes by `node_key % G` of the largest
//! split ([`Split::forwarders`]), shared by every node, and a node's view is its group's view plus
//! the classes it reaches: no copy of the node list per node, and a node's classes change only
//! with its own backends. With no service split every view keeps every node's address, as
//! before subsets existed.

use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};
use shoal_proto::v1::{EndpointView, NetworkView};

/// K: a service is split only once it has at least 2K backends, and a group holds at least K.
pub const DEFAULT_SUBSET_SIZE: u64 = 128;

/// The most groups a service is split in.
const MAX_GROUPS: u32 = 1 << 16;

/// K as configured: `SHOAL_INGRESS_SUBSET` (0 turns subsetting off, the reference of the scale
/// benchmark), [`DEFAULT_SUBSET_SIZE`] otherwise.
pub fn subset_size() -> u64 {
    static K: OnceLock<u64> = OnceLock::new();
    *K.get_or_init(|| {
        std::env::var("SHOAL_INGRESS_SUBSET")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_SUBSET_SIZE)
    })
}

/// Whether every node is told every node's address even on a split routing mesh
/// (`SHOAL_INGRESS_ALL_NODES=1`: the behaviour before [`reach`], the scale benchmark's reference).
pub fn all_nodes_reached() -> bool {
    static ALL: OnceLock<bool> = OnceLock::new();
    *ALL.get_or_init(|| std::env::var("SHOAL_INGRESS_ALL_NODES").is_ok_and(|v| v == "1"))
}

/// In how many groups a service of `backends` backends is split with subsets of at least `k`
/// (`k` = 0: never split).
pub fn groups_for(backends: u64, k: u64) -> u32 {
    if k == 0 || backends < 2 * k {
        return 1;
    }
    // The largest power of two G with backends / G >= k.
    let most = backends / k;
    let g = 1u64 << (63 - most.leading_zeros());
    u32::try_from(g).unwrap_or(MAX_GROUPS).min(MAX_GROUPS)
}

/// A node's place among the groups: its group under G groups is `node_key(id) % G`.
pub fn node_key(node_id: &str) -> u32 {
    let digest = Sha256::digest(node_id.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// The group of a backend (a task of slot `slot` on node `node_id`) among `groups`.
pub fn backend_group(slot: u64, node_id: &str, groups: u32) -> u32 {
    if slot == 0 {
        node_key(node_id) % groups.max(1)
    } else {
        slot_group(slot, groups)
    }
}

/// The group of a replicated backend of slot `slot` (at least 1) among `groups`.
pub fn slot_group(slot: u64, groups: u32) -> u32 {
    // `groups` is at most 2^16, so the remainder fits.
    (slot.saturating_sub(1) % u64::from(groups.max(1))) as u32
}

/// The largest split of the view's services (1: no service is split).
pub fn max_groups(view: &NetworkView) -> u32 {
    view.services
        .iter()
        .map(|s| s.subset_groups)
        .max()
        .unwrap_or(1)
        .max(1)
}

/// Which group of the largest split a view is for (0 for a view that is not split).
pub fn view_group(view: &NetworkView) -> u32 {
    let most = max_groups(view);
    view.services
        .iter()
        .find(|s| s.subset_groups == most)
        .map_or(0, |s| s.subset)
}

/// The group of the largest split of `view` that node `node_id` is in.
pub fn group_of_node(view: &NetworkView, node_id: &str) -> u32 {
    node_key(node_id) % max_groups(view)
}

/// A network view cut along the routing mesh's largest split.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Split {
    /// The view of every group, indexed by group: every backend of the services not split and
    /// the group's backends of the others, and no node address.
    pub groups: Vec<NetworkView>,
    /// The nodes' own (ingress) addresses by class: those of the nodes whose
    /// [`node_key`] modulo the largest split is the index, in the full view's order.
    pub forwarders: Vec<Vec<EndpointView>>,
}

/// `full` cut in the views of every group of its largest split, in one pass over its endpoints
/// (see [`Split`]). Empty when no service is split (`full` serves every node).
pub fn split(full: &NetworkView) -> Split {
    let most = max_groups(full);
    if most <= 1 {
        return Split::default();
    }
    let groups_of: std::collections::HashMap<&str, u32> = full
        .services
        .iter()
        .map(|s| (s.service_id.as_str(), s.subset_groups.max(1)))
        .collect();
    let mut views: Vec<NetworkView> = (0..most)
        .map(|g| NetworkView {
            network: full.network.clone(),
            endpoints: Vec::new(),
            services: full
                .services
                .iter()
                .map(|s| {
                    let mut s = s.clone();
                    s.subset = g % s.subset_groups.max(1);
                    s
                })
                .collect(),
            version: full.version,
        })
        .collect();
    let mut forwarders = vec![Vec::new(); most as usize];
    for e in &full.endpoints {
        if e.task_id.is_empty() {
            let class = node_key(&e.node_id) % most;
            forwarders[class as usize].push(e.clone());
            continue;
        }
        let groups = groups_of.get(e.service_id.as_str()).copied().unwrap_or(1);
        if groups <= 1 {
            for v in &mut views {
                v.endpoints.push(e.clone());
            }
            continue;
        }
        // Every group of the largest split congruent to the backend's group modulo its own.
        let own = backend_group(e.slot, &e.node_id, groups);
        let mut g = own;
        while g < most {
            views[g as usize].endpoints.push(EndpointView::clone(e));
            g += groups;
        }
    }
    Split {
        groups: views,
        forwarders,
    }
}

/// Which classes of node addresses ([`Split::forwarders`]) a node needs: the nodes that can
/// forward a connection to one of its backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Every node's (a backend of a service that is not split is balanced over by every node).
    All,
    /// The classes listed (ascending, no duplicates; empty: the node hosts no backend).
    Classes(Vec<u32>),
}

impl Reach {
    /// Whether class `class` is reached.
    pub fn contains(&self, class: u32) -> bool {
        match self {
            Reach::All => true,
            Reach::Classes(c) => c.binary_search(&class).is_ok(),
        }
    }
}

/// The classes of node addresses a node hosting `backends` (service id, slot) needs with
/// `view`, a view (full or of a group) of the split routing mesh: for a backend in group g of a
/// service split in G, the classes c with c ≡ g (mod G) under the largest split; every class
/// for a backend of a service that is not split or not in the view (it may be balanced by any
/// node). A backend's group is its slot's ([`backend_group`]), or the node's for a global one.
pub fn reach<'a>(
    view: &NetworkView,
    node_id: &str,
    backends: impl IntoIterator<Item = (&'a str, u64)>,
) -> Reach {
    let most = max_groups(view);
    let mut classes = std::collections::BTreeSet::new();
    for (service_id, slot) in backends {
        let groups = view
            .services
            .iter()
            .find(|s| s.service_id == service_id)
            .map_or(1, |s| s.subset_groups.max(1));
        if groups <= 1 || most <= 1 {
            return Reach::All;
        }
        let mut c = backend_group(slot, node_id, groups);
        while c < most {
            classes.insert(c);
            c += groups;
        }
    }
    if classes.len() as u64 >= u64::from(most) {
        return Reach::All;
    }
    Reach::Classes(classes.into_iter().collect())
}

#[cfg(test)]
mod tests;
