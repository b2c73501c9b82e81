//! Secrets and configs of the node's tasks: their data is held in memory only (as the last
//! assignment set brought it), and written for a task into a per-task tmpfs on the host
//! (`<data dir>/secrets/TASK`, RAM-backed, never on the node's disk) whose files are then bound
//! read-only at their targets in the container. Removing the task unmounts and removes it.

use std::collections::HashMap;
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::mount::{mount, MsFlags};
use shoal_proto::v1::{Config, ContainerSpec, FileTarget, Secret};

use crate::runtime::{rootfs, MountKind, MountSpec};

/// Where a secret with a relative target name appears in the container.
pub const SECRETS_DIR: &str = "/run/secrets";
/// Size limit of a task's tmpfs: secrets are at most 500 KiB and configs 1000 KiB each.
const TMPFS_SIZE: &str = "64m";

/// Errors of writing a task's secrets and configs.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The assignment set carried no data for a secret the task uses.
    #[error("secret {name} ({id}) is not available on this node")]
    MissingSecret {
        /// The name the spec uses.
        name: String,
        /// Its id.
        id: String,
    },
    /// The assignment set carried no data for a config the task uses.
    #[error("config {name} ({id}) is not available on this node")]
    MissingConfig {
        /// The name the spec uses.
        name: String,
        /// Its id.
        id: String,
    },
    /// A uid or gid that is not a number.
    #[error("{what} {name}: invalid {field} {value:?}: must be a number")]
    BadOwner {
        /// `secret` or `config`.
        what: &'static str,
        /// Its name.
        name: String,
        /// `uid` or `gid`.
        field: &'static str,
        /// What the spec holds.
        value: String,
    },
    /// Creating, writing or removing the task's files failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A task id that cannot be a directory name.
    #[error(transparent)]
    TaskId(#[from] crate::runtime::RuntimeError),
    /// Mounting or unmounting the task's tmpfs failed.
    #[error(transparent)]
    Mount(#[from] rootfs::RootfsError),
}

/// Data by secret or config id.
type ById = HashMap<String, Vec<u8>>;

/// The data of the secrets and configs this node's tasks use, by id; a cloneable handle.
#[derive(Debug, Clone, Default)]
pub struct Payloads {
    /// Secrets, then configs.
    inner: Arc<Mutex<(ById, ById)>>,
}

impl Payloads {
    /// Replaces what is held with the assignment set's secrets and configs.
    pub fn set(&self, secrets: Vec<Secret>, configs: Vec<Config>) {
        let secrets = secrets
            .into_iter()
            .map(|s| (s.id, s.spec.map(|s| s.data).unwrap_or_default()))
            .collect();
        let configs = configs
            .into_iter()
            .map(|c| (c.id, c.spec.map(|s| s.data).unwrap_or_default()))
            .collect();
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = (secrets, configs);
    }

    fn get(&self, secret: bool, id: &str) -> Option<Vec<u8>> {
        let maps = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let map = if secret { &maps.0 } else { &maps.1 };
        map.get(id).cloned()
    }
}

/// One file of a task: a secret or a config with its place and owner in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFile {
    /// Its file name in the task's tmpfs.
    pub name: String,
    /// Absolute path in the container.
    pub target: PathBuf,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
    /// Content.
    pub data: Vec<u8>,
}

fn owner(
    what: &'static str,
    name: &str,
    field: &'static str,
    value: &str,
) -> Result<u32, SecretsError> {
    if value.is_empty() {
        return Ok(0);
    }
    value.parse().map_err(|_| SecretsError::BadOwner {
        what,
        name: name.to_string(),
        field,
        value: value.to_string(),
    })
}

fn task_file(
    what: &'static str,
    index: usize,
    name: &str,
    file: Option<&FileTarget>,
    data: Vec<u8>,
) -> Result<TaskFile, SecretsError> {
    let file = file.cloned().unwrap_or_default();
    let target_name = if file.name.is_empty() {
        name
    } else {
        file.name.as_str()
    };
    let target = if target_name.starts_with('/') {
        PathBuf::from(target_name)
    } else if what == "secret" {
        Path::new(SECRETS_DIR).join(target_name)
    } else {
        Path::new("/").join(target_name)
    };
    Ok(TaskFile {
        // The index alone: ids come from the manager and never become path components here.
        name: format!("{what}-{index}"),
        target,
        uid: owner(what, name, "uid", &file.uid)?,
        gid: owner(what, name, "gid", &file.gid)?,
        mode: if file.mode == 0 {
            0o444
        } else {
            file.mode & 0o7777
        },
        data,
    })
}

