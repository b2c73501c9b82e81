//! Encryption at rest and autolock: each manager's data key, sealed under the cluster's unlock key
//! while autolock is on.
//!
//! As in swarm, every manager has a data key of its own (32 random bytes, `certs/data-key`) that
//! seals everything it writes to sled: store values and the Raft log, hard state and snapshots
//! (AES-256-GCM, a random 96-bit nonce per value). The file holds the key in clear while autolock
//! is off; with autolock on it is sealed under a key derived from the cluster's unlock key, so a
//! restarted manager cannot read its own disk until an operator gives it the unlock key
//! (`shoalctl cluster unlock`). Until then it serves nothing but `ClusterAdmin.Unlock`.
//!
//! Other managers never see this key: Raft messages (snapshots included) travel in clear over
//! mutual TLS and each manager seals what it stores with its own key.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};
use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::*;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::store::{Event, Kind, Store, StoreError};

/// What every sealed value starts with. The leading zero byte is never the first byte of a
/// protobuf encoding (field number 0 does not exist), so legacy plaintext cannot look sealed.
const MAGIC: &[u8] = b"\0shs1";
/// The AEAD tag length of AES-256-GCM.
const TAG_LEN: usize = 16;
/// Length of a data key and of the secret in an unlock key.
const KEY_LEN: usize = 32;
/// The prefix of an unlock key (its version is the digit).
const UNLOCK_KEY_PREFIX: &str = "SHOALKEY-1-";
/// The data key file, under the data dir.
const DATA_KEY_FILE: &str = "certs/data-key";
/// Version of the data key file's format.
const FILE_VERSION: u32 = 1;
/// HKDF info binding a key derived from an unlock key to its one use.
const KEK_INFO: &[u8] = b"shoal data-key sealing v1";
/// Additional data of the sealed data key inside its file.
const FILE_AAD: &[u8] = b"shoal data-key";

/// What a locked manager answers to everything but `Unlock`.
pub const LOCKED_MESSAGE: &str =
    "this manager is locked (autolock): unlock it with `shoalctl cluster unlock`";
/// What `UnlockKey` answers while autolock is off.
pub const AUTOLOCK_OFF_MESSAGE: &str =
    "autolock is off: turn it on with `shoalctl cluster update --autolock=true`";

/// Errors sealing and unsealing values.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The system's random generator failed (no nonce or key could be drawn).
    #[error("the system random generator failed")]
    Random,
    /// ring refused an operation its inputs should always allow.
    #[error("cannot {op}")]
    Crypto {
        /// The operation.
        op: &'static str,
    },
    /// The value is shorter than a sealed value can be, or lacks the sealed prefix.
    #[error("not a sealed value ({len} bytes)")]
    Malformed {
        /// Its length.
        len: usize,
    },
    /// Authentication failed: the value was sealed with another key, or was altered.
    #[error("cannot be unsealed with this key (another key sealed it, or it was altered)")]
    WrongKey,
    /// The value was written in clear where only sealed values are accepted.
    #[error("stored in clear where everything is sealed")]
    Unsealed,
}

/// Errors of the data key file, autolock and the locked start.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The data key file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The data key file could not be written.
    #[error(transparent)]
    Write(#[from] shoal_proto::secure_file::SecureFileError),
    /// The data key file is not in a format this manager knows.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Sealing or unsealing failed.
    #[error("data key: {0}")]
    Seal(#[from] SealError),
    /// A certificate of the node could not be read while locked.
    #[error("{path}: {source}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The locked server failed.
    #[error("locked server: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The manager was asked to stop while it waited to be unlocked.
    #[error("stopped while locked (autolock): nothing was started")]
    StoppedLocked,
    /// The store could not be opened with the data key.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// A manager's data key: seals everything it writes to sled. Cheap to clone; never printed.
#[derive(Clone)]
pub struct DataKey {
    inner: Arc<KeyInner>,
}

struct KeyInner {
    raw: [u8; KEY_LEN],
    aead: LessSafeKey,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// A new random key.
    pub fn generate() -> Result<DataKey, SealError> {
        let mut raw = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| SealError::Random)?;
        DataKey::from_bytes(raw)
    }

    /// The key made of these bytes.
    pub fn from_bytes(raw: [u8; KEY_LEN]) -> Result<DataKey, SealError> {
        let unbound = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| SealError::Crypto {
            op: "make an AES-256-GCM key",
        })?;
        Ok(DataKey {
            inner: Arc::new(KeyInner {
                raw,
                aead: LessSafeKey::new(unbound),
            }),
        })
    }

    /// Seals `plain`; `aad` names where the value lives, so a sealed value moved to another key
    /// (or another kind of record) no longer opens.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, SealError> {
        seal_with(&self.inner.aead, aad, plain)
    }

    /// Opens a value sealed by [`DataKey::seal`] with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        open_with(&self.inner.aead, aad, sealed)
    }

    /// Opens a sealed value, or returns a legacy plaintext one as it is (the migration only).
    pub fn open_or_legacy(&self, aad: &[u8], value: &[u8]) -> Result<Vec<u8>, SealError> {
        if is_sealed(value) {
            self.open(aad, value)
        } else {
            Ok(value.to_vec())
        }
    }
}

