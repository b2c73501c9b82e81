//! The node's named volumes (docker's `local` driver): a directory per volume under
//! `<data-dir>/volumes/NAME/_data` with its record in `volume.json`, created on first use,
//! kept across task replacement, removed only by `volume rm`/`volume prune` (or with its task,
//! for an anonymous one). Which live task mounts which volume is kept in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shoal_proto::v1::{Volume, VolumeOp, VolumeReply, VolumeRequest};

/// The only driver this node has.
pub const LOCAL_DRIVER: &str = "local";

/// Errors of the volume store.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A name docker would refuse.
    #[error("invalid volume name {0:?}: it must match [a-zA-Z0-9][a-zA-Z0-9_.-]+")]
    BadName(String),
    /// A driver other than `local`.
    #[error("volume driver \"{0}\" is not supported")]
    UnsupportedDriver(String),
    /// No such volume on this node.
    #[error("no such volume: {0}")]
    NotFound(String),
    /// A live task mounts the volume.
    #[error("volume {name} is in use by task {task}")]
    InUse {
        /// The volume.
        name: String,
        /// One task that mounts it.
        task: String,
    },
    /// Reading or writing the volume's directory or record failed.
    #[error("volume {name}: {path}: {source}")]
    Io {
        /// The volume.
        name: String,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The record is not valid JSON.
    #[error("volume {name}: bad record: {source}")]
    Record {
        /// The volume.
        name: String,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// What a volume is created with (ignored when it exists already, as docker does).
#[derive(Debug, Clone, Default)]
pub struct VolumeCreate {
    /// `local` or empty.
    pub driver: String,
    /// `volume-label`s.
    pub labels: BTreeMap<String, String>,
    /// The driver's options: `type`, `device`, `o`.
    pub options: BTreeMap<String, String>,
    /// Made for a mount without a source; removed with the task that made it.
    pub anonymous: bool,
}

/// `volume.json`: a volume's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Always `local`.
    pub driver: String,
    /// Labels given at creation.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Driver options given at creation.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Unix nanoseconds.
    pub created_at: i64,
    /// Made for a mount without a source.
    #[serde(default)]
    pub anonymous: bool,
    /// The task an anonymous volume belongs to (found again after an agent restart).
    #[serde(default)]
    pub task_id: String,
}

/// A volume ready to mount.
#[derive(Debug, Clone)]
pub struct EnsuredVolume {
    /// Its record.
    pub record: VolumeRecord,
    /// The host directory holding its data (`.../NAME/_data`).
    pub data: PathBuf,
}

/// The node's volumes; a cloneable handle.
#[derive(Debug, Clone)]
pub struct VolumeStore {
    dir: PathBuf,
    /// Volume name → the live tasks mounting it. Also serialises creation and removal.
    users: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>,
}

/// docker's volume name rule.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// The name of a task's anonymous volume for its mount number `index`: 64 hex digits like
/// docker's, derived from the task so a restarted agent finds the same volume again.
pub fn anonymous_name(task_id: &str, index: usize) -> String {
    hex::encode(Sha256::digest(format!("{task_id}/{index}").as_bytes()))
}

impl VolumeStore {
    /// The store of the agent whose data directory is `data_dir` (nothing is created until a
    /// volume is).
    pub fn open(data_dir: &Path) -> VolumeStore {
        VolumeStore {
            dir: data_dir.join("volumes"),
            users: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, BTreeSet<String>>> {
        // Poisoning only means a panic elsewhere; the map stays valid entry by entry.
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn io(name: &str, path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError {
        let (name, path) = (name.to_string(), path.to_path_buf());
        move |source| VolumeError::Io { name, path, source }
    }

    /// Where the volume's data is on the node.
    pub fn data_path(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("_data")
    }

    /// Creates the volume unless it exists, and records that `task_id` mounts it.
    pub fn ensure(
        &self,
        name: &str,
        opts: &VolumeCreate,
        task_id: &str,
    ) -> Result<EnsuredVolume, VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::BadName(name.to_string()));
        }
        if !opts.driver.is_empty() && opts.driver != LOCAL_DRIVER {
            return Err(VolumeError::UnsupportedDriver(opts.driver.clone()));
        }
        let mut users = self.lock();
        let record = match self.record(name)? {
            Some(r) => r,
            None => {
                let record = VolumeRecord {
                    driver: LOCAL_DRIVER.to_string(),
                    labels: opts.labels.clone(),
                    options: opts.options.clone(),
                    created_at: shoal_proto::now_ns(),
                    anonymous: opts.anonymous,
                    task_id: if opts.anonymous {
                        task_id.to_string()
                    } else {
                        String::new()
                    },
                };
                self.create(name, &record)?;
                record
            }
        };
        users
            .entry(name.to_string())
            .or_default()
            .insert(task_id.to_string());
        Ok(EnsuredVolume {
            record,
            data: self.data_path(name),
        })
    }

    fn create(&self, name: &str, record: &VolumeRecord) -> Result<(), VolumeError> {
        let data = self.data_path(name);
        fs::create_dir_all(&data).map_err(Self::io(name, &data))?;
        // docker's _data is 0755 root; a copy-up then takes the image directory's mode.
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755))
            .map_err(Self::io(name, &data))?;
        let json = serde_json::to_vec_pretty(record).map_err(|source| VolumeError::Record {
            name: name.to_string(),
            source,
        })?;
        let path = self.dir.join(name).join("volume.json");
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, json).map_err(Self::io(name, &tmp))?;
        fs::rename(&tmp, &path).map_err(Self::io(name, &path))
    }

    /// The volume's record; `None` when there is no such volume.
    pub fn record(&self, name: &str) -> Result<Option<VolumeRecord>, VolumeError> {
        let path = self.dir.join(name).join("volume.json");
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| VolumeError::Record {
                        name: name.to_string(),
                        source,
                    })
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io(name, &path)(e)),
        }
    }

    /// Forgets that `task_id` mounts anything, and removes its anonymous volumes.
    pub fn release_task(&self, task_id: &str) -> Result<(), VolumeError> {
        let mut users = self.lock();
        for tasks in users.values_mut() {
            tasks.remove(task_id);
        }
        users.retain(|_, tasks| !tasks.is_empty());
        for name in self.names()? {
            if users.contains_key(&name) {
                continue;
            }
            if let Some(r) = self.record(&name)? {
                if r.anonymous && r.task_id == task_id {
                    self.delete(&name)?;
                }
            }
        }
        Ok(())
    }

    fn names(&self) -> Result<Vec<String>, VolumeError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io("*", &self.dir)(e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join("volume.json").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    fn view(
        &self,
        name: &str,
        record: VolumeRecord,
        users: &BTreeMap<String, BTreeSet<String>>,
    ) -> Volume {
        let data = self.data_path(name);
        Volume {
            name: name.to_string(),
            driver: record.driver,
            labels: record.labels.into_iter().collect(),
            options: record.options.into_iter().collect(),
            node_id: String::new(),
            mountpoint: data.display().to_string(),
            created_at: record.created_at,
            in_use_by: users
                .get(name)
                .map(|t| t.iter().cloned().collect())
                .unwrap_or_default(),
            size_bytes: i64::try_from(dir_size(&data)).unwrap_or(i64::MAX),
            anonymous: record.anonymous,
        }
    }

    /// Every volume (or only `name`, when not empty), with its users and size.
    pub fn list(&self, name: &str) -> Result<Vec<Volume>, VolumeError> {
        let users = self.lock();
        let mut out = Vec::new();
        for n in self.names()? {
            if !name.is_empty() && n != name {
                continue;
            }
            if let Some(r) = self.record(&n)? {
                out.push(self.view(&n, r, &users));
            }
        }
        Ok(out)
    }

    fn delete(&self, name: &str) -> Result<(), VolumeError> {
        let dir = self.dir.join(name);
        fs::remove_dir_all(&dir).map_err(Self::io(name, &dir))
    }

    /// Removes a volume no task mounts; returns what it was.
    pub fn remove(&self, name: &str) -> Result<Volume, VolumeError> {
        let users = self.lock();
        if let Some(task) = users.get(name).and_then(|t| t.iter().next()) {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                task: task.clone(),
            });
        }
        let record = self
            .record(name)?
            .ok_or_else(|| VolumeError::NotFound(name.to_string()))?;
        let view = self.view(name, record, &users);
        self.delete(name)?;
        Ok(view)
    }

    /// Removes every unused anonymous volume (every unused volume with `all`); returns them and
    /// the bytes freed.
    pub fn prune(&self, all: bool) -> Result<(Vec<Volume>, u64), VolumeError> {
        let users = self.lock();
        let mut removed = Vec::new();
        let mut reclaimed = 0u64;
        for name in self.names()? {
            if users.contains_key(&name) {
                continue;
            }
            let Some(record) = self.record(&name)? else {
                continue;
            };
            if !all && !record.anonymous {
                continue;
            }
            let view = self.view(&name, record, &users);
            self.delete(&name)?;
            reclaimed += u64::try_from(view.size_bytes).unwrap_or(0);
            removed.push(view);
        }
        Ok((removed, reclaimed))
    }

    /// Answers a manager's `volume ls|rm|prune` for this node (blocking: walks directories).
    pub fn handle(&self, req: &VolumeRequest, node_id: &str) -> VolumeReply {
        let mut reply = VolumeReply {
            request_id: req.request_id,
            ..Default::default()
        };
        let result = match VolumeOp::try_from(req.op).unwrap_or(VolumeOp::VolumeList) {
            VolumeOp::VolumeList => self.list(&req.name).map(|v| reply.volumes = v),
            VolumeOp::VolumeRemove => match self.remove(&req.name) {
                Ok(v) => {
                    reply.reclaimed_bytes = u64::try_from(v.size_bytes).unwrap_or(0);
                    reply.volumes = vec![v];
                    Ok(())
                }
                Err(VolumeError::NotFound(_)) => {
                    reply.not_found = true;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            VolumeOp::VolumePrune => self.prune(req.all).map(|(v, bytes)| {
                reply.volumes = v;
                reply.reclaimed_bytes = bytes;
            }),
        };
        if let Err(e) = result {
            reply.error = e.to_string();
        }
        for v in &mut reply.volumes {
            v.node_id = node_id.to_string();
        }
        reply
    }
}

/// Bytes of the regular files under `path` (symlinks not followed; unreadable parts skipped).
pub fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        })
        .sum()
}

