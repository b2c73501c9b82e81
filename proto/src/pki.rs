//! The cluster's certificate authority and the mutual-TLS plumbing every gRPC connection uses.
//!
//! Managers present a certificate chain `leaf + CA` for the fixed server name [`SERVER_NAME`], so a
//! client dials any manager address without IP SANs. Clients either trust the CA outright (they hold
//! its PEM) or, before joining, pin it by the SHA-256 fingerprint carried in a join token.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, RootCertStore};
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint};

/// The name every manager certificate carries and every client verifies.
pub const SERVER_NAME: &str = "shoal-manager";

/// Errors of certificate handling and connection set-up.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused to make or sign a certificate.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A PEM block did not parse.
    #[error("invalid PEM ({what}): {reason}")]
    Pem {
        /// Which PEM (certificate, key, ...).
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The endpoint address is not usable.
    #[error("invalid manager address {addr:?}: {reason}")]
    Address {
        /// The address as given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Connecting failed.
    #[error("cannot connect to manager at {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
}

/// A certificate with its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Certificate chain PEM (leaf first).
    pub cert_pem: String,
    /// PKCS#8 private key PEM.
    pub key_pem: String,
}

/// SHA-256 of a certificate's DER, lower-case hex.
pub fn fingerprint_der(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// SHA-256 of the first certificate in a PEM, lower-case hex.
pub fn fingerprint_pem(pem: &str) -> Result<String, PkiError> {
    let certs = certs_from_pem(pem)?;
    let first = certs.first().ok_or(PkiError::Pem {
        what: "certificate",
        reason: "no certificate found".into(),
    })?;
    Ok(fingerprint_der(first.as_ref()))
}

pub(crate) fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem {
            what: "certificate",
            reason: e.to_string(),
        })
}

pub(crate) fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| PkiError::Pem {
            what: "private key",
            reason: e.to_string(),
        })?
        .ok_or(PkiError::Pem {
            what: "private key",
            reason: "no private key found".into(),
        })
}

/// Creates a new self-signed root CA for a cluster.
pub fn generate_ca(cluster_id: &str) -> Result<Identity, PkiError> {
    let (key, params) = ca_params(cluster_id)?;
    let cert = params.self_signed(&key)?;
    Ok(Identity {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A new root CA to replace `old` (`cluster ca --rotate`), and the new CA's certificate signed by
/// the old one (same subject and key): presented after a leaf, it lets a node that trusts only
/// the old CA verify certificates of the new one.
pub fn generate_rotation_ca(
    cluster_id: &str,
    old: &Identity,
) -> Result<(Identity, String), PkiError> {
    let (key, params) = ca_params(cluster_id)?;
    let cert = params.self_signed(&key)?;
    let old_issuer = Issuer::from_ca_cert_pem(&old.cert_pem, KeyPair::from_pem(&old.key_pem)?)?;
    let cross = params.signed_by(&key, &old_issuer)?;
    Ok((
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        },
        cross.pem(),
    ))
}

/// Key and parameters of a root CA. Each CA gets a subject of its own (a random serial-like
/// unit), so certificates of the old and the new CA of a rotation never look alike by name.
fn ca_params(cluster_id: &str) -> Result<(KeyPair, CertificateParams), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "shoal-root-ca");
    dn.push(DnType::OrganizationName, cluster_id);
    dn.push(
        DnType::OrganizationalUnitName,
        format!("ca-{}", &crate::new_id()[..12]),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_after = rcgen::date_time_ymd(2046, 1, 1);
    Ok((key, params))
}

/// A fresh key and a certificate signing request for it; the key stays with the caller.
pub fn generate_csr(common_name: &str) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// What a certificate is for; decides its SANs and key usages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRole {
    /// A manager: server and client (Raft between managers).
    Manager,
    /// A worker's agent: client only.
    Worker,
    /// shoalctl's admin certificate: client only.
    Admin,
}

impl CertRole {
    fn org_unit(self) -> &'static str {
        match self {
            CertRole::Manager => "shoal-manager",
            CertRole::Worker => "shoal-worker",
            CertRole::Admin => "shoal-admin",
        }
    }
}

