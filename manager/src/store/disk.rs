//! The store's only contact with sled: one tree per object kind plus a `meta` tree holding the
//! applied Raft index. Kept narrow so the engine could be swapped (redb) without touching the rest.

use std::path::Path;

use prost::Message as _;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::state::{Kind, Object, State};
use super::StoreError;

/// Tree names, indexed by `Kind as usize`; the meta tree sits at index 4 (kinds added later come
/// after it, so existing databases keep their tree numbering).
const TREES: [&str; 6] = ["cluster", "node", "service", "task", "meta", "network"];
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
}

impl Disk {
    /// Opens (or creates) the database in `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Disk, StoreError> {
        let db = open_sled(dir)?;
        let trees = TREES
            .iter()
            .map(|name| db.open_tree(name))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Disk { db, trees })
    }

    /// Reads every object back, and the applied index.
    pub(crate) fn load(&self) -> Result<(State, u64), StoreError> {
        let mut state = State::default();
        for kind in [
            Kind::Cluster,
            Kind::Node,
            Kind::Network,
            Kind::Service,
            Kind::Task,
        ] {
            for item in self.trees[kind as usize].iter() {
                let (key, value) = item?;
                state.put(decode(kind, &key, &value)?);
            }
        }
        let applied = match self.trees[META].get(APPLIED_INDEX)? {
            Some(v) => decode_index(&v)?,
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
        let result = self.trees.as_slice().transaction(|views| {
            for (kind, id) in deletes {
                views[*kind as usize].remove(id.as_bytes())?;
            }
            for (kind, id, value) in writes {
                let tree = &views[*kind as usize];
                match value {
                    Some(v) => tree.insert(id.as_bytes(), v.as_slice())?,
                    None => tree.remove(id.as_bytes())?,
                };
            }
            views[META].insert(APPLIED_INDEX, &index.to_be_bytes())?;
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

/// Encodes an object as it is kept on disk (its protobuf encoding).
pub(crate) fn encode(obj: &Object) -> Vec<u8> {
    match obj {
        Object::Cluster(o) => o.encode_to_vec(),
        Object::Node(o) => o.encode_to_vec(),
        Object::Service(o) => o.encode_to_vec(),
        Object::Task(o) => o.encode_to_vec(),
        Object::Network(o) => o.encode_to_vec(),
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
    })
}

fn decode_index(v: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = v.try_into().map_err(|_| StoreError::Corrupt {
        what: "applied index".into(),
        reason: format!("{} bytes instead of 8", v.len()),
    })?;
    Ok(u64::from_be_bytes(bytes))
}
