//! `shoalctl node ls|inspect|update|rm|promote`.

use anyhow::{anyhow, Result};
use serde_json::json;
use shoal_proto::v1::{
    GetNodeRequest, ListNodesRequest, Node, NodeAvailability, NodeRole, RemoveNodeRequest,
    UpdateNodeRequest,
};
use shoal_proto::wire::Reachability;

use crate::cli::{
    Availability, Format, NodeInspectArgs, NodeLsArgs, NodePromoteArgs, NodeRmArgs, NodeUpdateArgs,
};
use crate::client::{status, Control};
use crate::output::{self, json as js};

/// A `node ls` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    /// Full node ID (docker prints it untruncated).
    pub id: String,
    /// Hostname the agent reported.
    pub hostname: String,
    /// "Ready" | "Down" | "Disconnected" | "Unknown".
    pub status: String,
    /// "Active" | "Pause" | "Drain".
    pub availability: String,
    /// "Leader" | "Reachable" | "Unreachable" | "" (workers).
    pub manager_status: String,
    /// CPUs the node offers, in 1e-9 CPUs.
    pub nano_cpus: i64,
    /// Memory the node offers, in bytes.
    pub memory_bytes: i64,
}

/// Docker's MANAGER STATUS column.
pub fn manager_status(n: &Node) -> String {
    let is_manager = n
        .spec
        .as_ref()
        .is_some_and(|s| s.role == NodeRole::RoleManager as i32);
    match &n.manager_status {
        Some(ms) if ms.leader => "Leader".into(),
        Some(ms) if ms.reachability_kind() != Ok(Reachability::Unknown) => {
            output::capitalize(&ms.reachability)
        }
        Some(_) => "Unknown".into(),
        None if is_manager => "Unknown".into(),
        None => String::new(),
    }
}

impl NodeRow {
    /// The row of one node.
    pub fn of(n: &Node) -> Self {
        let spec = n.spec.clone().unwrap_or_default();
        NodeRow {
            id: n.id.clone(),
            hostname: n
                .description
                .as_ref()
                .map(|d| d.hostname.clone())
                .unwrap_or_default(),
            status: output::capitalize(output::node_state_name(
                n.status.as_ref().map(|s| s.state).unwrap_or_default(),
            )),
            availability: output::capitalize(output::availability_name(spec.availability)),
            manager_status: manager_status(n),
            nano_cpus: n
                .description
                .as_ref()
                .and_then(|d| d.resources)
                .map_or(0, |r| r.nano_cpus),
            memory_bytes: n
                .description
                .as_ref()
                .and_then(|d| d.resources)
                .map_or(0, |r| r.memory_bytes),
        }
    }

    /// Table cells in column order.
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.hostname.clone(),
            self.status.clone(),
            self.availability.clone(),
            self.manager_status.clone(),
            format_cpus(self.nano_cpus),
            format_memory(self.memory_bytes),
        ]
    }

    /// The `--format json` object (docker's fields, plus the node's resources).
    pub fn json(&self) -> serde_json::Value {
        json!({"ID": self.id, "Hostname": self.hostname, "Status": self.status,
               "Availability": self.availability, "ManagerStatus": self.manager_status,
               "NanoCPUs": self.nano_cpus, "MemoryBytes": self.memory_bytes})
    }
}

/// CPUS column: "2", "0.5"; empty when unknown (a manager-only node).
fn format_cpus(nano: i64) -> String {
    if nano <= 0 {
        String::new()
    } else {
        format!("{}", nano as f64 / 1e9)
    }
}

/// MEMORY column: "1GiB"; empty when unknown.
fn format_memory(bytes: i64) -> String {
    if bytes <= 0 {
        String::new()
    } else {
        shoal_proto::units::format_bytes(bytes)
    }
}

/// `node ls`.
pub async fn ls(c: &mut Control, a: &NodeLsArgs, format: Format) -> Result<()> {
    let mut nodes = c
        .list_nodes(ListNodesRequest {})
        .await
        .map_err(status)?
        .into_inner()
        .nodes;
    let mut rows: Vec<NodeRow> = nodes.drain(..).map(|n| NodeRow::of(&n)).collect();
    rows.sort_by(|x, y| (&x.hostname, &x.id).cmp(&(&y.hostname, &y.id)));
    if a.quiet {
        return Ok(output::print_lines(rows.iter().map(|r| &r.id))?);
    }
    let headers = [
        "ID",
        "HOSTNAME",
        "STATUS",
        "AVAILABILITY",
        "MANAGER STATUS",
        "CPUS",
        "MEMORY",
    ];
    Ok(output::print_rows(
        &rows,
        format,
        &headers,
        NodeRow::json,
        NodeRow::cells,
    )?)
}

