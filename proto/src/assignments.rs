//! Assignment sets sent as deltas: what the manager computes ([`view_delta`], [`keyed_diff`],
//! [`same_for_agent`]) and what the agent applies ([`apply`]), in one place so that
//! `apply(old, delta(old, new)) == new` is one crate's promise, tested here.
//!
//! Every keyed collection is kept in one order on both sides (tasks, services, secrets, configs
//! and mesh peers by id; endpoints by (task id, node id, address); networks by id), so a set
//! rebuilt from deltas equals the full set of the same version element for element.

use std::cmp::Ordering;
use std::collections::HashSet;

use crate::v1::{
    network_view_change, Assignments, AssignmentsDelta, Config, EndpointView, MeshPeer,
    NetworkView, NetworkViewDelta, Secret, ServiceView, Task,
};

/// Why a delta cannot be applied: the agent must ask for the full set again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// The delta was made for another version of the set than the one held.
    #[error("assignments delta for version {base}, but version {held} is held")]
    Base {
        /// The delta's base.
        base: u64,
        /// The version held.
        held: u64,
    },
    /// A network view's delta was made for another version of the view than the one held.
    #[error("view delta of network {network} for version {base}, but version {held} is held")]
    ViewBase {
        /// The network's id.
        network: String,
        /// The delta's base.
        base: u64,
        /// The version held (0: the view is not held at all).
        held: u64,
    },
    /// A network view's endpoints, once the delta was applied, are not as many as it says.
    #[error("view of network {network} has {got} endpoints after its delta, {want} expected")]
    ViewCount {
        /// The network's id.
        network: String,
        /// How many the delta says.
        want: u64,
        /// How many there are.
        got: u64,
    },
    /// A change names no view at all.
    #[error("a network view change carries neither a view nor a delta")]
    EmptyChange,
}

/// Whether `a` and `b`, two versions of one task, are the same as far as an agent that already
/// holds the task is concerned: everything but the status (the agent's own report, echoed back)
/// and the meta (its write version). The agent reads a known task's desired state only; the other
/// fields are compared too so that nothing it might read later is ever stale.
pub fn same_for_agent(a: &Task, b: &Task) -> bool {
    // Destructured so that a new field of `Task` must be placed on one side or the other here.
    let Task {
        id,
        meta: _,
        service_id,
        service_name,
        slot,
        node_id,
        spec,
        spec_version,
        status: _,
        desired_state,
        networks,
        endpoint,
    } = a;
    *id == b.id
        && *desired_state == b.desired_state
        && *spec_version == b.spec_version
        && *slot == b.slot
        && *node_id == b.node_id
        && *service_id == b.service_id
        && *service_name == b.service_name
        && *networks == b.networks
        && *endpoint == b.endpoint
        && *spec == b.spec
}

/// The elements of `new` that are not in `old` or differ from it (by `same`), and the keys of
/// `old` that are not in `new`. Keys are unique within each list.
pub fn keyed_diff<T: Clone>(
    old: &[T],
    new: &[T],
    key: impl Fn(&T) -> &str,
    same: impl Fn(&T, &T) -> bool,
) -> (Vec<T>, Vec<String>) {
    let before: std::collections::HashMap<&str, &T> = old.iter().map(|t| (key(t), t)).collect();
    let upserts = new
        .iter()
        .filter(|n| before.get(key(n)).is_none_or(|o| !same(o, n)))
        .cloned()
        .collect();
    let now: HashSet<&str> = new.iter().map(&key).collect();
    let removed = old
        .iter()
        .map(&key)
        .filter(|k| !now.contains(k))
        .map(str::to_string)
        .collect();
    (upserts, removed)
}

/// Applies upserts and removals by key onto `list`, then restores its order.
fn apply_keyed<T>(
    list: &mut Vec<T>,
    upserts: Vec<T>,
    removed: &[String],
    key: impl Fn(&T) -> &str,
    order: impl Fn(&T, &T) -> Ordering,
) {
    if upserts.is_empty() && removed.is_empty() {
        return;
    }
    let mut gone: HashSet<&str> = removed.iter().map(String::as_str).collect();
    let replaced: HashSet<String> = upserts.iter().map(|t| key(t).to_string()).collect();
    gone.extend(replaced.iter().map(String::as_str));
    list.retain(|t| !gone.contains(key(t)));
    list.extend(upserts);
    // Mostly sorted already (the kept elements are): the stable sort merges two runs.
    list.sort_by(order);
}

fn endpoint_order(e: &EndpointView) -> (&str, &str, &str) {
    (&e.task_id, &e.node_id, &e.addr)
}

