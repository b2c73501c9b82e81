//! The store's only contact with sled: one tree per object kind plus a `meta` tree holding the
//! applied Raft index. Kept narrow so the engine could be swapped (redb) without touching the rest.
//!
//! Opened with the manager's data key, every value (objects and the applied index) is sealed
//! before it reaches sled and unsealed when read back; keys (object ids) stay in clear.

use std::path::Path;

use prost::Message as _;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::state::{Kind, Object, State};
use super::StoreError;
use crate::seal::{self, DataKey};

/// Tree names, indexed by `Kind as usize`; the meta tree sits at index 4 (kinds added later come
/// after it, so existing databases keep their tree numbering).
const TREES: [&str; 8] = [
    "cluster", "node", "service", "task", "meta", "network", "secret", "config",
];
const META: usize = 4;
const APPLIED_INDEX: &[u8] = b"applied_index";

/// One write of a transaction: the object's kind and id, and its new encoding (`None` deletes).
pub(crate) type Write = (Kind, String, Option<Vec<u8>>);

/// Opens a sled database, waiting up to 3 s for its file lock: sled's flusher thread lets go of a
/// dropped database a moment later, and a manager restarted at once (or a previous process still
/// exiting) would otherwise fail with "could not acquire lock".
pub(crate) fn open_sled(dir: &Path) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match sled::open(dir) {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// The sled database behind a store.
pub(crate) struct Disk {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    /// The data key sealing every value; `None` keeps them in clear (tests, benches).
    key: Option<DataKey>,
}

impl Disk {
    /// Opens (or creates) the database in `dir`, values in clear.
    pub(crate) fn open(dir: &Path) -> Result<Disk, StoreError> {
        Self::open_with(dir, None)
    }

    /// Opens (or creates) the database in `dir` with every value sealed by `key`; values an
    /// older version wrote in clear are sealed first.
    pub(crate) fn open_sealed(dir: &Path, key: DataKey) -> Result<Disk, StoreError> {
        let disk = Self::open_with(dir, Some(key))?;
        disk.seal_legacy()?;
        Ok(disk)
    }

    fn open_with(dir: &Path, key: Option<DataKey>) -> Result<Disk, StoreError> {
        let db = open_sled(dir)?;
        let trees = TREES
            .iter()
            .map(|name| db.open_tree(name))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Disk { db, trees, key })
    }

    /// The key values are sealed with, if any.
    pub(crate) fn key(&self) -> Option<&DataKey> {
        self.key.as_ref()
    }

    /// The migration to encryption at rest: rewrites every value still in clear sealed, tree by
    /// tree, then flushes. Idempotent (a crash halfway is finished at the next start). sled may
    /// keep the old plaintext in log segments it has not compacted yet: they are reclaimed as
    /// sled rewrites its segments, not at once.
    fn seal_legacy(&self) -> Result<(), StoreError> {
        let Some(key) = &self.key else {
            return Ok(());
        };
        let mut sealed = 0usize;
        for (t, tree) in self.trees.iter().enumerate() {
            let mut batch = sled::Batch::default();
            for item in tree.iter() {
                let (k, v) = item?;
                if seal::is_sealed(&v) {
                    continue;
                }
                let aad = value_aad(t, &k);
                let value = key.seal(&aad, &v).map_err(|e| seal_error(t, &k, e))?;
                batch.insert(k, value);
                sealed += 1;
            }
            tree.apply_batch(batch)?;
        }
        if sealed > 0 {
            self.db.flush()?;
            tracing::info!(
                values = sealed,
                "store: values kept in clear sealed with the data key"
            );
        }
        Ok(())
    }

    /// Reads every object back, and the applied index.
    pub(crate) fn load(&self) -> Result<(State, u64), StoreError> {
        let mut state = State::default();
        for kind in [
            Kind::Cluster,
            Kind::Node,
            Kind::Network,
            Kind::Secret,
            Kind::Config,
            Kind::Service,
            Kind::Task,
        ] {
            for item in self.trees[kind as usize].iter() {
                let (key, value) = item?;
                let value = self.unseal(kind as usize, &key, &value)?;
                state.put(decode(kind, &key, &value)?);
            }
        }
        let applied = match self.trees[META].get(APPLIED_INDEX)? {
            Some(v) => decode_index(&self.unseal(META, APPLIED_INDEX, &v)?)?,
            None => 0,
        };
        Ok((state, applied))
    }

    /// Writes the given objects and the applied index in one transaction.
    pub(crate) fn write(&self, index: u64, writes: &[Write]) -> Result<(), StoreError> {
        self.transaction(index, &[], writes)
    }

    /// Replaces the whole content: deletes `old` keys, writes `new` ones and the index, atomically.
    pub(crate) fn replace(
        &self,
        index: u64,
        old: &[(Kind, String)],
        new: &[Write],
    ) -> Result<(), StoreError> {
        self.transaction(index, old, new)
    }

    /// Deletes every object and the applied index, durably: the index first (and flushed), so a
    /// crash halfway leaves objects under index 0, never an index above what the objects hold.
    pub(crate) fn clear(&self) -> Result<(), StoreError> {
        if self.trees.iter().all(|t| t.is_empty()) {
            return Ok(());
        }
        self.trees[META].remove(APPLIED_INDEX)?;
        self.db.flush()?;
        for tree in &self.trees {
            tree.clear()?;
        }
        self.db.flush()?;
        Ok(())
    }

    /// Forces everything written so far to stable storage.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn transaction(
        &self,
        index: u64,
        deletes: &[(Kind, String)],
        writes: &[Write],
    ) -> Result<(), StoreError> {
        // Sealed outside the transaction: sled may run its closure more than once.
        let writes = writes
            .iter()
            .map(|(kind, id, value)| {
                let value = match value {
                    Some(v) => Some(self.seal(*kind as usize, id.as_bytes(), v)?),
                    None => None,
                };
                Ok((*kind, id, value))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let index_value = self.seal(META, APPLIED_INDEX, &index.to_be_bytes())?;
        let result = self.trees.as_slice().transaction(|views| {
            for (kind, id) in deletes {
                views[*kind as usize].remove(id.as_bytes())?;
            }
            for (kind, id, value) in &writes {
                let tree = &views[*kind as usize];
                match value {
                    Some(v) => tree.insert(id.as_bytes(), v.as_slice())?,
                    None => tree.remove(id.as_bytes())?,
                };
            }
            views[META].insert(APPLIED_INDEX, index_value.as_slice())?;
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(StoreError::Storage(e)),
            // The closure never aborts.
            Err(TransactionError::Abort(())) => Err(StoreError::Storage(sled::Error::Unsupported(
                "store transaction aborted".into(),
            ))),
        }
    }
}

impl Disk {
    fn seal(&self, tree: usize, key: &[u8], plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        seal::seal_stored(self.key.as_ref(), &value_aad(tree, key), plain)
            .map_err(|e| seal_error(tree, key, e))
    }

    fn unseal(&self, tree: usize, key: &[u8], value: &[u8]) -> Result<Vec<u8>, StoreError> {
        seal::unseal_stored(self.key.as_ref(), &value_aad(tree, key), value)
            .map_err(|e| seal_error(tree, key, e))
    }
}

/// The additional data a value is sealed with: its tree and key, so a value copied to another
/// place no longer opens.
fn value_aad(tree: usize, key: &[u8]) -> Vec<u8> {
    let mut aad = format!("store/{}/", TREES.get(tree).copied().unwrap_or("?")).into_bytes();
    aad.extend_from_slice(key);
    aad
}

fn seal_error(tree: usize, key: &[u8], e: seal::SealError) -> StoreError {
    StoreError::Corrupt {
        what: format!(
            "{} {}",
            TREES.get(tree).copied().unwrap_or("?"),
            String::from_utf8_lossy(key)
        ),
        reason: format!("data key: {e}"),
    }
}

/// Encodes an object as it is kept on disk (its protobuf encoding).
pub(crate) fn encode(obj: &Object) -> Vec<u8> {
    match obj {
        Object::Cluster(o) => o.encode_to_vec(),
        Object::Node(o) => o.encode_to_vec(),
        Object::Service(o) => o.encode_to_vec(),
        Object::Task(o) => o.encode_to_vec(),
        Object::Network(o) => o.encode_to_vec(),
        Object::Secret(o) => o.encode_to_vec(),
        Object::Config(o) => o.encode_to_vec(),
    }
}

fn decode(kind: Kind, key: &[u8], value: &[u8]) -> Result<Object, StoreError> {
    let codec = |source| StoreError::Codec {
        what: format!("{kind:?} {}", String::from_utf8_lossy(key)),
        source,
    };
    Ok(match kind {
        Kind::Cluster => Object::Cluster(prost::Message::decode(value).map_err(codec)?),
        Kind::Node => Object::Node(prost::Message::decode(value).map_err(codec)?),
        Kind::Service => Object::Service(prost::Message::decode(value).map_err(codec)?),
        Kind::Task => Object::Task(prost::Message::decode(value).map_err(codec)?),
        Kind::Network => Object::Network(prost::Message::decode(value).map_err(codec)?),
        Kind::Secret => Object::Secret(prost::Message::decode(value).map_err(codec)?),
        Kind::Config => Object::Config(prost::Message::decode(value).map_err(codec)?),
    })
}

fn decode_index(v: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = v.try_into().map_err(|_| StoreError::Corrupt {
        what: "applied index".into(),
        reason: format!("{} bytes instead of 8", v.len()),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use shoal_proto::v1::store_action::Action;
    use shoal_proto::v1::{Cluster, StoreAction, StoreRequest};

    use crate::seal::DataKey;
    use crate::store::{Store, StoreError};

    const SECRET: &str = "-----BEGIN PRIVATE KEY-----not really-----END PRIVATE KEY-----";

    fn put_cluster() -> StoreRequest {
        StoreRequest {
            request_id: 1,
            actions: vec![StoreAction {
                action: Some(Action::PutCluster(Cluster {
                    id: "c1".into(),
                    ca_key_pem: SECRET.into(),
                    ..Cluster::default()
                })),
            }],
        }
    }

    /// Every value of every tree of the sled database at `dir`, raw.
    fn raw_values(dir: &std::path::Path) -> Vec<Vec<u8>> {
        let db = super::open_sled(dir).unwrap();
        let mut values = Vec::new();
        for name in db.tree_names() {
            for item in db.open_tree(name).unwrap().iter() {
                values.push(item.unwrap().1.to_vec());
            }
        }
        values
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_sealed_store_reopens_with_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let key = DataKey::generate().unwrap();
        {
            let store = Store::open_sealed(&path, key.clone()).unwrap();
            store.apply(1, &put_cluster()).unwrap();
            store.flush().unwrap();
        }
        let values = raw_values(&path);
        assert!(!values.is_empty());
        for v in &values {
            assert!(crate::seal::is_sealed(v), "a value in clear: {v:?}");
            assert!(!contains(v, b"PRIVATE KEY"));
        }
        {
            let store = Store::open_sealed(&path, key).unwrap();
            assert_eq!(store.applied_index(), 1);
            let ca_key = store.read(|s| s.cluster().map(|c| c.ca_key_pem.clone()));
            assert_eq!(ca_key.as_deref(), Some(SECRET));
        }
        let wrong = Store::open_sealed(&path, DataKey::generate().unwrap());
        assert!(matches!(wrong, Err(StoreError::Corrupt { .. })));
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_store_in_clear_is_sealed_when_opened_with_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let store = Store::open(&path).unwrap();
            store.apply(1, &put_cluster()).unwrap();
            store.flush().unwrap();
        }
        assert!(raw_values(&path)
            .iter()
            .any(|v| contains(v, b"PRIVATE KEY")));
        let key = DataKey::generate().unwrap();
        {
            let store = Store::open_sealed(&path, key.clone()).unwrap();
            assert_eq!(store.applied_index(), 1);
            assert!(store.read(|s| s.cluster().is_some()));
        }
        for v in raw_values(&path) {
            assert!(crate::seal::is_sealed(&v), "a value left in clear: {v:?}");
        }
        // Migrating again is a no-op.
        let store = Store::open_sealed(&path, key).unwrap();
        assert_eq!(store.applied_index(), 1);
    }
}
