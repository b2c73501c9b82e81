//! `shoalctl cluster join-token`, `cluster status`.

use anyhow::Result;
use shoal_proto::v1::{
    ClusterStatusRequest, DemoteManagerRequest, JoinTokenRequest, ManagerInfo, NodeRole,
};

use crate::cli::{Format, JoinTokenArgs, Role};
use crate::client::{Control, ManagerChannel};
use crate::output;

/// What `join-token` prints without `-q`: the command a new node runs, like docker's.
pub fn join_instructions(role: Role, token: &str, manager_addr: &str) -> String {
    let (who, command) = match role {
        Role::Worker => ("worker", "shoal-agent join --data-dir /var/lib/shoal/agent"),
        Role::Manager => (
            "manager",
            "shoal-manager join --data-dir /var/lib/shoal/manager --listen-addr IP:4242",
        ),
    };
    // As `shoal-manager init` prints it: the token goes into a root-only file (echo is a shell
    // builtin, so it never shows in ps), not onto the join command line every user can read.
    format!(
        "To add a {who} to this cluster, run the following commands:\n\n    (umask 077; echo {token} > /etc/shoal/join-token)\n    {command} --token-file /etc/shoal/join-token {manager_addr}\n\n"
    )
}

/// `cluster join-token worker|manager [--rotate] [-q]`.
pub async fn join_token(c: &mut Control, a: &JoinTokenArgs, manager_addr: &str) -> Result<()> {
    let role = match a.role {
        Role::Worker => NodeRole::RoleWorker,
        Role::Manager => NodeRole::RoleManager,
    };
    let token = c
        .join_token(JoinTokenRequest {
            role: role as i32,
            rotate: a.rotate,
        })
        .await
        .map_err(crate::client::status)?
        .into_inner()
        .token;
    if a.quiet {
        return Ok(output::print(&format!("{token}\n"))?);
    }
    let mut text = String::new();
    if a.rotate {
        let who = if a.role == Role::Worker {
            "worker"
        } else {
            "manager"
        };
        text.push_str(&format!("Successfully rotated {who} join token.\n\n"));
    }
    text.push_str(&join_instructions(a.role, &token, manager_addr));
    Ok(output::print(&text)?)
}

/// The `--format json` object of one manager.
pub fn manager_json(m: &ManagerInfo) -> serde_json::Value {
    serde_json::json!({
        "NodeID": m.node_id, "Addr": m.addr, "RaftID": m.raft_id, "Leader": m.leader,
        "Term": m.term, "Commit": m.commit, "Applied": m.applied, "Reachable": m.reachable,
        "Error": m.error,
    })
}

/// The table of managers `cluster status` prints.
pub fn manager_table(managers: &[ManagerInfo]) -> String {
    let mut t = output::table::Table::new(&[
        "NODE ID",
        "ADDR",
        "RAFT ID",
        "LEADER",
        "TERM",
        "COMMIT",
        "APPLIED",
        "REACHABLE",
    ]);
    for m in managers {
        let reach = if m.reachable {
            "yes".to_string()
        } else {
            format!("no ({})", m.error)
        };
        t.row(vec![
            m.node_id.clone(),
            m.addr.clone(),
            m.raft_id.to_string(),
            if m.leader { "*".into() } else { String::new() },
            m.term.to_string(),
            m.commit.to_string(),
            m.applied.to_string(),
            reach,
        ]);
    }
    t.render()
}

/// `cluster status`: every manager as it reports itself.
pub async fn status(channel: ManagerChannel, format: Format) -> Result<()> {
    let managers = crate::client::cluster_admin(channel)
        .cluster_status(ClusterStatusRequest {})
        .await
        .map_err(status_err)?
        .into_inner()
        .managers;
    let text = match format {
        Format::Json => managers
            .iter()
            .map(|m| output::json::line(&manager_json(m)))
            .collect(),
        Format::Table => manager_table(&managers),
    };
    Ok(output::print(&text)?)
}

/// `node demote NODE...`: each manager leaves the Raft group and becomes a worker node.
pub async fn demote(channel: ManagerChannel, nodes: &[String]) -> Result<()> {
    let mut client = crate::client::cluster_admin(channel);
    for node in nodes {
        client
            .demote_manager(DemoteManagerRequest { node: node.clone() })
            .await
            .map_err(status_err)?;
        output::print(&format!("Manager {node} demoted in the cluster.\n"))?;
    }
    Ok(())
}

fn status_err(s: tonic::Status) -> anyhow::Error {
    crate::client::status(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions() {
        assert_eq!(
            join_instructions(Role::Worker, "SHOAL-1-abc", "10.0.0.1:4242"),
            "To add a worker to this cluster, run the following commands:\n\n    (umask 077; echo SHOAL-1-abc > /etc/shoal/join-token)\n    shoal-agent join --data-dir /var/lib/shoal/agent --token-file /etc/shoal/join-token 10.0.0.1:4242\n\n"
        );
        assert!(join_instructions(Role::Manager, "t", "a:1").starts_with("To add a manager"));
    }

    #[test]
    fn manager_rows() {
        let m = ManagerInfo {
            node_id: "n1".into(),
            addr: "10.0.0.1:4242".into(),
            raft_id: 1,
            leader: true,
            term: 3,
            commit: 10,
            applied: 10,
            reachable: true,
            error: String::new(),
        };
        let text = manager_table(std::slice::from_ref(&m));
        assert!(text
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("10.0.0.1:4242") && l.contains('*')));
        assert_eq!(manager_json(&m)["RaftID"], 1);
        assert_eq!(manager_json(&m)["Leader"], true);
    }
}
