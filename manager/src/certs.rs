//! Certificate lifecycle: the lifetime of issued certificates, renewal (agents' node certificates,
//! manager processes' own, admin credentials) and CA rotation.
//!
//! Every certificate is renewed by its holder, with a key it makes itself, at a random point
//! between 50 % and 80 % of its lifetime (so a thousand nodes do not renew in the same second),
//! and at once when a CA rotation made its issuer the old CA. The store records each node's
//! current and previous certificate fingerprints: the previous one stays accepted, so a renewal
//! whose answer was lost never locks a node out; it expires by itself.
//!
//! A rotation (`cluster ca --rotate`) writes a new CA into the cluster object and keeps the old
//! one beside it: every manager and agent trusts both, every node renews, and managers present
//! the new CA cross-signed by the old one, so a node that was away when the rotation started
//! can still verify them. The leader ends the rotation once every node that is up holds a
//! certificate from the new CA; from then on the old CA is trusted nowhere.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_proto::config::AdminConfig;
use shoal_proto::live_tls::LiveTls;
use shoal_proto::pki::{self, CertRole, Identity};
use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::{
    CaRotation, Cluster, GetClusterResponse, Node, NodeState, RenewAdminCertificateRequest,
    RenewAdminCertificateResponse, RenewCertificateRequest, RenewCertificateResponse,
    RotateCaResponse, StoreAction, TrustUpdate,
};
use tokio::sync::watch;
use tonic::{Request, Status};
use tracing::{debug, info, warn};

use crate::store::{State, Store};

/// The lifetime of the certificates a cluster issues now.
pub fn lifetime(cluster: &Cluster) -> Duration {
    Duration::from_nanos(shoal_proto::limits::cert_expiry_or_default(cluster.cert_expiry_ns) as u64)
}

/// The CA that signs new certificates (the new one during a rotation).
pub fn signing_ca(cluster: &Cluster) -> Identity {
    Identity {
        cert_pem: cluster.ca_cert_pem.clone(),
        key_pem: cluster.ca_key_pem.clone(),
    }
}

/// Every CA a node must trust now: the cluster's, and during a rotation the old one too.
pub fn trust_bundle(cluster: &Cluster) -> String {
    pki::bundle(&[&cluster.ca_cert_pem, &cluster.previous_ca_cert_pem])
}

/// Fingerprint of the cluster's (new) CA.
pub fn ca_fingerprint(cluster: &Cluster) -> String {
    pki::fingerprint_pem(&cluster.ca_cert_pem).unwrap_or_default()
}

/// What the dispatcher tells agents to trust.
pub fn trust_update(cluster: &Cluster) -> TrustUpdate {
    TrustUpdate {
        ca_bundle_pem: trust_bundle(cluster),
        ca_fingerprint: ca_fingerprint(cluster),
    }
}

fn now_ns() -> i64 {
    shoal_proto::now_ns()
}

fn cluster_of(s: &State) -> Result<Cluster, Status> {
    s.cluster()
        .cloned()
        .ok_or_else(|| Status::unavailable("the cluster is not initialised yet"))
}

/// Which of a node's certificates a fingerprint is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Holder {
    /// The node's own certificate (an agent's, or an init/join manager's).
    Node(String),
    /// A promoted worker's manager process certificate.
    ManagerProcess(String),
}

fn holder_of(s: &State, fp: &str) -> Option<Holder> {
    if let Some(n) = s.node_by_fingerprint(fp) {
        return Some(Holder::Node(n.id.clone()));
    }
    s.nodes()
        .find(|n| {
            n.manager_status.as_ref().is_some_and(|m| {
                !m.cert_fingerprint.is_empty()
                    && (m.cert_fingerprint == fp || m.previous_cert_fingerprint == fp)
            })
        })
        .map(|n| Holder::ManagerProcess(n.id.clone()))
}

/// A certificate just issued.
struct Issued {
    cert_pem: String,
    bundle: String,
    expires_at: i64,
}

fn sign(
    cluster: &Cluster,
    csr_pem: &str,
    subject: &str,
    role: CertRole,
) -> Result<(Issued, String), Status> {
    let cert_pem = pki::sign_csr(
        &signing_ca(cluster),
        csr_pem,
        subject,
        role,
        lifetime(cluster),
    )
    .map_err(|e| Status::invalid_argument(format!("csr: {e}")))?;
    let fingerprint = pki::fingerprint_pem(&cert_pem)
        .map_err(|e| Status::internal(format!("issued certificate: {e}")))?;
    let expires_at = pki::validity(&cert_pem)
        .map_err(|e| Status::internal(format!("issued certificate: {e}")))?
        .not_after_ns();
    Ok((
        Issued {
            cert_pem,
            bundle: trust_bundle(cluster),
            expires_at,
        },
        fingerprint,
    ))
}

