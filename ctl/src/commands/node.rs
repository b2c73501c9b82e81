//! `shoalctl node ls|inspect`.

use anyhow::{anyhow, Result};
use serde_json::json;
use shoal_proto::v1::{GetNodeRequest, ListNodesRequest, Node, NodeRole};

use crate::cli::{Format, NodeInspectArgs, NodeLsArgs};
use crate::client::{status, Control};
use crate::output::{self, json as js, table::Table};

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
}

/// Docker's MANAGER STATUS column.
pub fn manager_status(n: &Node) -> String {
    let is_manager = n
        .spec
        .as_ref()
        .is_some_and(|s| s.role == NodeRole::RoleManager as i32);
    match &n.manager_status {
        Some(ms) if ms.leader => "Leader".into(),
        Some(ms) if !ms.reachability.is_empty() => output::capitalize(&ms.reachability),
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
        ]
    }

    /// The `--format json` object.
    pub fn json(&self) -> serde_json::Value {
        json!({"ID": self.id, "Hostname": self.hostname, "Status": self.status,
               "Availability": self.availability, "ManagerStatus": self.manager_status})
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
    let mut out = String::new();
    if a.quiet {
        rows.iter()
            .for_each(|r| out.push_str(&format!("{}\n", r.id)));
        return Ok(output::print(&out)?);
    }
    match format {
        Format::Json => rows.iter().for_each(|r| out.push_str(&js::line(&r.json()))),
        Format::Table => {
            let mut t = Table::new(&["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS"]);
            rows.iter().for_each(|r| t.row(r.cells()));
            out = t.render();
        }
    }
    Ok(output::print(&out)?)
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
    if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("{}", errors.join("; ")))
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
        assert_eq!(w.cells(), vec!["n1", "host1", "Down", "Pause", ""]);
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
            "{\"Availability\":\"Pause\",\"Hostname\":\"host1\",\"ID\":\"n1\",\"ManagerStatus\":\"\",\"Status\":\"Down\"}\n"
        );
    }
}