/// `node inspect NODE...`: a JSON array of the nodes found; an error names the others.
pub async fn inspect(c: &mut Control, a: &NodeInspectArgs) -> Result<()> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in &a.nodes {
        let res = c
            .get_node(GetNodeRequest {
                name_or_id: name.clone(),
            })
            .await;
        match res.map(|r| r.into_inner().node) {
            Ok(Some(n)) => found.push(js::node(&n)),
            Ok(None) => errors.push(format!("no such node: {name}")),
            Err(s) => errors.push(status(s).to_string()),
        }
    }
    output::print(&js::pretty_array(found))?;
    super::fail_if_any(errors)
}

/// The request of `node update`; an error names the flag when nothing is asked.
pub fn update_request(a: &NodeUpdateArgs) -> Result<UpdateNodeRequest> {
    if a.availability.is_none() && a.label_add.is_empty() && a.label_rm.is_empty() {
        return Err(anyhow!(
            "--availability, --label-add or --label-rm: nothing to update"
        ));
    }
    let availability = a.availability.map(|av| {
        (match av {
            Availability::Active => NodeAvailability::AvailabilityActive,
            Availability::Pause => NodeAvailability::AvailabilityPause,
            Availability::Drain => NodeAvailability::AvailabilityDrain,
        }) as i32
    });
    Ok(UpdateNodeRequest {
        name_or_id: a.node.clone(),
        availability,
        labels_add: a.label_add.iter().cloned().collect(),
        labels_rm: a.label_rm.clone(),
    })
}

/// `node update NODE`: prints the node's ID, as docker does.
pub async fn update(c: &mut Control, a: &NodeUpdateArgs) -> Result<()> {
    let req = update_request(a)?;
    let node = c
        .update_node(req)
        .await
        .map_err(status)?
        .into_inner()
        .node
        .ok_or_else(|| anyhow!("the manager answered without the updated node"))?;
    Ok(output::print(&format!("{}\n", node.id))?)
}

/// `node rm NODE...`: removes each, printing its name; keeps going past failures.
pub async fn rm(
    c: &mut Control,
    channel: crate::client::ManagerChannel,
    a: &NodeRmArgs,
) -> Result<()> {
    let mut errors = Vec::new();
    let mut admin = crate::client::cluster_admin(channel);
    for name in &a.nodes {
        // A manager leaves the Raft group first (refused if that would lose quorum); its record
        // goes next, whatever its status, since removing that manager is what was asked.
        let is_manager = match c
            .get_node(shoal_proto::v1::GetNodeRequest {
                name_or_id: name.clone(),
            })
            .await
        {
            Ok(r) => r
                .into_inner()
                .node
                .is_some_and(|n| n.manager_status.is_some()),
            Err(s) => {
                errors.push(format!("{name}: {}", status(s)));
                continue;
            }
        };
        if is_manager {
            if let Err(s) = admin
                .demote_manager(shoal_proto::v1::DemoteManagerRequest { node: name.clone() })
                .await
            {
                errors.push(format!("{name}: {}", status(s)));
                continue;
            }
        }
        let res = c
            .remove_node(RemoveNodeRequest {
                name_or_id: name.clone(),
                force: a.force || is_manager,
            })
            .await;
        match res {
            Ok(_) => output::print(&format!("{name}\n"))?,
            Err(s) => errors.push(format!("{name}: {}", status(s))),
        }
    }
    super::fail_if_any(errors)
}

/// `node promote NODE...`: asks the leader to promote each worker (its agent starts a manager
/// that joins as the same node), then waits until each is a manager, unless `--detach`.
pub async fn promote(
    c: &mut Control,
    channel: crate::client::ManagerChannel,
    a: &NodePromoteArgs,
) -> Result<()> {
    let mut admin = crate::client::cluster_admin(channel);
    for name in &a.nodes {
        let id = admin
            .promote_node(shoal_proto::v1::PromoteNodeRequest { node: name.clone() })
            .await
            .map_err(status)?
            .into_inner()
            .node_id;
        if !a.detach {
            wait_manager(c, &id, a.timeout)
                .await
                .map_err(|e| anyhow!("{name}: {e}"))?;
        }
        output::print(&format!(
            "Node {name} promoted to a manager in the cluster.\n"
        ))?;
    }
    Ok(())
}

