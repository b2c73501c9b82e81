//! The Docker API listener's certificate: a manager certificate signed by the cluster's CA that
//! carries the `--docker-api-addr` address as an IP SAN (docker verifies the host it dials),
//! re-issued when the CA changes or the certificate nears its end.
//!
//! Clients must present a certificate chaining to a CA the cluster trusts (the same trust as the
//! gRPC listener's); which certificates are admitted is the server's check (`server.rs`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use shoal_proto::live_tls::LiveTls;
use shoal_proto::pki::{self, ExtraSan, Identity, PkiError};
use shoal_proto::v1::Cluster;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::store::Store;

/// How long to wait before trying again after a failed re-issue.
const RETRY: Duration = Duration::from_secs(30);

/// Why the listener's certificate or TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Signing or reading certificates.
    #[error("Docker API certificate: {0}")]
    Pki(#[from] PkiError),
    /// rustls refused the material.
    #[error("Docker API TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// The names the listener's certificate carries besides `shoal-manager`: the address it serves
/// on, the manager's advertised host, and for an unspecified address (`0.0.0.0`) the loopback
/// address and `host_addrs` (this host's addresses).
pub fn sans(addr: SocketAddr, advertise: &str, host_addrs: &[IpAddr]) -> Vec<ExtraSan> {
    let mut out = Vec::new();
    let mut push = |san: ExtraSan| {
        if !out.contains(&san) {
            out.push(san);
        }
    };
    if addr.ip().is_unspecified() {
        push(ExtraSan::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        if addr.is_ipv6() {
            push(ExtraSan::Ip(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)));
        }
        for ip in host_addrs {
            push(ExtraSan::Ip(*ip));
        }
    } else {
        push(ExtraSan::Ip(addr.ip()));
    }
    if let Some(host) = advertised_host(advertise) {
        push(host);
    }
    out
}

/// The host part of an advertised "HOST:PORT" (or bare host), as a SAN.
fn advertised_host(advertise: &str) -> Option<ExtraSan> {
    if let Ok(sa) = advertise.parse::<SocketAddr>() {
        return Some(ExtraSan::Ip(sa.ip()));
    }
    let host = match advertise.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => advertise,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some(match host.parse::<IpAddr>() {
        Ok(ip) => ExtraSan::Ip(ip),
        Err(_) => ExtraSan::Dns(host.to_string()),
    })
}

/// This host's address on its default route, found without sending anything (a UDP `connect`
/// only selects the source address); none when there is no route.
pub fn host_addresses() -> Vec<IpAddr> {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| vec![a.ip()])
        .unwrap_or_default()
}

/// Issues the listener's certificate from the cluster's current (signing) CA: `leaf + CA`, with
/// the new CA cross-signed by the old one in between while a rotation runs, as every manager
/// presents (a client still trusting only the old CA verifies it).
pub fn issue(cluster: &Cluster, subject: &str, sans: &[ExtraSan]) -> Result<Identity, CertError> {
    let id = pki::issue_manager_with_sans(
        &crate::certs::signing_ca(cluster),
        subject,
        sans,
        crate::certs::lifetime(cluster),
    )?;
    if cluster.rotation_cross_signed_pem.is_empty() {
        return Ok(id);
    }
    Ok(Identity {
        cert_pem: format!(
            "{}\n{}\n{}",
            pki::leaf_pem(&id.cert_pem),
            cluster.rotation_cross_signed_pem.trim(),
            cluster.ca_cert_pem
        ),
        key_pem: id.key_pem,
    })
}

/// What the listener presents at one moment.
struct Material {
    key: Arc<CertifiedKey>,
    /// The CA that signed `key` (its fingerprint), to notice a rotation.
    ca_fingerprint: String,
    /// The managers' trust bundle when `key` was issued: it changes at both ends of a CA
    /// rotation, when the chain to present changes too.
    roots_pem: String,
    /// When to re-issue (two thirds of the lifetime).
    renew_at: SystemTime,
}

/// The listener's certificate, replaced at run time (CA rotation, renewal); the server
/// configuration made by [`DockerTls::server_config`] reads it at every handshake.
pub struct DockerTls {
    provider: Arc<CryptoProvider>,
    subject: String,
    sans: Vec<ExtraSan>,
    current: RwLock<Arc<Material>>,
}

impl std::fmt::Debug for DockerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerTls")
            .field("subject", &self.subject)
            .field("sans", &self.sans)
            .finish_non_exhaustive()
    }
}