/// Signs a CSR with the cluster CA, producing `leaf + CA` chain PEM.
pub fn sign_csr(
    ca: &Identity,
    csr_pem: &str,
    subject: &str,
    role: CertRole,
    lifetime: Duration,
) -> Result<String, PkiError> {
    sign_csr_with_sans(ca, csr_pem, subject, role, lifetime, &[])
}

/// A subject alternative name a manager certificate carries besides [`SERVER_NAME`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtraSan {
    /// An IP address clients dial (docker verifies the host of `DOCKER_HOST`).
    Ip(std::net::IpAddr),
    /// A DNS name clients dial.
    Dns(String),
}

/// Makes a key and a manager certificate signed by `ca` carrying `extra` SANs besides
/// [`SERVER_NAME`]: for a listener whose clients verify the address they dial (the Docker API).
pub fn issue_manager_with_sans(
    ca: &Identity,
    subject: &str,
    extra: &[ExtraSan],
    lifetime: Duration,
) -> Result<Identity, PkiError> {
    let (csr, key_pem) = generate_csr(subject)?;
    Ok(Identity {
        cert_pem: sign_csr_with_sans(ca, &csr, subject, CertRole::Manager, lifetime, extra)?,
        key_pem,
    })
}

fn sign_csr_with_sans(
    ca: &Identity,
    csr_pem: &str,
    subject: &str,
    role: CertRole,
    lifetime: Duration,
    extra: &[ExtraSan],
) -> Result<String, PkiError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, subject);
    dn.push(DnType::OrganizationalUnitName, role.org_unit());
    csr.params.distinguished_name = dn;
    csr.params.subject_alt_names = match role {
        CertRole::Manager => vec![rcgen::SanType::DnsName(SERVER_NAME.try_into()?)],
        CertRole::Worker | CertRole::Admin => Vec::new(),
    };
    for san in extra {
        csr.params.subject_alt_names.push(match san {
            ExtraSan::Ip(ip) => rcgen::SanType::IpAddress(*ip),
            ExtraSan::Dns(name) => rcgen::SanType::DnsName(name.as_str().try_into()?),
        });
    }
    csr.params.is_ca = IsCa::ExplicitNoCa;
    csr.params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    csr.params.extended_key_usages = match role {
        CertRole::Manager => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    let now = SystemTime::now();
    csr.params.not_before = (now - backdate(lifetime)).into();
    csr.params.not_after = (now + lifetime).into();
    let cert = csr.signed_by(&issuer)?;
    Ok(format!("{}{}", cert.pem(), ca.cert_pem))
}

/// How far before its issue a certificate is valid from: clock skew between hosts, up to an hour,
/// but never more than a tenth of the lifetime (short test lifetimes keep their renewal point).
fn backdate(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(3600))
}

/// Makes a key and a CA-signed certificate in one step (for the manager's own and admin certs).
pub fn issue(
    ca: &Identity,
    subject: &str,
    role: CertRole,
    lifetime: Duration,
) -> Result<Identity, PkiError> {
    let (csr, key_pem) = generate_csr(subject)?;
    Ok(Identity {
        cert_pem: sign_csr(ca, &csr, subject, role, lifetime)?,
        key_pem,
    })
}

/// When a certificate (the first of a PEM) is valid from and until.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Not before.
    pub not_before: SystemTime,
    /// Not after.
    pub not_after: SystemTime,
}

impl Validity {
    /// The point at `fraction` (0..=1) of the lifetime.
    pub fn at_fraction(&self, fraction: f64) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life.mul_f64(fraction.clamp(0.0, 1.0))
    }

    /// Whether the certificate has expired at `now`.
    pub fn expired_at(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }

    /// `not_after` as Unix nanoseconds.
    pub fn not_after_ns(&self) -> i64 {
        self.not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0)
    }
}