/// The files a task's spec asks for, with their data; an error names the first secret or config
/// this node has no data for.
pub fn task_files(
    spec: &ContainerSpec,
    payloads: &Payloads,
) -> Result<Vec<TaskFile>, SecretsError> {
    let mut files = Vec::new();
    for (i, s) in spec.secrets.iter().enumerate() {
        let data = payloads
            .get(true, &s.secret_id)
            .ok_or_else(|| SecretsError::MissingSecret {
                name: s.secret_name.clone(),
                id: s.secret_id.clone(),
            })?;
        files.push(task_file(
            "secret",
            i,
            &s.secret_name,
            s.file.as_ref(),
            data,
        )?);
    }
    for (i, c) in spec.configs.iter().enumerate() {
        let data =
            payloads
                .get(false, &c.config_id)
                .ok_or_else(|| SecretsError::MissingConfig {
                    name: c.config_name.clone(),
                    id: c.config_id.clone(),
                })?;
        files.push(task_file(
            "config",
            i,
            &c.config_name,
            c.file.as_ref(),
            data,
        )?);
    }
    Ok(files)
}

/// Writes `files` into `dir` with their owners and modes.
pub fn write_files(dir: &Path, files: &[TaskFile]) -> Result<(), SecretsError> {
    for f in files {
        let path = dir.join(&f.name);
        let io = |source| SecretsError::Io {
            path: path.clone(),
            source,
        };
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        out.write_all(&f.data).map_err(io)?;
        std::os::unix::fs::fchown(&out, Some(f.uid), Some(f.gid)).map_err(io)?;
        // After the chown, which would clear set-id bits.
        out.set_permissions(fs::Permissions::from_mode(f.mode))
            .map_err(io)?;
    }
    Ok(())
}

/// The per-task directories of secrets and configs on this node.
#[derive(Debug, Clone)]
pub struct TaskFileDirs {
    root: PathBuf,
    /// Mount a tmpfs on each task's directory (off only in tests without root).
    tmpfs: bool,
}

impl TaskFileDirs {
    /// Per-task tmpfs directories under `root`.
    pub fn new(root: &Path) -> TaskFileDirs {
        TaskFileDirs {
            root: root.to_path_buf(),
            tmpfs: true,
        }
    }

    /// Plain directories instead of tmpfs mounts (tests without root).
    pub fn without_tmpfs(mut self) -> TaskFileDirs {
        self.tmpfs = false;
        self
    }

    /// The task's directory.
    pub fn dir(&self, task_id: &str) -> PathBuf {
        self.root.join(task_id)
    }

    /// The task's directory, refusing an id that is not a plain directory name.
    fn checked_dir(&self, task_id: &str) -> Result<PathBuf, SecretsError> {
        crate::runtime::validate_id(task_id)?;
        Ok(self.dir(task_id))
    }

    /// Writes the task's files into a fresh tmpfs and returns the read-only binds of each at its
    /// target. Nothing is made when there are no files.
    pub fn write(&self, task_id: &str, files: &[TaskFile]) -> Result<Vec<MountSpec>, SecretsError> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let dir = self.checked_dir(task_id)?;
        // A leftover of an earlier try of the same task goes first.
        self.remove(task_id)?;
        let io = |source| SecretsError::Io {
            path: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(io)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
        if self.tmpfs {
            mount(
                Some("tmpfs"),
                &dir,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(format!("mode=0700,size={TMPFS_SIZE}").as_str()),
            )
            .map_err(|source| rootfs::RootfsError::Mount {
                what: "tmpfs".into(),
                target: dir.clone(),
                source,
            })?;
        }
        if let Err(e) = write_files(&dir, files) {
            let _ = self.remove(task_id);
            return Err(e);
        }
        Ok(files
            .iter()
            .map(|f| MountSpec {
                target: f.target.clone(),
                kind: MountKind::Bind {
                    source: dir.join(&f.name),
                    propagation: String::new(),
                    copy_up: false,
                },
                read_only: true,
            })
            .collect())
    }

