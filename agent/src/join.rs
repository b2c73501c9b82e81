//! Joining a cluster: pin the CA by the token's fingerprint, prove the token, get a certificate
//! for a key made here, and keep it all in the data dir for restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shoal_proto::pki::{self, Identity, Trust};
use shoal_proto::token::JoinToken;
use shoal_proto::v1::ca_client::CaClient;
use shoal_proto::v1::IssueCertificateRequest;

/// Errors while joining or loading the agent's identity.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The token does not parse.
    #[error(transparent)]
    Token(#[from] shoal_proto::token::TokenError),
    /// TLS or certificate handling.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// The manager refused.
    #[error("the manager refused to join this node: {}", .0.message())]
    Refused(tonic::Status),
    /// A file in the data dir.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A private file or directory of the data dir could not be written or secured.
    #[error(transparent)]
    Private(#[from] shoal_proto::secure_file::SecureFileError),
    /// agent.json is corrupt.
    #[error("{path}: {reason}")]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What the agent keeps about itself in `DATA_DIR/agent.json`, written last when joining.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentState {
    /// The node id the cluster gave us.
    pub node_id: String,
    /// Manager addresses to dial.
    pub managers: Vec<String>,
}

/// A joined agent's identity.
#[derive(Debug, Clone)]
pub struct Joined {
    /// Persisted state.
    pub state: AgentState,
    /// Cluster CA, PEM.
    pub ca_pem: String,
    /// Node certificate and key.
    pub identity: Identity,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JoinError + '_ {
    move |source| JoinError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a file of the agent's identity owner-only (0600) from its first byte.
fn write_private(path: &Path, contents: &str) -> Result<(), JoinError> {
    Ok(shoal_proto::secure_file::write_private(
        path,
        contents.as_bytes(),
    )?)
}

/// Makes the data dir owner-only (0700, created if missing) and takes group and other access
/// away from the identity files an older version left open (`certs/`, `agent.json`). Images and
/// container files keep their own modes: the directory's mode is what keeps others out of them.
pub fn secure_data_dir(data_dir: &Path) -> Result<(), JoinError> {
    use shoal_proto::secure_file::{ensure_private_dir, tighten, tighten_tree};
    ensure_private_dir(data_dir)?;
    tighten_tree(&data_dir.join("certs"))?;
    tighten(&data_dir.join("agent.json"))?;
    Ok(())
}

/// Loads a previous join from the data dir, if there was one, after [`secure_data_dir`].
pub fn load(data_dir: &Path) -> Result<Option<Joined>, JoinError> {
    secure_data_dir(data_dir)?;
    let state_path = data_dir.join("agent.json");
    if !state_path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&state_path).map_err(io(&state_path))?;
    let state: AgentState = serde_json::from_str(&text).map_err(|e| JoinError::State {
        path: state_path.clone(),
        reason: e.to_string(),
    })?;
    let certs = data_dir.join("certs");
    let read = |name: &str| {
        let p = certs.join(name);
        std::fs::read_to_string(&p).map_err(io(&p))
    };
    Ok(Some(Joined {
        state,
        ca_pem: read("ca.pem")?,
        identity: Identity {
            cert_pem: read("node.pem")?,
            key_pem: read("node-key.pem")?,
        },
    }))
}

/// Joins the cluster at `manager` with `token`; writes nothing unless the manager accepted us.
pub async fn join(
    data_dir: &Path,
    token: &str,
    manager: &str,
    hostname: &str,
) -> Result<Joined, JoinError> {
    let token = JoinToken::parse(token)?;
    let config = pki::client_config(&Trust::Pinned(token.ca_fingerprint.clone()), None)?;
    let channel = pki::connect(manager, Arc::new(config)).await?;
    let (csr_pem, key_pem) = pki::generate_csr(hostname)?;
    let resp = CaClient::new(channel)
        .max_encoding_message_size(shoal_proto::limits::MAX_CA_MESSAGE_BYTES)
        .max_decoding_message_size(shoal_proto::limits::MAX_CA_MESSAGE_BYTES)
        .issue_certificate(IssueCertificateRequest {
            token: token.to_string(),
            csr_pem,
            node_id: String::new(),
            hostname: hostname.to_string(),
        })
        .await
        .map_err(JoinError::Refused)?
        .into_inner();
    // The TLS handshake already pinned the CA; check the CA we were handed is that one too.
    if pki::fingerprint_pem(&resp.ca_cert_pem)? != token.ca_fingerprint {
        return Err(JoinError::Refused(tonic::Status::permission_denied(
            "the manager sent a CA that does not match the join token",
        )));
    }
    let mut managers = resp.managers.clone();
    if !managers.iter().any(|m| m == manager) {
        managers.insert(0, manager.to_string());
    }
    let certs = data_dir.join("certs");
    secure_data_dir(data_dir)?;
    shoal_proto::secure_file::ensure_private_dir(&certs)?;
    write_private(&certs.join("ca.pem"), &resp.ca_cert_pem)?;
    write_private(&certs.join("node.pem"), &resp.cert_pem)?;
    write_private(&certs.join("node-key.pem"), &key_pem)?;
    let state = AgentState {
        node_id: resp.node_id.clone(),
        managers,
    };
    let state_path = data_dir.join("agent.json");
    let text = serde_json::to_string_pretty(&state).map_err(|e| JoinError::State {
        path: state_path.clone(),
        reason: e.to_string(),
    })?;
    write_private(&state_path, &text)?;
    Ok(Joined {
        state,
        ca_pem: resp.ca_cert_pem,
        identity: Identity {
            cert_pem: resp.cert_pem,
            key_pem,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
    }

    #[test]
    fn an_old_open_data_dir_is_made_private_and_images_keep_their_modes() {
        let base = tempfile::tempdir().expect("tempdir");
        let data = base.path().join("agent");
        std::fs::create_dir_all(data.join("certs")).expect("mkdir");
        std::fs::create_dir_all(data.join("images")).expect("mkdir");
        for (p, m) in [
            (data.join("certs/node-key.pem"), 0o644),
            (data.join("certs/node.pem"), 0o644),
            (data.join("agent.json"), 0o644),
            (data.join("images/layer"), 0o755),
        ] {
            std::fs::write(&p, b"x").expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).expect("chmod");
        }
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        secure_data_dir(&data).expect("secure");
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("certs")), 0o700);
        assert_eq!(mode(&data.join("certs/node-key.pem")), 0o600);
        assert_eq!(mode(&data.join("certs/node.pem")), 0o600);
        assert_eq!(mode(&data.join("agent.json")), 0o600);
        assert_eq!(mode(&data.join("images/layer")), 0o755);
        // Not joined yet: nothing to load, but the data dir is made, private, all the same.
        let fresh = base.path().join("fresh");
        assert!(load(&fresh).expect("load").is_none());
        assert_eq!(mode(&fresh), 0o700);
    }
}
