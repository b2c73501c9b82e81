//! On-disk layout of a container directory and the records the agent and the shim share.
//!
//! `root/<id>/` holds `config.json` (written by the agent), `state.json` (written by the shim once the
//! container runs), `exit.json` (written by the shim when the container's init has exited),
//! `container.log`, `shim.log` and the overlay `upper/`, `work/`, `merged/` directories. Records are
//! written to a temporary file and renamed, so a reader never sees half a record.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Errors reading or writing a container's records.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A record file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A record file holds something that is not the expected JSON.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The decoding error.
        source: serde_json::Error,
    },
}

/// What the shim records once the container's process runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    /// Pid of the shim (in the host's pid namespace).
    pub shim_pid: i32,
    /// Start time of the shim in clock ticks since boot (`/proc/<pid>/stat` field 22), against pid reuse.
    pub shim_start_time: u64,
    /// Pid of the container's init (in the host's pid namespace).
    pub pid: i32,
    /// Start time of the container's init in clock ticks since boot.
    pub start_time: u64,
    /// When the container started, unix nanoseconds.
    pub started_at: i64,
}

/// What the shim records when the container's init has exited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitState {
    /// Exit code; 128 + signal number when the process was killed by a signal.
    pub code: i32,
    /// When the exit was seen, unix nanoseconds.
    pub finished_at: i64,
    /// Whether the kernel's OOM killer fired in the container's cgroup.
    #[serde(default)]
    pub oom_killed: bool,
}

/// The paths inside one container's directory.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    /// `root/<id>`.
    pub dir: PathBuf,
}

impl ContainerDir {
    /// The directory of container `id` under `root`.
    pub fn new(root: &Path, id: &str) -> Self {
        Self { dir: root.join(id) }
    }
    /// `config.json`: the `ContainerConfig`.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    /// `state.json`: the `ContainerState`.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// `exit.json`: the `ExitState`.
    pub fn exit(&self) -> PathBuf {
        self.dir.join("exit.json")
    }
    /// `container.log`: JSON lines of the container's stdout and stderr.
    pub fn log(&self) -> PathBuf {
        self.dir.join("container.log")
    }
    /// `shim.log`: the shim's own stderr.
    pub fn shim_log(&self) -> PathBuf {
        self.dir.join("shim.log")
    }
    /// Overlay upper directory.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    /// Overlay work directory.
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    /// Overlay mount point, the container's root.
    pub fn merged(&self) -> PathBuf {
        self.dir.join("merged")
    }
}

/// Writes `value` as JSON to `path` atomically (temporary file + rename).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let data = serde_json::to_vec(value).map_err(|source| StateError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let tmp = path.with_extension("json.tmp");
    let mut file = fs::File::create(&tmp).map_err(io)?;
    file.write_all(&data).map_err(io)?;
    drop(file);
    fs::rename(&tmp, path).map_err(io)
}

/// Reads a JSON record; `Ok(None)` when the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    match fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|source| StateError::Json {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        assert_eq!(read_json::<ExitState>(&path).unwrap(), None);
        let exit = ExitState {
            code: 137,
            finished_at: 5,
            oom_killed: true,
        };
        write_json(&path, &exit).unwrap();
        assert_eq!(read_json::<ExitState>(&path).unwrap(), Some(exit));
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[test]
    fn exit_without_oom_field_decodes() {
        let exit: ExitState = serde_json::from_str(r#"{"code":3,"finished_at":1}"#).unwrap();
        assert_eq!(exit.code, 3);
        assert!(!exit.oom_killed);
    }
}