/// The validity of the first certificate in a PEM.
pub fn validity(pem: &str) -> Result<Validity, PkiError> {
    let certs = certs_from_pem(pem)?;
    let first = certs.first().ok_or(PkiError::Pem {
        what: "certificate",
        reason: "no certificate found".into(),
    })?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(first.as_ref()).map_err(|e| PkiError::Pem {
            what: "certificate",
            reason: e.to_string(),
        })?;
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            SystemTime::UNIX_EPOCH
        }
    };
    Ok(Validity {
        not_before: at(cert.validity().not_before),
        not_after: at(cert.validity().not_after),
    })
}

/// Whether the first certificate of `cert_pem` was issued by the CA `ca_pem` (its issuer is the
/// CA's subject; CA subjects are unique per CA, see [`generate_ca`]).
pub fn issued_by(cert_pem: &str, ca_pem: &str) -> Result<bool, PkiError> {
    let leaf = certs_from_pem(cert_pem)?;
    let ca = certs_from_pem(ca_pem)?;
    let (Some(leaf), Some(ca)) = (leaf.first(), ca.first()) else {
        return Ok(false);
    };
    let parse = |der: &[u8]| {
        x509_parser::parse_x509_certificate(der)
            .map(|(_, c)| (c.issuer().as_raw().to_vec(), c.subject().as_raw().to_vec()))
            .map_err(|e| PkiError::Pem {
                what: "certificate",
                reason: e.to_string(),
            })
    };
    let (leaf_issuer, _) = parse(leaf.as_ref())?;
    let (_, ca_subject) = parse(ca.as_ref())?;
    Ok(leaf_issuer == ca_subject)
}

/// The certificate of a PEM bundle whose fingerprint is `fp` (a CA bundle during a rotation holds
/// two), as its own PEM block.
pub fn find_in_bundle<'a>(bundle: &'a str, fp: &str) -> Option<&'a str> {
    bundle
        .split_inclusive("-----END CERTIFICATE-----")
        .map(str::trim)
        .filter(|p| p.starts_with("-----BEGIN CERTIFICATE-----"))
        .find(|p| fingerprint_pem(p).is_ok_and(|f| f == fp))
}

/// The first certificate of a chain PEM (the leaf), as its own PEM block.
pub fn leaf_pem(chain: &str) -> &str {
    chain
        .split_inclusive("-----END CERTIFICATE-----")
        .next()
        .unwrap_or(chain)
        .trim()
}

/// When a certificate's holder renews it: a random point between 50 % and 80 % of its lifetime
/// (so a thousand nodes do not renew in the same second); now if the certificate is unreadable.
pub fn renewal_point(cert_pem: &str) -> SystemTime {
    use rand::Rng as _;
    match validity(cert_pem) {
        Ok(v) => v.at_fraction(rand::rng().random_range(0.5..0.8)),
        Err(_) => SystemTime::now(),
    }
}

/// Fingerprint of the CA a `leaf + CA` chain carries (the second certificate), if it has one.
pub fn issuer_fingerprint(chain_pem: &str) -> Result<Option<String>, PkiError> {
    Ok(certs_from_pem(chain_pem)?
        .get(1)
        .map(|c| fingerprint_der(c.as_ref())))
}

/// The first certificate of each PEM, concatenated: a trust bundle (during a CA rotation the new
/// and the old CA). Empty inputs are skipped.
pub fn bundle(pems: &[&str]) -> String {
    pems.iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(|p| format!("{p}\n"))
        .collect()
}

/// The TLS settings for a manager's gRPC server: client certificates from our CA are verified when
/// presented and optional at the TLS layer, so a joining node can reach the CA service; every other
/// service refuses a call without one (see the manager's auth layer).
pub fn server_tls(ca_pem: &str, identity: &Identity) -> tonic::transport::ServerTlsConfig {
    tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            &identity.cert_pem,
            &identity.key_pem,
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(ca_pem))
        .client_auth_optional(true)
}

/// How a client decides to trust a manager.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The cluster CA, PEM.
    Ca(String),
    /// Before joining: the CA must hash to this fingerprint (from a join token).
    Pinned(String),
}

