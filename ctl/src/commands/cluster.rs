//! `shoalctl cluster join-token`, `cluster status`, `cluster admin ls|revoke`.

use anyhow::Result;
use shoal_proto::v1::{
    AdminCredential, ClusterStatusRequest, DemoteManagerRequest, JoinTokenRequest,
    ListAdminCredentialsRequest, ManagerInfo, NodeRole, RevokeAdminCredentialRequest,
};

use crate::cli::{AdminRevokeArgs, Format, JoinTokenArgs, Role};
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
        "Error": m.error, "DockerAPIAddr": m.docker_api_addr,
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

/// How many hex digits of a fingerprint the admin table shows.
const SHORT_FINGERPRINT: usize = 12;

/// The `--format json` object of one admin credential.
pub fn admin_json(c: &AdminCredential) -> serde_json::Value {
    serde_json::json!({
        "Fingerprint": c.fingerprint, "Holder": c.holder, "IssuedAt": output::rfc3339(c.issued_at),
    })
}

/// The table `cluster admin ls` prints; `caller` (the fingerprint in use) is marked `*`.
pub fn admin_table(creds: &[AdminCredential], caller: &str) -> String {
    let mut t = output::table::Table::new(&["ID", "HOLDER", "ISSUED"]);
    for c in creds {
        let short: String = c.fingerprint.chars().take(SHORT_FINGERPRINT).collect();
        let id = if !caller.is_empty() && c.fingerprint == caller {
            format!("{short} *")
        } else {
            short
        };
        let issued = if c.issued_at > 0 {
            output::rfc3339(c.issued_at)
        } else {
            "unknown".into()
        };
        t.row(vec![id, c.holder.clone(), issued]);
    }
    t.render()
}

/// `cluster admin ls`: every admin credential the cluster accepts.
pub async fn admin_ls(channel: ManagerChannel, format: Format) -> Result<()> {
    let resp = crate::client::cluster_admin(channel)
        .list_admin_credentials(ListAdminCredentialsRequest {})
        .await
        .map_err(status_err)?
        .into_inner();
    let text = match format {
        Format::Json => resp
            .credentials
            .iter()
            .map(|c| output::json::line(&admin_json(c)))
            .collect(),
        Format::Table => admin_table(&resp.credentials, &resp.caller_fingerprint),
    };
    Ok(output::print(&text)?)
}

/// `cluster admin revoke FINGERPRINT_PREFIX [--force]`.
pub async fn admin_revoke(channel: ManagerChannel, a: &AdminRevokeArgs) -> Result<()> {
    let revoked = crate::client::cluster_admin(channel)
        .revoke_admin_credential(RevokeAdminCredentialRequest {
            fingerprint_prefix: a.fingerprint_prefix.clone(),
            force: a.force,
        })
        .await
        .map_err(status_err)?
        .into_inner()
        .revoked
        .unwrap_or_default();
    Ok(output::print(&format!(
        "Admin credential {} (holder {}) revoked.\n",
        revoked.fingerprint, revoked.holder
    ))?)
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
    fn admin_rows() {
        let creds = vec![
            AdminCredential {
                fingerprint: "0123456789abcdef0123".into(),
                holder: "init".into(),
                issued_at: 1_700_000_000_000_000_000,
                expires_at: 0,
            },
            AdminCredential {
                fingerprint: "fedcba9876543210fedc".into(),
                holder: "n2".into(),
                issued_at: 0,
                expires_at: 0,
            },
        ];
        let text = admin_table(&creds, "fedcba9876543210fedc");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("ID")
                && lines[0].contains("HOLDER")
                && lines[0].contains("ISSUED")
        );
        assert!(lines[1].starts_with("0123456789ab ") && lines[1].contains("init"));
        assert!(lines[2].starts_with("fedcba987654 *") && lines[2].contains("unknown"));
        let j = admin_json(&creds[0]);
        assert_eq!(j["Fingerprint"], "0123456789abcdef0123");
        assert_eq!(j["Holder"], "init");
        assert!(j["IssuedAt"]
            .as_str()
            .is_some_and(|s| s.starts_with("2023-")));
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
            docker_api_addr: String::new(),
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