/// Renews the node certificate presented as `presented` (current or previous) for a new key:
/// signs the CSR and records the new fingerprint, keeping `presented` as the previous one.
async fn renew_node_cert(store: &Store, presented: &str, csr_pem: &str) -> Result<Issued, Status> {
    let (holder, cluster, node) = store.read(|s| {
        let holder = holder_of(s, presented).ok_or_else(|| {
            Status::permission_denied(
                "certificate is not (or no longer) valid in this cluster: the node was removed or demoted; join it again",
            )
        })?;
        let id = match &holder {
            Holder::Node(id) | Holder::ManagerProcess(id) => id.clone(),
        };
        let node = s
            .node(&id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("node {id} was removed")))?;
        Ok::<_, Status>((holder, cluster_of(s)?, node))
    })?;
    let role = match holder {
        Holder::Node(_)
            if crate::auth::node_cert_role(&node) == shoal_proto::v1::NodeRole::RoleManager =>
        {
            CertRole::Manager
        }
        Holder::Node(_) => CertRole::Worker,
        Holder::ManagerProcess(_) => CertRole::Manager,
    };
    let (issued, fingerprint) = sign(&cluster, csr_pem, &node.id, role)?;
    let issuer = ca_fingerprint(&cluster);
    let id = node.id.clone();
    store
        .propose_fresh(|s| {
            let mut node = s
                .node(&id)
                .cloned()
                .ok_or_else(|| Status::not_found(format!("node {id} was removed")))?;
            record_renewal(
                &mut node,
                &holder,
                presented,
                &fingerprint,
                &issuer,
                issued.expires_at,
            )?;
            if let Some(m) = node.meta.as_mut() {
                m.updated_at = now_ns();
            }
            Ok::<_, Status>((
                vec![StoreAction {
                    action: Some(Action::PutNode(node)),
                }],
                (),
            ))
        })
        .await?;
    info!(node.id = %id, fingerprint = %&fingerprint[..12], process = matches!(holder, Holder::ManagerProcess(_)), "certificate renewed");
    Ok(issued)
}

/// Writes a renewal into a node record; refuses when `presented` is no longer one of the node's
/// certificates (revoked or replaced meanwhile).
fn record_renewal(
    node: &mut Node,
    holder: &Holder,
    presented: &str,
    fingerprint: &str,
    issuer: &str,
    expires_at: i64,
) -> Result<(), Status> {
    let gone = || {
        Status::permission_denied(
            "certificate is no longer valid in this cluster (revoked or replaced meanwhile)",
        )
    };
    match holder {
        Holder::Node(_) => {
            if node.cert_fingerprint != presented && node.previous_cert_fingerprint != presented {
                return Err(gone());
            }
            node.previous_cert_fingerprint = presented.to_string();
            node.cert_fingerprint = fingerprint.to_string();
            node.cert_issuer_fingerprint = issuer.to_string();
            node.cert_expires_at = expires_at;
        }
        Holder::ManagerProcess(_) => {
            let m = node.manager_status.as_mut().ok_or_else(gone)?;
            if m.cert_fingerprint.is_empty()
                || (m.cert_fingerprint != presented && m.previous_cert_fingerprint != presented)
            {
                return Err(gone());
            }
            m.previous_cert_fingerprint = presented.to_string();
            m.cert_fingerprint = fingerprint.to_string();
            m.cert_issuer_fingerprint = issuer.to_string();
        }
    }
    Ok(())
}

/// `Ca.RenewCertificate`: a node (or a promoted worker's manager process) renews the certificate
/// it authenticated the call with.
pub async fn renew_node(
    store: &Store,
    request: Request<RenewCertificateRequest>,
) -> Result<RenewCertificateResponse, Status> {
    let fp = crate::auth::peer_fingerprint(&request).ok_or_else(|| {
        Status::unauthenticated("renewal needs the certificate being renewed as client certificate")
    })?;
    let req = request.into_inner();
    let issued = renew_node_cert(store, &fp, &req.csr_pem).await?;
    Ok(RenewCertificateResponse {
        cert_pem: issued.cert_pem,
        ca_bundle_pem: issued.bundle,
        expires_at: issued.expires_at,
    })
}

