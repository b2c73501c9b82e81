//! TLS material that changes while connections use it: the certificate a process presents (renewed
//! before it expires) and the CAs it trusts (two during a CA rotation). Client and server
//! configurations built from a [`LiveTls`] read the current material at every handshake, so a
//! renewal or a rotation takes effect on the next connection without restarting anything.
//!
//! TLS session resumption is off in both directions: a resumed session would carry the peer
//! certificate of its first handshake, and authorisation reads that certificate.

use std::sync::{Arc, PoisonError, RwLock};

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};
use tokio::sync::watch;

use crate::pki::{certs_from_pem, key_from_pem, Identity, PkiError};

/// The material of one moment: identity and trusted CAs, with the verifiers built from them.
struct Material {
    identity: Identity,
    key: Arc<CertifiedKey>,
    roots_pem: String,
    server_verifier: Arc<WebPkiServerVerifier>,
    client_verifier: Arc<dyn ClientCertVerifier>,
}

/// A process's current TLS identity and trust, replaceable at run time.
pub struct LiveTls {
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Material>>,
    /// Bumped at every change, so holders of long-lived connections can reconnect.
    changes: watch::Sender<u64>,
    /// Bumped only when the identity changes (a renewal), not for trust alone.
    identity_changes: watch::Sender<u64>,
}

impl std::fmt::Debug for LiveTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTls").finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl LiveTls {
    /// Material presenting `identity` and trusting every CA in `roots_pem`.
    pub fn new(identity: Identity, roots_pem: &str) -> Result<Arc<LiveTls>, PkiError> {
        let provider = provider();
        let material = build(&provider, identity, roots_pem)?;
        Ok(Arc::new(LiveTls {
            provider,
            current: RwLock::new(Arc::new(material)),
            changes: watch::channel(0).0,
            identity_changes: watch::channel(0).0,
        }))
    }

    fn material(&self) -> Arc<Material> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the identity, the trusted CAs, or both; `None` keeps the current one.
    pub fn update(
        &self,
        identity: Option<Identity>,
        roots_pem: Option<&str>,
    ) -> Result<(), PkiError> {
        let now = self.material();
        let new_identity = identity.is_some();
        let identity = identity.unwrap_or_else(|| now.identity.clone());
        let roots = roots_pem.unwrap_or(&now.roots_pem);
        let material = build(&self.provider, identity, roots)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(material);
        self.changes.send_modify(|n| *n += 1);
        if new_identity {
            self.identity_changes.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    /// The identity presented now.
    pub fn identity(&self) -> Identity {
        self.material().identity.clone()
    }

    /// The CAs trusted now, PEM.
    pub fn roots_pem(&self) -> String {
        self.material().roots_pem.clone()
    }

    /// Notified at every change of identity or trust.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Notified when the identity changes (a renewal); a change of trust alone does not notify.
    /// A connection made with the old identity is still valid while a CA is added, and by the
    /// time a CA is dropped every holder has renewed under the new one.
    pub fn subscribe_identity(&self) -> watch::Receiver<u64> {
        self.identity_changes.subscribe()
    }

    /// A client configuration that presents the current identity and trusts the current CAs.
    pub fn client_config(self: &Arc<Self>) -> Result<ClientConfig, PkiError> {
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LiveServerVerifier(self.clone())))
            .with_client_cert_resolver(Arc::new(LiveClientCert(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        Ok(config)
    }

    /// A server configuration presenting the current identity; a client certificate is verified
    /// against the current CAs when presented and optional at the TLS layer (a joining node has
    /// none yet; every service but the CA's refuses a call without one).
    pub fn server_config(self: &Arc<Self>) -> Result<ServerConfig, PkiError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(self.client_verifier(false))
            .with_cert_resolver(Arc::new(LiveServerCert(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec()];
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(config)
    }
}

impl LiveTls {
    /// A client-certificate verifier over the CAs trusted at each handshake (renewal and CA
    /// rotation included). `mandatory`: a client without a certificate fails the handshake (the
    /// Docker API's listener); otherwise it is let through for the services to refuse (the gRPC
    /// listener, where a joining node has none yet).
    pub fn client_verifier(self: &Arc<Self>, mandatory: bool) -> Arc<dyn ClientCertVerifier> {
        Arc::new(LiveClientVerifier {
            tls: self.clone(),
            mandatory,
        })
    }
}

fn build(
    provider: &Arc<CryptoProvider>,
    identity: Identity,
    roots_pem: &str,
) -> Result<Material, PkiError> {
    let key = CertifiedKey::from_der(
        certs_from_pem(&identity.cert_pem)?,
        key_from_pem(&identity.key_pem)?,
        provider,
    )?;
    let mut roots = RootCertStore::empty();
    for c in certs_from_pem(roots_pem)? {
        roots.add(c)?;
    }
    if roots.is_empty() {
        return Err(PkiError::Pem {
            what: "CA bundle",
            reason: "no certificate found".into(),
        });
    }
    let roots = Arc::new(roots);
    let server_verifier =
        WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    Ok(Material {
        identity,
        key: Arc::new(key),
        roots_pem: roots_pem.to_string(),
        server_verifier,
        client_verifier,
    })
}

#[derive(Debug)]
struct LiveClientCert(Arc<LiveTls>);

impl ResolvesClientCert for LiveClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.material().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[derive(Debug)]
struct LiveServerCert(Arc<LiveTls>);

impl ResolvesServerCert for LiveServerCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.material().key.clone())
    }
}

#[derive(Debug)]
struct LiveServerVerifier(Arc<LiveTls>);

impl ServerCertVerifier for LiveServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.material().server_verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    crate::pki::provider_signatures!(self => self.0.provider);
}

#[derive(Debug)]
struct LiveClientVerifier {
    tls: Arc<LiveTls>,
    mandatory: bool,
}

impl ClientCertVerifier for LiveClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The hints would borrow from material that may be replaced; clients have one
        // certificate each and present it regardless.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.tls
            .material()
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    crate::pki::provider_signatures!(self => self.tls.provider);
}