    /// Unmounts and removes the task's directory, if any.
    pub fn remove(&self, task_id: &str) -> Result<(), SecretsError> {
        let dir = self.checked_dir(task_id)?;
        rootfs::unmount_if_mounted(&dir)?;
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(source) => Err(SecretsError::Io { path: dir, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{ConfigReference, ConfigSpec, SecretReference, SecretSpec};
    use std::os::unix::fs::MetadataExt;

    fn payloads() -> Payloads {
        let p = Payloads::default();
        p.set(
            vec![Secret {
                id: "s1".into(),
                spec: Some(SecretSpec {
                    name: "db_pass".into(),
                    data: b"hunter2".to_vec(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            vec![Config {
                id: "c1".into(),
                spec: Some(ConfigSpec {
                    name: "nginx.conf".into(),
                    data: b"server {}".to_vec(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
        );
        p
    }

    fn spec() -> ContainerSpec {
        ContainerSpec {
            secrets: vec![
                SecretReference {
                    secret_id: "s1".into(),
                    secret_name: "db_pass".into(),
                    file: None,
                },
                SecretReference {
                    secret_id: "s1".into(),
                    secret_name: "db_pass".into(),
                    file: Some(FileTarget {
                        name: "/etc/app/pass".into(),
                        uid: "1000".into(),
                        gid: "1001".into(),
                        mode: 0o400,
                    }),
                },
            ],
            configs: vec![ConfigReference {
                config_id: "c1".into(),
                config_name: "nginx.conf".into(),
                file: None,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn targets_owners_and_modes_follow_docker_defaults() {
        let files = task_files(&spec(), &payloads()).unwrap();
        let view: Vec<_> = files
            .iter()
            .map(|f| (f.target.clone(), f.uid, f.gid, f.mode))
            .collect();
        assert_eq!(
            view,
            vec![
                (PathBuf::from("/run/secrets/db_pass"), 0, 0, 0o444),
                (PathBuf::from("/etc/app/pass"), 1000, 1001, 0o400),
                (PathBuf::from("/nginx.conf"), 0, 0, 0o444),
            ]
        );
        assert_eq!(files[0].data, b"hunter2");
        let names: std::collections::HashSet<_> = files.iter().map(|f| &f.name).collect();
        assert_eq!(names.len(), 3);
    }

    #[test]
    fn missing_data_and_bad_owners_are_errors() {
        let err = task_files(&spec(), &Payloads::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "secret db_pass (s1) is not available on this node"
        );
        let mut s = spec();
        s.secrets.clear();
        s.configs[0].config_id = "other".into();
        assert!(matches!(
            task_files(&s, &payloads()),
            Err(SecretsError::MissingConfig { .. })
        ));
        let mut s = spec();
        s.secrets[1].file.as_mut().unwrap().uid = "www".into();
        assert!(matches!(
            task_files(&s, &payloads()),
            Err(SecretsError::BadOwner { field: "uid", .. })
        ));
    }

    #[test]
    fn files_are_written_with_their_modes_and_removed_with_the_task() {
        let root = tempfile::tempdir().unwrap();
        let dirs = TaskFileDirs::new(root.path()).without_tmpfs();
        let files = task_files(&spec(), &payloads()).unwrap();
        let mounts = dirs.write("t1", &files).unwrap();
        assert_eq!(mounts.len(), 3);
        assert!(mounts.iter().all(|m| m.read_only));
        let MountKind::Bind { source, .. } = &mounts[1].kind else {
            panic!("not a bind: {:?}", mounts[1]);
        };
        assert_eq!(fs::read(source).unwrap(), b"hunter2");
        let meta = fs::metadata(source).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o400);
        if nix::unistd::geteuid().is_root() {
            assert_eq!((meta.uid(), meta.gid()), (1000, 1001));
        }
        dirs.remove("t1").unwrap();
        assert!(!dirs.dir("t1").exists());
        assert!(dirs.write("../t3", &files).is_err());
        // Nothing to write: nothing made.
        assert!(dirs.write("t2", &[]).unwrap().is_empty());
        assert!(!dirs.dir("t2").exists());
    }

    #[test]
    fn the_task_directory_is_a_tmpfs_and_leaves_nothing_behind() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let dirs = TaskFileDirs::new(root.path());
        let files = task_files(&spec(), &payloads()).unwrap();
        dirs.write("t1", &files).unwrap();
        let dir = dirs.dir("t1");
        assert!(rootfs::is_mounted(&dir));
        let fs_type = nix::sys::statfs::statfs(&dir).unwrap().filesystem_type();
        assert_eq!(fs_type, nix::sys::statfs::TMPFS_MAGIC);
        dirs.remove("t1").unwrap();
        assert!(!rootfs::is_mounted(&dir));
        assert!(!dir.exists());
    }
}
