//! Finding admin.conf and opening the mutual-TLS connection to a manager.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use shoal_proto::config::AdminConfig;
use shoal_proto::pki::{self, Identity, Trust};
use shoal_proto::v1::control_client::ControlClient;
use tonic::transport::Channel;

/// The gRPC client of the manager's Control service.
pub type Control = ControlClient<Channel>;

/// A live connection: the client and the manager address that answered.
pub struct Connection {
    /// The Control API client.
    pub control: Control,
    /// The manager address (IP:PORT) the connection went to.
    pub manager_addr: String,
    /// The channel itself, for the other services the manager serves.
    pub channel: Channel,
}

/// Where admin.conf is looked for when neither --config nor SHOAL_CONFIG is given, in order.
pub fn default_config_paths(home: Option<&Path>) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(home) = home {
        paths.push(home.join(".shoal").join("admin.conf"));
    }
    paths.push(PathBuf::from("/var/lib/shoal/manager/admin.conf"));
    paths
}

/// The admin.conf to use: the explicit one, or the first default that exists.
pub fn find_config(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let candidates = default_config_paths(home.as_deref());
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            anyhow!(
                "no admin.conf found (tried {}): pass --config FILE or set SHOAL_CONFIG to the admin.conf that `shoal-manager init` wrote in its data dir",
                tried.join(", ")
            )
        })
}

/// Loads admin.conf and connects to the first manager that answers.
pub async fn connect(explicit_config: Option<&Path>) -> Result<Connection> {
    let path = find_config(explicit_config)?;
    let cfg = AdminConfig::load(&path)?;
    if cfg.managers.is_empty() {
        return Err(anyhow!("{}: lists no manager address", path.display()));
    }
    // A configuration without a client certificate still connects (the managers then refuse
    // every call with a clear "no client certificate" error instead of a TLS failure).
    let identity = (!cfg.cert.trim().is_empty()).then(|| Identity {
        cert_pem: cfg.cert.clone(),
        key_pem: cfg.key.clone(),
    });
    let tls = pki::client_config(&Trust::Ca(cfg.ca_cert.clone()), identity.as_ref())
        .with_context(|| format!("{}: unusable certificates", path.display()))?;
    let tls = Arc::new(tls);
    // Tried one by one (rather than pki::connect_any) to know which manager answered, and to
    // report every address that failed.
    let mut failures = Vec::new();
    for addr in &cfg.managers {
        match pki::connect(addr, tls.clone()).await {
            Ok(channel) => {
                return Ok(Connection {
                    control: ControlClient::new(channel.clone()),
                    manager_addr: addr.clone(),
                    channel,
                })
            }
            Err(e) => failures.push(crate::error_chain(&anyhow::Error::new(e))),
        }
    }
    Err(anyhow!("no manager reachable: {}", failures.join("; ")))
}

/// Turns a gRPC status into an error whose text is the manager's message (which names the field).
pub fn status(s: tonic::Status) -> anyhow::Error {
    let msg = s.message().trim();
    if msg.is_empty() {
        anyhow!("{}", s.code().description())
    } else {
        anyhow!("{msg}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_paths_in_order() {
        let p = default_config_paths(Some(Path::new("/home/a")));
        assert_eq!(
            p,
            vec![
                PathBuf::from("/home/a/.shoal/admin.conf"),
                PathBuf::from("/var/lib/shoal/manager/admin.conf")
            ]
        );
        assert_eq!(default_config_paths(None).len(), 1);
    }

    #[test]
    fn explicit_config_wins() {
        let p = find_config(Some(Path::new("/x/admin.conf"))).expect("explicit");
        assert_eq!(p, PathBuf::from("/x/admin.conf"));
    }

    #[test]
    fn status_message_is_the_error() {
        let e = status(tonic::Status::invalid_argument(
            "--replicas: must be 0 or more",
        ));
        assert_eq!(e.to_string(), "--replicas: must be 0 or more");
        let e = status(tonic::Status::unavailable(""));
        assert!(!e.to_string().is_empty());
    }
}