/// Builds the rustls client configuration for a trust mode and optional client identity.
pub fn client_config(trust: &Trust, identity: Option<&Identity>) -> Result<ClientConfig, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match trust {
        Trust::Ca(pem) => {
            let mut roots = RootCertStore::empty();
            for c in certs_from_pem(pem)? {
                roots.add(c)?;
            }
            builder.with_root_certificates(roots)
        }
        Trust::Pinned(fp) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCa {
                fingerprint: fp.to_ascii_lowercase(),
                provider,
            })),
    };
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(certs_from_pem(&id.cert_pem)?, key_from_pem(&id.key_pem)?)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The signature methods of a rustls certificate verifier, checked with a crypto provider's
/// algorithms as rustls's own verifiers do: every verifier here differs only in how it checks
/// the chain. `$provider` is the `Arc<CryptoProvider>` as `$self` reaches it.
macro_rules! provider_signatures {
    ($self:ident => $provider:expr) => {
        fn verify_tls12_signature(
            &$self,
            message: &[u8],
            cert: &::rustls::pki_types::CertificateDer<'_>,
            dss: &::rustls::DigitallySignedStruct,
        ) -> Result<::rustls::client::danger::HandshakeSignatureValid, ::rustls::Error> {
            ::rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &$provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &$self,
            message: &[u8],
            cert: &::rustls::pki_types::CertificateDer<'_>,
            dss: &::rustls::DigitallySignedStruct,
        ) -> Result<::rustls::client::danger::HandshakeSignatureValid, ::rustls::Error> {
            ::rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &$provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&$self) -> Vec<::rustls::SignatureScheme> {
            $provider.signature_verification_algorithms.supported_schemes()
        }
    };
}
pub(crate) use provider_signatures;

/// Verifies a manager's chain against the CA found in the chain whose fingerprint was pinned.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint_der(c.as_ref()) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the manager's CA does not match the join token's fingerprint".into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    provider_signatures!(self => self.provider);
}

type Connector = tower::util::BoxCloneSyncService<
    http::Uri,
    hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    std::io::Error,
>;

