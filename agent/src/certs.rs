//! The agent's certificate: renewed on its own at a random point between 50 % and 80 % of its
//! lifetime, and at once when a CA rotation made its issuer the old CA; what it trusts follows
//! what the dispatcher says (a `TrustUpdate` at every session and after every CA change). The
//! session reconnects whenever either changes, so no connection outlives its credentials, and
//! containers are never touched by any of it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use shoal_proto::live_tls::LiveTls;
use shoal_proto::pki::{self, Identity, PkiError};
use shoal_proto::v1::ca_client::CaClient;
use shoal_proto::v1::{RenewCertificateRequest, TrustUpdate};
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use crate::join::Joined;

/// Errors of the certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The node's certificate expired while the node was away: it cannot authenticate anymore.
    #[error(
        "this node's certificate expired at {expired} (the node was offline longer than its lifetime): remove the node (`shoalctl node rm {node_id}`), then clear {data_dir} and join again with `shoal-agent join --token-file PATH MANAGER`"
    )]
    Expired {
        /// When it expired (RFC 3339).
        expired: String,
        /// The node.
        node_id: String,
        /// The agent's data dir.
        data_dir: String,
    },
    /// A certificate or key could not be read or used.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Writing the new certificate failed.
    #[error("{path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: shoal_proto::secure_file::SecureFileError,
    },
    /// The manager refused or failed the renewal.
    #[error("renewal: {}", .0.message())]
    Rpc(#[from] tonic::Status),
}

/// Refuses to start with an expired certificate, saying what to do instead of failing later
/// with a TLS error.
pub fn check_not_expired(joined: &Joined, data_dir: &Path) -> Result<(), CertError> {
    let v = pki::validity(&joined.identity.cert_pem)?;
    if v.expired_at(SystemTime::now()) {
        return Err(CertError::Expired {
            expired: humantime_rfc3339(v.not_after),
            node_id: joined.state.node_id.clone(),
            data_dir: data_dir.display().to_string(),
        });
    }
    Ok(())
}

fn humantime_rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The node's live TLS material and what keeps it current.
pub struct NodeCerts {
    live: Arc<LiveTls>,
    certs_dir: PathBuf,
    managers: Mutex<Vec<String>>,
    /// Rung when a CA rotation asks for a renewal now.
    renew_now: Notify,
    /// Fingerprint of the CA that signs now, as the dispatcher last said.
    signing_ca: Mutex<String>,
}

impl NodeCerts {
    /// The material of a joined node (its data dir's `certs/`).
    pub fn new(joined: &Joined, data_dir: &Path) -> Result<Arc<NodeCerts>, CertError> {
        Ok(Arc::new(NodeCerts {
            live: LiveTls::new(joined.identity.clone(), &joined.ca_pem)?,
            certs_dir: data_dir.join("certs"),
            managers: Mutex::new(joined.state.managers.clone()),
            renew_now: Notify::new(),
            signing_ca: Mutex::new(String::new()),
        }))
    }

    /// The live material every connection of the agent uses.
    pub fn live(&self) -> Arc<LiveTls> {
        self.live.clone()
    }

    /// Managers to renew through (the session learns new ones).
    pub fn learn_managers(&self, managers: &[String]) {
        let mut known = self.managers.lock().unwrap_or_else(PoisonError::into_inner);
        for m in managers {
            if !known.contains(m) {
                known.push(m.clone());
            }
        }
    }

    /// Applies what the dispatcher says to trust; asks for a renewal now when the node's
    /// certificate comes from another CA than the one signing now.
    pub fn trust(&self, update: &TrustUpdate) {
        if update.ca_bundle_pem.trim().is_empty() {
            return;
        }
        if update.ca_bundle_pem != self.live.roots_pem() {
            match self.live.update(None, Some(&update.ca_bundle_pem)) {
                Ok(()) => {
                    info!(ca = %short(&update.ca_fingerprint), "trusted CAs changed");
                    let path = self.certs_dir.join("ca.pem");
                    if let Err(e) = shoal_proto::secure_file::write_private(
                        &path,
                        update.ca_bundle_pem.as_bytes(),
                    ) {
                        warn!(path = %path.display(), error = %e, "writing the CA bundle");
                    }
                }
                Err(e) => warn!(error = %e, "the cluster's CA bundle is unusable"),
            }
        }
        *self
            .signing_ca
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = update.ca_fingerprint.clone();
        if !self.issued_by_signing_ca(&update.ca_bundle_pem, &update.ca_fingerprint) {
            self.renew_now.notify_one();
        }
    }

