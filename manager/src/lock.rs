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

use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::aead::{LessSafeKey, UnboundKey, AES_256_GCM};
use ring::hkdf;
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};
use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::*;
use tonic::Status;
use tracing::{info, warn};

use crate::store::{Event, Kind, Store, StoreError};

mod locked;

pub use locked::open_store;

pub use crate::seal::{is_sealed, seal_stored, unseal_stored, DataKey, SealError};
use crate::seal::{open_with, seal_with, KEY_LEN};

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
            key: b64.encode(key.raw()),
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
                key: b64.encode(seal_with(&kek, FILE_AAD, key.raw())?),
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

#[cfg(test)]
mod tests;