/// Replaces the admin credential `presented` by a certificate for a new key (same holder).
async fn renew_admin_cert(store: &Store, presented: &str, csr_pem: &str) -> Result<Issued, Status> {
    let not_admin = || {
        Status::permission_denied(
            "only an admin credential renews this way, and this certificate is not (or no longer) one: get a new admin.conf from a manager's data dir",
        )
    };
    let cluster = store.read(cluster_of)?;
    if !crate::auth::is_admin(&cluster, presented) {
        return Err(not_admin());
    }
    let (issued, fingerprint) = sign(&cluster, csr_pem, "admin", CertRole::Admin)?;
    let holder = store
        .propose_fresh(|s| {
            let mut c = cluster_of(s)?;
            let cred = c
                .admin_credentials
                .iter_mut()
                .find(|c| c.fingerprint == presented)
                .ok_or_else(not_admin)?;
            cred.fingerprint = fingerprint.clone();
            cred.issued_at = now_ns();
            cred.expires_at = issued.expires_at;
            let holder = cred.holder.clone();
            if let Some(m) = c.meta.as_mut() {
                m.updated_at = now_ns();
            }
            Ok::<_, Status>((
                vec![StoreAction {
                    action: Some(Action::PutCluster(c)),
                }],
                holder,
            ))
        })
        .await?;
    info!(%holder, fingerprint = %&fingerprint[..12], "admin credential renewed");
    Ok(issued)
}

/// `ClusterAdmin.RenewAdminCertificate`.
pub async fn renew_admin(
    store: &Store,
    request: Request<RenewAdminCertificateRequest>,
) -> Result<RenewAdminCertificateResponse, Status> {
    let fp = crate::auth::peer_fingerprint(&request).ok_or_else(|| {
        Status::unauthenticated("renewal needs the admin certificate being renewed")
    })?;
    let req = request.into_inner();
    let issued = renew_admin_cert(store, &fp, &req.csr_pem).await?;
    Ok(RenewAdminCertificateResponse {
        cert_pem: issued.cert_pem,
        ca_bundle_pem: issued.bundle,
        expires_at: issued.expires_at,
    })
}

/// `ClusterAdmin.GetCluster`.
pub fn cluster_info(store: &Store) -> Result<GetClusterResponse, Status> {
    store.read(|s| {
        let c = cluster_of(s)?;
        Ok(GetClusterResponse {
            cluster_id: c.id.clone(),
            ca_fingerprint: ca_fingerprint(&c),
            cert_expiry_ns: shoal_proto::limits::cert_expiry_or_default(c.cert_expiry_ns),
            autolock: c.autolock,
            rotation: rotation_progress(s, &c),
            meta: c.meta,
            heartbeat_period_ns: c.heartbeat_period_ns,
            ca_cert_pem: c.ca_cert_pem.clone(),
        })
    })
}

/// `ClusterAdmin.UpdateCluster --cert-expiry`.
pub async fn set_cert_expiry(store: &Store, ns: i64) -> Result<(), Status> {
    shoal_proto::limits::check_cert_expiry(ns)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    store
        .propose_fresh(|s| {
            let mut c = cluster_of(s)?;
            c.cert_expiry_ns = ns;
            if let Some(m) = c.meta.as_mut() {
                m.updated_at = now_ns();
            }
            Ok::<_, Status>((
                vec![StoreAction {
                    action: Some(Action::PutCluster(c)),
                }],
                (),
            ))
        })
        .await?;
    info!(
        cert_expiry_s = ns / 1_000_000_000,
        "certificate lifetime changed"
    );
    Ok(())
}

/// `ClusterAdmin.RotateCa`: a new CA, the old one kept as trusted until every node renewed.
pub async fn start_rotation(store: &Store) -> Result<RotateCaResponse, Status> {
    let cluster = store.read(cluster_of)?;
    refuse_second_rotation(&cluster)?;
    let (new_ca, cross) = pki::generate_rotation_ca(&cluster.id, &signing_ca(&cluster))
        .map_err(|e| Status::internal(format!("new CA: {e}")))?;
    let fingerprint = pki::fingerprint_pem(&new_ca.cert_pem)
        .map_err(|e| Status::internal(format!("new CA: {e}")))?;
    store
        .propose_fresh(|s| {
            let mut c = cluster_of(s)?;
            refuse_second_rotation(&c)?;
            c.previous_ca_cert_pem = std::mem::take(&mut c.ca_cert_pem);
            c.ca_cert_pem = new_ca.cert_pem.clone();
            c.ca_key_pem = new_ca.key_pem.clone();
            c.rotation_cross_signed_pem = cross.clone();
            c.ca_rotation_started_at = now_ns();
            if let Some(m) = c.meta.as_mut() {
                m.updated_at = now_ns();
            }
            Ok::<_, Status>((
                vec![StoreAction {
                    action: Some(Action::PutCluster(c)),
                }],
                (),
            ))
        })
        .await?;
    info!(ca = %&fingerprint[..12], "CA rotation started");
    Ok(RotateCaResponse {
        ca_fingerprint: fingerprint,
    })
}

