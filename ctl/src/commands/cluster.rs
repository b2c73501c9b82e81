//! `shoalctl cluster join-token`.

use anyhow::Result;
use shoal_proto::v1::{JoinTokenRequest, NodeRole};

use crate::cli::{JoinTokenArgs, Role};
use crate::client::{status, Control};
use crate::output;

/// What `join-token` prints without `-q`: the command a new node runs, like docker's.
pub fn join_instructions(role: Role, token: &str, manager_addr: &str) -> String {
    let (who, command) = match role {
        Role::Worker => ("worker", "shoal-agent join --data-dir /var/lib/shoal/agent"),
        Role::Manager => (
            "manager",
            "shoal-manager join --data-dir /var/lib/shoal/manager",
        ),
    };
    format!(
        "To add a {who} to this cluster, run the following command:\n\n    {command} --token {token} {manager_addr}\n\n"
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
        .map_err(status)?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions() {
        assert_eq!(
            join_instructions(Role::Worker, "SHOAL-1-abc", "10.0.0.1:4242"),
            "To add a worker to this cluster, run the following command:\n\n    shoal-agent join --data-dir /var/lib/shoal/agent --token SHOAL-1-abc 10.0.0.1:4242\n\n"
        );
        assert!(join_instructions(Role::Manager, "t", "a:1").starts_with("To add a manager"));
    }
}