    /// Whether the certificate must be renewed now: past its renewal point `at`, or issued by
    /// another CA than the one the dispatcher last named as signing.
    fn needs_renewal(&self, at: SystemTime) -> bool {
        if SystemTime::now() >= at {
            return true;
        }
        let signing = self
            .signing_ca
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        signing.is_empty() || !self.issued_by_signing_ca(&self.live.roots_pem(), &signing)
    }

    /// Whether the node's certificate was issued by the CA with fingerprint `fp` (found in
    /// `bundle`).
    fn issued_by_signing_ca(&self, bundle: &str, fp: &str) -> bool {
        let cert = self.live.identity().cert_pem;
        pki::find_in_bundle(bundle, fp).is_none_or(|ca| pki::issued_by(&cert, ca).unwrap_or(true))
    }

    /// Renews the certificate at its renewal point (or when told to), until `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut retry = Duration::from_secs(1);
        loop {
            let at = pki::renewal_point(&self.live.identity().cert_pem);
            let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.renew_now.notified() => {
                    // The same trust arrives again with every session (and the session reopens
                    // after a renewal): renew only if the certificate still needs it.
                    if !self.needs_renewal(at) {
                        continue;
                    }
                }
                _ = shutdown.changed() => return,
            }
            loop {
                match self.renew().await {
                    Ok(()) => {
                        retry = Duration::from_secs(1);
                        break;
                    }
                    Err(e) => {
                        warn!(error = %e, retry_s = retry.as_secs(), "certificate renewal failed");
                        tokio::select! {
                            _ = tokio::time::sleep(retry) => {}
                            _ = shutdown.changed() => return,
                        }
                        retry = (retry * 2).min(Duration::from_secs(60));
                    }
                }
            }
        }
    }

    /// One renewal: a new key, a certificate for it from any manager, written to disk and put
    /// in use (the session then reconnects with it).
    async fn renew(&self) -> Result<(), CertError> {
        let (csr, key_pem) = pki::generate_csr("renewal")?;
        let managers = self
            .managers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let channel = pki::connect_any(&managers, Arc::new(self.live.client_config()?)).await?;
        let resp = CaClient::new(channel)
            .max_decoding_message_size(shoal_proto::limits::MAX_CA_MESSAGE_BYTES)
            .max_encoding_message_size(shoal_proto::limits::MAX_CA_MESSAGE_BYTES)
            .renew_certificate(RenewCertificateRequest { csr_pem: csr })
            .await?
            .into_inner();
        // Key first: a crash between the writes leaves a certificate without its key, which the
        // next start reports, never a key nobody can use.
        self.write("node-key.pem", &key_pem)?;
        self.write("node.pem", &resp.cert_pem)?;
        self.write("ca.pem", &resp.ca_bundle_pem)?;
        self.live.update(
            Some(Identity {
                cert_pem: resp.cert_pem,
                key_pem,
            }),
            Some(&resp.ca_bundle_pem),
        )?;
        info!(
            expires = %humantime_rfc3339(
                SystemTime::UNIX_EPOCH + Duration::from_nanos(resp.expires_at.max(0) as u64)
            ),
            "node certificate renewed"
        );
        Ok(())
    }

    fn write(&self, name: &str, contents: &str) -> Result<(), CertError> {
        let path = self.certs_dir.join(name);
        shoal_proto::secure_file::write_private(&path, contents.as_bytes())
            .map_err(|source| CertError::Write { path, source })
    }
}

fn short(fp: &str) -> &str {
    &fp[..fp.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::pki::CertRole;

    #[test]
    fn renewal_falls_between_half_and_four_fifths() {
        let ca = pki::generate_ca("c").expect("ca");
        let id = pki::issue(&ca, "n", CertRole::Worker, Duration::from_secs(1000)).expect("issue");
        let v = pki::validity(&id.cert_pem).expect("validity");
        for _ in 0..50 {
            let at = pki::renewal_point(&id.cert_pem);
            assert!(at >= v.at_fraction(0.5) && at <= v.at_fraction(0.8));
        }
        // Short lifetimes are backdated little, so the point stays well before expiry.
        assert!(v.at_fraction(0.8) < v.not_after);
        let life = v.not_after.duration_since(v.not_before).expect("life");
        assert!(life <= Duration::from_secs(1100), "lifetime {life:?}");
    }
}