fn endpoint(addr: &str, config: Arc<ClientConfig>) -> Result<(Endpoint, Connector), PkiError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| PkiError::Address {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(std::time::Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(std::time::Duration::from_secs(5))
        .keep_alive_timeout(std::time::Duration::from_secs(5))
        .keep_alive_while_idle(true);
    let connector = tower::service_fn(move |uri: http::Uri| {
        let config = config.clone();
        async move {
            let host = uri
                .host()
                .unwrap_or("127.0.0.1")
                .trim_matches(|c| c == '[' || c == ']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(SERVER_NAME)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    Ok((endpoint, tower::util::BoxCloneSyncService::new(connector)))
}

/// A lazily-connecting channel to one manager address ("IP:PORT") over mutual TLS; it reconnects
/// by itself after a failure.
pub fn channel(addr: &str, config: Arc<ClientConfig>) -> Result<Channel, PkiError> {
    let (endpoint, connector) = endpoint(addr, config)?;
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// Connects now to one manager address, failing if it cannot be reached or the TLS handshake fails.
pub async fn connect(addr: &str, config: Arc<ClientConfig>) -> Result<Channel, PkiError> {
    let (endpoint, connector) = endpoint(addr, config)?;
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|source| PkiError::Connect {
            addr: addr.to_string(),
            source,
        })
}

/// Connects to the first reachable of several manager addresses.
pub async fn connect_any(addrs: &[String], config: Arc<ClientConfig>) -> Result<Channel, PkiError> {
    let mut last = PkiError::Address {
        addr: String::new(),
        reason: "no manager address configured".into(),
    };
    for addr in addrs {
        match connect(addr, config.clone()).await {
            Ok(ch) => return Ok(ch),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_signs_csr_and_fingerprint_is_stable() {
        let ca = generate_ca("c1").expect("ca");
        let fp = fingerprint_pem(&ca.cert_pem).expect("fp");
        assert_eq!(fp.len(), 64);
        let id = issue(&ca, "node1", CertRole::Worker, Duration::from_secs(600)).expect("issue");
        assert!(id.cert_pem.contains("BEGIN CERTIFICATE"));
        // the chain carries the CA second, which is how a pinned client finds it
        let chain = certs_from_pem(&id.cert_pem).expect("chain");
        assert_eq!(chain.len(), 2);
        assert_eq!(fingerprint_der(chain[1].as_ref()), fp);
        client_config(&Trust::Pinned(fp), None).expect("pinned config");
        client_config(&Trust::Ca(ca.cert_pem.clone()), Some(&id)).expect("ca config");
    }

    #[test]
    fn a_manager_certificate_carries_the_extra_sans() {
        let ca = generate_ca("c1").expect("ca");
        let ip: std::net::IpAddr = "10.1.2.3".parse().expect("ip");
        let id = issue_manager_with_sans(
            &ca,
            "m1",
            &[ExtraSan::Ip(ip), ExtraSan::Dns("mgr.example".into())],
            Duration::from_secs(600),
        )
        .expect("issue");
        let certs = certs_from_pem(&id.cert_pem).expect("chain");
        let (_, cert) = x509_parser::parse_x509_certificate(certs[0].as_ref()).expect("parse");
        let sans = cert
            .subject_alternative_name()
            .expect("extension")
            .expect("present");
        use x509_parser::extensions::GeneralName;
        let names = &sans.value.general_names;
        assert!(
            names.contains(&GeneralName::DNSName(SERVER_NAME)),
            "{names:?}"
        );
        assert!(
            names.contains(&GeneralName::DNSName("mgr.example")),
            "{names:?}"
        );
        assert!(
            names.contains(&GeneralName::IPAddress(&[10, 1, 2, 3])),
            "{names:?}"
        );
        assert!(issued_by(&id.cert_pem, &ca.cert_pem).expect("issued_by"));
    }

    /// A manager's chain during a CA rotation (leaf of the new CA, the new CA cross-signed by the
    /// old one, the new CA) verifies for a client trusting only the old CA, only the new one, and
    /// for a joiner pinning the new CA by fingerprint; a leaf of the new CA alone does not verify
    /// under the old CA.
    #[test]
    fn a_rotation_chain_verifies_under_old_new_and_pinned_trust() {
        let old = generate_ca("c1").expect("old ca");
        let (new, cross) = generate_rotation_ca("c1", &old).expect("rotation ca");
        let leaf = issue(&new, "m1", CertRole::Manager, Duration::from_secs(600)).expect("leaf");
        let leaf_only = leaf
            .cert_pem
            .split_inclusive("-----END CERTIFICATE-----")
            .next()
            .expect("leaf");
        let chain = format!("{leaf_only}\n{cross}{}", new.cert_pem);
        let certs = certs_from_pem(&chain).expect("chain");
        let name = ServerName::try_from(SERVER_NAME).expect("name");
        let now = UnixTime::now();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verify = |roots_pem: &str, certs: &[CertificateDer<'static>]| {
            let mut roots = RootCertStore::empty();
            for c in certs_from_pem(roots_pem).expect("roots") {
                roots.add(c).expect("root");
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .expect("verifier")
            .verify_server_cert(&certs[0], &certs[1..], &name, &[], now)
        };
        verify(&old.cert_pem, &certs).expect("trusting only the old CA");
        verify(&new.cert_pem, &certs).expect("trusting only the new CA");
        let pinned = PinnedCa {
            fingerprint: fingerprint_pem(&new.cert_pem).expect("fp"),
            provider: provider.clone(),
        };
        pinned
            .verify_server_cert(&certs[0], &certs[1..], &name, &[], now)
            .expect("pinning the new CA");
        assert!(
            verify(&old.cert_pem, &certs[..1]).is_err(),
            "a new-CA leaf without the cross-signed CA must not verify under the old CA"
        );
        assert!(issued_by(&leaf.cert_pem, &new.cert_pem).expect("issued_by"));
        assert!(!issued_by(&leaf.cert_pem, &old.cert_pem).expect("issued_by"));
    }
}
