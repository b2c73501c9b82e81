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
//! The nodes' own ingress addresses stay in every view: a backend answers whichever node
//! forwarded the connection (the reply goes to that node's ingress address, which the backend's
//! node must resolve), and a node hosting a backend of a service that is not split can be sent
//! connections by any node.

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
    let groups = groups.max(1);
    if slot == 0 {
        node_key(node_id) % groups
    } else {
        // `groups` is at most 2^16, so the remainder fits.
        ((slot - 1) % u64::from(groups)) as u32
    }
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

/// The views of every group of `full`'s largest split, indexed by group, in one pass over its
/// endpoints: each with the nodes' addresses, every backend of the services not split, and its
/// group's backends of the others. Empty when no service is split (`full` serves every node).
pub fn split(full: &NetworkView) -> Vec<NetworkView> {
    let most = max_groups(full);
    if most <= 1 {
        return Vec::new();
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
    for e in &full.endpoints {
        let groups = if e.task_id.is_empty() {
            1
        } else {
            groups_of.get(e.service_id.as_str()).copied().unwrap_or(1)
        };
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
    views
}

#[cfg(test)]
mod tests;