impl DockerTls {
    /// A certificate for `subject` (the node id) with `sans`, issued from `cluster`'s CA while
    /// the managers trust `roots_pem`.
    pub fn new(
        cluster: &Cluster,
        roots_pem: &str,
        subject: &str,
        sans: Vec<ExtraSan>,
    ) -> Result<Arc<DockerTls>, CertError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let material = build(&provider, cluster, roots_pem, subject, &sans)?;
        Ok(Arc::new(DockerTls {
            provider,
            subject: subject.to_string(),
            sans,
            current: RwLock::new(Arc::new(material)),
        }))
    }

    fn material(&self) -> Arc<Material> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-issues the certificate when the cluster's CA or the trusted CAs changed or it is due at
    /// `now`; true when it did.
    pub fn refresh(
        &self,
        cluster: &Cluster,
        roots_pem: &str,
        now: SystemTime,
    ) -> Result<bool, CertError> {
        let m = self.material();
        let ca = pki::fingerprint_pem(&cluster.ca_cert_pem)?;
        if ca == m.ca_fingerprint && roots_pem == m.roots_pem && now < m.renew_at {
            return Ok(false);
        }
        let material = build(
            &self.provider,
            cluster,
            roots_pem,
            &self.subject,
            &self.sans,
        )?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(material);
        Ok(true)
    }

    /// When the current certificate is due for re-issue.
    pub fn renew_at(&self) -> SystemTime {
        self.material().renew_at
    }

    /// The certificate chain presented now (DER, leaf first).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.material().key.cert.clone()
    }

    /// The listener's server configuration: the current certificate, client certificates checked
    /// by `clients` (the gRPC listener's live trust, with a certificate REQUIRED:
    /// `LiveTls::client_verifier(true)`), ALPN `http/1.1`, and no session resumption (a resumed
    /// session would skip the client certificate the server authorises by).
    pub fn server_config(
        self: &Arc<Self>,
        clients: Arc<dyn ClientCertVerifier>,
    ) -> Result<ServerConfig, CertError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(clients)
            .with_cert_resolver(Arc::new(ServerCert(self.clone())));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(config)
    }
}

fn build(
    provider: &Arc<CryptoProvider>,
    cluster: &Cluster,
    roots_pem: &str,
    subject: &str,
    sans: &[ExtraSan],
) -> Result<Material, CertError> {
    let id = issue(cluster, subject, sans)?;
    let chain = certs_of(&id.cert_pem, "certificate")?;
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).map_err(|e| PkiError::Pem {
        what: "private key",
        reason: e.to_string(),
    })?;
    let key = CertifiedKey::from_der(chain, key, provider)?;
    let validity = pki::validity(&id.cert_pem)?;
    Ok(Material {
        key: Arc::new(key),
        ca_fingerprint: pki::fingerprint_pem(&cluster.ca_cert_pem)?,
        roots_pem: roots_pem.to_string(),
        renew_at: validity.at_fraction(2.0 / 3.0),
    })
}

fn certs_of(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem {
            what,
            reason: e.to_string(),
        })
}

#[derive(Debug)]
struct ServerCert(Arc<DockerTls>);

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.material().key.clone())
    }
}

/// The cluster object once the store holds it (a joining manager's store catches up after it
/// started), or `None` when `shutdown` came first.
pub async fn wait_for_cluster(
    store: &Store,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Cluster> {
    let mut events = store.watch();
    loop {
        if let Some(c) = store.read(|s| s.cluster().cloned()) {
            return Some(c);
        }
        tokio::select! {
            r = events.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                    return None;
                }
            }
            _ = crate::serve::stopped(shutdown) => return None,
        }
    }
}

