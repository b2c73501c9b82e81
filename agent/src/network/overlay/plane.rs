//! A task's service plane on its overlays: its DNS resolver at 127.0.0.11 and its VIP rules,
//! and the node's published ports, all rewritten from the views whenever they change.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use shoal_proto::v1::{NetworkView, Task};
use tracing::warn;

use super::{bridge_name, is_ingress, Inner, Networks};
use crate::network::dns::{self, Resolver, ResolverHandle};
use crate::network::lb::{self, HostPort, Protocol, Vip};

/// A task's service plane: its resolver and what was last applied.
pub(super) struct Plane {
    /// The task's namespace.
    pub(super) netns: PathBuf,
    /// The overlays the task is on (no overlay: no plane to refresh).
    pub(super) networks: Vec<String>,
    /// The task's DNS resolver, if it started.
    pub(super) resolver: Option<ResolverHandle>,
    /// The VIP rules last applied in the task's namespace.
    pub(super) vips: Option<Vec<Vip>>,
    /// The task's host-mode published ports.
    pub(super) host_ports: Vec<HostPort>,
}

/// The task's host-mode published ports, forwarded to `local_ip` (its default-bridge address).
pub(super) fn host_ports(task: &Task, local_ip: Ipv4Addr) -> Vec<HostPort> {
    task.endpoint
        .iter()
        .flat_map(|e| e.ports.iter())
        .filter(|p| p.is_host_mode() && p.published_port != 0)
        .filter_map(|p| {
            Some(HostPort {
                protocol: Protocol::parse(&p.protocol)?,
                published_port: u16::try_from(p.published_port).ok()?,
                addr: local_ip,
                target_port: u16::try_from(p.target_port).ok()?,
            })
        })
        .collect()
}

impl Networks {
    /// Starts the task's DNS resolver at 127.0.0.11; a task whose resolver fails still runs
    /// (without service discovery), so the failure is logged, not returned.
    pub(super) async fn start_resolver(
        &self,
        task_id: &str,
        ns_path: &Path,
    ) -> Option<ResolverHandle> {
        match Resolver::start(task_id, ns_path, self.upstreams.clone()).await {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(task.id = %task_id, error = %e, "DNS resolver did not start");
                None
            }
        }
    }

    /// Records the task's service plane (replacing and stopping an earlier one) and rewrites the
    /// rules if it changes any.
    pub(super) async fn install_plane(&self, task_id: &str, plane: Plane) {
        let mut inner = self.inner.lock().await;
        inner.released.remove(task_id);
        // A task on no overlay and publishing no host port changes no rule: skip the pass over
        // every task (a 100-replica service attaches 100 of them at once).
        let mut changes_rules = !plane.networks.is_empty() || !plane.host_ports.is_empty();
        if let Some(old) = inner.planes.insert(task_id.to_string(), plane) {
            changes_rules |= !old.networks.is_empty() || !old.host_ports.is_empty();
            if let Some(r) = old.resolver {
                r.stop().await;
            }
        }
        if changes_rules {
            self.refresh_planes(&mut inner).await;
        }
    }

    /// Rewrites every task's DNS records and VIP rules and the node's published ports from the
    /// current views; only what changed is applied. Failures are logged, not fatal.
    pub(super) async fn refresh_planes(&self, inner: &mut Inner) {
        let views = inner.views.clone();
        for (task_id, plane) in inner.planes.iter_mut() {
            if plane.networks.is_empty() {
                continue;
            }
            let mine: Vec<NetworkView> = plane
                .networks
                .iter()
                .filter_map(|n| views.get(n).cloned())
                .collect();
            if let Some(r) = &plane.resolver {
                r.update(dns::records_for(&mine));
            }
            let vips = lb::vips_for(&mine);
            if plane.vips.as_ref() != Some(&vips) {
                match lb::apply_vip(task_id, &plane.netns, &vips).await {
                    Ok(()) => plane.vips = Some(vips),
                    Err(e) => warn!(task.id = %task_id, error = %e, "VIP rules not applied"),
                }
            }
        }
        let ingress = views.values().find(|v| is_ingress(v));
        let mut rules = ingress.map(lb::ingress_port_rules).unwrap_or_default();
        let host: Vec<HostPort> = inner
            .planes
            .values()
            .flat_map(|p| p.host_ports.iter().cloned())
            .collect();
        rules.extend(lb::host_port_rules(&host));
        let bridge = ingress
            .and_then(|v| v.network.as_ref())
            .map(|n| bridge_name(&n.id));
        let wanted = (bridge.clone(), rules);
        let unchanged = match &inner.ports {
            Some(last) => *last == wanted,
            None => wanted.1.is_empty(),
        };
        if !unchanged && !wanted.1.is_empty() && inner.guard.is_none() {
            // Publishing turns on route_localnet, safe only behind the guard's loopback rule.
            warn!("published ports not applied: the exposure rules are not in place");
        } else if !unchanged {
            match lb::apply_ports(self.host_netns.as_deref(), bridge.as_deref(), &wanted.1).await {
                Ok(()) => inner.ports = Some(wanted),
                Err(e) => warn!(error = %e, "published ports not applied"),
            }
        }
    }
}