/// Whether `value` has the shape of a sealed value (anything else is legacy plaintext).
pub fn is_sealed(value: &[u8]) -> bool {
    value.starts_with(MAGIC) && value.len() >= MAGIC.len() + NONCE_LEN + TAG_LEN
}

/// Unseals a stored value with `key`, or passes it through when there is no key (a store opened
/// without encryption, as tests do). With a key, a value in clear is refused: the migration at
/// open sealed everything, so one found later was not written by this manager.
pub fn unseal_stored(
    key: Option<&DataKey>,
    aad: &[u8],
    value: &[u8],
) -> Result<Vec<u8>, SealError> {
    match key {
        Some(k) if is_sealed(value) => k.open(aad, value),
        Some(_) => Err(SealError::Unsealed),
        None if is_sealed(value) => Err(SealError::WrongKey),
        None => Ok(value.to_vec()),
    }
}

/// Seals a value to store with `key`, or keeps it in clear without one.
pub fn seal_stored(key: Option<&DataKey>, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, SealError> {
    match key {
        Some(k) => k.seal(aad, plain),
        None => Ok(plain.to_vec()),
    }
}

fn seal_with(key: &LessSafeKey, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, SealError> {
    // Random nonces: 2^32 values per key keep the collision chance negligible, far more than a
    // manager writes between two restarts of autolock or rotation of its disk.
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| SealError::Random)?;
    let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + plain.len() + TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&nonce);
    let mut body = plain.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut body,
    )
    .map_err(|_| SealError::Crypto { op: "seal" })?;
    out.extend_from_slice(&body);
    Ok(out)
}

fn open_with(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    if !is_sealed(sealed) {
        return Err(SealError::Malformed { len: sealed.len() });
    }
    let rest = &sealed[MAGIC.len()..];
    let (nonce, body) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce)
        .map_err(|_| SealError::Malformed { len: sealed.len() })?;
    let mut body = body.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(aad), &mut body)
        .map_err(|_| SealError::WrongKey)?;
    let n = plain.len();
    body.truncate(n);
    Ok(body)
}

/// A new unlock key: `SHOALKEY-1-` and 32 random bytes in unpadded base64url.
pub fn new_unlock_key() -> Result<String, SealError> {
    let mut raw = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| SealError::Random)?;
    Ok(format!(
        "{UNLOCK_KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    ))
}

/// The secret of an unlock key, or `None` when `text` is not one (surrounding blanks allowed).
fn parse_unlock_key(text: &str) -> Option<Vec<u8>> {
    let secret = text.trim().strip_prefix(UNLOCK_KEY_PREFIX)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(secret.trim_end_matches('='))
        .ok()?;
    (raw.len() == KEY_LEN).then_some(raw)
}

/// The key that seals a data key: HKDF-SHA256 of the unlock key's secret with the file's salt.
fn key_encryption_key(secret: &[u8], salt: &[u8]) -> Result<LessSafeKey, SealError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(secret);
    let okm = prk
        .expand(&[KEK_INFO], &AES_256_GCM)
        .map_err(|_| SealError::Crypto {
            op: "derive a key from the unlock key",
        })?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

/// The data key file: the key in clear, or sealed under an unlock key.
#[derive(Debug, Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    sealed: bool,
    /// base64: the key itself, or the sealed key when `sealed`.
    key: String,
    /// base64 HKDF salt (sealed only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    salt: String,
}

/// A data key file as it was read.
#[derive(Debug)]
pub enum StoredDataKey {
    /// Autolock off: the key itself.
    Clear(DataKey),
    /// Autolock on: the key sealed under an unlock key.
    Sealed(SealedDataKey),
}

/// A data key sealed under an unlock key, as kept in the file.
#[derive(Debug, Clone)]
pub struct SealedDataKey {
    salt: Vec<u8>,
    sealed: Vec<u8>,
}