/// Keeps `tls` current until `shutdown`: re-issues at each change of this manager's TLS material
/// (`live` ticks at renewal and at both ends of a CA rotation) and when the certificate is due.
pub async fn keep_current(
    tls: Arc<DockerTls>,
    store: Store,
    live: Arc<LiveTls>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticks = live.subscribe();
    loop {
        let mut wait = Duration::from_secs(3600);
        if let Some(cluster) = store.read(|s| s.cluster().cloned()) {
            match tls.refresh(&cluster, &live.roots_pem(), SystemTime::now()) {
                Ok(true) => info!("docker API certificate re-issued"),
                Ok(false) => {}
                Err(e) => {
                    warn!(error = %e, retry_s = RETRY.as_secs(), "could not re-issue the docker API certificate");
                    wait = RETRY;
                }
            }
        }
        let due = tls
            .renew_at()
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        wait = wait.min(due).max(Duration::from_secs(1));
        tokio::select! {
            r = ticks.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(wait) => {}
            _ = crate::serve::stopped(&mut shutdown) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::RootCertStore;

    fn cluster() -> Cluster {
        let ca = pki::generate_ca("c1").expect("ca");
        Cluster {
            id: "c1".into(),
            ca_cert_pem: ca.cert_pem,
            ca_key_pem: ca.key_pem,
            ..Default::default()
        }
    }

    fn verify(
        roots_pem: &str,
        chain: &[CertificateDer<'static>],
        name: &str,
    ) -> Result<(), rustls::Error> {
        let mut roots = RootCertStore::empty();
        for c in certs_of(roots_pem, "roots").expect("roots") {
            roots.add(c).expect("add");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("verifier")
            .verify_server_cert(
                &chain[0],
                &chain[1..],
                &ServerName::try_from(name.to_string()).expect("name"),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    #[test]
    fn the_sans_name_the_served_and_advertised_addresses() {
        let addr: SocketAddr = "10.0.0.5:2376".parse().expect("addr");
        assert_eq!(
            sans(addr, "10.0.0.5:4242", &[]),
            vec![ExtraSan::Ip("10.0.0.5".parse().expect("ip"))]
        );
        assert_eq!(
            sans(addr, "mgr1.example:4242", &[]),
            vec![
                ExtraSan::Ip("10.0.0.5".parse().expect("ip")),
                ExtraSan::Dns("mgr1.example".into())
            ]
        );
        let any: SocketAddr = "0.0.0.0:2376".parse().expect("addr");
        let host: IpAddr = "192.168.1.9".parse().expect("ip");
        assert_eq!(
            sans(any, "192.168.1.9:4242", &[host]),
            vec![
                ExtraSan::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                ExtraSan::Ip(host)
            ]
        );
    }

    #[test]
    fn the_certificate_verifies_for_its_ip_under_the_cluster_ca() {
        let c = cluster();
        let addr: SocketAddr = "127.0.0.1:2376".parse().expect("addr");
        let tls = DockerTls::new(
            &c,
            &c.ca_cert_pem,
            "node1",
            sans(addr, "10.9.9.9:4242", &[]),
        )
        .expect("tls");
        let chain = tls.chain();
        verify(&c.ca_cert_pem, &chain, "127.0.0.1").expect("the IP SAN");
        verify(&c.ca_cert_pem, &chain, "10.9.9.9").expect("the advertised IP");
        verify(&c.ca_cert_pem, &chain, "shoal-manager").expect("the manager name");
        assert!(verify(&c.ca_cert_pem, &chain, "10.0.0.1").is_err());
        let other = pki::generate_ca("c2").expect("other ca");
        assert!(verify(&other.cert_pem, &chain, "127.0.0.1").is_err());
    }

    #[test]
    fn a_new_ca_or_a_due_certificate_is_reissued() {
        let c = cluster();
        let addr: SocketAddr = "127.0.0.1:2376".parse().expect("addr");
        let tls = DockerTls::new(&c, &c.ca_cert_pem, "node1", sans(addr, "", &[])).expect("tls");
        let now = SystemTime::now();
        assert!(!tls.refresh(&c, &c.ca_cert_pem, now).expect("refresh"));
        // Due: re-issued from the same CA.
        let later = tls.renew_at() + Duration::from_secs(1);
        assert!(tls.refresh(&c, &c.ca_cert_pem, later).expect("refresh"));
        // A rotation: the new CA signs, the old one is still trusted, the chain verifies under
        // both.
        let old = crate::certs::signing_ca(&c);
        let (new, cross) = pki::generate_rotation_ca("c1", &old).expect("rotation");
        let rotated = Cluster {
            previous_ca_cert_pem: c.ca_cert_pem.clone(),
            ca_cert_pem: new.cert_pem.clone(),
            ca_key_pem: new.key_pem.clone(),
            rotation_cross_signed_pem: cross,
            ..c.clone()
        };
        let bundle = crate::certs::trust_bundle(&rotated);
        assert!(tls.refresh(&rotated, &bundle, now).expect("refresh"));
        let chain = tls.chain();
        verify(&new.cert_pem, &chain, "127.0.0.1").expect("under the new CA");
        verify(&c.ca_cert_pem, &chain, "127.0.0.1").expect("under the old CA");
        assert!(!tls.refresh(&rotated, &bundle, now).expect("refresh"));
    }
}