fn refuse_second_rotation(c: &Cluster) -> Result<(), Status> {
    if c.previous_ca_cert_pem.is_empty() {
        Ok(())
    } else {
        Err(Status::failed_precondition(
            "a CA rotation is already under way: wait for it to finish (`shoalctl cluster ca` shows its progress)",
        ))
    }
}

/// The certificates a rotation waits for: every node that is not down holds its node
/// certificate, and a promoted worker's manager process its own, from the new CA.
fn rotation_progress(s: &State, c: &Cluster) -> Option<CaRotation> {
    if c.previous_ca_cert_pem.is_empty() {
        return None;
    }
    let new = ca_fingerprint(c);
    let mut total = 0u32;
    let mut done = 0u32;
    let mut pending = Vec::new();
    for n in s.nodes() {
        if n.status.as_ref().map(|st| st.state) == Some(NodeState::NodeDown as i32) {
            continue;
        }
        let name = n
            .description
            .as_ref()
            .map(|d| d.hostname.clone())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| n.id.clone());
        let mut issuers = Vec::new();
        if !n.cert_fingerprint.is_empty() {
            issuers.push(n.cert_issuer_fingerprint.as_str());
        }
        if let Some(m) = &n.manager_status {
            if !m.cert_fingerprint.is_empty() {
                issuers.push(m.cert_issuer_fingerprint.as_str());
            }
        }
        let mut late = false;
        for i in issuers {
            total += 1;
            if i == new {
                done += 1;
            } else {
                late = true;
            }
        }
        if late {
            pending.push(name);
        }
    }
    pending.sort();
    Some(CaRotation {
        started_at: c.ca_rotation_started_at,
        old_ca_fingerprint: pki::fingerprint_pem(&c.previous_ca_cert_pem).unwrap_or_default(),
        certs_total: total,
        certs_done: done,
        pending,
    })
}