impl SealedDataKey {
    /// The data key, when `unlock_key` is the one it was sealed under.
    pub fn unseal(&self, unlock_key: &str) -> Result<DataKey, SealError> {
        let secret = parse_unlock_key(unlock_key).ok_or(SealError::WrongKey)?;
        let kek = key_encryption_key(&secret, &self.salt)?;
        let raw = open_with(&kek, FILE_AAD, &self.sealed)?;
        let raw: [u8; KEY_LEN] = raw
            .try_into()
            .map_err(|v: Vec<u8>| SealError::Malformed { len: v.len() })?;
        DataKey::from_bytes(raw)
    }
}

/// Where a manager keeps its data key.
pub fn data_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DATA_KEY_FILE)
}

/// Reads the data key file; `None` when there is none (a data dir from before encryption at rest).
pub fn read_data_key(path: &Path) -> Result<Option<StoredDataKey>, LockError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LockError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let format = |reason: String| LockError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let file: KeyFile = serde_json::from_str(&text).map_err(|e| format(e.to_string()))?;
    if file.version != FILE_VERSION {
        return Err(format(format!(
            "version {} (this manager knows version {FILE_VERSION})",
            file.version
        )));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64
        .decode(&file.key)
        .map_err(|e| format(format!("key: {e}")))?;
    if file.sealed {
        let salt = b64
            .decode(&file.salt)
            .map_err(|e| format(format!("salt: {e}")))?;
        return Ok(Some(StoredDataKey::Sealed(SealedDataKey {
            salt,
            sealed: key,
        })));
    }
    let raw: [u8; KEY_LEN] = key
        .try_into()
        .map_err(|v: Vec<u8>| format(format!("a key of {} bytes instead of {KEY_LEN}", v.len())))?;
    Ok(Some(StoredDataKey::Clear(DataKey::from_bytes(raw)?)))
}