/// The difference from `old` to `new`, two versions of one network's view.
pub fn view_delta(old: &NetworkView, new: &NetworkView) -> NetworkViewDelta {
    let (endpoints, removed_endpoints) =
        keyed_diff(&old.endpoints, &new.endpoints, |e| &e.addr, PartialEq::eq);
    let (services, removed_services) = keyed_diff(
        &old.services,
        &new.services,
        |s| &s.service_id,
        PartialEq::eq,
    );
    NetworkViewDelta {
        network_id: network_id(new).to_string(),
        base: old.version,
        version: new.version,
        network: (old.network != new.network)
            .then(|| new.network.clone())
            .flatten(),
        endpoints,
        removed_endpoints,
        services,
        removed_services,
        endpoint_count: new.endpoints.len() as u64,
    }
}

/// Whether a view delta changes nothing but the version.
pub fn view_delta_is_empty(d: &NetworkViewDelta) -> bool {
    d.network.is_none()
        && d.endpoints.is_empty()
        && d.removed_endpoints.is_empty()
        && d.services.is_empty()
        && d.removed_services.is_empty()
}

/// Applies a view delta onto the view it was made for.
pub fn apply_view_delta(view: &mut NetworkView, d: NetworkViewDelta) -> Result<(), DeltaError> {
    if view.version != d.base || network_id(view) != d.network_id {
        return Err(DeltaError::ViewBase {
            network: d.network_id,
            base: d.base,
            held: view.version,
        });
    }
    if let Some(n) = d.network {
        view.network = Some(n);
    }
    apply_keyed(
        &mut view.endpoints,
        d.endpoints,
        &d.removed_endpoints,
        |e: &EndpointView| &e.addr,
        |a, b| endpoint_order(a).cmp(&endpoint_order(b)),
    );
    apply_keyed(
        &mut view.services,
        d.services,
        &d.removed_services,
        |s: &ServiceView| &s.service_id,
        |a, b| a.service_id.cmp(&b.service_id),
    );
    view.version = d.version;
    if view.endpoints.len() as u64 != d.endpoint_count {
        return Err(DeltaError::ViewCount {
            network: d.network_id,
            want: d.endpoint_count,
            got: view.endpoints.len() as u64,
        });
    }
    Ok(())
}

/// Whether an assignments delta changes nothing.
pub fn is_empty(d: &AssignmentsDelta) -> bool {
    d.tasks.is_empty()
        && d.removed_tasks.is_empty()
        && d.networks.is_empty()
        && d.removed_networks.is_empty()
        && d.node.is_none()
        && d.mesh_peers.is_empty()
        && d.removed_mesh_peers.is_empty()
        && d.secrets.is_empty()
        && d.removed_secrets.is_empty()
        && d.configs.is_empty()
        && d.removed_configs.is_empty()
}

fn network_id(v: &NetworkView) -> &str {
    v.network.as_ref().map_or("", |n| n.id.as_str())
}

/// Applies `d` onto `set`, the set of version `d.base`. On an error `set` may be left half
/// changed: the caller must drop it and ask for the full set.
pub fn apply(set: &mut Assignments, d: AssignmentsDelta) -> Result<(), DeltaError> {
    if set.version != d.base {
        return Err(DeltaError::Base {
            base: d.base,
            held: set.version,
        });
    }
    apply_keyed(
        &mut set.tasks,
        d.tasks,
        &d.removed_tasks,
        |t: &Task| &t.id,
        |a, b| a.id.cmp(&b.id),
    );
    // Networks: removals, then whole views and deltas, in one pass keyed by id.
    let mut full = Vec::new();
    let removed: HashSet<&str> = d.removed_networks.iter().map(String::as_str).collect();
    set.networks.retain(|v| !removed.contains(network_id(v)));
    for change in d.networks {
        match change.change {
            Some(network_view_change::Change::Full(v)) => full.push(v),
            Some(network_view_change::Change::Delta(delta)) => {
                let Some(view) = set
                    .networks
                    .iter_mut()
                    .find(|v| network_id(v) == delta.network_id)
                else {
                    return Err(DeltaError::ViewBase {
                        network: delta.network_id,
                        base: delta.base,
                        held: 0,
                    });
                };
                apply_view_delta(view, delta)?;
            }
            None => return Err(DeltaError::EmptyChange),
        }
    }
    apply_keyed(
        &mut set.networks,
        full,
        &[],
        |v: &NetworkView| network_id(v),
        |a, b| network_id(a).cmp(network_id(b)),
    );
    if let Some(node) = d.node {
        set.node_attachments = node.node_attachments;
        set.mesh_addr = node.mesh_addr;
    }
    apply_keyed(
        &mut set.mesh_peers,
        d.mesh_peers,
        &d.removed_mesh_peers,
        |p: &MeshPeer| &p.node_id,
        |a, b| a.node_id.cmp(&b.node_id),
    );
    apply_keyed(
        &mut set.secrets,
        d.secrets,
        &d.removed_secrets,
        |s: &Secret| &s.id,
        |a, b| a.id.cmp(&b.id),
    );
    apply_keyed(
        &mut set.configs,
        d.configs,
        &d.removed_configs,
        |c: &Config| &c.id,
        |a, b| a.id.cmp(&b.id),
    );
    set.version = d.version;
    Ok(())
}

#[cfg(test)]
mod tests;