/// On the leader: ends a CA rotation once every node that is up holds a certificate from the new
/// CA (the old CA is then dropped from the trust everywhere).
pub async fn finish_rotations(store: Store, mut leading: watch::Receiver<bool>) {
    let mut events = store.watch();
    loop {
        if *leading.borrow() {
            let done = store.read(|s| {
                let c = s.cluster()?;
                let p = rotation_progress(s, c)?;
                (p.certs_done == p.certs_total).then_some(())
            });
            if done.is_some() {
                match end_rotation(&store).await {
                    Ok(()) => info!("CA rotation complete: the old CA is trusted nowhere now"),
                    Err(e) => debug!(error = %e.message(), "ending the CA rotation: will retry"),
                }
            }
        }
        tokio::select! {
            r = events.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                    return;
                }
            }
            r = leading.changed() => {
                if r.is_err() {
                    return;
                }
            }
            // Nodes going down also unblock a rotation; their state is an event too, but a
            // periodic look costs nothing and covers a missed one.
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

async fn end_rotation(store: &Store) -> Result<(), Status> {
    store
        .propose_fresh(|s| {
            let mut c = cluster_of(s)?;
            if c.previous_ca_cert_pem.is_empty() {
                return Ok((Vec::new(), ()));
            }
            c.previous_ca_cert_pem.clear();
            c.rotation_cross_signed_pem.clear();
            c.ca_rotation_started_at = 0;
            if let Some(m) = c.meta.as_mut() {
                m.updated_at = now_ns();
            }
            Ok::<_, Status>((
                vec![StoreAction {
                    action: Some(Action::PutCluster(c)),
                }],
                (),
            ))
        })
        .await
}

/// Paths of a manager's own certificates in its data dir.
struct Paths {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    admin_conf: PathBuf,
}

impl Paths {
    fn new(data_dir: &Path) -> Paths {
        let certs = data_dir.join("certs");
        Paths {
            ca: certs.join("ca.pem"),
            cert: certs.join("node.pem"),
            key: certs.join("node-key.pem"),
            admin_conf: data_dir.join("admin.conf"),
        }
    }
}

fn write(path: &Path, contents: &str) -> Result<(), Status> {
    shoal_proto::secure_file::write_private(path, contents.as_bytes())
        .map_err(|e| Status::internal(format!("{}: {e}", path.display())))
}

/// The chain a manager presents: its leaf, and during a rotation the new CA cross-signed by the
/// old one (so nodes that still trust only the old CA verify it), then the new CA itself (so a
/// node joining with a token, which pins the new CA by fingerprint, finds it). See
/// `shoal_proto::pki::tests::a_rotation_chain_verifies_under_old_new_and_pinned_trust`.
fn presented_chain(leaf_chain: &str, cluster: &Cluster) -> String {
    if cluster.rotation_cross_signed_pem.is_empty() {
        return leaf_chain.to_string();
    }
    let leaf = pki::leaf_pem(leaf_chain);
    format!(
        "{leaf}\n{}\n{}\n",
        cluster.rotation_cross_signed_pem.trim(),
        cluster.ca_cert_pem.trim()
    )
}

/// Keeps a manager's TLS material current: trusts the CAs the store lists, renews the manager's
/// own certificate at its renewal point (or at once when a rotation made its issuer the old CA)
/// and the admin.conf of its data dir the same way, writing both to disk. Runs until the store
/// closes.
pub async fn keep_certificates(store: Store, live: Arc<LiveTls>, data_dir: PathBuf) {
    let paths = Paths::new(&data_dir);
    let mut events = store.watch();
    let mut own_due: Option<(String, SystemTime)> = None;
    let mut admin_due: Option<(String, SystemTime)> = None;
    let mut retry = Duration::from_secs(1);
    loop {
        let mut wait = Duration::from_secs(3600);
        if let Some(cluster) = store.read(|s| s.cluster().cloned()) {
            let (own, admin) = tend(
                &store,
                &live,
                &paths,
                &cluster,
                &mut own_due,
                &mut admin_due,
            )
            .await;
            for r in [own, admin] {
                match r {
                    Ok(next) => wait = wait.min(next),
                    Err(e) => {
                        warn!(error = %e.message(), retry_s = retry.as_secs(), "certificate renewal failed");
                        wait = wait.min(retry);
                    }
                }
            }
            if wait == retry {
                retry = (retry * 2).min(Duration::from_secs(30));
            } else {
                retry = Duration::from_secs(1);
            }
        }
        tokio::select! {
            r = events.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                    return;
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One pass of [`keep_certificates`]: returns how long until each certificate is next due.
async fn tend(
    store: &Store,
    live: &Arc<LiveTls>,
    paths: &Paths,
    cluster: &Cluster,
    own_due: &mut Option<(String, SystemTime)>,
    admin_due: &mut Option<(String, SystemTime)>,
) -> (Result<Duration, Status>, Result<Duration, Status>) {
    let bundle = trust_bundle(cluster);
    if bundle != live.roots_pem() {
        match live.update(None, Some(&bundle)) {
            Ok(()) => {
                info!(
                    rotating = !cluster.previous_ca_cert_pem.is_empty(),
                    "trusted CAs changed"
                );
                if let Err(e) = write(&paths.ca, &bundle) {
                    warn!(error = %e.message(), "writing the CA bundle");
                }
            }
            Err(e) => warn!(error = %e, "the cluster's CA bundle is unusable"),
        }
    }
    let own = renew_own_if_due(store, live, paths, cluster, own_due).await;
    let admin = renew_admin_conf_if_due(store, paths, cluster, &bundle, admin_due).await;
    (own, admin)
}

fn until(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::now()).unwrap_or_default()
}

/// Whether a certificate must be renewed now: past its renewal point, or issued by another CA
/// than the one signing now.
fn due(
    cert_pem: &str,
    cluster: &Cluster,
    slot: &mut Option<(String, SystemTime)>,
) -> (bool, SystemTime) {
    let fp = pki::fingerprint_pem(cert_pem).unwrap_or_default();
    let at = match slot {
        Some((f, t)) if *f == fp => *t,
        _ => {
            let t = pki::renewal_point(cert_pem);
            *slot = Some((fp, t));
            t
        }
    };
    let stale_issuer = !pki::issued_by(cert_pem, &cluster.ca_cert_pem).unwrap_or(false);
    (stale_issuer || SystemTime::now() >= at, at)
}

async fn renew_own_if_due(
    store: &Store,
    live: &Arc<LiveTls>,
    paths: &Paths,
    cluster: &Cluster,
    slot: &mut Option<(String, SystemTime)>,
) -> Result<Duration, Status> {
    let current = live.identity();
    let (now, at) = due(&current.cert_pem, cluster, slot);
    if !now {
        // Present the cross-signed CA while a rotation runs, the plain chain after.
        let chain = presented_chain(&current.cert_pem, cluster);
        if chain != current.cert_pem
            && pki::issued_by(&current.cert_pem, &cluster.ca_cert_pem).unwrap_or(false)
        {
            let _ = live.update(
                Some(Identity {
                    cert_pem: chain,
                    key_pem: current.key_pem,
                }),
                None,
            );
        }
        return Ok(until(at));
    }
    let fp = pki::fingerprint_pem(&current.cert_pem)
        .map_err(|e| Status::internal(format!("own certificate: {e}")))?;
    let (csr, key_pem) =
        pki::generate_csr("renewal").map_err(|e| Status::internal(format!("csr: {e}")))?;
    let issued = renew_node_cert(store, &fp, &csr).await.map_err(|e| {
        match pki::validity(&current.cert_pem) {
            Ok(v) if v.expired_at(SystemTime::now()) => Status::new(
                e.code(),
                format!(
                    "{} (this manager's certificate has expired: if the other managers refuse it, remove this node with `shoalctl node demote`/`node rm` and join it again)",
                    e.message()
                ),
            ),
            _ => e,
        }
    })?;
    // Key first: a crash between the two writes leaves a certificate that does not match the
    // key, which the next start reports, rather than a key nobody can use.
    write(&paths.key, &key_pem)?;
    write(&paths.cert, &issued.cert_pem)?;
    write(&paths.ca, &issued.bundle)?;
    let identity = Identity {
        cert_pem: presented_chain(&issued.cert_pem, cluster),
        key_pem,
    };
    live.update(Some(identity), Some(&issued.bundle))
        .map_err(|e| Status::internal(format!("new certificate: {e}")))?;
    *slot = None;
    let next = pki::renewal_point(&issued.cert_pem);
    info!(
        renews_in_s = until(next).as_secs(),
        "this manager's certificate renewed"
    );
    Ok(until(next))
}

async fn renew_admin_conf_if_due(
    store: &Store,
    paths: &Paths,
    cluster: &Cluster,
    bundle: &str,
    slot: &mut Option<(String, SystemTime)>,
) -> Result<Duration, Status> {
    let idle = Duration::from_secs(3600);
    let Ok(conf) = AdminConfig::load(&paths.admin_conf) else {
        return Ok(idle);
    };
    if conf.cert.trim().is_empty() {
        return Ok(idle);
    }
    let fp = pki::fingerprint_pem(&conf.cert).unwrap_or_default();
    if !crate::auth::is_admin(cluster, &fp) {
        // Revoked (or renewed by someone else): never brought back to life from here.
        return Ok(idle);
    }
    let (now, at) = due(&conf.cert, cluster, slot);
    // Written under the file's lock, and only while it still holds the certificate looked at
    // here: shoalctl may be renewing the same file.
    let same_cert = |c: &AdminConfig| pki::fingerprint_pem(&c.cert).is_ok_and(|f| f == fp);
    if !now {
        if conf.ca_cert != bundle {
            update_admin_conf(&paths.admin_conf, |c| {
                if !same_cert(c) || c.ca_cert == bundle {
                    return false;
                }
                c.ca_cert = bundle.to_string();
                true
            })?;
        }
        return Ok(until(at));
    }
    let (csr, key_pem) =
        pki::generate_csr("admin").map_err(|e| Status::internal(format!("csr: {e}")))?;
    let issued = renew_admin_cert(store, &fp, &csr).await?;
    update_admin_conf(&paths.admin_conf, |c| {
        if !same_cert(c) {
            return false;
        }
        c.cert = issued.cert_pem.clone();
        c.key = key_pem;
        c.ca_cert = issued.bundle.clone();
        true
    })?;
    *slot = None;
    let next = pki::renewal_point(&issued.cert_pem);
    info!(path = %paths.admin_conf.display(), "admin.conf certificate renewed");
    Ok(until(next))
}

fn update_admin_conf(
    path: &Path,
    change: impl FnOnce(&mut AdminConfig) -> bool,
) -> Result<bool, Status> {
    AdminConfig::update(path, change)
        .map_err(|e| Status::internal(format!("{}: {e}", path.display())))
}