/// Writes the data key file (0600, atomic replace): sealed under `unlock_key`, or in clear.
pub fn write_data_key(
    path: &Path,
    key: &DataKey,
    unlock_key: Option<&str>,
) -> Result<(), LockError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let file = match unlock_key {
        None => KeyFile {
            version: FILE_VERSION,
            sealed: false,
            key: b64.encode(key.inner.raw),
            salt: String::new(),
        },
        Some(unlock) => {
            let secret = parse_unlock_key(unlock).ok_or_else(|| LockError::Format {
                path: path.to_path_buf(),
                reason: "the cluster's unlock key is malformed: it cannot seal the data key".into(),
            })?;
            let mut salt = [0u8; KEY_LEN];
            SystemRandom::new()
                .fill(&mut salt)
                .map_err(|_| SealError::Random)?;
            let kek = key_encryption_key(&secret, &salt)?;
            KeyFile {
                version: FILE_VERSION,
                sealed: true,
                key: b64.encode(seal_with(&kek, FILE_AAD, &key.inner.raw)?),
                salt: b64.encode(salt),
            }
        }
    };
    let text = serde_json::to_string_pretty(&file).map_err(|e| LockError::Format {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    shoal_proto::secure_file::write_private(path, text.as_bytes())?;
    Ok(())
}

/// At `init` and `join`: gives the new data dir its data key (in clear: autolock starts off, and
/// a joining manager seals it once its store says so).
pub fn create_data_key(data_dir: &Path) -> Result<DataKey, LockError> {
    let key = DataKey::generate()?;
    write_data_key(&data_key_path(data_dir), &key, None)?;
    Ok(key)
}

/// `UpdateCluster --autolock`: turns autolock on (returns the unlock key: a new one, or the
/// current one when it was on already) or off (returns "").
pub async fn set_autolock(store: &Store, on: bool) -> Result<String, Status> {
    let fresh = new_unlock_key().map_err(|e| Status::internal(e.to_string()))?;
    let (key, changed) = store
        .propose_fresh(|s| -> Result<_, Status> {
            let mut cluster = s
                .cluster()
                .cloned()
                .ok_or_else(|| Status::unavailable("the cluster is not initialised yet"))?;
            if cluster.autolock == on {
                return Ok((Vec::new(), (cluster.unlock_key.clone(), false)));
            }
            cluster.autolock = on;
            cluster.unlock_key = if on { fresh.clone() } else { String::new() };
            let key = cluster.unlock_key.clone();
            Ok((
                vec![StoreAction {
                    action: Some(Action::PutCluster(cluster)),
                }],
                (key, true),
            ))
        })
        .await?;
    if changed {
        info!(
            autolock = on,
            "autolock turned {}",
            if on { "on" } else { "off" }
        );
    }
    Ok(key)
}

/// `UnlockKey`: the current unlock key, or a new one when `rotate`.
pub async fn unlock_key(store: &Store, rotate: bool) -> Result<String, Status> {
    store.linearize().await?;
    let fresh = new_unlock_key().map_err(|e| Status::internal(e.to_string()))?;
    let key = store
        .propose_fresh(|s| -> Result<_, Status> {
            let mut cluster = s
                .cluster()
                .cloned()
                .ok_or_else(|| Status::unavailable("the cluster is not initialised yet"))?;
            if !cluster.autolock {
                return Err(Status::failed_precondition(AUTOLOCK_OFF_MESSAGE));
            }
            if !rotate {
                return Ok((Vec::new(), cluster.unlock_key.clone()));
            }
            cluster.unlock_key = fresh.clone();
            Ok((
                vec![StoreAction {
                    action: Some(Action::PutCluster(cluster)),
                }],
                fresh.clone(),
            ))
        })
        .await?;
    if rotate {
        info!("unlock key rotated");
    }
    Ok(key)
}

/// What the data key file should be: `None` while the store has no cluster yet (a manager that
/// just joined), else the unlock key to seal under (`""`: in clear).
fn wanted_seal(store: &Store) -> Option<String> {
    store.read(|s| {
        s.cluster().map(|c| {
            if c.autolock {
                c.unlock_key.clone()
            } else {
                String::new()
            }
        })
    })
}

/// Keeps this manager's data key file sealed under the store's current unlock key (in clear
/// while autolock is off): once at start, then whenever the cluster object changes it.
pub async fn keep_data_key_sealed(store: Store, data_dir: PathBuf, key: DataKey) {
    let path = data_key_path(&data_dir);
    // Subscribed before the first read, so no change falls in between.
    let mut events = store.watch();
    let mut sealed_under: Option<String> = None;
    loop {
        if let Some(want) = wanted_seal(&store) {
            if sealed_under.as_ref() != Some(&want) {
                let unlock = (!want.is_empty()).then_some(want.as_str());
                match write_data_key(&path, &key, unlock) {
                    Ok(()) => {
                        match (&sealed_under, unlock) {
                            (_, None) => info!("autolock is off: the data key is kept in clear"),
                            (Some(old), Some(_)) if !old.is_empty() => {
                                info!(
                                    "unlock key changed: the data key is sealed under the new one"
                                )
                            }
                            (_, Some(_)) => {
                                info!("autolock is on: the data key is sealed under the unlock key")
                            }
                        }
                        sealed_under = Some(want);
                    }
                    // Tried again on the next change of the cluster object.
                    Err(e) => warn!(error = %e, "cannot rewrite the data key file"),
                }
            }
        }
        loop {
            match events.recv().await {
                Ok(batch) if batch.iter().any(touches_cluster) => break,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

fn touches_cluster(e: &Event) -> bool {
    match e {
        Event::Created(o) | Event::Removed(o) => o.kind() == Kind::Cluster,
        Event::Updated { new, .. } => new.kind() == Kind::Cluster,
    }
}

/// At the start of a manager: loads the data key (creating it for a data dir from before
/// encryption at rest), waits to be unlocked when autolock sealed it, opens the store with it
/// (sealing whatever an older version left in clear) and keeps the key file in line with
/// autolock from then on. A locked manager stops waiting when `shutdown` turns true.
pub async fn open_store(
    data_dir: &Path,
    listen_addr: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> Result<Store, LockError> {
    let path = data_key_path(data_dir);
    let key = match read_data_key(&path)? {
        Some(StoredDataKey::Clear(key)) => key,
        Some(StoredDataKey::Sealed(sealed)) => {
            warn!(listen = %listen_addr, "this manager is locked (autolock): waiting for `shoalctl cluster unlock`");
            let key = serve_locked(data_dir, listen_addr, sealed, shutdown).await?;
            info!("unlocked: starting");
            key
        }
        None => {
            info!("no data key yet (a data dir from before encryption at rest): creating one and sealing the store and the raft log with it");
            create_data_key(data_dir)?
        }
    };
    // Opening with the key seals every value still in clear (see `Store::open_sealed`).
    let store = Store::open_sealed(&data_dir.join("store"), key.clone())?;
    tokio::spawn(keep_data_key_sealed(
        store.clone(),
        data_dir.to_path_buf(),
        key,
    ));
    Ok(store)
}

/// Serves `Unlock` (and "locked" to everything else) on `listen_addr` until the right unlock key
/// arrives (or `shutdown` turns true); returns the data key it opened.
async fn serve_locked(
    data_dir: &Path,
    listen_addr: SocketAddr,
    sealed: SealedDataKey,
    mut shutdown: watch::Receiver<bool>,
) -> Result<DataKey, LockError> {
    let certs = data_dir.join("certs");
    let read = |name: &str| {
        let path = certs.join(name);
        std::fs::read_to_string(&path).map_err(|source| LockError::Cert { path, source })
    };
    let ca_pem = read("ca.pem")?;
    let identity = shoal_proto::pki::Identity {
        cert_pem: read("node.pem")?,
        key_pem: read("node-key.pem")?,
    };
    let (tx, mut rx) = watch::channel(None::<DataKey>);
    let admin = LockedAdmin {
        sealed,
        unlocked: Arc::new(tx),
    };
    let mut done = rx.clone();
    let server = tonic::transport::Server::builder()
        .tls_config(shoal_proto::pki::server_tls(&ca_pem, &identity))?
        .add_service(cluster_admin_server::ClusterAdminServer::new(admin))
        .add_service(Locked::<ControlName>::default())
        .add_service(Locked::<CaName>::default())
        .add_service(Locked::<DispatcherName>::default())
        .add_service(Locked::<RaftName>::default())
        .serve_with_shutdown(listen_addr, async move {
            let _ = done.wait_for(|k| k.is_some()).await;
        });
    tokio::select! {
        r = server => r?,
        _ = crate::serve::stopped(&mut shutdown) => return Err(LockError::StoppedLocked),
        // The graceful shutdown waits for open connections (other managers and agents retrying
        // keep some): once unlocked, give them a moment, then go on regardless.
        _ = async {
            let _ = rx.wait_for(|k| k.is_some()).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        } => warn!("connections to the locked server still open after 3 s: going on"),
    }
    let key = rx.borrow().clone();
    key.ok_or(LockError::StoppedLocked)
}

/// `ClusterAdmin` of a locked manager: only `Unlock` works.
struct LockedAdmin {
    sealed: SealedDataKey,
    unlocked: Arc<watch::Sender<Option<DataKey>>>,
}

impl LockedAdmin {
    fn unlock_with(&self, peer_has_cert: bool, unlock_key: &str) -> Result<DataKey, Status> {
        if !peer_has_cert {
            return Err(Status::unauthenticated(
                "no client certificate: unlock with the admin.conf of the cluster (shoalctl --config)",
            ));
        }
        self.sealed
            .unseal(unlock_key)
            .map_err(|_| Status::permission_denied("invalid unlock key"))
    }
}

fn locked<T>() -> Result<Response<T>, Status> {
    Err(Status::unavailable(LOCKED_MESSAGE))
}

#[tonic::async_trait]
impl cluster_admin_server::ClusterAdmin for LockedAdmin {
    async fn cluster_status(
        &self,
        _: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        locked()
    }
    async fn demote_manager(
        &self,
        _: Request<DemoteManagerRequest>,
    ) -> Result<Response<DemoteManagerResponse>, Status> {
        locked()
    }
    async fn promote_node(
        &self,
        _: Request<PromoteNodeRequest>,
    ) -> Result<Response<PromoteNodeResponse>, Status> {
        locked()
    }
    async fn list_admin_credentials(
        &self,
        _: Request<ListAdminCredentialsRequest>,
    ) -> Result<Response<ListAdminCredentialsResponse>, Status> {
        locked()
    }
    async fn revoke_admin_credential(
        &self,
        _: Request<RevokeAdminCredentialRequest>,
    ) -> Result<Response<RevokeAdminCredentialResponse>, Status> {
        locked()
    }
    async fn renew_admin_certificate(
        &self,
        _: Request<RenewAdminCertificateRequest>,
    ) -> Result<Response<RenewAdminCertificateResponse>, Status> {
        locked()
    }
    async fn get_cluster(
        &self,
        _: Request<GetClusterRequest>,
    ) -> Result<Response<GetClusterResponse>, Status> {
        locked()
    }
    async fn update_cluster(
        &self,
        _: Request<UpdateClusterRequest>,
    ) -> Result<Response<UpdateClusterResponse>, Status> {
        locked()
    }
    async fn rotate_ca(
        &self,
        _: Request<RotateCaRequest>,
    ) -> Result<Response<RotateCaResponse>, Status> {
        locked()
    }
    async fn unlock_key(
        &self,
        _: Request<UnlockKeyRequest>,
    ) -> Result<Response<UnlockKeyResponse>, Status> {
        locked()
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        // TLS verified any certificate against the cluster CA; the store (and with it the list
        // of revoked credentials) is sealed, so holding the unlock key is what counts here.
        let has_cert = request.peer_certs().is_some_and(|c| !c.is_empty());
        let remote = request.remote_addr();
        match self.unlock_with(has_cert, &request.get_ref().unlock_key) {
            Ok(key) => {
                info!(from = ?remote, "unlock key accepted");
                self.unlocked.send_replace(Some(key));
                Ok(Response::new(UnlockResponse {}))
            }
            Err(status) => {
                warn!(from = ?remote, "unlock refused: {}", status.message());
                Err(status)
            }
        }
    }
}

/// A gRPC service name for [`Locked`].
trait ServiceName {
    const NAME: &'static str;
}
#[derive(Clone, Default)]
struct ControlName;
impl ServiceName for ControlName {
    const NAME: &'static str = control_server::SERVICE_NAME;
}
#[derive(Clone, Default)]
struct CaName;
impl ServiceName for CaName {
    const NAME: &'static str = ca_server::SERVICE_NAME;
}
#[derive(Clone, Default)]
struct DispatcherName;
impl ServiceName for DispatcherName {
    const NAME: &'static str = dispatcher_server::SERVICE_NAME;
}
#[derive(Clone, Default)]
struct RaftName;
impl ServiceName for RaftName {
    const NAME: &'static str = raft_server::SERVICE_NAME;
}

/// A whole gRPC service of a locked manager: every method answers UNAVAILABLE "locked".
struct Locked<N>(PhantomData<fn() -> N>);

impl<N> Default for Locked<N> {
    fn default() -> Self {
        Locked(PhantomData)
    }
}

impl<N> Clone for Locked<N> {
    fn clone(&self) -> Self {
        Locked(PhantomData)
    }
}

impl<N: ServiceName> tonic::server::NamedService for Locked<N> {
    const NAME: &'static str = N::NAME;
}

impl<N, B> tower::Service<http::Request<B>> for Locked<N> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<B>) -> Self::Future {
        std::future::ready(Ok(Status::unavailable(LOCKED_MESSAGE).into_http()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_aad() {
        let k = DataKey::generate().unwrap();
        let sealed = k.seal(b"here", b"secret value").unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(k.open(b"here", &sealed).unwrap(), b"secret value");
        // Moved elsewhere, it no longer opens.
        assert!(matches!(
            k.open(b"there", &sealed),
            Err(SealError::WrongKey)
        ));
        // Two seals of one value differ (random nonce).
        assert_ne!(sealed, k.seal(b"here", b"secret value").unwrap());
        // Empty values seal too.
        let empty = k.seal(b"e", b"").unwrap();
        assert_eq!(k.open(b"e", &empty).unwrap(), b"");
    }

    #[test]
    fn wrong_key_and_tampering_are_refused() {
        let k = DataKey::generate().unwrap();
        let other = DataKey::generate().unwrap();
        let mut sealed = k.seal(b"a", b"value").unwrap();
        assert!(matches!(
            other.open(b"a", &sealed),
            Err(SealError::WrongKey)
        ));
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(matches!(k.open(b"a", &sealed), Err(SealError::WrongKey)));
        assert!(matches!(
            k.open(b"a", b"short"),
            Err(SealError::Malformed { .. })
        ));
    }

    #[test]
    fn legacy_plaintext_is_told_apart() {
        let k = DataKey::generate().unwrap();
        // Protobuf encodings and the 8-byte applied index never look sealed.
        assert!(!is_sealed(&7u64.to_be_bytes()));
        assert!(!is_sealed(b"\x0a\x03abc"));
        assert!(!is_sealed(b""));
        assert_eq!(
            k.open_or_legacy(b"x", b"\x0a\x03abc").unwrap(),
            b"\x0a\x03abc"
        );
        let sealed = k.seal(b"x", b"new").unwrap();
        assert_eq!(k.open_or_legacy(b"x", &sealed).unwrap(), b"new");
        // Once migrated, a value in clear is refused; without a key a sealed one is.
        assert!(matches!(
            unseal_stored(Some(&k), b"x", b"\x0a\x03abc"),
            Err(SealError::Unsealed)
        ));
        assert!(matches!(
            unseal_stored(None, b"x", &sealed),
            Err(SealError::WrongKey)
        ));
        assert_eq!(unseal_stored(None, b"x", b"plain").unwrap(), b"plain");
    }

    #[test]
    fn unlock_keys_have_their_format() {
        let key = new_unlock_key().unwrap();
        assert!(key.starts_with("SHOALKEY-1-"));
        assert_eq!(key.len(), "SHOALKEY-1-".len() + 43);
        assert_eq!(parse_unlock_key(&format!("  {key}\n")).unwrap().len(), 32);
        assert!(parse_unlock_key("SHOALKEY-1-tooshort").is_none());
        assert!(parse_unlock_key(&key.replace("SHOALKEY-1-", "SWMKEY-1-")).is_none());
    }

    #[test]
    fn data_key_file_round_trip_clear_and_sealed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("certs")).unwrap();
        let path = data_key_path(dir.path());
        assert!(read_data_key(&path).unwrap().is_none());
        let key = create_data_key(dir.path()).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed_value = key.seal(b"v", b"payload").unwrap();
        let StoredDataKey::Clear(read) = read_data_key(&path).unwrap().unwrap() else {
            panic!("expected a clear key");
        };
        assert_eq!(read.open(b"v", &sealed_value).unwrap(), b"payload");

        let unlock = new_unlock_key().unwrap();
        write_data_key(&path, &key, Some(&unlock)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"sealed\": true"));
        assert!(!text.contains(&base64::engine::general_purpose::STANDARD.encode(key.inner.raw)));
        let StoredDataKey::Sealed(sealed) = read_data_key(&path).unwrap().unwrap() else {
            panic!("expected a sealed key");
        };
        assert!(matches!(
            sealed.unseal(&new_unlock_key().unwrap()),
            Err(SealError::WrongKey)
        ));
        assert!(sealed.unseal("not a key").is_err());
        let opened = sealed.unseal(&unlock).unwrap();
        assert_eq!(opened.open(b"v", &sealed_value).unwrap(), b"payload");
    }

    #[test]
    fn unlock_needs_a_certificate_and_the_key() {
        let key = DataKey::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data-key");
        let unlock = new_unlock_key().unwrap();
        write_data_key(&path, &key, Some(&unlock)).unwrap();
        let StoredDataKey::Sealed(sealed) = read_data_key(&path).unwrap().unwrap() else {
            panic!("expected a sealed key");
        };
        let (tx, rx) = watch::channel(None);
        let admin = LockedAdmin {
            sealed,
            unlocked: Arc::new(tx),
        };
        let e = admin.unlock_with(false, &unlock).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = admin
            .unlock_with(true, &new_unlock_key().unwrap())
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert_eq!(e.message(), "invalid unlock key");
        assert!(admin.unlock_with(true, &unlock).is_ok());
        assert!(rx.borrow().is_none(), "only the RPC hands the key over");
    }

    /// The locked server over real TLS: `Unlock` with a wrong key is refused, other services
    /// answer "locked", a call without a client certificate is refused, the right key unlocks
    /// and the server lets go of the port.
    #[tokio::test]
    async fn locked_server_unlocks_with_the_right_key_only() {
        use shoal_proto::pki::{self, CertRole, Trust};
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        let ca = pki::generate_ca("c1").unwrap();
        let node = pki::issue(
            &ca,
            "n1",
            CertRole::Manager,
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
        let admin = pki::issue(
            &ca,
            "admin",
            CertRole::Admin,
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
        std::fs::write(certs.join("ca.pem"), &ca.cert_pem).unwrap();
        std::fs::write(certs.join("node.pem"), &node.cert_pem).unwrap();
        std::fs::write(certs.join("node-key.pem"), &node.key_pem).unwrap();
        let key = create_data_key(dir.path()).unwrap();
        let unlock = new_unlock_key().unwrap();
        write_data_key(&data_key_path(dir.path()), &key, Some(&unlock)).unwrap();
        let StoredDataKey::Sealed(sealed) =
            read_data_key(&data_key_path(dir.path())).unwrap().unwrap()
        else {
            panic!("expected a sealed key");
        };
        // A free port: bound, read, let go (the server binds it itself).
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let data_dir = dir.path().to_path_buf();
        let (_stop, stop_rx) = watch::channel(false);
        let server =
            tokio::spawn(async move { serve_locked(&data_dir, addr, sealed, stop_rx).await });

        let with_cert =
            Arc::new(pki::client_config(&Trust::Ca(ca.cert_pem.clone()), Some(&admin)).unwrap());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let channel = loop {
            match pki::connect(&addr.to_string(), with_cert.clone()).await {
                Ok(c) => break c,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("locked server never answered: {e}"),
            }
        };
        let mut admin_client = cluster_admin_client::ClusterAdminClient::new(channel.clone());
        let e = admin_client
            .unlock(UnlockRequest {
                unlock_key: new_unlock_key().unwrap(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert_eq!(e.message(), "invalid unlock key");
        let e = admin_client
            .cluster_status(ClusterStatusRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert_eq!(e.message(), LOCKED_MESSAGE);
        let e = control_client::ControlClient::new(channel.clone())
            .list_nodes(ListNodesRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert_eq!(e.message(), LOCKED_MESSAGE);

        let no_cert = Arc::new(pki::client_config(&Trust::Ca(ca.cert_pem.clone()), None).unwrap());
        let anonymous = pki::connect(&addr.to_string(), no_cert).await.unwrap();
        let e = cluster_admin_client::ClusterAdminClient::new(anonymous)
            .unlock(UnlockRequest {
                unlock_key: unlock.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);

        admin_client
            .unlock(UnlockRequest {
                unlock_key: format!("{unlock}\n"),
            })
            .await
            .unwrap();
        drop(admin_client);
        drop(channel);
        let opened = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the locked server stops once unlocked")
            .unwrap()
            .unwrap();
        let probe = key.seal(b"p", b"x").unwrap();
        assert_eq!(opened.open(b"p", &probe).unwrap(), b"x");
        // The port is free again for the manager's own server.
        std::net::TcpListener::bind(addr).unwrap();
    }

    /// Waits (with a deadline) until the data key file at `path` satisfies `ok`.
    async fn wait_for_file(path: &Path, what: &str, ok: impl Fn(&StoredDataKey) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if read_data_key(path).unwrap().as_ref().is_some_and(&ok) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Autolock on, rotation and off, through a one-manager Raft group: the key file follows.
    #[tokio::test]
    async fn autolock_and_rotation_reseal_the_key_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("certs")).unwrap();
        let key = create_data_key(dir.path()).unwrap();
        let store = Store::open_sealed(&dir.path().join("store"), key.clone()).unwrap();
        let raft = crate::raft::RaftNode::start(
            crate::raft::RaftConfig::new(1, dir.path().to_path_buf()),
            store.clone(),
        )
        .unwrap();
        let now = shoal_proto::now_ns();
        store
            .propose(vec![StoreAction {
                action: Some(Action::PutCluster(Cluster {
                    id: "c1".into(),
                    meta: Some(Meta {
                        version: 0,
                        created_at: now,
                        updated_at: now,
                    }),
                    ..Cluster::default()
                })),
            }])
            .await
            .unwrap();
        let watcher = tokio::spawn(keep_data_key_sealed(
            store.clone(),
            dir.path().to_path_buf(),
            key.clone(),
        ));
        let path = data_key_path(dir.path());
        let probe = key.seal(b"p", b"x").unwrap();
        let opens_with = |unlock: String| {
            let probe = probe.clone();
            move |f: &StoredDataKey| match f {
                StoredDataKey::Sealed(s) => s
                    .unseal(&unlock)
                    .is_ok_and(|k| k.open(b"p", &probe).is_ok()),
                StoredDataKey::Clear(_) => false,
            }
        };

        let e = unlock_key(&store, false).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert_eq!(e.message(), AUTOLOCK_OFF_MESSAGE);
        assert_eq!(set_autolock(&store, false).await.unwrap(), "");

        let k1 = set_autolock(&store, true).await.unwrap();
        assert!(k1.starts_with("SHOALKEY-1-"));
        wait_for_file(&path, "sealed under the first key", opens_with(k1.clone())).await;
        // On again: the same key, nothing rotated.
        assert_eq!(set_autolock(&store, true).await.unwrap(), k1);
        assert_eq!(unlock_key(&store, false).await.unwrap(), k1);

        let k2 = unlock_key(&store, true).await.unwrap();
        assert_ne!(k1, k2);
        assert_eq!(unlock_key(&store, false).await.unwrap(), k2);
        wait_for_file(
            &path,
            "sealed under the rotated key",
            opens_with(k2.clone()),
        )
        .await;

        assert_eq!(set_autolock(&store, false).await.unwrap(), "");
        wait_for_file(
            &path,
            "back in clear",
            |f| matches!(f, StoredDataKey::Clear(k) if k.open(b"p", &probe).is_ok()),
        )
        .await;
        assert!(store.read(|s| s.cluster().is_some_and(|c| c.unlock_key.is_empty())));
        watcher.abort();
        raft.shutdown().await;
    }
}