/// Waits until node `id` is a Raft member (it has a manager status).
async fn wait_manager(c: &mut Control, id: &str, timeout: std::time::Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let node = c
            .get_node(GetNodeRequest {
                name_or_id: id.to_string(),
            })
            .await
            .map_err(status)?
            .into_inner()
            .node;
        match node {
            Some(n) if n.manager_status.is_some() => return Ok(()),
            Some(n) if n.spec.as_ref().map(|s| s.role) != Some(NodeRole::RoleManager as i32) => {
                return Err(anyhow!("the promotion was called off (node demote)"))
            }
            Some(_) => {}
            None => return Err(anyhow!("the node was removed")),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(anyhow!(
                "not a manager after {}s: its agent starts `shoal-manager join` on its host; see the agent's log (is shoal-manager installed next to shoal-agent? can the host reach the managers?). `node demote` calls the promotion off",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{ManagerStatus, NodeDescription, NodeSpec, NodeStatus};

    fn node(role: NodeRole, ms: Option<ManagerStatus>) -> Node {
        Node {
            id: "n1".into(),
            spec: Some(NodeSpec {
                role: role as i32,
                availability: 1,
                ..Default::default()
            }),
            description: Some(NodeDescription {
                hostname: "host1".into(),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: 1,
                ..Default::default()
            }),
            manager_status: ms,
            ..Default::default()
        }
    }

    #[test]
    fn rows() {
        let w = NodeRow::of(&node(NodeRole::RoleWorker, None));
        assert_eq!(w.cells(), vec!["n1", "host1", "Down", "Pause", "", "", ""]);
        let leader = ManagerStatus {
            leader: true,
            reachability: "reachable".into(),
            ..Default::default()
        };
        let m = NodeRow::of(&node(NodeRole::RoleManager, Some(leader)));
        assert_eq!(m.manager_status, "Leader");
        let unreachable = ManagerStatus {
            reachability: "unreachable".into(),
            ..Default::default()
        };
        let m = NodeRow::of(&node(NodeRole::RoleManager, Some(unreachable)));
        assert_eq!(m.manager_status, "Unreachable");
        assert_eq!(
            js::line(&w.json()),
            "{\"Availability\":\"Pause\",\"Hostname\":\"host1\",\"ID\":\"n1\",\"ManagerStatus\":\"\",\"MemoryBytes\":0,\"NanoCPUs\":0,\"Status\":\"Down\"}\n"
        );
        let mut big = node(NodeRole::RoleWorker, None);
        if let Some(d) = big.description.as_mut() {
            d.resources = Some(shoal_proto::v1::Resources {
                nano_cpus: 2_500_000_000,
                memory_bytes: 4 << 30,
            });
        }
        let r = NodeRow::of(&big);
        assert_eq!(r.cells()[5..], ["2.5".to_string(), "4GiB".to_string()]);
        assert_eq!(r.json()["MemoryBytes"], 4_i64 << 30);
    }

    #[test]
    fn update_requests() {
        let args = |availability, add: &[(&str, &str)], rm: &[&str]| NodeUpdateArgs {
            availability,
            label_add: add
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            label_rm: rm.iter().map(|s| s.to_string()).collect(),
            node: "w1".into(),
        };
        let e = update_request(&args(None, &[], &[])).expect_err("nothing");
        assert!(e.to_string().starts_with("--availability"), "{e}");
        let r = update_request(&args(Some(Availability::Drain), &[("zone", "a")], &["x"]))
            .expect("valid");
        assert_eq!(
            r.availability,
            Some(NodeAvailability::AvailabilityDrain as i32)
        );
        assert_eq!(r.labels_add.get("zone").map(String::as_str), Some("a"));
        assert_eq!(r.labels_rm, vec!["x"]);
        assert_eq!(r.name_or_id, "w1");
        let r = update_request(&args(Some(Availability::Active), &[], &[])).expect("valid");
        assert_eq!(
            r.availability,
            Some(NodeAvailability::AvailabilityActive as i32)
        );
    }
}
