//! Sealing at rest: a manager's data key and the sealed-value format every sled writer shares.
//!
//! A leaf module: the store, the Raft log and `lock` (which keeps the key file and autolock) all
//! seal with these functions, and none of them has to import another to do so.

use std::sync::Arc;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom as _, SystemRandom};

/// What every sealed value starts with. The leading zero byte is never the first byte of a
/// protobuf encoding (field number 0 does not exist), so legacy plaintext cannot look sealed.
const MAGIC: &[u8] = b"\0shs1";
/// The AEAD tag length of AES-256-GCM.
const TAG_LEN: usize = 16;
/// Length of a data key and of the secret in an unlock key.
pub(crate) const KEY_LEN: usize = 32;

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

    /// The key's bytes, for the key file only.
    pub(crate) fn raw(&self) -> &[u8; KEY_LEN] {
        &self.inner.raw
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

pub(crate) fn seal_with(key: &LessSafeKey, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, SealError> {
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

pub(crate) fn open_with(
    key: &LessSafeKey,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, SealError> {
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
