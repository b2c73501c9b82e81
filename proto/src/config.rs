//! `admin.conf`: what shoalctl needs to reach a cluster (manager endpoints, CA, admin certificate).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Response metadata key a manager sets on an error when the call was refused before anything
/// was proposed (its read barrier found no quorum): shoalctl may then send even a write to the
/// next manager of `admin.conf` without risking applying it twice.
pub const NOTHING_PROPOSED_KEY: &str = "shoal-nothing-proposed";

/// The client configuration written by `shoal-manager init` to `DATA_DIR/admin.conf`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AdminConfig {
    /// Manager addresses ("IP:PORT"), tried in order.
    pub managers: Vec<String>,
    /// The cluster CA certificate, PEM.
    pub ca_cert: String,
    /// The admin client certificate chain, PEM.
    pub cert: String,
    /// The admin client private key, PEM.
    pub key: String,
}

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing the file owner-only failed.
    #[error(transparent)]
    Private(#[from] crate::secure_file::SecureFileError),
    /// The file is not a valid admin.conf.
    #[error("{path}: not a valid admin.conf: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The JSON error.
        source: serde_json::Error,
    },
}

impl AdminConfig {
    /// Reads an admin.conf.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// Writes an admin.conf readable by its owner only (it holds a private key).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let text = serde_json::to_string_pretty(self).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        Ok(crate::secure_file::write_private(path, text.as_bytes())?)
    }

    /// Reads, changes and writes an admin.conf under an exclusive lock (`PATH.lock`), so two
    /// writers (a manager renewing its data dir's admin.conf, shoalctl renewing the one it uses)
    /// never lose each other's change. `change` sees the file as it is now and returns whether to
    /// write it back; so does this function.
    pub fn update(
        path: &Path,
        change: impl FnOnce(&mut AdminConfig) -> bool,
    ) -> Result<bool, ConfigError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let io = |source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(std::path::Path::new(&lock_path))
            .map_err(io)?;
        lock.lock().map_err(io)?;
        let mut conf = AdminConfig::load(path)?;
        let write = change(&mut conf);
        if write {
            conf.save(path)?;
        }
        // Dropping the file releases the lock.
        drop(lock);
        Ok(write)
    }
}