/// Copies what is in `src` into `dst` (an existing directory): files, directories and symlinks
/// with their owners and modes, and `src`'s own owner and mode onto `dst` (docker's copy-up of
/// an image directory into a new volume).
pub fn copy_dir_contents(src: &Path, dst: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from)?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            symlink(fs::read_link(&from)?, &to)?;
        } else if kind.is_dir() {
            fs::create_dir(&to)?;
            copy_dir_contents(&from, &to)?;
            continue; // its owner and mode were set by the recursive call
        } else if kind.is_file() {
            fs::copy(&from, &to)?;
        } else {
            // Device nodes, fifos and sockets are not copied (docker copies them; images rarely
            // ship them under a volume path).
            continue;
        }
        copy_owner_and_mode(&meta, &to)?;
    }
    let meta = fs::symlink_metadata(src)?;
    copy_owner_and_mode(&meta, dst)
}

fn copy_owner_and_mode(meta: &fs::Metadata, to: &Path) -> std::io::Result<()> {
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    if !meta.file_type().is_symlink() {
        // After the chown, which clears set-id bits.
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, VolumeStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(dir.path());
        (dir, store)
    }

    #[test]
    fn names_follow_docker() {
        for ok in ["db", "my_vol.1", "a-b", "0x"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "a", "-a", "a/b", "a b", ".."] {
            assert!(!valid_name(bad), "{bad}");
        }
        let anon = anonymous_name("task1", 0);
        assert_eq!(anon.len(), 64);
        assert!(valid_name(&anon));
        assert_eq!(anon, anonymous_name("task1", 0));
        assert_ne!(anon, anonymous_name("task1", 1));
    }

    #[test]
    fn ensure_creates_once_and_keeps_the_first_record() {
        let (_d, s) = store();
        let mut opts = VolumeCreate::default();
        opts.labels.insert("k".into(), "v".into());
        let v = s.ensure("db", &opts, "t1").unwrap();
        assert!(v.data.is_dir());
        assert!(v.data.ends_with("volumes/db/_data"));
        fs::write(v.data.join("f"), b"12345").unwrap();
        let again = s.ensure("db", &VolumeCreate::default(), "t2").unwrap();
        assert_eq!(again.record, v.record);
        assert_eq!(again.record.labels.get("k").map(String::as_str), Some("v"));
        let listed = s.list("").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            listed[0].in_use_by,
            vec!["t1".to_string(), "t2".to_string()]
        );
        assert_eq!(listed[0].size_bytes, 5);
        assert_eq!(listed[0].driver, "local");
    }

    #[test]
    fn unknown_driver_and_bad_name_are_refused() {
        let (_d, s) = store();
        let opts = VolumeCreate {
            driver: "rexray".into(),
            ..Default::default()
        };
        let err = s.ensure("db", &opts, "t").unwrap_err();
        assert_eq!(err.to_string(), "volume driver \"rexray\" is not supported");
        assert!(matches!(
            s.ensure("../x", &VolumeCreate::default(), "t"),
            Err(VolumeError::BadName(_))
        ));
    }

    #[test]
    fn remove_refuses_a_volume_in_use_and_survives_task_removal() {
        let (_d, s) = store();
        s.ensure("db", &VolumeCreate::default(), "t1").unwrap();
        let err = s.remove("db").unwrap_err();
        assert_eq!(err.to_string(), "volume db is in use by task t1");
        s.release_task("t1").unwrap();
        // A named volume outlives its task.
        assert_eq!(s.list("db").unwrap().len(), 1);
        let removed = s.remove("db").unwrap();
        assert_eq!(removed.name, "db");
        assert!(s.list("").unwrap().is_empty());
        assert!(matches!(s.remove("db"), Err(VolumeError::NotFound(_))));
    }

    #[test]
    fn anonymous_volumes_go_with_their_task() {
        let (_d, s) = store();
        let name = anonymous_name("t1", 0);
        let opts = VolumeCreate {
            anonymous: true,
            ..Default::default()
        };
        s.ensure(&name, &opts, "t1").unwrap();
        s.ensure("named", &VolumeCreate::default(), "t1").unwrap();
        assert!(s.list(&name).unwrap()[0].anonymous);
        s.release_task("t1").unwrap();
        let left: Vec<String> = s.list("").unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(left, vec!["named".to_string()]);
    }

    #[test]
    fn prune_takes_unused_anonymous_volumes_or_all_unused_ones() {
        let (_d, s) = store();
        let anon = VolumeCreate {
            anonymous: true,
            ..Default::default()
        };
        // Anonymous but left by a task of another agent life: no owner in memory.
        let orphan = anonymous_name("gone", 0);
        s.ensure(&orphan, &anon, "gone").unwrap();
        fs::write(s.data_path(&orphan).join("f"), b"abc").unwrap();
        {
            let mut users = s.lock();
            users.clear();
        }
        s.ensure("named", &VolumeCreate::default(), "t1").unwrap();
        s.ensure("busy", &VolumeCreate::default(), "t2").unwrap();
        s.release_task("t1").unwrap();
        let (removed, bytes) = s.prune(false).unwrap();
        assert_eq!(
            removed.iter().map(|v| v.name.clone()).collect::<Vec<_>>(),
            vec![orphan]
        );
        assert_eq!(bytes, 3);
        let (removed, _) = s.prune(true).unwrap();
        assert_eq!(
            removed.iter().map(|v| v.name.clone()).collect::<Vec<_>>(),
            vec!["named".to_string()]
        );
        assert_eq!(s.list("").unwrap()[0].name, "busy");
    }

    #[test]
    fn requests_are_answered_with_node_and_errors() {
        let (_d, s) = store();
        s.ensure("db", &VolumeCreate::default(), "t1").unwrap();
        let req = |op: VolumeOp, name: &str| VolumeRequest {
            request_id: 7,
            op: op as i32,
            name: name.into(),
            ..Default::default()
        };
        let ls = s.handle(&req(VolumeOp::VolumeList, ""), "node1");
        assert_eq!(ls.request_id, 7);
        assert_eq!(ls.volumes[0].node_id, "node1");
        let rm = s.handle(&req(VolumeOp::VolumeRemove, "db"), "node1");
        assert_eq!(rm.error, "volume db is in use by task t1");
        let rm = s.handle(&req(VolumeOp::VolumeRemove, "nope"), "node1");
        assert!(rm.not_found && rm.error.is_empty());
        s.release_task("t1").unwrap();
        let rm = s.handle(&req(VolumeOp::VolumeRemove, "db"), "node1");
        assert!(rm.error.is_empty() && !rm.not_found);
        assert_eq!(rm.volumes[0].name, "db");
    }

    #[test]
    fn copy_up_keeps_files_links_owners_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::create_dir(&dst).unwrap();
        fs::write(src.join("sub/file"), b"data").unwrap();
        fs::set_permissions(src.join("sub/file"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::set_permissions(src.join("sub"), fs::Permissions::from_mode(0o711)).unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o700)).unwrap();
        symlink("sub/file", src.join("link")).unwrap();
        // Owners other than our own only when we may chown (root).
        let root = nix::unistd::geteuid().is_root();
        if root {
            std::os::unix::fs::chown(&src, Some(999), Some(998)).unwrap();
        } else {
            eprintln!("not root: copy-up owner change not tested");
        }
        copy_dir_contents(&src, &dst).unwrap();
        assert_eq!(fs::read(dst.join("sub/file")).unwrap(), b"data");
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&dst.join("sub/file")), 0o640);
        assert_eq!(mode(&dst.join("sub")), 0o711);
        assert_eq!(mode(&dst), 0o700);
        assert_eq!(
            fs::read_link(dst.join("link")).unwrap(),
            PathBuf::from("sub/file")
        );
        if root {
            let m = fs::metadata(&dst).unwrap();
            assert_eq!((m.uid(), m.gid()), (999, 998));
        }
    }
}
